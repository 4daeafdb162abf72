"""Quick validation during training: R@1 within 100 m on the val split.

Queries (val ground images, at most ``train.val_max_queries``) are matched against
(a) the north-up aerial tiles of the region's level-Lc cells (aerial-only), (b) the
prototypes (prototype-only, answer = the prototype cell's centre) and (c) the hybrid
code ``aerial + 1.0 * parent prototype`` (uncalibrated kappa = 1). Tiles are cropped
once and kept in memory for the whole run. With a frozen trunk (``cache.enabled``) the
trunk outputs of queries and tiles are computed once too (``ValSet.freeze_trunk``), so a
validation costs only the trainable top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from geocells.data.aerial import OutOfCoverageError
from geocells.data.images import ImageLoadError, load_image
from geocells.geo import cell_level, cell_parent, cell_to_latlng, haversine_m, latlng_to_cell
from geocells.models.geomodel import GeoModel

logger = logging.getLogger(__name__)

RADIUS_M = 100.0


@dataclass
class ValSet:
    """Val query pixels and positions, plus the aerial gallery of level-Lc cells."""

    queries: np.ndarray  # uint8 [Q, Sg, Sg, 3]
    lat: np.ndarray
    lon: np.ndarray
    cells: np.ndarray  # uint64 [N] gallery cells (level Lc)
    tiles: np.ndarray  # uint8 [N, Sa, Sa, 3]
    query_trunk: torch.Tensor | None = None  # float16 [Q, *trunk]: frozen-trunk outputs
    tile_trunk: torch.Tensor | None = None  # float16 [N, *trunk]

    def freeze_trunk(self, model: GeoModel, device, bf16: bool, batch_size: int = 128) -> None:
        """Compute the frozen trunks' outputs of queries and tiles once (float16)."""
        was_training = model.training
        model.eval()
        try:
            self.query_trunk = _trunk(model.ground, self.queries, device, bf16, batch_size)
            self.tile_trunk = _trunk(model.aerial, self.tiles, device, bf16, batch_size)
        finally:
            model.train(was_training)

    @classmethod
    def build(cls, dataset, model: GeoModel, max_queries: int, max_cells: int, seed: int):
        """Load val queries and crop the gallery tiles; None when there are no val images."""
        from geocells.geo.cover import region_cells

        manifest = dataset.manifest.split("val")
        if len(manifest) == 0:
            logger.warning("dataset %s has no val images: no validation", dataset.root)
            return None
        rng = np.random.default_rng(seed)
        take = np.sort(rng.permutation(len(manifest))[:max_queries])
        queries, keep = [], []
        for i in take:
            try:
                image = load_image(manifest.path[i])
            except ImageLoadError as err:
                logger.warning("val: skipping %s", err)
                continue
            queries.append(model.ground.resize(image))
            keep.append(i)
        cells = region_cells(dataset.region, model.cell_level)
        if len(cells) > max_cells:
            true_cells = latlng_to_cell(manifest.lat[keep], manifest.lon[keep], model.cell_level)
            others = rng.choice(cells, size=max_cells, replace=False)
            cells = np.unique(np.concatenate([true_cells, others]))
            logger.info(
                "val gallery: %d of the region's level-%d cells", len(cells), model.cell_level
            )
        tiles, kept_cells = _crop_tiles(dataset.aerial, cells, model)
        return cls(np.stack(queries), manifest.lat[keep], manifest.lon[keep], kept_cells, tiles)


def _crop_tiles(aerial, cells: np.ndarray, model: GeoModel) -> tuple[np.ndarray, np.ndarray]:
    """North-up tiles centred on each cell; cells without imagery are left out."""
    lat, lon = cell_to_latlng(cells)
    tiles, kept = [], []
    for k in range(len(cells)):
        try:
            tiles.append(aerial.crop(lat[k], lon[k], model.aerial_tile_m, model.aerial_px))
            kept.append(k)
        except OutOfCoverageError:
            continue
    if len(kept) < len(cells):
        logger.info("val gallery: %d cells without aerial imagery left out", len(cells) - len(kept))
    return np.stack(tiles), cells[kept]


