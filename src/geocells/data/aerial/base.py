"""Aerial source interface and the crop geometry shared by every backend.

Crop conventions (all backends):
- ``crop(lat, lon, size_m, px, rotation_deg)`` returns ``uint8[px, px, 3]`` covering a
  square of ``size_m`` x ``size_m`` ground metres centred on (lat, lon); output pixel
  (row i, col j) is sampled at its centre, ``size_m / px`` metres apart.
- ``rotation_deg = 0``: north-up (row 0 is the northern edge, column 0 the western edge).
  ``rotation_deg = θ``: the crop's up direction points θ degrees clockwise from north,
  like a compass heading, so θ = 90 puts east at the top and a point east of the centre
  appears above it. Rotation is about the crop centre; the footprint rotates with it.
- The square lives in the local tangent plane at the centre (east/north metres on the
  WGS84 ellipsoid); it is mapped to raster pixels by an affine map fitted once per crop
  (central differences over the crop), exact to well below a pixel for crops up to a few
  kilometres.
- Rasters are pixel-is-area: raster pixel (r, c) covers [c, c + 1) x [r, r + 1) in pixel
  coordinates, its value sits at the centre (c + 0.5, r + 0.5). Sampling is bilinear;
  when one output pixel spans 2 or more source pixels the source is first box-averaged
  by a power of two (no aliasing). Sources are held as RGBA with alpha = validity; a
  sample counts as covered where its interpolated alpha is at least one half.
- Coverage: a centre outside the source or on a no-data pixel raises
  ``OutOfCoverageError``; parts of the footprint outside coverage (or no-data) are black.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3

# (lat, lon) arrays -> (x, y) continuous pixel coordinates of some raster.
PixelMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class OutOfCoverageError(ValueError):
    """A crop requested where the aerial source has no imagery."""

    def __init__(
        self, lat: float, lon: float, bounds: tuple[float, float, float, float], what: str
    ):
        south, west, north, east = bounds
        super().__init__(
            f"no aerial imagery at lat {lat:.6f}, lon {lon:.6f} in {what} "
            f"(bounds south {south:.6f}, west {west:.6f}, north {north:.6f}, east {east:.6f})"
        )
        self.lat, self.lon, self.bounds = lat, lon, bounds


@runtime_checkable
class AerialSource(Protocol):
    """Anything that cuts north-up (or rotated) metric crops out of aerial imagery."""

    bounds: tuple[float, float, float, float]  # south, west, north, east (WGS84 degrees)

    def crop(
        self, lat: float, lon: float, size_m: float, px: int, rotation_deg: float = 0.0
    ) -> np.ndarray:
        """``uint8[px, px, 3]`` crop centred on (lat, lon); see the module docstring."""
        ...

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``bool[N]``: whether imagery exists at each point."""
        ...


