"""``geocells refit RUN [key=value ...]``: refit the prototype table of a trained run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from geocells.commands.options import add_config_arguments, add_progress_argument, stage_config
from geocells.commands.validate import DEVICE_HELP, device

HELP = "re-seed/refit the prototypes of a trained run against its frozen encoders"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN, --dataset, --overwrite, --no-progress and ``refit.*`` overrides."""
    parser.add_argument("run", type=Path, help="training run folder (from `geocells train`)")
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: the run's)")
    parser.add_argument("--overwrite", action="store_true", help="redo an up-to-date refit")
    add_progress_argument(parser)
    parser.add_argument(
        "--device", type=device, default="auto", help=f"{DEVICE_HELP} (default: auto)"
    )
    add_config_arguments(parser, "refit", "init=aerial_mean epochs=30 (over the run's config)")


def main(args: argparse.Namespace) -> int:
    """Resolve the refit settings from the run's config plus overrides, then refit."""
    from geocells.config import config_to_dict, load_config
    from geocells.train.config import ExperimentConfig, RefitConfig, check_config
    from geocells.train.refit_stage import run

    saved = load_config(ExperimentConfig, args.run / "config.yaml")
    refit = stage_config(RefitConfig, "refit", args, base=config_to_dict(saved.refit))
    saved.refit = refit
    check_config(saved)
    path = run(
        refit, args.run, args.dataset, overwrite=args.overwrite, progress=not args.no_progress,
        device=args.device,
    )  # fmt: skip
    logger.info("refit written to %s (used by `geocells index %s`)", path, args.run)
    return 0
