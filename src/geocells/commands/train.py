"""``geocells train DATASET --config PRESET --out RUN [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from geocells.commands.options import accept_overrides_anywhere, add_progress_argument

HELP = "train the ground/aerial encoders and the cell prototypes on a dataset"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DATASET, --config, --out, --resume, --overwrite and key=value overrides."""
    parser.add_argument("dataset", type=Path, help="dataset folder (from `geocells synth/import`)")
    parser.add_argument(
        "--config",
        default="cpu-small",
        help="train preset name (cpu-small, dinov2-base, tiny) or a YAML file",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoints/last.*"
    )
    parser.add_argument("--overwrite", action="store_true", help="start over in an existing OUT")
    add_progress_argument(parser)
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4"
    )
    accept_overrides_anywhere(parser)


def main(args: argparse.Namespace) -> int:
    """Resolve the config, train, report where the run is."""
    from geocells.train.config import experiment_config
    from geocells.train.trainer import TrainingInterrupted, run

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    # One typed config, resolved once (on --resume: the run's config.yaml + the overrides).
    resume_from = args.out if args.resume else None
    cfg = experiment_config(args.config, args.overrides, resume_from=resume_from)
    try:
        out = run(
            cfg, args.dataset, args.out, resume=args.resume, overwrite=args.overwrite,
            progress=not args.no_progress,
        )  # fmt: skip
    except TrainingInterrupted as stop:
        logger.warning("interrupted; saved %s; continue with --resume", stop.checkpoint)
        return 130
    logger.info("run written to %s", out)
    return 0
