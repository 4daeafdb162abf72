"""``run(cfg, out)``: write a complete synthetic ``dataset/`` (region, world, aerial, ground).

Stages skip finished work (a resumed run is byte-identical to an uninterrupted one) and
run in ``cfg.workers`` processes; every output is a pure function of the config.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from geocells.config import config_to_dict
from geocells.io import atomic_write
from geocells.outputs import OutputFolder, OutputKind, stage_output
from geocells.synth.capture import Capture, campaign_capture, sample_capture
from geocells.synth.config import SynthConfig
from geocells.synth.coverage import SPLIT_IDS, capture_positions, region_square
from geocells.synth.world import World

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
AERIAL_FILE = "aerial/orthophoto.tif"
MANIFEST_FILE = "ground/manifest.parquet"
BATCH = 16
DATASET_ENTRIES = ("world.json", "region.geojson", "ground", "aerial")
TRAIN_CAPTURES = ("perspective", "panorama")
# --overwrite clears these names (and the ``.part`` temporaries older geocells left when
# killed; ``atomic_write``'s own are recognised by OutputKind), nothing else.
SYNTH_OUTPUT = OutputKind(
    stage="synth",
    known=(*DATASET_ENTRIES, "world.json.part", "region.geojson.part"),
    signature=("world.json",),
)

_worker_state: dict = {}


def world_record(cfg: SynthConfig) -> dict:
    """The content of ``world.json``: format, seed and the full resolved config."""
    return {"format_version": FORMAT_VERSION, "generator": "geocells.synth", "seed": cfg.seed,
            "config": config_to_dict(cfg)}  # fmt: skip


def _world_check(record: str):
    """``stage_output``'s check: ``out`` holds this world (resumed) or nothing; a different
    dataset is refused (``--overwrite`` replaces it). A dataset is never skipped as a
    whole: its parts are (``_write_dataset``)."""

    def check(out: Path) -> bool:
        world_file = out / "world.json"
        if world_file.is_file() and world_file.read_text() == record:
            return False
        # stage_output has refused foreign files already: what is here is a dataset's.
        if any((out / name).exists() for name in DATASET_ENTRIES):
            raise ValueError(
                f"{out} is not empty and holds a different dataset (world.json differs or is "
                "missing); pass --overwrite to replace it or choose another --out"
            )
        return False

    return check


def write_region(world: World, out: OutputFolder) -> Path:
    """``region.geojson`` in ``out``: the region square as a WGS84 polygon (edges densified
    so they follow the square)."""
    xmin, ymin, xmax, ymax = region_square(world)
    t = np.linspace(0.0, 1.0, 9)[:-1]
    xs = np.concatenate(
        [xmin + (xmax - xmin) * t, np.full(8, xmax), xmax - (xmax - xmin) * t, np.full(8, xmin)]
    )
    ys = np.concatenate(
        [np.full(8, ymin), ymin + (ymax - ymin) * t, np.full(8, ymax), ymax - (ymax - ymin) * t]
    )
    lat, lon = world.to_latlon(xs, ys)
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat)]
    ring.append(ring[0])
    geojson = {"type": "Feature", "properties": {"name": "synthetic"},
               "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip
    return out.write_text("region.geojson", json.dumps(geojson) + "\n")


def _init_worker(cfg_dict: dict) -> None:
    from geocells.config import resolve_config

    cfg = resolve_config(SynthConfig, cfg_dict)
    # Reuse the parent's world (and its tile cache) when forked from ``run``.
    parent = _worker_state.get("parent")
    _worker_state["world"] = parent if parent is not None and parent.cfg == cfg else World(cfg)


def _render_aerial_rows(args) -> tuple[int, np.ndarray]:
    from geocells.synth.aerial import AerialRenderer

    col0, row0, width, height, capture = args
    world = _worker_state["world"]
    renderer = AerialRenderer(world, capture, world.cfg.gsd_m)
    size = world.cfg.aerial_chunk_px
    parts = [
        renderer.render(c, row0, min(size, col0 + width - c), height)
        for c in range(col0, col0 + width, size)
    ]
    return row0, np.concatenate(parts, axis=1)


def aerial_grid(world: World) -> tuple[int, int, int, int]:
    """Global pixel window (col0, row0, width, height) of the orthophoto file."""
    cfg, gsd = world.cfg, world.cfg.gsd_m
    xmin, ymin, xmax, ymax = region_square(world)
    col0 = int(np.floor((xmin - cfg.margin_m) / gsd))
    row0 = int(np.floor(-(ymax + cfg.margin_m) / gsd))
    col1 = int(np.ceil((xmax + cfg.margin_m) / gsd))
    row1 = int(np.ceil(-(ymin - cfg.margin_m) / gsd))
    return col0, row0, col1 - col0, row1 - row0


def write_aerial(world: World, out: OutputFolder, pool, progress: bool = True) -> Path:
    """Render the orthophoto and save it in ``out`` as a Cloud-Optimized GeoTIFF (JPEG,
    overviews)."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import Affine

    cfg, gsd = world.cfg, world.cfg.gsd_m
    col0, row0, width, height = aerial_grid(world)
    capture = campaign_capture(cfg.aerial_campaign, cfg.seed)
    path = out.path / AERIAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".strips.tif")
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8",
        "crs": world.crs, "transform": Affine(gsd, 0.0, col0 * gsd, 0.0, -gsd, -row0 * gsd),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "photometric": "RGB",
    }  # fmt: skip
    size = cfg.aerial_chunk_px
    tasks = [
        (col0, r, width, min(size, row0 + height - r), capture)
        for r in range(row0, row0 + height, size)
    ]
    with rasterio.open(tmp, "w", **profile) as dst:
        for r, strip in tqdm(
            pool.map(_render_aerial_rows, tasks),
            total=len(tasks),
            desc="aerial",
            unit="strip",
            disable=None if progress else True,  # None: off unless stderr is a terminal
        ):
            window = rasterio.windows.Window(0, r - row0, width, strip.shape[0])
            dst.write(np.moveaxis(strip, -1, 0), window=window)
    with out.file(AERIAL_FILE) as part:
        rio_copy(
            tmp, part, driver="COG", COMPRESS="JPEG", QUALITY=str(cfg.jpeg_quality),
            BLOCKSIZE="512", OVERVIEWS="AUTO", RESAMPLING="AVERAGE",
        )  # fmt: skip
    tmp.unlink()
    return path


