"""``geocells demo [--out DIR] [synth.key=value train.key=value ...]``: the whole pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from geocells.commands.options import accept_overrides_anywhere

HELP = "run synth -> train -> index -> calibrate -> eval on the demo world (resumable)"

DEFAULT_OUT = Path("geocells-demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Output folder, overrides and --overwrite."""
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for dataset/, run/, db/ and report/ (default: ./geocells-demo)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="GROUP.key=value",
        help="settings of a stage (synth, train, index, calibrate, eval), e.g. synth.seed=3 "
        "train.train.max_steps=300 eval.top_k=5",
    )
    parser.add_argument("--overwrite", action="store_true", help="start again from scratch")
    accept_overrides_anywhere(parser)


def main(args: argparse.Namespace) -> int:
    """Run or resume the demo, then print the results table and the report path."""
    from geocells.eval.table import ablation_checks, results_table_text, strata_table_text
    from geocells.pipeline import run

    report = run(args.out, args.overrides, overwrite=args.overwrite)
    print(results_table_text(report / "metrics.json"))
    print()
    print("Recall@1 within 100 m by stratum:")
    print(strata_table_text(report / "metrics.json"))
    print()
    print("\n".join(ablation_checks(report / "metrics.json")))
    print(f"report: {(report / 'report.html').resolve()}")
    return 0
