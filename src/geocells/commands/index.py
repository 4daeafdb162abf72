"""``geocells index``: build a cell-code database from a trained run (or merge shards)."""

from __future__ import annotations

import argparse

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
    parser.add_argument(
        "--rotations",
        type=int,
        default=1,
        choices=(1, 4),
        help="average the aerial embedding over 4 tile rotations",
    )
    parser.add_argument(
        "--upsample",
        default="bilinear",
        choices=("parent", "bilinear"),
        help="prototype upsampling from Lp to Lc",
    )
    parser.add_argument("--cell-level", type=int, default=-1, help="Lc (default: the model's)")
    parser.add_argument("--chunk-size", type=int, default=2048, help="cells per resumable chunk")
    parser.add_argument("--batch-size", type=int, default=64, help="aerial tiles per encoder call")
    parser.add_argument("--land-only", action="store_true", help="skip sea cells")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Build (or merge) the database; `geocells calibrate` then sets κ and the search index."""
    from pathlib import Path

    if args.target[0] == "merge":
        from geocells.db.merge import merge

        print(merge([Path(p) for p in args.target[1:]], Path(args.out), args.overwrite))
        return 0
    if len(args.target) != 1:
        raise ValueError(f"geocells index takes one run folder, got {len(args.target)} paths")
    import torch

    from geocells.db.build import IndexConfig, parse_shard, run

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = IndexConfig(
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        rotations=args.rotations,
        upsample=args.upsample,
        cell_level=args.cell_level,
        land_only=args.land_only,
        progress=not args.no_progress,
    )
    shard = parse_shard(args.shard)
    target = Path(args.target[0])
    print(run(target, Path(args.out), args.dataset, args.region, shard, args.overwrite, cfg))
    return 0
