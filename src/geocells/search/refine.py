"""The SQ8 refine stage of the compressed index: 8-bit codes of every fused row, on disk.

The 4-bit PQ codes the IVF lists scan (32 B per cell by default) rank the candidates
coarsely. Re-scoring hundreds of them from the float16 database would read two scattered
512-byte rows each from ~1 kB per cell of memmaps; the refine file holds the fused code
``aerial + κ · proto`` scalar-quantised to 8 bits per dimension by faiss's
``ScalarQuantizer`` (256 B per cell at D = 256, a quarter of the database). It is a
memmap like the database — page cache, not process memory — so the candidates are
re-scored from it and only the best few are read back from the float16 rows for their
exact scores (docs/scaling.md, "Single machine at 2 ms").
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from geocells.scoring.exact import check_finite_rows
from geocells.scoring.memmap import advise_random_access
from geocells.search import pagecache

logger = logging.getLogger(__name__)

REFINES = ("none", "sq8")
# Refine codes built without a file stay in RAM up to this size; larger ones go to an
# unlinked temporary file (a memmap: page cache, freed when the searcher is).
RAM_MAX_BYTES = 256 * 2**20
# How a loaded refine file is brought into the page cache (SQ8Refiner.warm).
WARM_MODES = ("auto", "load", "query", "off")
# "auto" reads the whole file at load when it is at most this share of MemAvailable.
WARM_MAX_SHARE = 0.5


def check_warm_mode(mode: str) -> str:
    """``mode`` if it is one of WARM_MODES; ValueError listing them otherwise."""
    if mode not in WARM_MODES:
        raise ValueError(f"unknown refine warm mode {mode!r}; expected one of {WARM_MODES}")
    return mode


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, byte offset of the data) from a ``.npy`` header; ValueError naming
    ``path`` if it is not one."""
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    with path.open("rb") as handle:
        try:
            version = npy.read_magic(handle)
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = readers[version](handle)
        except (ValueError, EOFError) as err:
            raise ValueError(f"{path} is not a .npy refine file ({err})") from None
        return tuple(shape), dtype, handle.tell()


