"""Equirectangular panoramas: loading and perspective crops.

A manifest row with ``fov = 360`` is an equirectangular panorama: width = 2 × height,
columns spanning 360° of azimuth (left to right = clockwise seen from above), rows 180°
of elevation (top = +90°), and ``heading`` the compass heading of its centre column
(Street View and VIGOR panoramas are north-aligned: heading 0).

``perspective_crop`` renders pinhole views out of a batch of panoramas in one
``grid_sample`` call. The unit rays of a (size, fov) camera are cached, so a crop costs
one small rotation and one bilinear lookup per pixel; the same function serves training
(random heading, FOV and pitch per sample), evaluation and ``locate``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geocells.data.images import ImageLoadError, load_image

PANORAMA_FOV = 360.0


def is_panorama(fov: np.ndarray | float) -> np.ndarray:
    """Whether manifest ``fov`` values mark equirectangular panoramas (fov == 360)."""
    return np.asarray(fov, dtype=np.float64) == PANORAMA_FOV


def check_panorama_size(width: int, height: int, what: str | Path) -> None:
    """Raise ImageLoadError unless ``width == 2 * height`` (an equirectangular panorama)."""
    if width != 2 * height:
        raise ImageLoadError(
            what,
            f"is marked as a panorama (fov = 360) but is {width} x {height} pixels; an "
            "equirectangular panorama must be twice as wide as it is high",
        )


def load_panorama(path: str | Path) -> np.ndarray:
    """Read an equirectangular panorama: uint8 [H, 2H, 3]; a wrong aspect ratio raises."""
    image = load_image(path)
    check_panorama_size(image.width, image.height, path)
    return np.asarray(image, dtype=np.uint8)


@lru_cache(maxsize=32)
def _camera_rays(size: int, fov_deg: float) -> torch.Tensor:
    """Unit rays of a square pinhole camera looking north, level: [size, size, 3] (x east,
    y north, z up), row 0 at the top. Cached per (size, fov)."""
    half = np.tan(np.deg2rad(fov_deg) / 2.0)
    grid = (2.0 * (np.arange(size) + 0.5) / size - 1.0) * half
    right, up = np.meshgrid(grid, -grid)  # [size, size]
    rays = np.stack([right, np.ones_like(right), up], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    return torch.from_numpy(rays.astype(np.float32))


def _rotations(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotations: pitch up about the camera's x axis, then yaw clockwise
    (compass) about z. [B] , [B] -> [B, 3, 3]."""
    yaw, pitch = torch.deg2rad(yaw_deg), torch.deg2rad(pitch_deg)
    cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    pitch_m = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    yaw_m = torch.stack([cy, sy, zero, -sy, cy, zero, zero, zero, one], -1).view(-1, 3, 3)
    return yaw_m @ pitch_m


def crop_grid(
    heading: torch.Tensor, fov: torch.Tensor, pitch: torch.Tensor, pano_heading: torch.Tensor,
    size: int,
) -> torch.Tensor:  # fmt: skip
    """``grid_sample`` coordinates of perspective crops in panoramas: [B, size, size, 2].

    heading, fov, pitch, pano_heading: [B] degrees (crop centre compass heading, crop
    field of view, crop pitch up, compass heading of each panorama's centre column).
    x in [-1, 1] runs over azimuth relative to the panorama centre (±180°), y over
    elevation (+90° at -1).
    """
    grids = []
    for fov_value in torch.unique(fov):  # one cached ray set per distinct FOV
        picked = torch.nonzero(fov == fov_value).flatten()
        rays = _camera_rays(int(size), float(fov_value))  # [S, S, 3]
        rot = _rotations(heading[picked] - pano_heading[picked], pitch[picked])
        world = torch.einsum("bij,hwj->bhwi", rot, rays)  # [b, S, S, 3]
        azimuth = torch.atan2(world[..., 0], world[..., 1])  # clockwise from the centre column
        elevation = torch.asin(world[..., 2].clamp(-1.0, 1.0))
        grids.append((picked, torch.stack([azimuth / np.pi, -elevation / (np.pi / 2)], -1)))
    out = torch.empty(len(heading), size, size, 2)
    for picked, grid in grids:
        out[picked] = grid
    return out


def perspective_crop(
    panoramas: np.ndarray | torch.Tensor,
    heading: np.ndarray | float,
    fov: np.ndarray | float = 90.0,
    pitch: np.ndarray | float = 0.0,
    size: int = 64,
    pano_heading: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Pinhole views out of equirectangular panoramas (bilinear, azimuth wraps around).

    panoramas: uint8 [B, H, 2H, 3] (or one [H, 2H, 3]); heading, fov, pitch, pano_heading:
    degrees, scalars or [B] -> uint8 [B, size, size, 3] (or [size, size, 3] for one).
    """
    pixels = torch.from_numpy(np.array(panoramas, dtype=np.uint8))  # a writable copy
    single = pixels.ndim == 3
    if single:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"panoramas must be uint8 [B, H, 2H, 3], got {tuple(pixels.shape)}")
    b, h, w, _ = pixels.shape
    check_panorama_size(w, h, "panorama array")

    def per_image(value) -> torch.Tensor:
        return torch.as_tensor(np.broadcast_to(np.asarray(value, np.float32), (b,)).copy())

    grid = crop_grid(per_image(heading), per_image(fov), per_image(pitch),
                     per_image(pano_heading), size)  # fmt: skip
    # One wrapped column on each side, so samples across the ±180° seam interpolate.
    image = pixels.permute(0, 3, 1, 2).float()
    image = torch.cat([image[..., -1:], image, image[..., :1]], dim=3)
    grid[..., 0] *= w / (w + 2)
    crops = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = crops.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[0] if single else out


def fixed_crops(panorama: np.ndarray, pano_heading: float, count: int, size: int,
                fov: float = 90.0) -> np.ndarray:  # fmt: skip
    """``count`` level crops at evenly spaced compass headings (0°, 360°/count, ...):
    uint8 [count, size, size, 3]; how a panorama is embedded outside training."""
    headings = np.arange(count) * (360.0 / count)
    stack = np.repeat(np.asarray(panorama)[None], count, axis=0)
    return perspective_crop(stack, headings, fov, 0.0, size, pano_heading)
