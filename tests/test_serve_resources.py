"""What a hostile client can cost the service: memory per upload, slow headers and bodies,
requests the queue can never hold, shutdown with a request in flight (loopback only)."""

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest

from fixtures_serve import serve_app
from geocells.cli import main
from geocells.serve import ServeConfig
from geocells.serve.batching import Batcher, QueueFullError, RequestTooLargeError
from geocells.serve.uploads import DecodeBudget, decode_upload


def black_png(width: int, height: int) -> bytes:
    """An RGB PNG of zeros, written row by row (the test never holds its pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def upload_head(length: int) -> bytes:
    """Headers of a ``length``-byte upload and its body up to the file's first byte."""
    return (
        b"POST /locate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        b'Content-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n' % length
    )


def _memory_mb() -> tuple[float, float]:
    """(resident, peak resident) of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_decode_budget_bounds_the_pixels_decoded_at_once():
    budget = DecodeBudget(100)
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode(pixels):
        with budget.hold(pixels):
            with lock:
                inside[0] += pixels
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= pixels

    threads = [threading.Thread(target=decode, args=(p,)) for p in (60, 60, 30, 30, 90, 150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == budget.peak
    assert budget.peak == 150  # the one image over the budget ran alone...
    assert most[0] <= 150 and budget.in_use == 0
    budget = DecodeBudget(100)
    threads = [threading.Thread(target=decode, args=(p,)) for p in (60, 60, 30, 30, 90)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert 60 <= budget.peak <= 100  # ...and everything else fits the budget


def test_a_huge_png_is_shrunk_to_the_model_input_under_the_budget():
    budget = DecodeBudget(30_000_000)
    seen = []

    def prepare(image):
        seen.append(image.size)
        return image.resize((16, 16))

    out = decode_upload(black_png(4000, 3000), "image/png", 20_000_000, 512, budget, prepare)
    assert out.size == (16, 16) and seen == [(512, 384)]
    assert budget.peak == 12_000_000 and budget.in_use == 0


def test_reservations_count_against_the_queue():
    async def scenario():
        batcher = Batcher(lambda images, k: [[x] for x in images], 4, 0.0, max_queue=5)
        batcher.start()
        with pytest.raises(RequestTooLargeError, match="queue holds at most 5"):
            batcher.reserve(6)
        with batcher.reserve(4) as held:
            with pytest.raises(QueueFullError, match="4 images queued or being decoded"):
                batcher.reserve(2)
            answer = await batcher.submit(["a", "b"], 1, held)
        assert batcher.reserve(5).count == 5  # everything given back
        await batcher.stop()
        return answer

    assert asyncio.run(scenario()) == [["a"], ["b"]]


@pytest.mark.slow
def test_huge_uploads_cost_one_decode_and_are_given_back(micro_db):
    png = black_png(6000, 6000)  # 105 kB on the wire, 108 MB of pixels
    files = [("files", (f"black{i}.png", png, "image/png")) for i in range(8)]
    with serve_app(ServeConfig(db=str(micro_db), decode_threads=2)) as url:
        assert httpx.post(f"{url}/locate", files=files[:1], timeout=60).status_code == 200
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
        before, _ = _memory_mb()
        answer = httpx.post(f"{url}/locate", files=files, timeout=120)
        after, peak = _memory_mb()
    assert answer.status_code == 200 and answer.json()["located"] == 8
    # Before: each image cost ~330 MB at its peak, and ~1 GB stayed resident afterwards.
    assert peak - before < 400, (before, peak)
    assert after - before < 64, (before, after)


def test_a_request_larger_than_the_queue_is_413_not_503(micro_db):
    png = black_png(64, 48)
    files = [("files", (f"p{i}.png", png, "image/png")) for i in range(3)]
    with serve_app(ServeConfig(db=str(micro_db), queue_size=2, max_files=4)) as url:
        refused = httpx.post(f"{url}/locate", files=files)
        fits = httpx.post(f"{url}/locate", files=files[:2])
    assert refused.status_code == 413 and "retry-after" not in refused.headers
    assert "3 images in one request, but the queue holds at most 2" in refused.json()["error"]
    assert fits.status_code == 200 and fits.json()["located"] == 2


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    sock.settimeout(limit_s)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_slow_headers_and_slow_bodies_are_timed_out(micro_db):
    cfg = ServeConfig(db=str(micro_db), header_timeout_s=1.0, body_timeout_s=1.5)
    with serve_app(cfg) as url:
        with socket.create_connection(_host_port(url)) as slow_headers:
            start = time.monotonic()
            slow_headers.sendall(b"GET /health HTTP/1.1\r\n")
            with pytest.raises(OSError):  # one header line every 0.4 s until it is closed
                for _ in range(20):
                    time.sleep(0.4)
                    slow_headers.sendall(b"X-Slow: 1\r\n")
            answer = _read_until_closed(slow_headers, 5)
            assert time.monotonic() - start < 4
            assert answer.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in answer
        with socket.create_connection(_host_port(url)) as slow_body:
            start = time.monotonic()
            slow_body.sendall(upload_head(1000))
            with pytest.raises(OSError):  # then one byte of the file every 0.2 s
                for _ in range(100):
                    time.sleep(0.2)
                    slow_body.sendall(b"x")
            answer = _read_until_closed(slow_body, 5)
            assert time.monotonic() - start < 5
            assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1.5 s" in answer
        # A normal request on a kept-alive connection is not cut by the header timer.
        with httpx.Client(base_url=url) as client:
            assert client.get("/health").status_code == 200
            time.sleep(0.3)
            assert client.get("/health").status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_busy_port_is_one_line_and_exit_2(micro_db, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(micro_db), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"geocells serve: error: port {port} on 127.0.0.1 is already in use " \
        "(another server? choose one with --port)\n"  # fmt: skip


@pytest.mark.slow
def test_sigterm_with_a_slow_upload_in_flight_stops_within_the_shutdown_timeout(micro_db):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, "-m", "geocells", "serve", str(micro_db), "--port", str(port)]
    command += ["--threads", "1", "--body-timeout-s", "120", "--shutdown-timeout-s", "1"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
        with socket.create_connection(("127.0.0.1", port)) as upload:
            upload.sendall(upload_head(100_000) + b"xx")
            time.sleep(0.3)
            start = time.monotonic()
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=30)[0]
            stopped_after = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
    assert stopped_after < 5, output  # before: 45 s
    assert "timeout graceful shutdown exceeded" in output
