"""``geocells eval DB --split test --out REPORT_DIR``: every method, metrics.json + report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    parser.add_argument("--split", default="test", help="split of the queries (default: test)")
    parser.add_argument("--out", type=Path, required=True, help="report folder to write")
    parser.add_argument("--overwrite", action="store_true", help="redo a finished report")
    parser.add_argument("--top-k", type=int, default=10, help="answers kept per query (R@k)")
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip ground-image retrieval and the colour-histogram matcher",
    )
    parser.add_argument(
        "--no-interactive-map", action="store_true", help="leave out the Leaflet map (~1.5 MB)"
    )


def main(args: argparse.Namespace) -> int:
    """Run the evaluation and print the results table and the report path."""
    from geocells.eval.evaluate import EvalOptions, run
    from geocells.eval.table import results_table_text

    options = EvalOptions(
        top_k=args.top_k,
        ground_retrieval=not args.no_baselines,
        colour_histogram=not args.no_baselines,
        interactive_map=not args.no_interactive_map,
    )
    out = run(args.db, args.dataset, args.split, args.out, args.overwrite, options)
    print(results_table_text(out / "metrics.json"))
    print(f"report: {(out / 'report.html').resolve()}")
    return 0
