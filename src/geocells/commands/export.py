"""``geocells export milvus``: a database's fused codes into a Milvus collection."""

from __future__ import annotations

import argparse
import json

from geocells.commands.validate import cell_level, positive_float, positive_int

HELP = "export a database to a Milvus collection (milvus-lite file or server) for remote search"


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"want a JSON object, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells export milvus``."""
    from geocells.search.export import MilvusExportConfig

    defaults = MilvusExportConfig()
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    milvus = sub.add_parser(
        "milvus",
        help="fused codes at the calibrated κ into a Milvus collection (resumable)",
        description="Write the database's codes aerial + κ·proto (inner product) with cell ids "
        "and tokens into a Milvus collection partitioned by S2 parent range. A killed export "
        "continues where it stopped when run again. Re-calibrating κ means re-exporting.",
    )
    milvus.add_argument("db", help="a calibrated database folder (geocells index + calibrate)")
    milvus.add_argument(
        "--uri", required=True, help="milvus-lite file (cells.db) or http://host:19530"
    )
    milvus.add_argument("--collection", required=True, help="collection name")
    milvus.add_argument(
        "--out", help="write a remote database folder here (model + meta, no codes)"
    )
    milvus.add_argument("--vector-dtype", choices=("float32", "float16"), default="float32")
    milvus.add_argument(
        "--index-type",
        default=defaults.index_type,
        help="Milvus index (auto: HNSW on milvus-lite, DISKANN on a server; IVF_PQ, ...)",
    )
    milvus.add_argument("--index-params", type=_json_object, default={}, help="JSON object")
    milvus.add_argument(
        "--search-params", type=_json_object, default={}, help="JSON object (e.g. '{\"ef\": 128}')"
    )
    milvus.add_argument("--partitions", type=positive_int, default=defaults.partitions)
    milvus.add_argument("--partition-level", type=cell_level, default=defaults.partition_level)
    milvus.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    milvus.add_argument("--timeout", type=positive_float, default=defaults.timeout_s)
    milvus.add_argument("--overwrite", action="store_true", help="drop and rewrite the collection")
    milvus.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Export (or resume exporting) the database; print the remote database folder."""
    from geocells.search.export import MilvusExportConfig, run

    cfg = MilvusExportConfig(
        uri=args.uri,
        collection=args.collection,
        vector_dtype=args.vector_dtype,
        index_type=args.index_type,
        index_params=args.index_params,
        search_params=args.search_params,
        partitions=args.partitions,
        partition_level=args.partition_level,
        batch_size=args.batch_size,
        timeout_s=args.timeout,
        progress=not args.no_progress,
    )
    out = run(cfg, args.db, args.out, overwrite=args.overwrite)
    print(out if out is not None else f"{args.uri} {args.collection}")
    return 0
