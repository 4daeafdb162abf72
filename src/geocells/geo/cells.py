"""Vectorised S2 cell maths in pure numpy (same ids as Google's s2geometry).

A cell id is a uint64: 3 face bits, then 2 bits per level along the face's Hilbert
curve, then a single 1 bit that marks the level. Points go lat/lng -> unit vector ->
cube face + (u, v) -> quadratic (s, t) -> 30-bit (i, j) -> Hilbert position, exactly
as in s2geometry (the tests compare bit for bit).
"""

from __future__ import annotations

import functools

import numpy as np

MAX_LEVEL = 30
# The paper's levels and every stage's defaults: database cells (Lc, ~150 m) and one
# prototype per cell of Lp (~300 m). A model records its own (models.card.CellGeometry).
DEFAULT_CELL_LEVEL = 16
DEFAULT_PROTOTYPE_LEVEL = 15
_POS_BITS = 2 * MAX_LEVEL + 1
_MAX_SIZE = 1 << MAX_LEVEL
_LOOKUP_BITS = 4
_SWAP, _INVERT = 1, 2
# Hilbert sub-cell order: position -> (i, j) bits, and the orientation change per position.
_POS_TO_IJ = np.array([[0, 1, 3, 2], [0, 2, 3, 1], [3, 2, 0, 1], [3, 1, 0, 2]])
_POS_TO_ORIENTATION = np.array([_SWAP, 0, 0, _INVERT | _SWAP])
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@functools.cache
def _lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """(ij+orientation -> pos+orientation, pos+orientation -> ij+orientation), 1024 each."""
    start = np.arange(4)
    orig, orientation = start.copy(), start.copy()
    i = j = pos = np.zeros(4, dtype=np.int64)
    for _ in range(_LOOKUP_BITS):
        r = _POS_TO_IJ[orientation]  # [M, 4]: (i, j) bits of each Hilbert position
        i = ((i << 1)[:, None] + (r >> 1)).ravel()
        j = ((j << 1)[:, None] + (r & 1)).ravel()
        pos = ((pos << 2)[:, None] + np.arange(4)).ravel()
        orientation = (orientation[:, None] ^ _POS_TO_ORIENTATION[None, :]).ravel()
        orig = np.repeat(orig, 4)
    ij = (i << _LOOKUP_BITS) + j
    lookup_pos = np.zeros(1 << (2 * _LOOKUP_BITS + 2), dtype=np.int64)
    lookup_ij = np.zeros_like(lookup_pos)
    lookup_pos[(ij << 2) + orig] = (pos << 2) + orientation
    lookup_ij[(pos << 2) + orig] = (ij << 2) + orientation
    return lookup_pos, lookup_ij


def check_level(level: int, name: str = "level") -> int:
    """Return ``level`` as int, or raise ValueError unless it is an integer in 0..30."""
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise ValueError(f"{name} must be an integer in 0..30, got {level!r}")
    if not 0 <= int(level) <= MAX_LEVEL:
        raise ValueError(f"{name} must be in 0..30, got {level}")
    return int(level)


