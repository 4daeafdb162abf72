"""Synthetic cell codes structured like real ones, streamed to float16 memmaps.

A real database has ``aerial_i`` (embedding of the tile around cell ``i``) and ``proto_i``
(the level-``Lp`` prototype of its parent, copied down). Both vary smoothly over space —
neighbouring tiles overlap and look alike — with a per-cell (aerial) or per-parent (proto)
part on top. Here the smooth part is a sum of random Fourier features of the cell centre's
unit vector, at wavelengths from a few kilometres to a thousand, mixed into D dims; the
individual part is Gaussian noise. Children of one parent share one prototype, exactly
as parent-copy upsampling gives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geocells.geo import cell_parent, cell_to_latlng
from geocells.io import write_json

logger = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0
NOISE_BANK_ROWS = 65_536
CODES_VERSION = 2  # bump when the generated codes change for the same CodeField


@dataclass
class CodeField:
    """Parameters of the synthetic code field."""

    dim: int = 256
    features: int = 64  # random Fourier features per field
    min_wavelength_km: float = 2.0
    max_wavelength_km: float = 1000.0
    aerial_noise: float = 1.0  # norm of the per-cell part relative to the smooth part
    proto_noise: float = 0.7  # norm of the per-parent part relative to the smooth part
    proto_level: int = 15
    seed: int = 0


def _normalize_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, in place."""
    values /= np.sqrt(np.einsum("ij,ij->i", values, values))[:, None]
    return values


def _to_float16(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 through torch, whose SIMD conversion is ~5x faster than numpy's."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()


def unit_vectors(cells: np.ndarray) -> np.ndarray:
    """Cell centres as unit vectors on the sphere: float64 [N, 3]."""
    lat, lon = cell_to_latlng(cells)
    lat, lon = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1)