def _render_ground_batch(args) -> int:
    from PIL import Image

    from geocells.synth.street import StreetRenderer

    paths, x, y, heading, captures, panorama = args
    world = _worker_state["world"]
    cfg = world.cfg
    key = "panorama" if panorama else "street"
    renderer = _worker_state.get(key)
    if renderer is None:
        size = cfg.panorama_height if panorama else cfg.image_size
        renderer = StreetRenderer(
            world, size, cfg.fov_deg, cfg.camera_height_m, cfg.max_view_m, panorama=panorama
        )
        _worker_state[key] = renderer
    images = renderer.render(x, y, heading, captures)
    for path, image in zip(paths, images):
        with atomic_write(path) as part:
            Image.fromarray(image).save(part, format="JPEG", quality=cfg.jpeg_quality)
    return len(paths)


def plan_ground(world: World, progress: bool = True) -> dict[str, list | np.ndarray]:
    """Every ground capture: id, relative path, position, heading, conditions, split."""
    cfg = world.cfg
    positions = capture_positions(world, progress)
    plan: dict[str, list] = {
        k: []
        for k in ("image_id", "path", "x", "y", "heading", "fov", "capture", "captured_at", "split")
    }
    for split, pos in positions.items():
        campaign = cfg.train_campaign if split == "train" else cfg.test_campaign
        panorama = split == "train" and cfg.train_capture == "panorama"
        plan["fov"].extend([360.0 if panorama else cfg.fov_deg] * len(pos.x))
        rng = np.random.default_rng([cfg.seed, 701, SPLIT_IDS[split]])
        for i in range(len(pos.x)):
            capture = sample_capture(campaign, rng)
            minute = int(rng.integers(9 * 60, 17 * 60))
            image_id = f"{split}-{i:06d}"
            plan["image_id"].append(image_id)
            plan["path"].append(f"images/{image_id}.jpg")
            plan["capture"].append(capture)
            plan["captured_at"].append(f"{campaign.date}T{minute // 60:02d}:{minute % 60:02d}:00Z")
            plan["split"].append(split)
        plan["x"].extend(pos.x.tolist())
        plan["y"].extend(pos.y.tolist())
        plan["heading"].extend(np.round(pos.heading, 3).tolist())
    return plan


