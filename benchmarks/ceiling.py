"""Ceilings of a synthetic world: is the place in the pixels, and does the encoder use it?

Renders query sets next to the training captures of a synthetic dataset and measures
R@1 within 100 m of two answers that use the trained ground encoder only:

- ground retrieval: the position of the most similar training image (a panorama counts
  as its 4 level 90° crops, each at the panorama's position);
- prototype-only: the centre of the level-Lp cell with the most similar prototype.

Query sets (``--n`` random training captures each): at the capture's own position and
heading, then with a random heading, then moved 10, 30 and 100 m along the road (same
heading), each in the training campaign (a new capture: other sun and colour, same
season) and in the test campaign. Offsets that land off the road are retried in other
directions; captures without a road point at that distance are left out.

    python benchmarks/ceiling.py RUN --dataset DATASET [--n 400] [--out ceiling.json]

Nothing here is a test split: the queries are new renders near *training* positions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from geocells.config import resolve_config
from geocells.data import Dataset, load_image
from geocells.data.panorama import fixed_crops, is_panorama
from geocells.geo import cell_to_latlng, haversine_m
from geocells.models import load_model
from geocells.synth import SynthConfig
from geocells.synth.capture import sample_capture
from geocells.synth.street import StreetRenderer
from geocells.synth.world import ROAD, World

OFFSETS_M = (0, 10, 30, 100)


def on_road_offsets(world, x, y, distance, rng):
    """Points ``distance`` m from (x, y) on a road (16 directions tried); NaN where none."""
    out_x, out_y = np.full(len(x), np.nan), np.full(len(x), np.nan)
    if distance == 0:
        return x.copy(), y.copy()
    todo = np.arange(len(x))
    for angle in rng.permutation(16) * (2 * np.pi / 16):
        if not todo.size:
            break
        cx, cy = x[todo] + distance * np.sin(angle), y[todo] + distance * np.cos(angle)
        ok = world.layout(cx, cy).ground == ROAD
        out_x[todo[ok]], out_y[todo[ok]] = cx[ok], cy[ok]
        todo = todo[~ok]
    return out_x, out_y


def embed_training_images(model, manifest, size):
    """Embeddings and positions of the training images (panoramas as 4 crops)."""
    views, lat, lon = [], [], []
    for i in range(len(manifest)):
        image = np.asarray(load_image(manifest.path[i]))
        if is_panorama(manifest.fov[i]):
            crops = list(fixed_crops(image, float(np.nan_to_num(manifest.heading[i])), 4, size))
        else:
            crops = [image]
        views.extend(crops)
        lat.extend([manifest.lat[i]] * len(crops))
        lon.extend([manifest.lon[i]] * len(crops))
    return model.ground.encode(views, batch_size=256), np.array(lat), np.array(lon)


def recall_100(lat, lon, answer_lat, answer_lon) -> tuple[float, float]:
    """R@1 within 100 m and its standard error."""
    hit = haversine_m(lat, lon, answer_lat, answer_lon) <= 100.0
    p = float(hit.mean())
    return p, float(np.sqrt(p * (1 - p) / max(len(hit), 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder or checkpoint")
    parser.add_argument("--dataset", type=Path, required=True, help="synthetic dataset")
    parser.add_argument("--n", type=int, default=400, help="training captures per query set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)

    dataset = Dataset.open(args.dataset)
    if dataset.world is None:
        raise SystemExit(f"{args.dataset} is not a synthetic dataset (no world.json)")
    cfg = resolve_config(SynthConfig, dataset.world["config"])
    world = World(cfg)
    model = load_model(args.run)
    train = dataset.manifest.split("train")
    size = model.ground.input_size
    gallery, g_lat, g_lon = embed_training_images(model, train, size)
    proto = torch.nn.functional.normalize(model.prototypes.embedding.weight.float(), dim=1)
    p_lat, p_lon = cell_to_latlng(model.prototypes.cells)

    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(train), min(args.n, len(train)), replace=False))
    x0, y0 = world.to_xy(train.lat[pick], train.lon[pick])
    pano = is_panorama(train.fov[pick])
    # A panorama has every heading: its "training heading" is one of its 4 crops.
    heading0 = np.where(pano, rng.integers(0, 4, len(pick)) * 90.0, train.heading[pick])
    renderer = StreetRenderer(world, cfg.image_size, cfg.fov_deg, cfg.camera_height_m,
                              cfg.max_view_m)  # fmt: skip
    rows = []
    sets = (
        [("same heading", 0)]
        + [("random heading", 0)]
        + [(f"moved {d} m", d) for d in OFFSETS_M[1:]]
    )
    for campaign_name, campaign in (("train", cfg.train_campaign), ("test", cfg.test_campaign)):
        for label, distance in sets:
            x, y = on_road_offsets(world, x0, y0, distance, rng)
            keep = np.isfinite(x)
            heading = heading0 if label != "random heading" else rng.uniform(0, 360, len(x0))
            captures = [sample_capture(campaign, rng) for _ in range(int(keep.sum()))]
            images = np.concatenate([
                renderer.render(x[keep][i : i + 32], y[keep][i : i + 32],
                                heading[keep][i : i + 32], captures[i : i + 32])
                for i in range(0, int(keep.sum()), 32)
            ])  # fmt: skip
            query = model.ground.encode(list(images), batch_size=256)
            lat, lon = world.to_latlon(x[keep], y[keep])
            best = np.argmax(query @ gallery.T, axis=1)
            retrieval = recall_100(lat, lon, g_lat[best], g_lon[best])
            best_p = torch.argmax(torch.from_numpy(query) @ proto.T, dim=1).numpy()
            prototype = recall_100(lat, lon, p_lat[best_p], p_lon[best_p])
            rows.append({"campaign": campaign_name, "queries": label, "n": int(keep.sum()),
                         "ground_retrieval": retrieval, "prototype_only": prototype})  # fmt: skip
            cells = [f"{100 * value:.1f} ± {100 * error:.1f} %" for value, error in
                     (retrieval, prototype)]  # fmt: skip
            print(f"| {campaign_name} | {label} | {int(keep.sum())} | {' | '.join(cells)} |",
                  flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
