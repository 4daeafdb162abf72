"""Speed of the synthetic-world renderers and the naive colour-histogram baseline.

    python benchmarks/synth_bench.py                       # renderer speeds (demo world)
    python benchmarks/synth_bench.py --baseline DATASET    # + histogram baseline on DATASET

Targets (on 2 cores): >= 200 ground views/s and >= 500 aerial crops/s. Views and crops are
rendered in ``--workers`` processes like ``geocells synth`` does. The baseline scores every
level-16 cell's 154 m aerial tile (centred on the cell centre) against each test query by
colour-histogram similarity and reports recall@1 within 100 m; on a non-trivial world it
must stay below 10 %.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from geocells.config import load_preset, resolve_config
from geocells.synth.config import SynthConfig


def _world(preset: str, overrides: list[str]):
    from geocells.synth.world import World

    return World(resolve_config(SynthConfig, load_preset(preset, "synth"), overrides))


def _ground_job(args) -> tuple[float, float]:
    from geocells.synth.capture import sample_capture
    from geocells.synth.export import plan_ground
    from geocells.synth.street import StreetRenderer

    preset, overrides, count, worker = args
    world = _world(
        preset, [*overrides, f"n_train={count}", "n_val=0", "n_test=0", f"seed={worker}"]
    )
    cfg = world.cfg
    plan = plan_ground(world)
    renderer = StreetRenderer(
        world, cfg.image_size, cfg.fov_deg, cfg.camera_height_m, cfg.max_view_m
    )
    rng = np.random.default_rng(worker)
    x, y, heading = np.array(plan["x"]), np.array(plan["y"]), np.array(plan["heading"])
    order = np.lexsort((y // 400, x // 400))
    renderer.render(
        x[order[:16]], y[order[:16]], heading[order[:16]], plan["capture"][:16]
    )  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, count, 16):
        rows = order[i : i + 16]
        caps = [sample_capture(cfg.train_campaign, rng) for _ in rows]
        renderer.render(x[rows], y[rows], heading[rows], caps)
    return time.perf_counter() - start, time.process_time() - cpu


def _aerial_job(args) -> tuple[float, float]:
    from geocells.synth.aerial import AerialRenderer
    from geocells.synth.capture import campaign_capture
    from geocells.synth.coverage import region_square

    preset, overrides, count, worker = args
    world = _world(preset, overrides)
    renderer = AerialRenderer(
        world, campaign_capture(world.cfg.aerial_campaign, worker), world.cfg.gsd_m
    )
    xmin, ymin, _, _ = region_square(world)
    rng = np.random.default_rng(worker)
    # Crops cluster like training batches do: around a few hundred positions.
    centres = rng.uniform([xmin, ymin], [xmin + 2000, ymin + 2000], (max(count // 20, 1), 2))
    for cx, cy in centres:  # warm the chunk cache: this times crops, not chunk rendering
        renderer.crop(cx, cy, 300.0, 64)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        cx, cy = centres[i % len(centres)] + rng.uniform(-40, 40, 2)
        renderer.crop(cx, cy, 154.0, 128, rotation_deg=float(rng.uniform(0, 360)))
    return time.perf_counter() - start, time.process_time() - cpu


def _fresh_job(args) -> tuple[float, float]:
    from geocells.synth.aerial import AerialRenderer
    from geocells.synth.capture import campaign_capture
    from geocells.synth.coverage import region_square

    preset, overrides, count, worker = args
    world = _world(preset, overrides)
    renderer = AerialRenderer(
        world, campaign_capture(world.cfg.aerial_campaign, worker), world.cfg.gsd_m
    )
    xmin, ymin, xmax, ymax = region_square(world)
    rng = np.random.default_rng(worker)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):  # no cache: every 128 px window is rendered from the world
        col, row = renderer.pixel_of(rng.uniform(xmin, xmax), rng.uniform(ymin, ymax))
        renderer.render(int(col), int(row), 128, 128)
    return time.perf_counter() - start, time.process_time() - cpu


def _parallel(job, args, workers: int, count: int) -> tuple[float, float]:
    """Items per second over ``workers`` processes each doing ``count`` items: measured on the
    wall clock, and per CPU-second times ``workers`` (what an idle machine would give)."""
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        times = list(pool.map(job, [(*args, count, w) for w in range(workers)]))
    wall = max(t[0] for t in times)
    cpu = sum(t[1] for t in times) / workers
    return workers * count / wall, workers * count / cpu


def histogram_baseline(
    dataset_root, split: str = "test", level: int = 16, tile_m: float = 154.0
) -> dict:
    """Recall@1 within 100 m of the colour-histogram cross-view matcher on ``split``."""
    from geocells.data import Dataset, load_image
    from geocells.eval.histogram import aerial_cell_histograms, colour_histograms
    from geocells.geo import cell_to_latlng, haversine_m, region_cells
    from geocells.scoring.metrics import median_error, recall_within

    dataset = Dataset.open(dataset_root)
    cells = region_cells(dataset.region, level)
    cell_lat, cell_lon = cell_to_latlng(cells)
    database = aerial_cell_histograms(dataset.aerial, cell_lat, cell_lon, tile_m, px=64)
    queries = dataset.manifest.split(split)
    hists = colour_histograms(np.asarray(load_image(p)) for p in queries.path)
    best = np.argmax(hists @ database.T, axis=1)
    errors = haversine_m(queries.lat, queries.lon, cell_lat[best], cell_lon[best])
    return {
        "queries": len(queries),
        "cells": len(cells),
        "recall@1_100m": recall_within(errors, 100.0),
        "median_error_m": median_error(errors),
    }


def main() -> None:
    """Run the benchmarks and print one line per figure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--views", type=int, default=160, help="ground views per worker")
    parser.add_argument("--crops", type=int, default=400, help="aerial crops per worker")
    parser.add_argument("--fresh", type=int, default=40, help="uncached aerial windows per worker")
    parser.add_argument("--baseline", help="dataset folder for the histogram baseline")
    parser.add_argument("overrides", nargs="*", help="synth config overrides key=value")
    args = parser.parse_args()
    common = (args.preset, args.overrides)
    if args.views:
        wall, cpu = _parallel(_ground_job, common, args.workers, args.views)
        print(f"ground views/s ({args.workers} workers): {wall:.1f} wall, {cpu:.1f} from CPU time"
              "  (target >= 200)")  # fmt: skip
    if args.crops:
        wall, cpu = _parallel(_aerial_job, common, args.workers, args.crops)
        print(f"aerial crops/s 154 m @ 128 px ({args.workers} workers): {wall:.1f} wall, "
              f"{cpu:.1f} from CPU time  (target >= 500)")  # fmt: skip
    if args.fresh:
        wall, cpu = _parallel(_fresh_job, common, args.workers, args.fresh)
        print(
            f"aerial 128 px windows rendered from scratch/s: {wall:.1f} wall, {cpu:.1f} CPU-based"
        )
    if args.baseline:
        print("colour-histogram baseline:", histogram_baseline(args.baseline))


if __name__ == "__main__":
    main()