def check_latlng(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast to 1-D float64 arrays; ValueError naming the first NaN/out-of-range value."""
    lat, lon = np.broadcast_arrays(np.asarray(lat, np.float64), np.asarray(lon, np.float64))
    lat, lon = lat.ravel(), lon.ravel()
    for name, values, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        bad = ~(np.abs(values) <= limit)  # also catches NaN
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{k}] = {values[k]} is NaN or outside [-{limit}, {limit}]")
    return lat, lon


def check_cells(cells) -> np.ndarray:
    """Return cells as a 1-D uint64 array; ValueError naming the first invalid S2 id."""
    cells = np.asarray(cells)
    if cells.dtype.kind not in "ui":
        raise ValueError(f"cell ids must be integers (uint64), got dtype {cells.dtype}")
    cells = cells.astype(np.uint64, copy=False).ravel()
    bad = _invalid(cells)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"cells[{k}] = {int(cells[k])} is not a valid S2 cell id")
    return cells


def _trailing_zeros(cells: np.ndarray) -> np.ndarray:
    """Number of trailing zero bits (64 for 0) of each uint64."""
    lsb = cells & (~cells + np.uint64(1))
    _, exponent = np.frexp(lsb.astype(np.float64))  # exact: lsb is a power of two
    return np.where(cells == 0, 64, exponent - 1).astype(np.int64)


def _lsb_for_level(level) -> np.ndarray:
    return np.uint64(1) << (np.uint64(2) * (np.uint64(MAX_LEVEL) - np.asarray(level, np.uint64)))


def cell_level(cells) -> np.ndarray:
    """Level (0..30) of each cell: int64[N]."""
    cells = check_cells(cells)
    return MAX_LEVEL - _trailing_zeros(cells) // 2


def cell_parent(cells, level: int) -> np.ndarray:
    """Ancestor of each cell at ``level`` (must be <= each cell's level): uint64[N]."""
    level = check_level(level)
    cells = check_cells(cells)
    current = cell_level(cells)
    if (current < level).any():
        k = int(np.flatnonzero(current < level)[0])
        raise ValueError(f"cells[{k}] has level {current[k]} < requested parent level {level}")
    return _parent_unchecked(cells, level)


def _parent_unchecked(cells: np.ndarray, level: int) -> np.ndarray:
    lsb = _lsb_for_level(level)
    return (cells & (~lsb + np.uint64(1))) | lsb


def cell_children(cells, level: int) -> np.ndarray:
    """All descendants at ``level`` in id order: uint64[N, 4**(level - current)]."""
    level = check_level(level)
    cells = check_cells(cells)
    current = cell_level(cells)
    if current.size and (current != current[0]).any():
        raise ValueError(
            "cell_children needs cells of one level; got levels "
            f"{sorted(set(current.tolist()))[:5]}"
        )
    if current.size and current[0] > level:
        raise ValueError(f"cells have level {current[0]} > requested child level {level}")
    if current.size == 0:
        return np.zeros((0, 1), np.uint64)
    depth = int(level - current[0])
    lsb, child_lsb = _lsb_for_level(current[0]), _lsb_for_level(level)
    begin = cells - lsb + child_lsb
    steps = np.arange(4**depth, dtype=np.uint64) * (child_lsb << np.uint64(1))
    return begin[:, None] + steps[None, :]


# Per face, the coefficients of (x, y, z) giving u and v (before dividing by the major
# axis), and of (1, u, v) giving x, y, z: s2geometry's ValidFaceXYZtoUV / FaceUVtoXYZ.
_U_FROM_XYZ = np.array([[0, 1, 0], [-1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, 1], [0, -1, 0.0]])
_V_FROM_XYZ = np.array([[0, 0, 1], [0, 0, 1], [0, -1, 0], [0, 1, 0], [-1, 0, 0], [-1, 0, 0.0]])
_XYZ_FROM_1UV = np.array(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
        [[0, -1, 0], [0, 0, -1], [1, 0, 0]],
        [[-1, 0, 0], [0, 0, -1], [0, -1, 0]],
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]],
        [[0, 0, 1], [0, 1, 0], [-1, 0, 0.0]],
    ]
)  # [face, xyz, (1, u, v)]