def refine_path(index_path: str | Path) -> Path:
    """The refine file next to an index file: ``index.faiss`` -> ``index.faiss.sq8.npy``."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + ".sq8.npy")


def _quantizer(dim: int, trained: np.ndarray | None = None):
    """A faiss 8-bit scalar quantiser for ``dim`` dims (with its trained ranges if given)."""
    import faiss

    quantizer = faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit)
    if trained is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(trained, np.float32), quantizer.trained)
    return quantizer


class SQ8Refiner:
    """8-bit codes [N, D] of the fused database rows and the quantiser that decodes them."""

    def __init__(self, trained: np.ndarray, codes: np.ndarray) -> None:
        trained = np.asarray(trained, np.float32)
        if codes.ndim != 2 or codes.dtype != np.uint8 or trained.shape != (2 * codes.shape[1],):
            raise ValueError(
                f"refine codes must be uint8 [N, D] with 2·D trained ranges; got "
                f"{codes.dtype} {codes.shape} and {trained.shape}"
            )
        self.trained = trained
        self.codes = codes
        self.prefetch = False  # set by warm("query")
        advise_random_access(codes)

    @classmethod
    def build(
        cls,
        fused_rows,
        num_cells: int,
        dim: int,
        train: np.ndarray,
        path: Path | None = None,
        chunk: int = 262_144,
    ) -> SQ8Refiner:
        """Train on ``train`` (float32 fused rows) and encode every row.

        ``fused_rows(start, stop)`` returns float32 fused codes of those rows. With
        ``path`` the codes stream into that ``.npy`` memmap; without, they are kept in RAM
        up to ``RAM_MAX_BYTES``, else in an unlinked temporary file.
        """
        import faiss

        quantizer = _quantizer(dim)
        quantizer.train(np.ascontiguousarray(train, np.float32))
        trained = faiss.vector_to_array(quantizer.trained).astype(np.float32)
        temporary = path is None and num_cells * dim > RAM_MAX_BYTES
        if temporary:
            import tempfile

            handle, name = tempfile.mkstemp(suffix=".sq8.npy")
            os.close(handle)
            path = Path(name)
        if path is None:
            codes = np.empty((num_cells, dim), np.uint8)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            codes = np.lib.format.open_memmap(path, "w+", np.uint8, (num_cells, dim))
        for start in range(0, num_cells, chunk):
            stop = min(start + chunk, num_cells)
            rows = fused_rows(start, stop)
            check_finite_rows(rows, start, "fused")
            codes[start:stop] = quantizer.compute_codes(np.ascontiguousarray(rows))
        if path is not None:
            codes.flush()
            del codes
            codes = np.load(path, mmap_mode="r")
            if temporary:  # the mapping stays valid; the disk space is freed with it
                path.unlink()
        logger.info("SQ8 refine codes: %d x %d (%s)", num_cells, dim, path or "in memory")
        return cls(trained, codes)

    @classmethod
    def load(
        cls, path: Path, trained: list[float], num_cells: int, dim: int, warm: str = "auto"
    ) -> SQ8Refiner:
        """Open the refine file ``path`` (memmap) and ``warm`` it (``SQ8Refiner.warm``).

        FileNotFoundError if it is missing; ValueError naming it if it is not a ``.npy``
        file, holds other rows, or is shorter than its header says (a truncated copy).
        """
        check_warm_mode(warm)
        if not path.is_file():
            raise FileNotFoundError(f"refine file {path} not found")
        shape, dtype, data_offset = _npy_header(path)
        if shape != (num_cells, dim) or dtype != np.uint8:
            raise ValueError(f"{path} holds {dtype} {shape}, expected uint8 ({num_cells}, {dim})")
        size, expected = path.stat().st_size, data_offset + num_cells * dim
        if size < expected:
            raise ValueError(
                f"{path} is truncated: {size:,} bytes, expected {expected:,} "
                f"({num_cells:,} rows of {dim} codes after a {data_offset}-byte header)"
            )
        refiner = cls(np.asarray(trained, np.float32), np.load(path, mmap_mode="r"))
        refiner.warm(warm)
        return refiner

    def warm(self, mode: str = "auto") -> str:
        """Bring the refine file into the page cache so queries do not fault rows in one
        by one; returns what was done ("load", "query" or "off").

        ``load``: read the whole file sequentially now (logged with its time) and map its
        pages; ``query``: prefetch each search call's candidate rows, one ``MADV_WILLNEED``
        per run of adjacent pages; ``off``: neither (rows fault in as they are read);
        ``auto``: ``load`` when the file fits in ``WARM_MAX_SHARE`` of the available
        memory, else ``query``. Codes held in RAM need nothing.
        """
        warm_mode = check_warm_mode(mode)
        filename = getattr(self.codes, "filename", None)
        self.prefetch = False
        on_disk = isinstance(self.codes, np.memmap) and filename and os.path.exists(filename)
        if not on_disk or warm_mode == "off":
            return "off"
        size = os.path.getsize(filename)
        if warm_mode == "auto":
            available = pagecache.mem_available()
            fits = available is not None and size <= WARM_MAX_SHARE * available
            warm_mode = "load" if fits else "query"
            if not fits:
                logger.info(
                    "refine file %s (%.2f GiB) not read at load: more than %.0f %% of the "
                    "%.2f GiB available; each search prefetches its candidate rows instead",
                    filename, size / 2**30, 100 * WARM_MAX_SHARE, (available or 0) / 2**30,
                )  # fmt: skip
        if warm_mode == "query":
            self.prefetch = True
            return "query"
        start = time.perf_counter()
        pagecache.read_into_cache(filename)
        mapped = pagecache.populate(self.codes)
        logger.info(
            "read the refine file %s (%.2f GiB) into the page cache in %.1f s%s "
            "(warm='off' skips this)",
            filename, size / 2**30, time.perf_counter() - start, "" if mapped else ", not mapped",
        )  # fmt: skip
        return "load"

    def save(self, path: Path) -> Path:
        """Write the codes to ``path`` unless they already are that file."""
        current = getattr(self.codes, "filename", None)
        if current and path.exists() and Path(current).exists() and path.samefile(current):
            return path  # built into this file (writing it over itself would truncate it)
        target = np.lib.format.open_memmap(path, "w+", np.uint8, self.codes.shape)
        for start in range(0, len(self.codes), 1 << 20):
            target[start : start + (1 << 20)] = self.codes[start : start + (1 << 20)]
        target.flush()
        del target
        self.codes = np.load(path, mmap_mode="r")
        advise_random_access(self.codes)
        return path

    def _weights(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights [Q, D], offsets [Q]): ``q · x = offset + weights · c`` for 8-bit codes c.

        faiss's 8-bit quantiser decodes component d as ``vmin_d + (c + 0.5) / 255 ·
        vdiff_d``, so ``q · x = q · (vmin + vdiff / 510) + (q ∘ vdiff / 255) · c``: one
        product with the codes per query, no decoding (which cost ~0.6 ms for 512 rows).
        """
        dim = queries.shape[1]
        vmin, vdiff = self.trained[:dim], self.trained[dim:]
        weights = np.ascontiguousarray(queries * (vdiff / np.float32(255)), np.float32)
        return weights, queries @ (vmin + vdiff / np.float32(510))

    def scores(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Inner products of queries [Q, D] with the rows that 8-bit ``codes`` [Q, m, D]
        decode to: [Q, m] float32."""
        weights, offsets = self._weights(queries)
        products = np.einsum("qmd,qd->qm", codes.astype(np.float32), weights)
        return (products + offsets[:, None]).astype(np.float32)

    def rescore(self, queries: np.ndarray, candidates: np.ndarray, keep: int) -> np.ndarray:
        """Candidates [Q, m] (-1 = none) -> the ``keep`` best by 8-bit score [Q, keep]
        (-1 where a query had fewer), in no particular order."""
        keep = min(keep, candidates.shape[1])
        best = np.full((len(candidates), keep), -1, np.int64)
        weights, _ = self._weights(queries)  # the offset does not change a query's order
        # A file too large to keep cached: start every read at once (~215 madvise calls
        # for 512 rows at 8 M cells, +0.6-0.8 ms per query even when the pages are cached).
        if self.prefetch:
            pagecache.prefetch_rows(self.codes, candidates[candidates >= 0])
        for number, row in enumerate(candidates):
            rows = np.sort(row[row >= 0])  # sorted: reads walk the file forwards
            if len(rows) > keep:
                scores = self.codes[rows].astype(np.float32) @ weights[number]
                rows = rows[np.argpartition(-scores, keep - 1)[:keep]]
            best[number, : len(rows)] = rows
        return best

    def memory_bytes(self) -> int:
        """Bytes held in process memory: the codes if they are not a memmap, else ~0."""
        in_ram = not isinstance(self.codes, np.memmap)
        return self.trained.nbytes + (self.codes.nbytes if in_ram else 0)
