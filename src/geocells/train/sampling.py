"""Training samples: batches of distinct level-Lc cells, aerial crops, aerial-only tiles.

Everything random about a batch (which images, crop rotations and shifts, which region
cells give the aerial-only tiles) is drawn in the main process from ``(seed, epoch)``,
so the plan of an epoch is a pure function of the config: a resumed run, any number of
DataLoader workers and every DDP rank see the same samples. Workers only read pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from geocells.data.aerial import OutOfCoverageError
from geocells.data.images import ImageLoadError, load_image
from geocells.data.panorama import is_panorama, load_panorama, perspective_crop
from geocells.geo import cell_children, cell_to_latlng, latlng_to_cell, local_m_to_latlng
from geocells.models.prototypes import PrototypeTable
from geocells.train.config import ExperimentConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainPool:
    """Train-split ground images and region cells that samples are drawn from."""

    paths: np.ndarray  # object [G] absolute image paths
    lat: np.ndarray  # float64 [G]
    lon: np.ndarray
    cells: np.ndarray  # uint64 [G] level-Lc cell of each image
    rows: np.ndarray  # int64 [G] prototype row of each image
    region_rows: np.ndarray  # int64 [R] prototype rows whose centre has aerial imagery
    panorama: np.ndarray  # bool [G] equirectangular panorama (fov = 360): train on crops
    heading: np.ndarray  # float64 [G] compass heading of a panorama's centre column

    @classmethod
    def build(cls, dataset, table: PrototypeTable, cfg: ExperimentConfig) -> TrainPool:
        """Train images inside the prototype table and rows usable for aerial-only tiles."""
        manifest = dataset.manifest.split("train")
        if len(manifest) == 0:
            raise ValueError(f"dataset {dataset.root} has no train images")
        lat, lon = manifest.lat, manifest.lon
        rows, found = table.find_rows(latlng_to_cell(lat, lon, table.level))
        if not found.all():
            logger.warning(
                "%d of %d train images lie outside the region's level-%d cells; not used",
                int((~found).sum()),
                len(found),
                table.level,
            )
        covered = dataset.aerial_coverage(table.cells)
        return cls(
            paths=manifest.path[found],
            lat=lat[found],
            lon=lon[found],
            cells=latlng_to_cell(lat[found], lon[found], cfg.data.cell_level),
            rows=rows[found],
            region_rows=np.flatnonzero(covered).astype(np.int64),
            panorama=is_panorama(manifest.fov[found]),
            heading=np.nan_to_num(manifest.heading[found], nan=0.0),
        )

    def __len__(self) -> int:
        return len(self.paths)


def distinct_cell_batches(cells: np.ndarray, batch_size: int, rng: np.random.Generator) -> list:
    """Shuffle indices into full batches whose cells are all different (rest dropped)."""
    batches: list[np.ndarray] = []
    carry: list[int] = []
    current: list[int] = []
    seen: set[int] = set()
    for index in rng.permutation(len(cells)):
        for waiting in list(carry):
            if int(cells[waiting]) not in seen and len(current) < batch_size:
                carry.remove(waiting)
                current.append(waiting)
                seen.add(int(cells[waiting]))
        if int(cells[index]) in seen:
            carry.append(int(index))
        else:
            current.append(int(index))
            seen.add(int(cells[index]))
        if len(current) == batch_size:
            batches.append(np.array(current, dtype=np.int64))
            current, seen = [], set()
    return batches


def _shifted(lat, lon, max_shift_m: float, rng: np.random.Generator):
    """Positions moved by a uniform random offset within a disc of ``max_shift_m``."""
    radius = max_shift_m * np.sqrt(rng.random(len(lat)))
    angle = rng.random(len(lat)) * 2 * np.pi
    return local_m_to_latlng(radius * np.sin(angle), radius * np.cos(angle), lat, lon)


def plan_epoch(pool: TrainPool, table: PrototypeTable, cfg: ExperimentConfig, epoch: int) -> list:
    """Every batch of one epoch as a dict of numpy arrays (see ``BatchLoader``)."""
    rng = np.random.default_rng([cfg.train.seed, epoch])
    data = cfg.data
    plan = []
    for indices in distinct_cell_batches(pool.cells, cfg.train.batch_size, rng):
        aerial_lat, aerial_lon = _shifted(
            pool.lat[indices], pool.lon[indices], data.max_shift_m, rng
        )
        extra_rows = rng.choice(pool.region_rows, size=data.aerial_only_per_batch)
        children = cell_children(table.cells[extra_rows], data.cell_level)
        picked = children[
            np.arange(len(extra_rows)), rng.integers(children.shape[1], size=len(extra_rows))
        ]
        extra_lat, extra_lon = _shifted(*cell_to_latlng(picked), data.max_shift_m, rng)
        found_rows, found = table.find_rows(latlng_to_cell(extra_lat, extra_lon, table.level))
        size = len(indices) + len(extra_rows)
        rotation = rng.random(size) * 360.0 if data.rotate else np.zeros(size)
        batch = {
            "ground": indices,
            "aerial_lat": np.concatenate([aerial_lat, extra_lat]),
            "aerial_lon": np.concatenate([aerial_lon, extra_lon]),
            "rotation": rotation,
            "extra_rows": np.where(found, found_rows, extra_rows),
        }
        if pool.panorama.any():  # perspective-only datasets keep their random stream
            batch.update(_crop_params(len(indices), data, rng))
        plan.append(batch)
    return plan


def _crop_params(n: int, data, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random perspective crops of panoramas: compass heading uniform in 0-360°, field of
    view uniform in ``data.pano_fov_deg``, pitch uniform in ±``data.pano_pitch_deg``."""
    low, high = data.pano_fov_deg
    return {
        "crop_heading": rng.random(n) * 360.0,
        # Whole degrees: crops of one FOV share a cached ray grid.
        "crop_fov": np.round(rng.uniform(low, high, n)),
        "crop_pitch": rng.uniform(-data.pano_pitch_deg, data.pano_pitch_deg, n),
    }


