"""Deterministic hashing and value noise over integer lattices (pure numpy, vectorised).

Everything random in the world is a hash of (seed, salt, lattice coordinates), so any
window of the world can be evaluated on its own and agrees exactly with any other window.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TABLE_MIN_POINTS = 2048


def _mix(h: np.ndarray) -> np.ndarray:
    """A short multiply-xorshift avalanche of a uint64 array."""
    h = h ^ (h >> np.uint64(32))
    h = h * _M1
    h = h ^ (h >> np.uint64(29))
    h = h * _M2
    return h ^ (h >> np.uint64(32))


def _hash_direct(seed: int, salt: int, coords: list[np.ndarray]) -> np.ndarray:
    start = np.uint64(((seed & 0xFFFFFFFF) << 20) ^ (salt * 0x2545F491) ^ 0x5851F42D)
    h = np.full(np.broadcast(*coords).shape, start, np.uint64)
    for c in coords:
        h = (h ^ c.view(np.uint64)) * _GOLDEN
        h = h ^ (h >> np.uint64(31))
    return _mix(h)


def hash_ints(seed: int, salt: int, *coords: np.ndarray) -> np.ndarray:
    """A uint64 hash of integer coordinate arrays (broadcast together), seed and salt.

    Dense lattices (many points, few distinct coordinates) are hashed once per lattice node
    and gathered: the result is identical, only cheaper.
    """
    arrays = [np.asarray(c).astype(np.int64) for c in coords]
    arrays = list(np.broadcast_arrays(*arrays))
    with np.errstate(over="ignore"):
        size = arrays[0].size if arrays else 1
        if size >= _TABLE_MIN_POINTS and len(arrays) in (1, 2):
            lows = [int(a.min()) for a in arrays]
            spans = [int(a.max()) - low + 1 for a, low in zip(arrays, lows)]
            if np.prod(spans, dtype=float) * 4 <= size:
                axes = [
                    np.arange(low, low + span, dtype=np.int64) for low, span in zip(lows, spans)
                ]
                table = _hash_direct(seed, salt, list(np.meshgrid(*axes, indexing="ij")))
                if len(arrays) == 1:
                    return table[arrays[0] - lows[0]]
                return table[arrays[0] - lows[0], arrays[1] - lows[1]]
        return _hash_direct(seed, salt, arrays)


def hash_unit(seed: int, salt: int, *coords: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) hashed from integer coordinates (float64)."""
    return (hash_ints(seed, salt, *coords) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def value_noise(seed: int, salt: int, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Smooth value noise in [0, 1] with lattice spacing ``scale`` metres (float32)."""
    gx, gy = x / scale, y / scale
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00 = hash_unit(seed, salt, ix, iy).astype(np.float32)
    v10 = hash_unit(seed, salt, ix + 1, iy).astype(np.float32)
    v01 = hash_unit(seed, salt, ix, iy + 1).astype(np.float32)
    v11 = hash_unit(seed, salt, ix + 1, iy + 1).astype(np.float32)
    top = v00 + (v10 - v00) * sx
    bottom = v01 + (v11 - v01) * sx
    return top + (bottom - top) * sy


def fractal_noise(
    seed: int, salt: int, x: np.ndarray, y: np.ndarray, scale: float, octaves: int = 3
) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers (halving scale and weight), normalised to [0, 1]."""
    total = np.zeros(np.broadcast(x, y).shape, np.float32)
    weight, norm = 1.0, 0.0
    for octave in range(octaves):
        total += weight * value_noise(seed, salt + 7919 * octave, x, y, scale / 2**octave)
        norm += weight
        weight *= 0.5
    return total / norm


def pixel_noise(seed: int, salt: int, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Blocky white noise in [0, 1): one value per ``cell``-metre square (texture grain)."""
    return hash_unit(seed, salt, np.floor(x / cell), np.floor(y / cell)).astype(np.float32)


def hash_units(seed: int, salt: int, *coords: np.ndarray, count: int = 4) -> list[np.ndarray]:
    """``count`` (<= 4) independent uniforms in [0, 1) from one hash (16 bits each, float32)."""
    if not 1 <= count <= 4:
        raise ValueError(f"count must be 1..4, got {count}")
    h = hash_ints(seed, salt, *coords)
    mask = np.uint64(0xFFFF)
    return [
        ((h >> np.uint64(16 * k)) & mask).astype(np.float32) * (1.0 / 65536.0) for k in range(count)
    ]