def check_crop_args(lat: float, lon: float, size_m: float, px: int) -> None:
    """Raise ValueError on a crop request that makes no sense."""
    if not (math.isfinite(lat) and -90 <= lat <= 90 and math.isfinite(lon)):
        raise ValueError(f"crop centre lat {lat}, lon {lon} is not a valid WGS84 position")
    if not (math.isfinite(size_m) and size_m > 0):
        raise ValueError(f"crop size_m must be positive, got {size_m}")
    if int(px) != px or px < 1:
        raise ValueError(f"crop px must be a positive integer, got {px}")


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Ground metres per degree of latitude and of longitude at ``lat`` (WGS84)."""
    phi = math.radians(lat)
    s = 1.0 - WGS84_E2 * math.sin(phi) ** 2
    meridional = WGS84_A * (1.0 - WGS84_E2) / s**1.5
    normal = WGS84_A / math.sqrt(s)
    return meridional * math.pi / 180.0, max(normal * math.cos(phi), 1e-6) * math.pi / 180.0


def crop_to_enu(size_m: float, px: int, rotation_deg: float) -> np.ndarray:
    """Affine ``[2, 3]``: output (col, row, 1) -> (east, north) metres from the centre."""
    scale = size_m / px
    grid_to_uv = np.array(
        [[scale, 0.0, scale * (0.5 - px / 2)], [0.0, -scale, scale * (px / 2 - 0.5)]]
    )
    theta = math.radians(rotation_deg)
    # (right, up) of the crop -> (east, north): up points `theta` clockwise from north.
    rotate = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    return rotate @ grid_to_uv


def crop_to_pixels(
    lat: float, lon: float, size_m: float, px: int, rotation_deg: float, to_pixels: PixelMap
) -> np.ndarray:
    """Affine ``[2, 3]``: output (col, row, 1) -> continuous raster pixel (x, y)."""
    step = max(size_m / 2.0, 1.0)
    metres_lat, metres_lon = metres_per_degree(lat)
    d_lat, d_lon = step / metres_lat, step / metres_lon
    lats = np.array([lat, lat, lat, lat + d_lat, lat - d_lat])
    lons = np.array([lon, lon + d_lon, lon - d_lon, lon, lon])
    x, y = to_pixels(lats, lons)
    jacobian = np.array(
        [
            [(x[1] - x[2]) / (2 * step), (x[3] - x[4]) / (2 * step)],
            [(y[1] - y[2]) / (2 * step), (y[3] - y[4]) / (2 * step)],
        ]
    )
    enu = crop_to_enu(size_m, px, rotation_deg)
    affine = jacobian @ enu
    affine[:, 2] += (x[0], y[0])
    return affine


def pixel_scale(affine: np.ndarray) -> float:
    """Source pixels per output pixel (geometric mean of the two axes)."""
    return math.sqrt(abs(np.linalg.det(affine[:, :2])))


def pyramid_level(affine: np.ndarray) -> int:
    """How many times to halve the source so one output pixel spans 1–2 source pixels."""
    return max(math.floor(math.log2(max(pixel_scale(affine), 1.0))), 0)


def footprint_box(affine: np.ndarray, px: int, margin: float = 2.0) -> tuple[float, ...]:
    """(x_min, y_min, x_max, y_max) in source pixels covering the crop, with a margin."""
    corners = np.array([[0, 0, 1], [px, 0, 1], [0, px, 1], [px, px, 1]], dtype=float).T
    x, y = affine @ corners
    return x.min() - margin, y.min() - margin, x.max() + margin, y.max() + margin


def to_rgba(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``[H, W, 3|1]`` uint8 (+ validity mask) -> contiguous ``[H, W, 4]``, alpha = 255 valid."""
    height, width = image.shape[:2]
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = image if image.shape[2] == 3 else image[..., :1]
    rgba[..., 3] = 255 if mask is None else np.where(mask, 255, 0)
    return rgba


