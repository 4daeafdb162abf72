"""``geocells bench``: scale benchmarks (continent-size database; prototypes at scale)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from geocells.commands.options import describe_config_flags
from geocells.commands.validate import cell_level, positive_int

HELP = "scale benchmarks: continent-size cell database (compressed vs exact search)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``continent`` with its options (more benchmarks may join as sub-subcommands)."""
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    continent = sub.add_parser(
        "continent",
        help="cover a region, build a synthetic cell-code database, compressed vs exact search",
        description="Continent database benchmark: cover a region, build a synthetic cell-code "
        "database, time compressed vs exact search; writes results.json + results.md.",
    )
    continent.add_argument(
        "--region", default=None, help="region preset, GeoJSON file or bbox:S,W,N,E"
    )
    continent.add_argument("--level", type=cell_level, default=None, help="S2 level of the cells")
    continent.add_argument(
        "--max-cells",
        type=positive_int,
        default=None,
        help="use at most this many cells (default: all)",
    )
    continent.add_argument("--out", type=Path, required=True, help="output folder")
    continent.add_argument("--threads", type=positive_int, default=None, help="faiss/BLAS threads")
    continent.add_argument(
        "--overwrite", action="store_true", help="rebuild stages already finished in --out"
    )
    continent.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="config overrides, e.g. nprobe=16 rerank=32 codes.aerial_noise=0.8",
    )  # fmt: skip
    flags = {name: name for name in ("region", "level", "max_cells", "threads")}
    describe_config_flags(continent, "geocells.bench.continent:ContinentBenchConfig", flags)


def main(args: argparse.Namespace) -> int:
    """Run the chosen benchmark and print its markdown table."""
    # Spinning OpenMP workers crawl on oversubscribed cores; must be set before faiss loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from geocells.bench.continent import ContinentBenchConfig, run
    from geocells.config import resolve_config

    flags = {"region": args.region, "level": args.level, "max_cells": args.max_cells}
    flags["threads"] = args.threads
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    cfg = resolve_config(ContinentBenchConfig, None, [*args.overrides, *overrides])
    results = run(cfg, args.out, overwrite=args.overwrite)
    print(results.with_suffix(".md").read_text())
    log.info("results in %s", results)
    return 0
