"""``geocells calibrate``: choose κ on a validation split and fit the confidence model."""

from __future__ import annotations

import argparse

from geocells.commands.options import (
    add_config_arguments,
    add_progress_argument,
    describe_config_flags,
    flag_overrides,
    stage_config,
)
from geocells.commands.validate import (
    DEVICE_HELP,
    device,
    non_negative_int,
    positive_int,
    split_name,
)

HELP = "choose κ on the val split (curve CSV + PNG) and fit the confidence model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells calibrate``."""
    parser.add_argument("db", help="database folder built by `geocells index`")
    parser.add_argument("--dataset", help="dataset folder (default: the one the database names)")
    parser.add_argument(
        "--split", type=split_name, default="val", help="split of the dataset to calibrate on"
    )
    # Spelled-out overrides of CalibrateConfig (no defaults here: the dataclass has them).
    parser.add_argument("--kappa-min", type=float, help="kappa_min=X")
    parser.add_argument("--kappa-max", type=float, help="kappa_max=X")
    parser.add_argument(
        "--kappa-steps", type=positive_int, help="kappa_steps=N (log-spaced grid points)"
    )
    parser.add_argument(
        "--min-gain-z", type=float,
        help="min_gain_z=Z: keep kappa = 1 unless the best kappa beats it by this many "
        "standard errors on the val queries (0: always the best of the grid)",
    )  # fmt: skip
    parser.add_argument(
        "--max-queries", type=non_negative_int, help="max_queries=N: at most N images (0: all)"
    )
    parser.add_argument(
        "--ann", choices=("auto", "exact", "ivfpq"),
        help="ann=KIND: search index to (re)build for the chosen κ (auto: IVF-PQ above 200k cells)",
    )  # fmt: skip
    parser.add_argument("--device", type=device, help=f"device=NAME, {DEVICE_HELP} (auto)")
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's choice)"
    )
    add_progress_argument(parser)
    add_config_arguments(parser, "calibrate", "kappa_steps=21 min_gain_z=0 top_k=10")
    describe_config_flags(parser, "geocells.calibrate.stage:CalibrateConfig", FLAGS)


FLAGS = {
    "kappa_min": "kappa_min",
    "kappa_max": "kappa_max",
    "kappa_steps": "kappa_steps",
    "min_gain_z": "min_gain_z",
    "max_queries": "max_queries",
    "ann": "ann",
    "device": "device",
}


def main(args: argparse.Namespace) -> int:
    """Calibrate and print the chosen κ."""
    import torch

    from geocells.calibrate.stage import CalibrateConfig, run
    from geocells.db.store import Database

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    flags = flag_overrides(args, FLAGS) + (["progress=false"] if args.no_progress else [])
    cfg = stage_config(CalibrateConfig, "calibrate", args, flags)
    path = run(cfg, args.db, args.dataset, split=args.split)
    meta = Database.open(path).meta
    report = meta.calibration
    cross_fitted = report.ece_cross_fitted
    print(
        f"kappa = {meta.kappa:.4g}; {report.split} recall@1 within "
        f"{report.radius_m:.0f} m ({report.queries} queries of {report.dataset}): "
        f"{100 * report.recall:.1f}% (kappa = 1: {100 * report.recall_kappa_1:.1f}%); "
        f"confidence ECE {report.ece:.3f}"
        + (f" (cross-fitted {cross_fitted:.3f})" if cross_fitted is not None else "")
    )
    print(f"curve: {path / 'calibration.csv'}, {path / 'calibration.png'}")
    return 0
