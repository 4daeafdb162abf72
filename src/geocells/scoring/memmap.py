"""Page-cache hints for memory-mapped code arrays (re-ranking reads scattered rows)."""

from __future__ import annotations

import numpy as np


def advise_random_access(array: np.ndarray) -> bool:
    """Tell the kernel a memmap is read at random rows (no read-ahead); True if done.

    Re-ranking reads ~64 rows of 512 B per query; with the default read-ahead each page
    fault pulls in up to ~128 kB around the row, which dominated query time once the
    codes no longer fit the page cache (docs/scaling.md). Arrays in RAM are left alone.
    """
    import mmap

    handle = getattr(array, "_mmap", None)
    if handle is None:
        base = getattr(array, "base", None)
        handle = getattr(base, "_mmap", None) if base is not None else None
    if handle is None or not hasattr(handle, "madvise"):
        return False
    handle.madvise(mmap.MADV_RANDOM)
    return True


def _memmap_handle(array: np.ndarray):
    """(mmap object, byte position of element 0 inside it) of a numpy memmap, else None."""
    handle = getattr(array, "_mmap", None)
    if handle is None or getattr(array, "offset", None) is None:
        return None
    import mmap

    # numpy maps from the allocation-granularity boundary below the data offset.
    return handle, array.offset % mmap.ALLOCATIONGRANULARITY


def prefetch_rows(array: np.ndarray, rows: np.ndarray) -> int:
    """Ask the kernel to start reading the pages of ``rows`` of a 2-D memmap, all at once.

    Re-ranking then finds them in the page cache instead of faulting them in one by one:
    the disk serves the reads concurrently. Returns the number of rows advised (0 for an
    array in RAM or a memmap this cannot address).
    """
    import mmap

    found = _memmap_handle(array)
    if found is None or array.ndim != 2 or not array.flags.c_contiguous:
        return 0
    handle, origin = found
    row_bytes = array.shape[1] * array.itemsize
    page = mmap.PAGESIZE
    for row in np.asarray(rows, dtype=np.int64):
        first = origin + int(row) * row_bytes
        start = first - first % page
        length = min(first + row_bytes - start, len(handle) - start)
        handle.madvise(mmap.MADV_WILLNEED, start, length)
    return len(rows)
