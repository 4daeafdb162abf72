"""Cached frozen-trunk features: the training views' trunk outputs, computed once.

With ``model.trainable_blocks >= 0`` the backbone's trunk (everything before the last
trainable blocks, ``geocells.models.units``) is frozen, so its output for a given input
never changes. ``build`` draws fixed training views from ``(train.seed)`` and stores their
trunk outputs as float16 memmaps in ``cache.folder`` (default ``RUN/features``):

``ground.f16`` [G, K, *shape] (K views per train image: panorama crops at headings spread
over 360°, FOV/pitch drawn as training draws them, colour-jittered), ``aerial.f16``
[G, A, *shape] (tiles at each image's position, random rotation and shift), ``extra.f16``
[E, *shape] (aerial-only tiles; cells and rows in ``extra.npz``), ``ok.npz`` (views that
exist) and ``meta.json`` (the key over weights, data, model and draws; progress). The build
resumes at its last whole chunk; another key rebuilds. Training reads the memmaps
(``geocells.train.batches``), so memory is bounded by the page cache (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geocells.data.aerial import OutOfCoverageError
from geocells.data.images import ImageLoadError, load_image
from geocells.data.panorama import load_panorama, perspective_crop
from geocells.geo import cell_children, cell_to_latlng, latlng_to_cell
from geocells.io import dataset_fingerprint, sha256_file, write_json
from geocells.models.weights import resolve_weights
from geocells.train.sampling import _shifted

logger = logging.getLogger(__name__)

FORMAT = "geocells-trunk-cache-v1"
PARTS = ("ground", "aerial", "extra")


@dataclass
class TrunkCache:
    """An opened, complete cache (read-only memmaps)."""

    folder: Path
    ground: np.ndarray  # float16 [G, K, *shape]
    aerial: np.ndarray  # float16 [G, A, *shape]
    extra: np.ndarray  # float16 [E, *shape]
    ground_ok: np.ndarray  # bool [G, K]
    aerial_ok: np.ndarray  # bool [G, A]
    extra_ok: np.ndarray  # bool [E]
    extra_cells: np.ndarray  # uint64 [E] level-Lc cells of the aerial-only tiles
    extra_rows: np.ndarray  # int64 [E] their prototype rows

    @classmethod
    def open(cls, folder: Path) -> TrunkCache:
        """Open a finished cache in ``folder``."""
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {
            part: np.memmap(
                folder / f"{part}.f16", np.float16, "r", shape=tuple(meta["shapes"][part])
            )
            for part in PARTS
        }
        ok = np.load(folder / "ok.npz")
        extra = np.load(folder / "extra.npz")
        return cls(
            folder,
            arrays["ground"],
            arrays["aerial"],
            arrays["extra"],
            ok["ground"],
            ok["aerial"],
            ok["extra"],
            extra["cells"],
            extra["rows"],
        )


def cache_folder(cfg, run: Path) -> Path:
    """``cache.folder`` or ``RUN/features``."""
    return Path(cfg.cache.folder).expanduser() if cfg.cache.folder else Path(run) / "features"


def cache_key(cfg, dataset, pool) -> str:
    """What the cached features depend on: weights, data, train images, model, draws."""
    model, data, cache = cfg.model, cfg.data, cfg.cache
    weights = sha256_file(resolve_weights(model.pretrained)) if model.pretrained else "random"
    images = hashlib.sha256()
    for array in (pool.lat, pool.lon, pool.heading):
        images.update(np.ascontiguousarray(array).tobytes())
    images.update("\0".join(map(str, pool.paths)).encode())
    parts = {
        "format": FORMAT,
        "weights": weights,
        "dataset": dataset_fingerprint(dataset.root),
        "images": images.hexdigest(),
        "model": {
            k: getattr(model, k)
            for k in (
                "backbone",
                "backbone_kwargs",
                "feature_stage",
                "trainable_blocks",
                "input_size",
                "aerial_input_size",
                "mean",
                "std",
            )
        },
        "data": {
            k: getattr(data, k)
            for k in (
                "cell_level",
                "prototype_level",
                "aerial_tile_m",
                "max_shift_m",
                "rotate",
                "color_jitter",
                "pano_fov_deg",
                "pano_pitch_deg",
            )
        },
        # the chunk size too: ground views are jittered per chunk
        "views": [
            cache.ground_views,
            cache.aerial_views,
            cache.aerial_only_tiles,
            cache.batch_size,
        ],
        "seed": cfg.train.seed,
        "bf16": cfg.train.bf16,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()


@dataclass
class _Draws:
    """The fixed random views: ground crops, aerial tiles, aerial-only tiles."""

    crop_heading: np.ndarray  # [G, K] compass degrees
    crop_fov: np.ndarray  # [G, K]
    crop_pitch: np.ndarray  # [G, K]
    aerial_lat: np.ndarray  # [G, A]
    aerial_lon: np.ndarray
    aerial_rotation: np.ndarray  # [G, A]
    extra_lat: np.ndarray  # [E]
    extra_lon: np.ndarray
    extra_rotation: np.ndarray
    extra_cells: np.ndarray  # uint64 [E]
    extra_rows: np.ndarray  # int64 [E]


def _draw(cfg, pool, table) -> _Draws:
    """Every random choice of the cache, from ``train.seed`` alone."""
    rng = np.random.default_rng([cfg.train.seed, 7_919])
    data, k, a, e = (
        cfg.data,
        cfg.cache.ground_views,
        cfg.cache.aerial_views,
        cfg.cache.aerial_only_tiles,
    )
    g = len(pool)
    start = rng.random((g, 1)) * 360.0
    heading = (start + np.arange(k)[None] * (360.0 / k)) % 360.0
    fov = np.round(rng.uniform(*data.pano_fov_deg, (g, k)))
    pitch = rng.uniform(-data.pano_pitch_deg, data.pano_pitch_deg, (g, k))
    lat, lon = _shifted(np.repeat(pool.lat, a), np.repeat(pool.lon, a), data.max_shift_m, rng)
    rotation = rng.random(g * a) * 360.0 if data.rotate else np.zeros(g * a)
    rows = rng.choice(pool.region_rows, size=e) if e else np.zeros(0, np.int64)
    children = cell_children(table.cells[rows], data.cell_level)
    picked = children[np.arange(e), rng.integers(children.shape[1], size=e)] if e else rows
    extra_lat, extra_lon = _shifted(
        *cell_to_latlng(picked.astype(np.uint64)), data.max_shift_m, rng
    )
    found_rows, found = table.find_rows(latlng_to_cell(extra_lat, extra_lon, table.level))
    return _Draws(
        heading,
        fov,
        pitch,
        lat.reshape(g, a),
        lon.reshape(g, a),
        rotation.reshape(g, a),
        extra_lat,
        extra_lon,
        rng.random(e) * 360.0 if data.rotate else np.zeros(e),
        latlng_to_cell(extra_lat, extra_lon, data.cell_level),
        np.where(found, found_rows, rows),
    )


def _trunk_shape(encoder) -> tuple[int, ...]:
    size = encoder.input_size
    with torch.no_grad():
        return tuple(encoder.forward_trunk(torch.zeros(1, 3, size, size)).shape[1:])


class _Builder:
    """Fills the memmaps chunk by chunk; ``meta.json`` records the progress."""

    def __init__(self, folder: Path, cfg, model, dataset, pool, device) -> None:
        self.folder, self.cfg, self.model, self.dataset, self.pool = (
            folder,
            cfg,
            model,
            dataset,
            pool,
        )
        self.device = device

    def trunk(self, encoder, pixels: list[np.ndarray]) -> np.ndarray:
        """uint8 images -> float16 trunk outputs [N, *shape] (eval mode, bf16 if set)."""
        batch = torch.from_numpy(np.stack(pixels)).to(self.device)
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=self.cfg.train.bf16)
        with autocast, torch.no_grad():
            out = encoder.forward_trunk(encoder.normalize(batch))
        return out.float().cpu().numpy().astype(np.float16)

    def ground_views(self, indices: range, draws: _Draws) -> tuple[list, list]:
        """The ground views of train images ``indices``: (uint8 [S, S, 3] list, (i, v) slots).

        Panoramas of one size are cropped in one ``grid_sample`` call and the chunk is
        jittered in one call (per-call overhead dominates these small images); the jitter
        generator is seeded by the chunk's start, so a resumed build draws the same.
        """
        from geocells.train.step import color_jitter

        pool, size, k = self.pool, self.model.ground.input_size, self.cfg.cache.ground_views
        panoramas: dict[tuple, list] = {}
        views, slots = [], []
        for i in indices:
            try:
                if pool.panorama[i]:
                    pano = load_panorama(pool.paths[i])
                    panoramas.setdefault(pano.shape, []).append((i, pano))
                    continue
                image = load_image(pool.paths[i]).resize((size, size), resample=2)
            except ImageLoadError as err:
                logger.warning("trunk cache: skipping ground image: %s", err)
                continue
            views += [np.asarray(image, np.uint8)] * k
            slots += [(i, v) for v in range(k)]
        for group in panoramas.values():
            rows = np.array([i for i, _ in group])
            stack = np.repeat(np.stack([pano for _, pano in group]), k, axis=0)
            crops = perspective_crop(stack, draws.crop_heading[rows].ravel(),
                                     draws.crop_fov[rows].ravel(), draws.crop_pitch[rows].ravel(),
                                     size, np.repeat(pool.heading[rows], k))  # fmt: skip
            views += list(crops)
            slots += [(i, v) for i in rows for v in range(k)]
        if not views:
            return [], []
        generator = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + indices.start)
        jittered = color_jitter(torch.from_numpy(np.stack(views)), self.cfg.data.color_jitter,
                                generator)  # fmt: skip
        return list(jittered.numpy()), slots

    def aerial_tile(self, lat: float, lon: float, rotation: float) -> np.ndarray | None:
        try:
            return self.dataset.aerial.crop(
                lat, lon, self.cfg.data.aerial_tile_m, self.model.aerial_px, rotation
            )
        except OutOfCoverageError:
            return None


def build(cfg, dataset, model, pool, run: Path, device, progress: bool = True) -> TrunkCache:
    """Build (or resume, or reuse) the trunk cache of this run; returns it opened."""
    folder = cache_folder(cfg, run)
    key = cache_key(cfg, dataset, pool)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("key") == key and meta.get("complete"):
        logger.info("trunk cache %s is up to date", folder)
        return TrunkCache.open(folder)
    draws = _draw(cfg, pool, model.prototypes)
    g, k, a = len(pool), cfg.cache.ground_views, cfg.cache.aerial_views
    shapes = {
        "ground": [g, k, *_trunk_shape(model.ground)],
        "aerial": [g, a, *_trunk_shape(model.aerial)],
        "extra": [len(draws.extra_lat), *_trunk_shape(model.aerial)],
    }
    gigabytes = sum(2 * float(np.prod(shape)) for shape in shapes.values()) / 1e9
    if gigabytes > cfg.cache.max_gb:
        raise ValueError(
            f"the trunk cache would take {gigabytes:.1f} GB (> cache.max_gb="
            f"{cfg.cache.max_gb:g}): lower cache.ground_views / cache.aerial_views or the "
            "input sizes, or raise cache.max_gb"
        )
    if meta.get("key") != key:
        if meta:
            logger.info(
                "trunk cache %s was made for other weights/data/settings: rebuilding", folder
            )
        folder.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            np.memmap(folder / f"{part}.f16", np.float16, "w+", shape=tuple(shapes[part])).flush()
        np.savez(
            folder / "ok.npz",
            ground=np.zeros((g, k), bool),
            aerial=np.zeros((g, a), bool),
            extra=np.zeros(len(draws.extra_lat), bool),
        )
        np.savez(folder / "extra.npz", cells=draws.extra_cells, rows=draws.extra_rows)
        meta = {
            "format": FORMAT,
            "key": key,
            "shapes": shapes,
            "done": dict.fromkeys(PARTS, 0),
            "complete": False,
            "gigabytes": round(gigabytes, 3),
        }
        write_json(meta_path, meta)
    logger.info(
        "trunk cache %s: %.2f GB, %d train images x (%d ground + %d aerial views), "
        "%d aerial-only tiles",
        folder,
        gigabytes,
        g,
        k,
        a,
        len(draws.extra_lat),
    )
    _fill(_Builder(folder, cfg, model, dataset, pool, device), meta, draws, progress)
    return TrunkCache.open(folder)


def _fill(builder: _Builder, meta: dict, draws: _Draws, progress: bool) -> None:
    """Compute every part from where ``meta['done']`` left off."""
    from tqdm import tqdm

    folder, cfg, model = builder.folder, builder.cfg, builder.model
    ok = dict(np.load(folder / "ok.npz"))
    was_training = model.training
    model.eval()
    try:
        for part in PARTS:
            shape = tuple(meta["shapes"][part])
            out = np.memmap(folder / f"{part}.f16", np.float16, "r+", shape=shape)
            bar = tqdm(
                total=shape[0],
                initial=meta["done"][part],
                disable=not progress,
                desc=f"trunk cache ({part})",
                unit="img",
            )
            for start in range(meta["done"][part], shape[0], cfg.cache.batch_size):
                stop = min(start + cfg.cache.batch_size, shape[0])
                _fill_chunk(builder, part, draws, start, stop, out, ok[part])
                out.flush()
                np.savez(folder / "ok.npz", **ok)
                meta["done"][part] = stop
                write_json(folder / "meta.json", meta)
                bar.update(stop - start)
            bar.close()
            del out
    finally:
        model.train(was_training)
    meta["complete"] = True
    write_json(folder / "meta.json", meta)


def _fill_chunk(
    builder: _Builder,
    part: str,
    draws: _Draws,
    start: int,
    stop: int,
    out: np.memmap,
    ok: np.ndarray,
) -> None:
    """Trunk outputs of items ``start:stop`` of one part into ``out`` (flags into ``ok``)."""
    model = builder.model
    pixels, slots = [], []
    if part == "ground":
        pixels, slots = builder.ground_views(range(start, stop), draws)
    for i in range(start, stop) if part != "ground" else ():
        if part == "aerial":
            for v in range(draws.aerial_lat.shape[1]):
                tile = builder.aerial_tile(
                    draws.aerial_lat[i, v], draws.aerial_lon[i, v], draws.aerial_rotation[i, v]
                )
                if tile is not None:
                    pixels.append(tile)
                    slots.append((i, v))
        else:
            tile = builder.aerial_tile(
                draws.extra_lat[i], draws.extra_lon[i], draws.extra_rotation[i]
            )
            if tile is not None:
                pixels.append(tile)
                slots.append((i,))
    if not pixels:
        return
    encoder = model.ground if part == "ground" else model.aerial
    features = builder.trunk(encoder, pixels)
    for slot, value in zip(slots, features, strict=True):
        out[slot] = value
        ok[slot] = True
