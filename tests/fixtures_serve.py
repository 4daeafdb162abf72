"""A real ``geocells serve`` app on a loopback port, in a thread of the test process.

``serve_app(cfg)`` yields the base URL once ``/health`` says ready; the server listens on
an ephemeral 127.0.0.1 port and is shut down (lifespan and all) when the block ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest


@contextlib.contextmanager
def serve_app(
    cfg, localizer=None, timeout_s: float = 60.0, wait_ready: bool = True
) -> Iterator[str]:
    """Run ``create_app(cfg, localizer)`` under uvicorn; yields ``http://127.0.0.1:PORT``
    (once ``/health`` is 200, unless ``wait_ready`` is False)."""
    import uvicorn

    from geocells.serve import create_app
    from geocells.serve.server import uvicorn_options

    config = uvicorn.Config(
        create_app(cfg, localizer),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        **uvicorn_options(cfg),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not (server.started and server.servers):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        while wait_ready and httpx.get(f"{url}/health").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the test server never became ready: {httpx.get(url + '/health').text}"
                )
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def micro_server(micro_db) -> Iterator[str]:
    """The micro database served with small limits (4 files, 1 MB uploads, 1 M pixels)."""
    from geocells.serve import ServeConfig

    cfg = ServeConfig(
        db=str(micro_db),
        max_files=4,
        max_upload_mb=1.0,
        max_pixels=1_000_000,
        max_top_k=8,
        batch_window_ms=5.0,
    )
    with serve_app(cfg) as url:
        yield url
