"""Quick validation during training: R@1 within 100 m on the val split.

Validation scores what the database serves. Queries (val ground images, at most
``train.val_max_queries``) are matched against the level-Lc cells of the region (all of
them, or ``train.val_max_cells`` including each query's own cell), coded as ``db.build``
codes them (``geocells.scoring.codes``: unit aerial rows, zero where there is no aerial
imagery, prototypes upsampled with the index's default method, float16): (a) aerial-only,
(b) prototype-only (answer = the prototype cell's centre) and (c) the hybrid
``aerial + 1.0 · proto`` (uncalibrated κ = 1, ``eval``'s ``hybrid_k1``), all through
``geocells.scoring.exact``. Tiles are cropped once and kept in memory for the whole run.
A gallery cell whose parent has no prototype is an error, as in ``db.build``.
With a frozen trunk (``cache.enabled``) the trunk outputs of queries and tiles are
computed once too (``ValSet.freeze_trunk``), so a validation costs only the trainable top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from geocells.data.aerial import crop_many
from geocells.data.images import ImageLoadError, load_image
from geocells.geo import cell_level, cell_to_latlng, haversine_m, latlng_to_cell
from geocells.models.geomodel import GeoModel
from geocells.scoring.codes import DEFAULT_UPSAMPLE, aerial_codes, cell_codes
from geocells.scoring.exact import exact_search, search_codes
from geocells.scoring.metrics import rank_summary, rank_within, recall_within
from geocells.scoring.upsample import upsample_prototypes

logger = logging.getLogger(__name__)

RADIUS_M = 100.0


@dataclass
class ValSet:
    """Val query pixels and positions, plus the aerial gallery of level-Lc cells."""

    queries: np.ndarray  # uint8 [Q, Sg, Sg, 3]
    lat: np.ndarray
    lon: np.ndarray
    cells: np.ndarray  # uint64 [N] gallery cells (level Lc), sorted
    tiles: np.ndarray  # uint8 [N, Sa, Sa, 3] (black where not covered)
    covered: np.ndarray  # bool [N]: the cell has aerial imagery
    upsample: str = DEFAULT_UPSAMPLE
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
        if not keep:
            logger.warning("dataset %s: no readable val image: no validation", dataset.root)
            return None
        cells = region_cells(dataset.region, model.cell_level)
        if len(cells) > max_cells:
            true_cells = latlng_to_cell(manifest.lat[keep], manifest.lon[keep], model.cell_level)
            others = rng.choice(cells, size=max_cells, replace=False)
            cells = np.unique(np.concatenate([true_cells, others]))
            logger.info(
                "val gallery: %d of the region's level-%d cells", len(cells), model.cell_level
            )
        # The database's missing-parent rule, checked before training starts.
        table = model.prototypes
        upsample_prototypes(cells, table.cells, np.zeros((len(table.cells), 1)), "parent")
        lat, lon = cell_to_latlng(cells)
        tiles, covered = crop_many(dataset.aerial, lat, lon, model.aerial_tile_m, model.aerial_px)
        if not covered.all():
            logger.info("val gallery: %d cells without aerial imagery", int((~covered).sum()))
        return cls(np.stack(queries), manifest.lat[keep], manifest.lon[keep], cells, tiles, covered)


def database_codes(model: GeoModel, val: ValSet) -> tuple[np.ndarray, np.ndarray]:
    """The gallery's ``(aerial, proto)`` codes, float16 ``[N, D]``, as ``db.build`` stores them."""
    aerial = aerial_codes(_encode(model.aerial, val.tiles, val.tile_trunk), val.covered)
    prototypes = model.prototypes.normalized().detach().cpu().numpy()
    return cell_codes(val.cells, aerial, model.prototypes.cells, prototypes, val.upsample)


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
def _encode(encoder, pixels: np.ndarray, trunk: torch.Tensor | None, batch_size: int = 128):
    """Embeddings [N, D] float32 of ``pixels`` (or, with a frozen trunk, of their cached
    trunk outputs: only the trainable top runs), eval mode."""
    if trunk is None:
        return encoder.encode(list(pixels))
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        chunks = [
            encoder.forward_from_trunk(trunk[start : start + batch_size].to(device).float())
            for start in range(0, len(trunk), batch_size)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(chunks).float().cpu().numpy()


def validate(model: GeoModel, val: ValSet, device=None) -> dict[str, float]:
    """R@1 within 100 m for aerial-only, prototype-only and hybrid (κ = 1) retrieval.

    ``device`` is unused (the encoders run where the model is); kept for callers.
    """
    queries = _encode(model.ground, val.queries, val.query_trunk)  # [Q, D]
    aerial, proto = database_codes(model, val)  # [N, D] each
    table = model.prototypes
    prototypes = table.normalized().detach().cpu().numpy()  # [P, D]
    cell_lat, cell_lon = cell_to_latlng(val.cells)
    proto_lat, proto_lon = cell_to_latlng(table.cells)
    _, best_aerial = search_codes(queries, aerial, top_k=1)
    _, best_hybrid = exact_search(queries, aerial=aerial, proto=proto, kappa=1.0, top_k=1)
    _, best_proto = search_codes(queries, prototypes, top_k=1)
    best_aerial, best_hybrid, best_proto = best_aerial[:, 0], best_hybrid[:, 0], best_proto[:, 0]
    true_rows, _ = table.find_rows(latlng_to_cell(val.lat, val.lon, table.level))

    def recall(rows: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> float:
        return recall_within(haversine_m(lat[rows], lon[rows], val.lat, val.lon), RADIUS_M)

    return {
        "val_aerial_median_rank": _median_rank(queries, aerial, val),
        "val_aerial_r100": recall(best_aerial, cell_lat, cell_lon),
        "val_prototype_r100": recall(best_proto, proto_lat, proto_lon),
        "val_hybrid_r100": recall(best_hybrid, cell_lat, cell_lon),
        "val_prototype_cell_acc": float(np.mean(best_proto == true_rows)),
        "val_queries": float(len(val.lat)),
        "val_gallery": float(len(val.cells)),
    }


def _median_rank(queries: np.ndarray, aerial: np.ndarray, val: ValSet) -> float:
    """Median 1-based aerial-only rank of each query's own level-Lc cell (NaN if none is in
    the gallery): ``rank_within`` with the own cell as the only item "within reach"."""
    level_cells = latlng_to_cell(val.lat, val.lon, int(cell_level(val.cells[:1])[0]))
    own = (val.cells[None, :] == level_cells[:, None]).astype(np.float64)  # [Q, N]
    scores = queries @ np.asarray(aerial, dtype=np.float32).T
    return rank_summary(rank_within(scores, 1.0 - own, radius_m=0.0))["median_rank"]
