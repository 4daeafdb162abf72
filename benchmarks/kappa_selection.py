"""How well a κ chosen on val holds up on other queries: half-split cross-validation on val.

The val queries are halved at random many times; κ is chosen on one half (the plain
maximum of recall@1 within 100 m, or the maximum guarded by ``min_gain_z``) and scored on
the other half against κ = 1. Only the val split is read. docs/database.md quotes its
output. Run: ``python benchmarks/kappa_selection.py DB [--dataset DATASET] [--splits 400]``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from geocells.calibrate.stage import CalibrateConfig, embed_queries, top1_errors_by_kappa
from geocells.data.dataset import Dataset
from geocells.db.store import Database
from geocells.models import load_model
from geocells.models.device import batch_size_for, resolve_device
from geocells.scoring.kappa import guard_kappa, select_kappa


def _dataset_of(database: Database) -> Path:
    """The dataset the database was built from (meta.json), or a ValueError saying so."""
    if not database.meta.dataset:
        raise ValueError(f"database {database.path} names no dataset; pass --dataset")
    return Path(database.meta.dataset)


def val_hits(db: Path, dataset: Path | None, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """``(kappas [K], hits bool [K, Q])``: is each val query's top-1 within ``radius_m``."""
    database = Database.open(db)
    root = dataset if dataset is not None else _dataset_of(database)
    manifest = Dataset.open(root).manifest.split("val")
    model = load_model(database.path / database.meta.model_file)
    cfg = CalibrateConfig(radius_m=radius_m, progress=False)
    cfg = replace(cfg, batch_size=batch_size_for(resolve_device(cfg.device), cfg.batch_size))
    queries, kept, _ = embed_queries(model, manifest, cfg)
    lat, lon = manifest.lat[kept], manifest.lon[kept]
    kappas, errors = top1_errors_by_kappa(database, queries, lat, lon, cfg)
    return kappas, errors <= radius_m


def held_out_gain(kappas, hits, min_gain_z: float, splits: int, seed: int = 0) -> dict:
    """Mean held-out recall gain over κ = 1, and how often the rule won / lost / moved."""
    one = int(np.flatnonzero(kappas == 1.0)[0])
    rng = np.random.default_rng(seed)
    count = hits.shape[1]
    gains, moved = [], 0
    for _ in range(splits):
        order = rng.permutation(count)
        choose, score = order[: count // 2], order[count // 2 :]
        part = hits[:, choose]
        recall = part.mean(axis=1)
        best = select_kappa(kappas, recall, np.zeros_like(recall))  # ties: their middle
        best, _, _ = guard_kappa(kappas, part, best, min_gain_z)
        moved += best != one
        gains.append(hits[best, score].mean() - hits[one, score].mean())
    gains = np.asarray(gains)
    return {
        "gain_points": 100 * float(gains.mean()),
        "wins": int((gains > 0).sum()),
        "losses": int((gains < 0).sum()),
        "moved": moved,
    }


def main() -> None:
    """Print the val κ curve and the held-out gain of each selection rule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--dataset", type=Path, help="default: the database's dataset")
    parser.add_argument("--splits", type=int, default=400)
    parser.add_argument("--radius-m", type=float, default=100.0)
    args = parser.parse_args()
    kappas, hits = val_hits(args.db, args.dataset, args.radius_m)
    curve = " ".join(f"{k:.3g}:{100 * h:.2f}" for k, h in zip(kappas, hits.mean(axis=1)))
    print(f"val recall@1 within {args.radius_m:.0f} m by κ ({hits.shape[1]} queries): {curve}")
    for label, z in (("plain maximum", 0.0), ("guard z=1", 1.0), ("guard z=2", 2.0)):
        result = held_out_gain(kappas, hits, z, args.splits)
        print(
            f"{label}: held-out gain over κ = 1 {result['gain_points']:+.2f} points; "
            f"wins {result['wins']}, losses {result['losses']}, off κ = 1 in {result['moved']} "
            f"of {args.splits} halvings"
        )


if __name__ == "__main__":
    main()
