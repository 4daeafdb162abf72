"""Page-cache control for the memory-mapped refine file (``search.refine``).

Re-scoring reads ~512 scattered 256-byte rows of the refine file per query. When the file
is in the page cache that costs ~0.2 ms; when it is not, each row is a page fault served
from disk one after another (28 ms per query at 8 M cells, docs/scaling.md). Three ways
to avoid that, chosen by ``SQ8Refiner.warm``:

- ``read_into_cache``: read the whole file sequentially once at load (disk bandwidth),
  then ``populate`` the mapping so queries take no page faults at all;
- ``prefetch_rows`` (``geocells.scoring.memmap``, which exact re-ranking uses too): per
  search call, one ``MADV_WILLNEED`` per run of adjacent pages of the sorted candidate
  rows, so the disk serves a query's reads concurrently;
- ``evict``: drop a file's clean pages from the cache (benchmarks: a cold start on demand,
  without touching any other file's cache).
"""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path

import numpy as np

from geocells.scoring.memmap import memmap_handle, page_runs, prefetch_rows

logger = logging.getLogger(__name__)

READ_CHUNK = 16 * 2**20
# Linux >= 5.14: fault in every page of a mapping (page tables included) in one call.
# Python 3.11's mmap module has no constant for it.
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)


def mem_available() -> int | None:
    """Bytes the kernel reports as available for new use (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def read_into_cache(path: str | Path, chunk: int = READ_CHUNK) -> int:
    """Read ``path`` front to back into the page cache (the data is discarded); bytes read."""
    total = 0
    buffer = bytearray(chunk)
    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while count := handle.readinto(buffer):
            total += count
    return total


def populate(array: np.ndarray) -> bool:
    """Map every page of a memmap now (``MADV_POPULATE_READ``); False where unsupported.

    After ``read_into_cache`` the pages are cached but not yet in this process's page
    tables; without this each first touch is a minor fault (~0.15 ms per query of 512 rows).
    """
    found = memmap_handle(array)
    if found is None:
        return False
    try:
        found[0].madvise(MADV_POPULATE_READ)
    except OSError as err:  # older kernels: EINVAL
        logger.debug("MADV_POPULATE_READ not available (%s)", err)
        return False
    return True


def resident_fraction(array: np.ndarray) -> float | None:
    """Share of a memmap's pages in the page cache (``mincore``); None where unknown."""
    found = memmap_handle(array)
    if found is None:
        return None
    import ctypes
    import ctypes.util

    handle = found[0]
    length = len(handle)
    if length == 0:
        return 1.0
    pages = -(-length // mmap.PAGESIZE)
    vector = np.zeros(pages, np.uint8)
    address = np.frombuffer(handle, np.uint8).ctypes.data  # a read-only view of the map
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    if libc.mincore(address, length, vector.ctypes.data) != 0:
        return None
    return float(np.mean(vector & 1))


def evict(path: str | Path) -> None:
    """Drop the clean, unmapped pages of ``path`` from the page cache (POSIX_FADV_DONTNEED).

    Pages a process still maps stay cached: close the memmaps first.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # written pages must be clean to be dropped
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


__all__ = [
    "evict",
    "mem_available",
    "memmap_handle",
    "page_runs",
    "populate",
    "prefetch_rows",
    "read_into_cache",
    "resident_fraction",
]