class CodeGenerator:
    """Deterministic aerial/proto codes for chunks of cells (same cell -> same smooth part)."""

    def __init__(self, field: CodeField) -> None:
        self.field = field
        rng = np.random.default_rng(field.seed)
        self._aerial = self._fourier(rng)
        self._proto = self._fourier(rng)
        # Individual parts are sums of two rows of a Gaussian bank: as good as fresh noise
        # here (near-orthogonal across cells) and ~5x cheaper than drawing D normals a cell.
        self._bank = rng.standard_normal((NOISE_BANK_ROWS, field.dim), dtype=np.float32)
        self._bank *= np.float32(1 / np.sqrt(2 * field.dim))

    def _fourier(self, rng: np.random.Generator):
        """(frequencies [3, F] in 1/radian, phases [F], mixing [F, D]) of one smooth field."""
        field = self.field
        wavelengths = np.geomspace(field.max_wavelength_km, field.min_wavelength_km, field.features)
        directions = rng.normal(size=(3, field.features))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        frequencies = directions * (2 * np.pi * EARTH_RADIUS_KM / wavelengths)
        phases = rng.uniform(0, 2 * np.pi, field.features)
        # Equal energy per octave of wavelength: town-scale and country-scale alike.
        mixing = rng.normal(size=(field.features, field.dim))
        return frequencies, phases, mixing.astype(np.float32)

    @staticmethod
    def _smooth(xyz: np.ndarray, fourier) -> np.ndarray:
        """Unit-norm smooth field at the given points: float32 [N, D]."""
        frequencies, phases, mixing = fourier
        # Phases reach ~2e4 rad; float32 keeps them to ~2e-3 rad, far below one cell's step.
        values = np.cos((xyz @ frequencies + phases).astype(np.float32)) @ mixing
        return _normalize_rows(values)

    def codes(self, cells: np.ndarray, chunk_seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Cells uint64[n] (S2-sorted) -> (aerial, proto) float16 [n, D], unit norm."""
        field = self.field
        rng = np.random.default_rng([field.seed, chunk_seed])
        aerial = self._smooth(unit_vectors(cells), self._aerial)
        aerial += self._noise(rng, len(cells), field.aerial_noise)
        parents, which = np.unique(cell_parent(cells, field.proto_level), return_inverse=True)
        proto = self._smooth(unit_vectors(parents), self._proto)
        proto += self._noise(rng, len(parents), field.proto_noise)
        proto = _normalize_rows(proto)[which]
        return _to_float16(_normalize_rows(aerial)), _to_float16(proto)

    def _noise(self, rng: np.random.Generator, count: int, norm: float) -> np.ndarray:
        """Gaussian-like rows of expected norm ``norm``: float32 [count, D]."""
        pairs = rng.integers(0, NOISE_BANK_ROWS, size=(2, count))
        noise = self._bank[pairs[0]]
        noise += self._bank[pairs[1]]
        noise *= np.float32(norm)
        return noise


def parent_aligned_chunks(cells: np.ndarray, proto_level: int, chunk: int):
    """Yield (start, stop) row ranges of about ``chunk`` rows that never split a parent."""
    total = len(cells)
    start = 0
    while start < total:
        stop = min(start + chunk, total)
        if stop < total:
            tail = cell_parent(np.asarray(cells[stop - 1 : stop + 4]), proto_level)
            stop += int(np.argmax(tail[1:] != tail[0])) if (tail[1:] != tail[0]).any() else 4
            stop = min(stop, total)
        yield start, stop
        start = stop


def write_codes(
    cells: np.ndarray, out: Path, generator: CodeGenerator, chunk: int = 262_144, progress=True
) -> tuple[np.ndarray, np.ndarray]:
    """Stream codes for ``cells`` into ``out/aerial.npy`` and ``out/proto.npy`` (float16).

    Resumable: ``codes.progress.json`` records the rows written (after each flushed chunk);
    a rerun with the same cells and field continues from there.
    """
    from tqdm import tqdm

    shape = (len(cells), generator.field.dim)
    key = {
        "version": CODES_VERSION,
        "field": dataclasses.asdict(generator.field),
        "chunk": chunk,
        "cells": [len(cells), int(cells[0]), int(cells[-1])],
    }
    progress_path = out / "codes.progress.json"
    done = _rows_done(progress_path, key, out)
    mode = "r+" if done else "w+"
    aerial = np.lib.format.open_memmap(out / "aerial.npy", mode, np.float16, shape)
    proto = np.lib.format.open_memmap(out / "proto.npy", mode, np.float16, shape)
    ranges = parent_aligned_chunks(cells, generator.field.proto_level, chunk)
    with tqdm(
        total=len(cells), desc="cell codes", unit="cell", disable=None if progress else True
    ) as bar:
        bar.update(done)
        for number, (start, stop) in enumerate(ranges):
            if stop <= done:
                continue
            block = np.asarray(cells[start:stop])
            aerial[start:stop], proto[start:stop] = generator.codes(block, number)
            aerial.flush()
            proto.flush()
            _write_json(progress_path, {"key": key, "rows_done": stop})
            bar.update(stop - start)
    del aerial, proto
    return np.load(out / "aerial.npy", mmap_mode="r"), np.load(out / "proto.npy", mmap_mode="r")


def _rows_done(progress_path: Path, key: dict, out: Path) -> int:
    """Rows already written by an interrupted run with the same key (0 if none)."""
    if not progress_path.is_file():
        return 0
    record = json.loads(progress_path.read_text())
    files_there = (out / "aerial.npy").is_file() and (out / "proto.npy").is_file()
    if record.get("key") != key or not files_there:
        return 0
    logger.info("resuming cell codes after row %d", record["rows_done"])
    return int(record["rows_done"])


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file + rename)."""
    write_json(path, data, indent=None)


def make_queries(
    aerial: np.ndarray, proto: np.ndarray, count: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-like queries: (unit-norm cell code of a random cell + noise) -> (q, target rows).

    The code ``aerial + proto`` is normalised, Gaussian noise of norm ``noise`` is added,
    and the result is normalised again: the target cell is the known answer.
    """
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(len(aerial), size=min(count, len(aerial)), replace=False))
    codes = np.asarray(aerial[targets], np.float32) + np.asarray(proto[targets], np.float32)
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    dim = codes.shape[1]
    codes += rng.standard_normal(codes.shape, dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    order = rng.permutation(len(targets))  # queries in random order, not S2 order
    return codes[order], targets[order]
