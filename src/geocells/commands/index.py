"""``geocells index``: build a cell-code database from a trained run (or merge shards)."""

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
    cell_level,
    device,
    non_negative_int,
    positive_int,
)

HELP = "build the cell-code database of a trained run (or: index merge PARTS... --out DB)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells index``."""
    parser.add_argument(
        "target",
        nargs="+",
        metavar="RUN | merge DB_PART ...",
        help="a training run folder or checkpoint; or 'merge' followed by shard databases",
    )
    parser.add_argument("--out", required=True, type=str, help="database folder to write")
    parser.add_argument("--dataset", help="dataset folder (default: the one the run recorded)")
    parser.add_argument(
        "--region", help="preset name, GeoJSON file or S,W,N,E (default: the dataset's)"
    )
    parser.add_argument(
        "--shard", help="build part i of n (i/n, 0-based); join them with `index merge`"
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild from scratch")
    # Spelled-out overrides of IndexConfig (no defaults here: the dataclass has them).
    parser.add_argument("--rotations", type=int, choices=(1, 4), help="rotations=N")
    parser.add_argument("--upsample", choices=("parent", "bilinear"), help="upsample=METHOD")
    parser.add_argument("--cell-level", type=cell_level, help="cell_level=L (default: the model's)")
    parser.add_argument(
        "--chunk-size", type=positive_int, help="chunk_size=N (cells per chunk file)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="batch_size=N (tiles per encoder call; default 64 on the CPU, 256 on CUDA)",
    )
    parser.add_argument("--device", type=device, help=f"device=NAME, {DEVICE_HELP} (auto)")
    parser.add_argument("--land-only", action="store_const", const=True, help="land_only=true")
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's choice)"
    )
    add_progress_argument(parser)
    add_config_arguments(parser, "index", "upsample=parent rotations=4 chunk_size=4096")
    describe_config_flags(parser, "geocells.db.build:IndexConfig", FLAGS)


FLAGS = {
    "rotations": "rotations",
    "upsample": "upsample",
    "cell_level": "cell_level",
    "chunk_size": "chunk_size",
    "batch_size": "batch_size",
    "device": "device",
    "land_only": "land_only",
}


def main(args: argparse.Namespace) -> int:
    """Build (or merge) the database; `geocells calibrate` then sets κ and the search index."""
    from pathlib import Path

    if args.target[0] == "merge":
        from geocells.db.merge import merge

        if args.overrides or args.config:
            raise ValueError("index merge takes no settings: the shards carry them")
        print(merge([Path(p) for p in args.target[1:]], Path(args.out), overwrite=args.overwrite))
        return 0
    if len(args.target) != 1:
        raise ValueError(f"geocells index takes one run folder, got {len(args.target)} paths")
    import torch

    from geocells.db.build import IndexConfig, parse_shard, run

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    flags = flag_overrides(args, FLAGS) + (["progress=false"] if args.no_progress else [])
    cfg = stage_config(IndexConfig, "index", args, flags)
    shard = parse_shard(args.shard)
    target = Path(args.target[0])
    out = run(
        cfg, target, Path(args.out), dataset=args.dataset, region=args.region, shard=shard,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(out)
    return 0