def downsample2(image: np.ndarray) -> np.ndarray:
    """Halve an ``[H, W, 4]`` uint8 RGBA image by 2x2 box averaging (alpha too)."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:height, :width].reshape(height // 2, 2, width // 2, 2, 4)
    return ((blocks.sum(axis=(1, 3), dtype=np.uint16) + 2) // 4).astype(np.uint8)


class _Workspace:
    """Preallocated buffers for one crop size: sampling allocates almost nothing per crop
    (fresh large temporaries cost more than the arithmetic on a busy machine)."""

    def __init__(self, px: int) -> None:
        n = px * px
        self.grid = np.arange(px, dtype=np.float32)
        self.x, self.y = np.empty(n, np.float32), np.empty(n, np.float32)
        self.frac_x, self.frac_y = np.empty(n, np.float32), np.empty(n, np.float32)
        self.scratch = np.empty(n, np.float32)
        self.cols, self.rows = np.empty((2, n), np.int64), np.empty((2, n), np.int64)
        self.index = np.empty((4, n), np.int64)
        self.packed = np.empty((4, n), np.uint32)
        self.corners = np.empty((4, 4, n), np.float32)  # channel, corner, sample
        self.weights = np.empty((4, n), np.float32)
        self.values = np.empty((4, n), np.float32)
        self.inside, self.test = np.empty(n, bool), np.empty(n, bool)


_workspaces = threading.local()


def _workspace(px: int) -> _Workspace:
    cache = getattr(_workspaces, "by_px", None)
    if cache is None:
        cache = _workspaces.by_px = {}
    if px not in cache:
        cache[px] = _Workspace(px)
    return cache[px]


def _grid_coordinates(work: _Workspace, affine: np.ndarray, px: int) -> None:
    """Continuous pixel-centre coordinates of the crop grid into ``work.x``, ``work.y``."""
    coeffs = affine.astype(np.float32)
    for out, (a, b, offset) in ((work.x, coeffs[0]), (work.y, coeffs[1])):
        square = out.reshape(px, px)
        np.multiply(work.grid[None, :], a, out=square)
        np.add(square, (b * work.grid + (offset - np.float32(0.5)))[:, None], out=square)


def _corner_indices(work: _Workspace, width: int, height: int) -> None:
    """Flat indices of the 4 neighbours (clamped at the border) and the fractional offsets."""
    for coord, frac, out, size in (
        (work.x, work.frac_x, work.cols, width),
        (work.y, work.frac_y, work.rows, height),
    ):
        np.floor(coord, out=work.scratch)
        np.subtract(coord, work.scratch, out=frac)
        np.clip(work.scratch, 0, size - 1, out=out[0], casting="unsafe")
        work.scratch += 1
        np.clip(work.scratch, 0, size - 1, out=out[1], casting="unsafe")
    work.rows *= width
    for k, (row, col) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        np.add(work.rows[row], work.cols[col], out=work.index[k])


def sample_bilinear(
    image: np.ndarray, affine: np.ndarray, px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample RGBA ``image [H, W, 4] uint8`` at the crop grid -> (``uint8[px, px, 3]``, valid).

    ``affine`` maps output (col, row, 1) to continuous pixel coordinates of ``image``. A
    sample is valid inside the image where the interpolated alpha is at least half; invalid
    samples are black. Pixels are gathered as packed uint32 (one gather per corner).
    """
    height, width = image.shape[:2]
    packed = np.ascontiguousarray(image).reshape(-1).view(np.uint32)
    work, n = _workspace(px), px * px
    _grid_coordinates(work, affine, px)
    inside, test = work.inside, work.test
    np.greater_equal(work.x, -0.5, out=inside)
    for coord, op, bound in (
        (work.x, np.less_equal, width - 0.5),
        (work.y, np.greater_equal, -0.5),
        (work.y, np.less_equal, height - 0.5),
    ):
        op(coord, bound, out=test)
        inside &= test
    _corner_indices(work, width, height)
    np.take(packed, work.index, out=work.packed)
    channels_first = work.packed.view(np.uint8).reshape(4, n, 4).transpose(2, 0, 1)
    np.copyto(work.corners, channels_first, casting="unsafe")
    left, up = 1 - work.frac_x, 1 - work.frac_y
    np.multiply(left, up, out=work.weights[0])
    np.multiply(work.frac_x, up, out=work.weights[1])
    np.multiply(left, work.frac_y, out=work.weights[2])
    np.multiply(work.frac_x, work.frac_y, out=work.weights[3])
    np.multiply(work.corners, work.weights[None], out=work.corners)
    np.sum(work.corners, axis=1, out=work.values)
    valid = inside & (work.values[3] >= 127.5)
    work.values[:3] += 0.5
    rgb = np.empty((n, 3), np.uint8)
    np.copyto(rgb.T, work.values[:3], casting="unsafe")
    rgb[~valid] = 0
    return rgb.reshape(px, px, 3), valid.reshape(px, px)


def sample_with_pyramid(
    levels: list[np.ndarray], affine: np.ndarray, px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling from the power-of-two level where one output pixel spans 1–2
    source pixels; ``levels[k]`` is the RGBA image halved k times (appended on demand)."""
    level = pyramid_level(affine)
    while len(levels) <= level and min(levels[-1].shape[:2]) >= 4:
        levels.append(downsample2(levels[-1]))
    level = min(level, len(levels) - 1)
    return sample_bilinear(levels[level], affine / (2**level), px)
