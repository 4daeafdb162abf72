"""``geocells serve`` from the command line, and the bearer token."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fixtures_serve import serve_app
from geocells.cli import main
from geocells.serve import ServeConfig


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_open_bind_needs_a_token(micro_db, capsys, monkeypatch):
    monkeypatch.delenv("GEOCELLS_TOKEN", raising=False)
    assert main(["serve", str(micro_db), "--host", "0.0.0.0"]) == 2
    assert "--host 0.0.0.0 is reachable from other machines" in capsys.readouterr().err


def test_a_missing_database_fails_before_serving(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "not a geocells database" in capsys.readouterr().err


def test_token_guards_the_api_but_not_health(micro_db):
    cfg = ServeConfig(db=str(micro_db), token="s3cret")
    files = [("files", ("p.jpg", _jpeg(), "image/jpeg"))]
    with serve_app(cfg) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/").status_code == 200  # the page asks for the token itself
        for path in ("/info", "/metrics", "/tiles/17/66265/45560.png"):
            response = httpx.get(f"{url}{path}")
            assert response.status_code == 401 and response.json() == {
                "error": "missing bearer token"
            }
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(f"{url}/locate", files=files, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]
        good = httpx.post(f"{url}/locate", files=files, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200
        cookie = httpx.get(f"{url}/tiles/17/66265/45560.png", cookies={"geocells_token": "s3cret"})
        assert cookie.status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_until_interrupted(micro_db):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geocells",
            "serve",
            str(micro_db),
            "--port",
            str(port),
            "--no-access-log",
            "--threads",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "geocells serve never became ready"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        files = [("files", ("p.jpg", _jpeg(), "image/jpeg"))]
        assert httpx.post(f"{url}/locate?top_k=2", files=files).json()["located"] == 1
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean shutdown, exit 0
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "serve: ready, 42 cells" in output and "Application shutdown complete" in output


def test_a_database_that_fails_to_load_is_reported_not_served(micro_db, tmp_path):
    import shutil

    broken = tmp_path / "db"
    shutil.copytree(micro_db, broken)
    (broken / "model" / "last.safetensors").write_bytes(b"not the model")
    with serve_app(ServeConfig(db=str(broken)), wait_ready=False) as url:
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{url}/health").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health["status"] == "failed" and "does not match the model" in health["error"]
        assert httpx.get(f"{url}/health").status_code == 503
        refused = httpx.post(f"{url}/locate", files=[("files", ("p.jpg", _jpeg(), "image/jpeg"))])
        assert refused.status_code == 503 and "does not match the model" in refused.json()["error"]
        assert httpx.get(f"{url}/").status_code == 200  # the page can still say what is wrong