@torch.no_grad()
def _trunk(encoder, pixels: np.ndarray, device, bf16: bool, batch_size: int) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float16 frozen-trunk outputs [N, *trunk] (on the CPU)."""
    chunks = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(pixels[start : start + batch_size]).to(device)
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
            chunks.append(encoder.forward_trunk(encoder.normalize(batch)).float().half().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def _embed(encoder, pixels: np.ndarray, device, batch_size: int = 128, trunk=None) -> torch.Tensor:
    """uint8 [N, S, S, 3] (or their trunk outputs) -> [N, D] embeddings (eval mode)."""
    chunks = []
    for start in range(0, len(pixels), batch_size):
        if trunk is not None:
            part = trunk[start : start + batch_size].to(device).float()
            chunks.append(encoder.forward_from_trunk(part).float())
            continue
        batch = torch.from_numpy(pixels[start : start + batch_size]).to(device)
        chunks.append(encoder(encoder.normalize(batch)).float())
    return torch.cat(chunks)


def recall_at_100m(pred_lat, pred_lon, lat, lon) -> float:
    """Fraction of predictions within 100 m of the truth."""
    return float(np.mean(haversine_m(pred_lat, pred_lon, lat, lon) <= RADIUS_M))


def _median_rank(similarity: torch.Tensor, val: ValSet) -> float:
    """Median 1-based rank of each query's own level-Lc cell in the gallery (NaN if absent)."""
    true_cells = latlng_to_cell(val.lat, val.lon, int(cell_level(val.cells[:1])[0]))
    columns = np.searchsorted(val.cells, true_cells).clip(0, len(val.cells) - 1)
    present = val.cells[columns] == true_cells
    if not present.any():
        return float("nan")
    rows = torch.from_numpy(np.flatnonzero(present))
    own = similarity[rows, torch.from_numpy(columns[present])]
    ranks = (similarity[rows] > own[:, None]).sum(dim=1) + 1
    return float(ranks.float().median())


@torch.no_grad()
def validate(model: GeoModel, val: ValSet, device) -> dict[str, float]:
    """R@1 within 100 m for aerial-only, prototype-only and hybrid (kappa = 1) retrieval."""
    was_training = model.training
    model.eval()
    try:
        queries = _embed(model.ground, val.queries, device, trunk=val.query_trunk)  # [Q, D]
        gallery = _embed(model.aerial, val.tiles, device, trunk=val.tile_trunk)  # [N, D]
        prototypes = model.prototypes.normalized().to(device)  # [P, D]
    finally:
        model.train(was_training)
    table = model.prototypes
    parent_rows, found = table.find_rows(cell_parent(val.cells, table.level))
    parent = prototypes[torch.from_numpy(parent_rows).to(device)]
    parent[torch.from_numpy(~found).to(device)] = 0.0
    aerial_sim = queries @ gallery.T  # [Q, N]
    hybrid_sim = aerial_sim + queries @ parent.T
    cell_lat, cell_lon = cell_to_latlng(val.cells)
    proto_lat, proto_lon = cell_to_latlng(table.cells)
    best_aerial = aerial_sim.argmax(dim=1).cpu().numpy()
    best_hybrid = hybrid_sim.argmax(dim=1).cpu().numpy()
    best_proto = (queries @ prototypes.T).argmax(dim=1).cpu().numpy()
    true_rows, _ = table.find_rows(latlng_to_cell(val.lat, val.lon, table.level))
    return {
        "val_aerial_median_rank": _median_rank(aerial_sim, val),
        "val_aerial_r100": recall_at_100m(
            cell_lat[best_aerial], cell_lon[best_aerial], val.lat, val.lon
        ),
        "val_prototype_r100": recall_at_100m(
            proto_lat[best_proto], proto_lon[best_proto], val.lat, val.lon
        ),
        "val_hybrid_r100": recall_at_100m(
            cell_lat[best_hybrid], cell_lon[best_hybrid], val.lat, val.lon
        ),
        "val_prototype_cell_acc": float(np.mean(best_proto == true_rows)),
        "val_queries": float(len(val.lat)),
        "val_gallery": float(len(val.cells)),
    }
