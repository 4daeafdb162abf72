"""``geocells serve``: an HTTP API and a map page over a database."""

from __future__ import annotations

import argparse
import errno
import os
import socket

from geocells.commands.options import (
    add_config_arguments,
    describe_config_flags,
    flag_overrides,
    stage_config,
)
from geocells.commands.validate import (
    DEVICE_HELP,
    device,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from geocells.search.refine import WARM_MODES

HELP = "serve a database over HTTP: POST /locate, map tiles, and a page at /"
TOKEN_ENV = "GEOCELLS_TOKEN"
# Flags that are spelled-out ServeConfig keys (dest -> key); their defaults are the dataclass's.
FLAGS = {
    name: name
    for name in (
        "host",
        "port",
        "workers",
        "aerial",
        "backend",
        "warm",
        "device",
        "threads",
        "max_upload_mb",
        "max_files",
        "batch_size",
        "batch_window_ms",
        "queue_size",
        "header_timeout_s",
        "body_timeout_s",
        "shutdown_timeout_s",
    )
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``geocells serve``: the database, flags for the common ServeConfig keys,
    and ``--config FILE`` / ``key=value`` for all of them (defaults: the dataclass's)."""
    add = parser.add_argument
    add("db", help="database folder built by `geocells index`")
    add("--host", help="address to bind; anything but loopback needs --token")
    add("--port", type=port, help="TCP port")
    add("--workers", type=positive_int, help="worker processes, each loads the model")
    add(
        "--token",
        help=f"bearer token the API requires (default: ${TOKEN_ENV}); "
        "needed to bind anything but loopback",
    )
    add("--insecure-no-token", action="store_true", help="allow a non-loopback --host, no token")
    add("--aerial", help="aerial source for the map (default: the DB's dataset aerial/)")
    add("--max-upload-mb", type=positive_float, help="largest request body")
    add("--max-files", type=positive_int, help="images per request")
    add("--batch-size", type=positive_int, help="most images per encoder call")
    add("--batch-window-ms", type=float, help="how long a batch waits to fill")
    add(
        "--queue-size",
        type=positive_int,
        help="images queued or being decoded before 503; a request with more is 413",
    )
    add("--backend", choices=("auto", "exact", "ivfpq"), help="search backend")
    add(
        "--warm",
        choices=WARM_MODES,
        help="refine file of an IVF-PQ index: auto (read at start when it fits in half the "
        "free memory) | load | query (prefetch per search) | off",
    )
    add("--device", type=device, help=f"{DEVICE_HELP}")
    add("--threads", type=non_negative_int, help="torch CPU threads (0: torch's choice)")
    add("--header-timeout-s", type=positive_float, help="408 when headers take longer")
    add("--body-timeout-s", type=positive_float, help="408 when a request body takes longer")
    add(
        "--shutdown-timeout-s",
        type=positive_float,
        help="on SIGTERM/Ctrl-C, cancel requests still running after this",
    )
    add("--no-access-log", action="store_true", help="no line per request")
    add_config_arguments(parser, "serve", "max_side=1024 decode_pixels=80000000 tile_cache=4096")
    describe_config_flags(parser, "geocells.serve.config:ServeConfig", FLAGS)


def config_from_args(args: argparse.Namespace):
    """The ``ServeConfig`` of the parsed arguments (refuses an open bind without a token)."""
    from geocells.serve.config import ServeConfig, is_loopback

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    base = {"db": str(args.db), "token": token}
    cfg = stage_config(ServeConfig, "serve", args, flag_overrides(args, FLAGS), base=base)
    if not is_loopback(cfg.host) and not cfg.token and not args.insecure_no_token:
        raise ValueError(
            f"--host {cfg.host} is reachable from other machines: give --token (or "
            f"${TOKEN_ENV}), or --insecure-no-token to serve without one"
        )
    return cfg


def check_port_free(host: str, port: int) -> None:
    """``OSError`` in one line when ``host:port`` cannot be bound (before uvicorn tries)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                reason = "is already in use (another server? choose one with --port)"
            else:
                reason = f"cannot be bound ({err.strerror or err})"
            raise OSError(f"port {port} on {host} {reason}") from None


def main(args: argparse.Namespace) -> int:
    """Check the database opens and the port is free, then run uvicorn until interrupted."""
    import uvicorn

    from geocells.db.store import Database
    from geocells.serve.app import CONFIG_ENV, app_from_env
    from geocells.serve.server import uvicorn_options

    cfg = config_from_args(args)
    Database.open(cfg.db)  # a wrong path fails here, with one line, not in a worker
    check_port_free(cfg.host, cfg.port)
    os.environ[CONFIG_ENV] = cfg.to_json()
    options = dict(
        host=cfg.host, port=cfg.port, access_log=not args.no_access_log, **uvicorn_options(cfg)
    )
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
