"""``geocells serve``: an HTTP API and a map page over a database."""

from __future__ import annotations

import argparse
import os

from geocells.commands.validate import (
    DEVICE_HELP,
    device,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)

HELP = "serve a database over HTTP: POST /locate, map tiles, and a page at /"
TOKEN_ENV = "GEOCELLS_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells serve``."""
    from geocells.serve.config import ServeConfig

    defaults = ServeConfig()
    parser.add_argument("db", help="database folder built by `geocells index`")
    parser.add_argument("--host", default=defaults.host, help="address to bind (default: loopback)")
    parser.add_argument("--port", type=port, default=defaults.port)
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=defaults.workers,
        help="worker processes, each loads the model (the DB arrays are shared)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token the API requires (default: ${TOKEN_ENV}); "
        "needed to bind anything but loopback",
    )
    parser.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="allow a non-loopback --host without a token",
    )
    parser.add_argument(
        "--aerial", default="", help="aerial source for the map (default: the DB's dataset aerial/)"
    )
    parser.add_argument("--max-upload-mb", type=positive_float, default=defaults.max_upload_mb)
    parser.add_argument(
        "--max-files", type=positive_int, default=defaults.max_files, help="images per request"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="most images per encoder call",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=defaults.batch_window_ms,
        help="how long a batch waits to fill",
    )
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=defaults.queue_size,
        help="images waiting before 503",
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "exact", "ivfpq"))
    parser.add_argument(
        "--device", type=device, default=defaults.device, help=f"{DEVICE_HELP} (default: auto)"
    )
    parser.add_argument(
        "--threads", type=non_negative_int, default=0, help="torch CPU threads (0: default)"
    )
    parser.add_argument("--no-access-log", action="store_true", help="no line per request")


def config_from_args(args: argparse.Namespace):
    """The ``ServeConfig`` of the parsed arguments (refuses an open bind without a token)."""
    from geocells.serve.config import ServeConfig, is_loopback

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not is_loopback(args.host) and not token and not args.insecure_no_token:
        raise ValueError(
            f"--host {args.host} is reachable from other machines: give --token (or "
            f"${TOKEN_ENV}), or --insecure-no-token to serve without one"
        )
    return ServeConfig(
        db=str(args.db),
        host=args.host,
        port=args.port,
        workers=args.workers,
        token=token,
        aerial=args.aerial,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        max_upload_mb=args.max_upload_mb,
        max_files=args.max_files,
        batch_size=args.batch_size,
        batch_window_ms=args.batch_window_ms,
        queue_size=args.queue_size,
    )


def main(args: argparse.Namespace) -> int:
    """Check the database opens, then run uvicorn until interrupted."""
    import uvicorn

    from geocells.db.store import Database
    from geocells.serve.app import CONFIG_ENV, app_from_env

    cfg = config_from_args(args)
    Database.open(cfg.db)  # a wrong path fails here, with one line, not in a worker
    os.environ[CONFIG_ENV] = cfg.to_json()
    options = dict(host=cfg.host, port=cfg.port, access_log=not args.no_access_log)
    if cfg.workers > 1:  # each worker process imports worker_app and builds its own app
        uvicorn.run(
            "geocells.commands.serve:worker_app", factory=True, workers=cfg.workers, **options
        )
    else:
        uvicorn.run(app_from_env(), **options)
    return 0


def worker_app():
    """The app of one ``--workers`` process: the CLI's logging, then ``app_from_env``."""
    import logging

    from geocells.serve.app import app_from_env

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return app_from_env()
