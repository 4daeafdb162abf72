"""``geocells eval DB --split test --out REPORT_DIR``: every method, metrics.json + report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from geocells.commands.options import (
    add_config_arguments,
    add_progress_argument,
    describe_config_flags,
    flag_overrides,
    stage_config,
)
from geocells.commands.validate import DEVICE_HELP, device, positive_int, split_name

HELP = "evaluate a database and the baselines on a split; write metrics.json and report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Database, dataset, split, output folder and what to include."""
    parser.add_argument("db", type=Path, help="database folder written by `geocells index`")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="dataset folder (default: the one the database was built from)",
    )
    parser.add_argument(
        "--split", type=split_name, default="test", help="split of the queries (default: test)"
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder to write")
    parser.add_argument("--overwrite", action="store_true", help="redo a finished report")
    # Spelled-out overrides of EvalOptions (no defaults here: the dataclass has them).
    parser.add_argument("--top-k", type=positive_int, help="top_k=N: answers kept per query (R@k)")
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="ground_retrieval=false colour_histogram=false: skip the two baselines",
    )
    parser.add_argument(
        "--no-interactive-map",
        action="store_const",
        const=False,
        help="interactive_map=false: leave out the Leaflet map (~1.5 MB)",
    )
    add_progress_argument(parser)
    parser.add_argument("--device", type=device, help=f"device=NAME, {DEVICE_HELP} (auto)")
    add_config_arguments(parser, "eval", "top_k=20 search=exact colour_histogram=false")
    describe_config_flags(parser, "geocells.eval.evaluate:EvalOptions", {"top_k": "top_k"})


def main(args: argparse.Namespace) -> int:
    """Run the evaluation and print the results table and the report path."""
    from geocells.eval.evaluate import EvalOptions, run
    from geocells.eval.table import results_table_text

    names = {"top_k": "top_k", "no_interactive_map": "interactive_map", "device": "device"}
    flags = flag_overrides(args, names)
    if args.no_baselines:
        flags += ["ground_retrieval=false", "colour_histogram=false"]
    if args.no_progress:
        flags.append("progress=false")
    options = stage_config(EvalOptions, "eval", args, flags)
    out = run(options, args.db, args.dataset, args.out, split=args.split, overwrite=args.overwrite)
    print(results_table_text(out / "metrics.json"))
    print(f"report: {(out / 'report.html').resolve()}")
    return 0