class BatchLoader(torch.utils.data.Dataset):
    """Map-style dataset over planned batches; item ``i`` is the pixels of batch ``i``.

    Returns a dict: ``ground`` uint8 [B, Sg, Sg, 3], ``aerial`` uint8 [B + E, Sa, Sa, 3]
    (B paired crops, then E aerial-only tiles), ``ground_cells`` / ``aerial_cells`` int64
    (level-Lc ids as int64 bits), ``ground_rows`` / ``aerial_rows`` int64 prototype rows,
    ``skipped`` (samples dropped for unreadable images or missing imagery).
    """

    def __init__(self, pool: TrainPool, plan: list, dataset, sizes: tuple[int, int], cfg) -> None:
        self.pool, self.plan, self.dataset = pool, plan, dataset
        self.ground_size, self.aerial_size = sizes
        self.tile_m = cfg.data.aerial_tile_m
        self.cell_level = cfg.data.cell_level

    def __len__(self) -> int:
        return len(self.plan)

    def _ground(self, index: int, spec: dict, k: int) -> np.ndarray | None:
        """The ground image of sample ``k`` of a batch: resized, or a random perspective
        crop when it is a panorama."""
        path = self.pool.paths[index]
        try:
            if self.pool.panorama[index]:
                return perspective_crop(
                    load_panorama(path), spec["crop_heading"][k], spec["crop_fov"][k],
                    spec["crop_pitch"][k], self.ground_size, self.pool.heading[index],
                )  # fmt: skip
            image = load_image(path)
        except ImageLoadError as err:
            logger.warning("skipping ground image: %s", err)
            return None
        size = (self.ground_size, self.ground_size)
        return np.asarray(image.resize(size, resample=2), dtype=np.uint8)  # 2 = bilinear

    def _aerial(self, lat: float, lon: float, rotation: float) -> np.ndarray | None:
        try:
            return self.dataset.aerial.crop(lat, lon, self.tile_m, self.aerial_size, rotation)
        except OutOfCoverageError as err:  # expected near the region's edge; counted as skipped
            logger.debug("skipping aerial crop: %s", err)
            return None

    def __getitem__(self, i: int) -> dict:
        spec = self.plan[i]
        ground, aerial, ground_ids, aerial_ids = [], [], [], []
        n_ground = len(spec["ground"])
        for k in range(len(spec["aerial_lat"])):
            crop = self._aerial(spec["aerial_lat"][k], spec["aerial_lon"][k], spec["rotation"][k])
            if k < n_ground:
                index = int(spec["ground"][k])
                image = self._ground(index, spec, k) if crop is not None else None
                if image is None or crop is None:
                    continue
                ground.append(image)
                ground_ids.append(index)
            elif crop is None:
                continue
            aerial.append(crop)
            aerial_ids.append(k)
        return self._collate(spec, ground, aerial, ground_ids, aerial_ids)

    def _collate(self, spec, ground, aerial, ground_ids, aerial_ids) -> dict:
        pool = self.pool
        ground_ids = np.array(ground_ids, dtype=np.int64)
        aerial_ids = np.array(aerial_ids, dtype=np.int64)
        extra = aerial_ids[aerial_ids >= len(spec["ground"])]
        extra_cells = latlng_to_cell(
            spec["aerial_lat"][extra], spec["aerial_lon"][extra], self.cell_level
        )
        extra_rows = spec["extra_rows"][extra - len(spec["ground"])]
        as_int64 = lambda cells: torch.from_numpy(np.asarray(cells, np.uint64).view(np.int64))  # noqa: E731
        return {
            "ground": torch.from_numpy(np.stack(ground)) if ground else torch.empty(0),
            "aerial": torch.from_numpy(np.stack(aerial)) if aerial else torch.empty(0),
            "ground_cells": as_int64(pool.cells[ground_ids]),
            "aerial_cells": as_int64(np.concatenate([pool.cells[ground_ids], extra_cells])),
            "ground_rows": torch.from_numpy(pool.rows[ground_ids]),
            "aerial_rows": torch.from_numpy(np.concatenate([pool.rows[ground_ids], extra_rows])),
            "skipped": len(spec["aerial_lat"]) - len(aerial),
        }
