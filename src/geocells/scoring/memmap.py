"""Page-cache hints for memory-mapped code arrays (re-ranking reads scattered rows)."""

from __future__ import annotations

import mmap

import numpy as np


def advise_random_access(array: np.ndarray) -> bool:
    """Tell the kernel a memmap is read at random rows (no read-ahead); True if done.

    Re-ranking reads ~64 rows of 512 B per query; with the default read-ahead each page
    fault pulls in up to ~128 kB around the row, which dominated query time once the
    codes no longer fit the page cache (docs/scaling.md). Arrays in RAM are left alone.
    """
    handle = getattr(array, "_mmap", None)
    if handle is None:
        base = getattr(array, "base", None)
        handle = getattr(base, "_mmap", None) if base is not None else None
    if handle is None or not hasattr(handle, "madvise"):
        return False
    handle.madvise(mmap.MADV_RANDOM)
    return True


def memmap_handle(array: np.ndarray):
    """(mmap object, byte position of element 0 inside it) of a numpy memmap, else None."""
    handle = getattr(array, "_mmap", None)
    if handle is None or getattr(array, "offset", None) is None:
        return None
    # numpy maps from the allocation-granularity boundary below the data offset.
    return handle, array.offset % mmap.ALLOCATIONGRANULARITY


def page_runs(
    rows: np.ndarray, row_bytes: int, origin: int, page: int = mmap.PAGESIZE
) -> tuple[np.ndarray, np.ndarray]:
    """(start byte, length) of the runs of adjacent pages holding ``rows`` of a memmap.

    ``origin``: byte position of row 0 in the mapping; ``page``: the page size (default
    ``mmap.PAGESIZE``). Rows need not be sorted or unique; the runs are sorted, disjoint
    and page-aligned.
    """
    if page is None:
        page = mmap.PAGESIZE
    rows = np.unique(np.asarray(rows, np.int64))
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    first = (origin + rows * row_bytes) // page
    last = (origin + (rows + 1) * row_bytes - 1) // page
    # A new run starts where a row's first page is past the previous row's last page + 1.
    breaks = np.flatnonzero(first[1:] > last[:-1] + 1) + 1
    starts = first[np.concatenate([[0], breaks])]
    ends = last[np.concatenate([breaks - 1, [len(rows) - 1]])]
    return starts * page, (ends - starts + 1) * page


def prefetch_rows(array: np.ndarray, rows: np.ndarray) -> int:
    """Ask the kernel to start reading the pages of ``rows`` of a 2-D memmap, all at once:
    one ``MADV_WILLNEED`` per run of adjacent pages (``page_runs``).

    Re-ranking then finds them in the page cache instead of faulting them in one by one:
    the disk serves the reads concurrently. Returns the number of runs advised (0 for an
    array in RAM or a memmap this cannot address).
    """
    found = memmap_handle(array)
    if found is None or array.ndim != 2 or not array.flags.c_contiguous:
        return 0
    handle, origin = found
    starts, lengths = page_runs(rows, array.shape[1] * array.itemsize, origin)
    size = len(handle)
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        handle.madvise(mmap.MADV_WILLNEED, start, min(length, size - start))
    return len(starts)