def write_ground(world: World, ground_dir: Path, plan: dict, pool, progress: bool = True) -> None:
    """Render the ground images that are not on disk yet (spatially batched)."""
    (ground_dir / "images").mkdir(parents=True, exist_ok=True)
    x, y = np.asarray(plan["x"]), np.asarray(plan["y"])
    todo = [i for i, p in enumerate(plan["path"]) if not (ground_dir / p).is_file()]
    if not todo:
        return
    # Neighbouring views share world lookups, so batch them by position.
    # Panoramas and perspective views are rendered by different cameras: never mixed.
    panorama = np.asarray(plan["fov"]) == 360.0
    todo = sorted(
        todo, key=lambda i: (bool(panorama[i]), int(x[i] // 400.0), int(y[i] // 400.0), i)
    )
    tasks = []
    start = 0
    while start < len(todo):
        kind = bool(panorama[todo[start]])
        rows = [i for i in todo[start : start + BATCH] if bool(panorama[i]) == kind]
        start += len(rows)
        caps: list[Capture] = [plan["capture"][i] for i in rows]
        tasks.append(([str(ground_dir / plan["path"][i]) for i in rows], x[rows], y[rows],
                      np.asarray(plan["heading"])[rows], caps, kind))  # fmt: skip
    with tqdm(
        total=len(todo), desc="ground", unit="img", disable=None if progress else True
    ) as bar:
        for done in pool.map(_render_ground_batch, tasks):
            bar.update(done)


def write_manifest(world: World, out: OutputFolder, plan: dict) -> Path:
    """``ground/manifest.parquet`` in ``out``: the ground manifest, paths relative to it."""
    from geocells.data.manifest import GroundManifest

    ground_dir = out.path / "ground"
    lat, lon = world.to_latlon(np.asarray(plan["x"]), np.asarray(plan["y"]))
    manifest = GroundManifest.from_columns(
        ground_dir, strict=True, check_files=False,
        image_id=plan["image_id"], path=plan["path"], lat=np.round(lat, 8), lon=np.round(lon, 8),
        heading=plan["heading"], fov=np.asarray(plan["fov"], np.float64),
        captured_at=plan["captured_at"], split=plan["split"],
    )  # fmt: skip
    with out.file(MANIFEST_FILE) as part:
        manifest.write(part)
    return out.path / MANIFEST_FILE


def validate(cfg: SynthConfig) -> None:
    """Raise ValueError naming every config value that cannot work."""
    checks = {
        "size_km": cfg.size_km > 0,
        "gsd_m": 0 < cfg.gsd_m <= 10,
        "image_size": 16 <= cfg.image_size <= 1024,
        "jpeg_quality": 1 <= cfg.jpeg_quality <= 100,
        "workers": cfg.workers >= 1,
        "aerial_chunk_px": cfg.aerial_chunk_px >= 64,
        "gap_share": 0 <= cfg.gap_share < 1,
        "n_train": cfg.n_train >= 0,
        "n_val": cfg.n_val >= 0,
        "n_test": cfg.n_test >= 0,
        "country_km": cfg.country_km > 0,
        "town_spacing_km": cfg.town_spacing_km > 0,
        "train_capture": cfg.train_capture in TRAIN_CAPTURES,
        "panorama_height": 16 <= cfg.panorama_height <= 1024,
        "capture_spacing_m": cfg.capture_spacing_m >= 1,
        "rural_capture_spacing_m": cfg.rural_capture_spacing_m >= 1,
    }
    bad = [f"{name}={getattr(cfg, name)!r}" for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(
            f"bad synth config value(s): {', '.join(bad)} (train_capture is one of "
            f"{', '.join(TRAIN_CAPTURES)}; counts are >= 0; sizes and spacings > 0)"
        )


def run(
    cfg: SynthConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write the synthetic dataset for ``cfg`` into ``out`` (resuming finished stages);
    ``progress``: bars on a terminal."""
    out = Path(out)
    validate(cfg)
    world = World(cfg)
    record = json.dumps(world_record(cfg), indent=2, sort_keys=True) + "\n"
    # The same world is resumed even with --overwrite: only another one is cleared.
    world_file = out / "world.json"
    same = world_file.is_file() and world_file.read_text() == record
    check = _world_check(record)
    overwrite = overwrite and not same
    with stage_output(out, SYNTH_OUTPUT, overwrite=overwrite, finished=check) as folder:
        if not world_file.is_file():
            folder.write_text("world.json", record)
        return _write_dataset(cfg, world, folder, progress)


def _write_dataset(cfg: SynthConfig, world: World, out: OutputFolder, progress: bool) -> Path:
    """The body of ``run``, under ``out``'s lock, ``world.json`` written; every file but
    the ground images (rendered by the workers) is written through ``out``."""
    if not (out.path / "region.geojson").is_file():
        write_region(world, out)
    ground_dir = out.path / "ground"
    manifest = out.path / MANIFEST_FILE
    # Planning first: it fills the world's tile cache, which the forked workers inherit.
    plan = None if manifest.is_file() else plan_ground(world, progress)
    _worker_state["parent"] = world
    context = get_context("fork")
    init = (config_to_dict(cfg),)
    workers = max(1, cfg.workers)
    try:
        with ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=init) as pool:
            if not (out.path / AERIAL_FILE).is_file():
                write_aerial(world, out, pool, progress)
            if plan is not None:
                write_ground(world, ground_dir, plan, pool, progress)
                write_manifest(world, out, plan)
    finally:
        _worker_state.pop("parent", None)
    log.info("synthetic dataset ready in %s", out.path)
    return out.path
