"""``geocells demo [--out DIR] [synth.key=value train.key=value ...]``: the whole pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        help="settings of a stage, e.g. synth.seed=3 synth.size_km=6 train.train.max_steps=300",
    )
    parser.add_argument("--overwrite", action="store_true", help="start again from scratch")


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