def _face_uv(x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """Cube face and (u, v) of unit vectors, with s2geometry's tie-breaking."""
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    axis = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    coord = np.where(axis == 0, x, np.where(axis == 1, y, z))
    face = axis + 3 * (coord < 0)
    # Exactly one coefficient is ±1 and the others 0, so these sums are exact.
    cu, cv = _U_FROM_XYZ[face], _V_FROM_XYZ[face]
    u = (cu[..., 0] * x + cu[..., 1] * y + cu[..., 2] * z) / coord
    v = (cv[..., 0] * x + cv[..., 1] * y + cv[..., 2] * z) / coord
    return face, u, v


def _uv_to_st(u: np.ndarray) -> np.ndarray:
    half = 0.5 * np.sqrt(1 + 3 * np.abs(u))  # 1 - 3u == 1 + 3|u| exactly for u < 0
    return np.where(u >= 0, half, 1 - half)


def _st_to_uv(s: np.ndarray) -> np.ndarray:
    return np.where(s >= 0.5, (1 / 3.0) * (4 * s * s - 1), (1 / 3.0) * (1 - 4 * (1 - s) * (1 - s)))


def _st_to_ij(s: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(_MAX_SIZE * s - 0.5), 0, _MAX_SIZE - 1).astype(np.int64)


def _face_uv_to_xyz(face: np.ndarray, u: np.ndarray, v: np.ndarray):
    c = _XYZ_FROM_1UV[face]  # [..., 3, 3]
    return tuple(c[..., k, 0] + c[..., k, 1] * u + c[..., k, 2] * v for k in range(3))


def _xyz_to_latlng(x, y, z) -> tuple[np.ndarray, np.ndarray]:
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon


def _from_face_ij(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Leaf cell ids from face and 30-bit (i, j) (int64 arrays)."""
    lookup_pos, _ = _lookup_tables()
    n = face.astype(np.int64) << (_POS_BITS - 1)  # the final *2 + 1 moves it to the top
    bits = face & _SWAP
    mask = (1 << _LOOKUP_BITS) - 1
    for k in range(7, -1, -1):
        shift = k * _LOOKUP_BITS
        bits = bits + (((i >> shift) & mask) << (_LOOKUP_BITS + 2)) + (((j >> shift) & mask) << 2)
        bits = lookup_pos[bits]
        n |= (bits >> 2) << (2 * shift)
        bits &= _SWAP | _INVERT
    return n.astype(np.uint64) * np.uint64(2) + np.uint64(1)


def _to_face_ij(cells: np.ndarray):
    """(face, i, j) of the leaf cell each id decodes to (int64 arrays)."""
    _, lookup_ij = _lookup_tables()
    face = (cells >> np.uint64(_POS_BITS)).astype(np.int64)
    i = np.zeros(cells.shape, np.int64)
    j = np.zeros(cells.shape, np.int64)
    bits = face & _SWAP
    for k in range(7, -1, -1):
        nbits = MAX_LEVEL - 7 * _LOOKUP_BITS if k == 7 else _LOOKUP_BITS
        chunk = (cells >> np.uint64(k * 2 * _LOOKUP_BITS + 1)).astype(np.int64)
        bits = bits + ((chunk & ((1 << (2 * nbits)) - 1)) << 2)
        bits = lookup_ij[bits]
        i += (bits >> (_LOOKUP_BITS + 2)) << (k * _LOOKUP_BITS)
        j += ((bits >> 2) & ((1 << _LOOKUP_BITS) - 1)) << (k * _LOOKUP_BITS)
        bits &= _SWAP | _INVERT
    return face, i, j


def latlng_to_cell(lat, lon, level: int = MAX_LEVEL, chunk_size: int = 1 << 16) -> np.ndarray:
    """S2 cell ids at ``level`` of WGS84 points (degrees): uint64[N]."""
    level = check_level(level)
    lat, lon = check_latlng(lat, lon)
    out = np.empty(lat.size, np.uint64)
    for start in range(0, lat.size, chunk_size):  # chunks keep temporaries in cache
        part = slice(start, start + chunk_size)
        phi, theta = np.radians(lat[part]), np.radians(lon[part])
        cos_phi = np.cos(phi)
        face, u, v = _face_uv(np.cos(theta) * cos_phi, np.sin(theta) * cos_phi, np.sin(phi))
        leaf = _from_face_ij(face, _st_to_ij(_uv_to_st(u)), _st_to_ij(_uv_to_st(v)))
        out[part] = leaf if level == MAX_LEVEL else _parent_unchecked(leaf, level)
    return out


def _cell_bounds_st(cells: np.ndarray):
    """(face, s_lo, t_lo, size in st) of each cell's square on its face."""
    face, i, j = _to_face_ij(cells)
    size = np.int64(1) << (_trailing_zeros(cells) // 2)
    i0, j0 = i & ~(size - 1), j & ~(size - 1)
    return face, i0 / _MAX_SIZE, j0 / _MAX_SIZE, size / _MAX_SIZE


def cell_to_latlng(cells) -> tuple[np.ndarray, np.ndarray]:
    """Centres of cells in degrees: (lat[N], lon[N])."""
    cells = check_cells(cells)
    face, s0, t0, size = _cell_bounds_st(cells)
    x, y, z = _face_uv_to_xyz(face, _st_to_uv(s0 + size / 2), _st_to_uv(t0 + size / 2))
    return _xyz_to_latlng(x, y, z)


def cell_vertices(cells) -> np.ndarray:
    """Corners of cells, counter-clockwise as in s2geometry: float64[N, 4, 2] (lat, lon)."""
    cells = check_cells(cells)
    face, s0, t0, size = _cell_bounds_st(cells)
    s = np.stack([s0, s0 + size, s0 + size, s0], axis=1)
    t = np.stack([t0, t0, t0 + size, t0 + size], axis=1)
    x, y, z = _face_uv_to_xyz(np.repeat(face[:, None], 4, axis=1), _st_to_uv(s), _st_to_uv(t))
    lat, lon = _xyz_to_latlng(x, y, z)
    return np.stack([lat, lon], axis=-1)


def _token_bytes(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hex digits uint8[N, 16] (unused tail zeroed) and token lengths int64[N]."""
    big_endian = cells.astype(">u8").view(np.uint8).reshape(-1, 8)
    nibbles = np.empty((cells.size, 16), np.uint8)
    nibbles[:, 0::2] = big_endian >> 4
    nibbles[:, 1::2] = big_endian & 15
    chars = nibbles + np.uint8(48) + (nibbles > 9) * np.uint8(39)  # '0'..'9', 'a'..'f'
    lengths = 16 - _trailing_zeros(cells) // 4
    chars *= np.arange(16)[None, :] < lengths[:, None]
    return chars, lengths


def cell_to_token(cells) -> np.ndarray:
    """Standard S2 hex tokens (trailing zeros stripped): str array [N]."""
    chars, _ = _token_bytes(check_cells(cells))
    # numpy drops trailing NUL bytes of fixed-width bytes strings, which strips the zeros.
    return np.ascontiguousarray(chars).view("S16").ravel().astype("U16")


def cell_to_token_arrow(cells):
    """Tokens as a pyarrow string array (fast path for Parquet writers)."""
    import pyarrow as pa

    chars, lengths = _token_bytes(check_cells(cells))
    data = chars[np.arange(16)[None, :] < lengths[:, None]]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))


def token_to_cell(tokens) -> np.ndarray:
    """Cell ids from S2 hex tokens (case-insensitive): uint64[N]."""
    tokens = np.atleast_1d(np.asarray(tokens))
    if tokens.dtype.kind not in "US":
        raise ValueError(f"tokens must be strings, got dtype {tokens.dtype}")
    tokens = tokens.ravel()
    lengths = np.char.str_len(tokens)
    bad_length = (lengths < 1) | (lengths > 16)
    if bad_length.any():
        k = int(np.flatnonzero(bad_length)[0])
        raise ValueError(f"tokens[{k}] = {str(tokens[k])!r} is not an S2 token (1-16 hex digits)")
    padded = np.char.ljust(np.char.lower(tokens.astype(str)), 16, "0")
    chars = np.frombuffer(np.char.encode(padded, "ascii").tobytes(), np.uint8).reshape(-1, 16)
    values = np.full(256, -1, np.int64)
    values[_HEX] = np.arange(16)
    nibbles = values[chars]
    bad = (nibbles < 0).any(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"tokens[{k}] = {str(tokens[k])!r} is not an S2 token (non-hex character)")
    shifts = np.arange(15, -1, -1, dtype=np.uint64) * np.uint64(4)
    cells = np.bitwise_or.reduce(nibbles.astype(np.uint64) << shifts, axis=1)
    try:
        return check_cells(cells)
    except ValueError:
        k = int(np.flatnonzero(_invalid(cells))[0])
        raise ValueError(f"tokens[{k}] = {str(tokens[k])!r} is not a valid S2 cell token") from None


def _invalid(cells: np.ndarray) -> np.ndarray:
    trailing = _trailing_zeros(cells)
    return (cells == 0) | ((cells >> np.uint64(_POS_BITS)) > 5) | (trailing % 2 == 1)


def _from_face_ij_wrap(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Leaf ids for (i, j) just beyond a face edge, found on the adjacent face."""
    i = np.clip(i, -1, _MAX_SIZE)
    j = np.clip(j, -1, _MAX_SIZE)
    limit = 1.0 + np.finfo(np.float64).eps
    u = np.clip((2 * (i - _MAX_SIZE // 2) + 1) / _MAX_SIZE, -limit, limit)
    v = np.clip((2 * (j - _MAX_SIZE // 2) + 1) / _MAX_SIZE, -limit, limit)
    new_face, u, v = _face_uv(*_face_uv_to_xyz(face, u, v))
    return _from_face_ij(new_face, _st_to_ij(0.5 * (u + 1)), _st_to_ij(0.5 * (v + 1)))


def cell_neighbors(cells) -> np.ndarray:
    """Edge neighbours (down, right, up, left in face (i, j)), same level: uint64[N, 4]."""
    cells = check_cells(cells)
    level = cell_level(cells)
    size = np.int64(1) << (MAX_LEVEL - level)
    face, i, j = _to_face_ij(cells)
    out = np.empty((cells.size, 4), np.uint64)
    for k, (ni, nj) in enumerate(((i, j - size), (i + size, j), (i, j + size), (i - size, j))):
        same_face = (ni >= 0) & (ni < _MAX_SIZE) & (nj >= 0) & (nj < _MAX_SIZE)
        leaf = np.empty(cells.size, np.uint64)
        leaf[same_face] = _from_face_ij(face[same_face], ni[same_face], nj[same_face])
        off = ~same_face
        leaf[off] = _from_face_ij_wrap(face[off], ni[off], nj[off])
        out[:, k] = _parent_unchecked(leaf, level)
    return out
