"""``geocells serve`` under bounded load, beside ``Localizer.locate`` in-process.

Builds (once, resumable) a tiny-world database under ``--work`` unless ``--db`` is given,
starts ``geocells serve`` on 127.0.0.1, and sends one-image ``POST /locate`` requests from
1, 8 and 32 concurrent clients (``--requests`` each round). The same images, decoded from
the same bytes, go through ``Localizer.locate`` in-process at batch 1 and at batch N; the
ratio is what HTTP, multipart and batching cost or gain. Then a soak: good requests from
8 clients with bad inputs mixed in, sampling the server's RSS::

    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python benchmarks/serve_bench.py --soak-s 90
    # a longer soak, e.g. 30 minutes:  ... benchmarks/serve_bench.py --clients --soak-s 1800

``--screenshot docs/serve_screenshot.png`` also drops two photos on the page in headless
Chromium and saves what it shows. All traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_tiny_db(work: Path) -> Path:
    """synth preset ``tiny`` + train preset ``tiny`` + index + calibrate (each resumes)."""
    from geocells.calibrate import stage as calibrate
    from geocells.config import load_preset, resolve_config
    from geocells.db import build
    from geocells.synth import SynthConfig
    from geocells.synth import run as synth
    from geocells.train.config import experiment_config
    from geocells.train.trainer import run as train

    db = work / "db"
    if (db / "meta.json").is_file():
        return db
    dataset = synth(resolve_config(SynthConfig, load_preset("tiny", "synth")), work / "dataset")
    run = work / "run"
    if not (run / "checkpoints" / "last.json").is_file():
        train(experiment_config("tiny", []), dataset, run, progress=False)
    build.run(build.IndexConfig(progress=False), run, db, dataset=dataset)
    return calibrate.run(calibrate.CalibrateConfig(progress=False), db, dataset, split="val")


def test_images(db: Path, count: int) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) of the first ``count`` test images of the database's dataset."""
    from geocells.data.dataset import Dataset
    from geocells.db.store import Database

    dataset = Dataset.open(Path(Database.open(db).meta.dataset))
    manifest = dataset.manifest.split("test")
    return [(Path(p).name, Path(p).read_bytes()) for p in manifest.path[:count]]


def percentiles(seconds: list[float]) -> str:
    """``p50 / p95 / p99`` in milliseconds."""
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 95, 99])
    return f"{p50:7.1f} {p95:7.1f} {p99:7.1f}"


def in_process(db: Path, images: list[tuple[str, bytes]], batch: int, repeats: int):
    """(images/s, per-call seconds) of decode + ``Localizer.locate`` in batches of ``batch``."""
    from PIL import Image

    from geocells.locate import Localizer

    localizer = Localizer.load(db)
    localizer.locate([Image.open(io.BytesIO(images[0][1])).convert("RGB")], 5)  # warm-up
    calls, done, start = [], 0, time.perf_counter()
    for _ in range(repeats):
        for first in range(0, len(images) - batch + 1, batch):
            t0 = time.perf_counter()
            chunk = images[first : first + batch]
            decoded = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in chunk]
            localizer.locate(decoded, 5)
            calls.append(time.perf_counter() - t0)
            done += len(chunk)
    return done / (time.perf_counter() - start), calls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, port: int, threads: int, extra: list[str]) -> subprocess.Popen:
    """``geocells serve`` in a subprocess; returns once ``/health`` is 200."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [
        sys.executable,
        "-m",
        "geocells",
        "serve",
        str(db),
        "--port",
        str(port),
        "--no-access-log",
        "--threads",
        str(threads),
        *extra,
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"geocells serve exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("geocells serve did not become ready in 180 s")


async def load_round(url: str, images, clients: int, requests: int):
    """``requests`` one-image POSTs from ``clients`` concurrent clients -> (s, latencies, codes)."""
    import httpx

    latencies: list[float] = []
    codes: list[int] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            name, data = images[i % len(images)]
            t0 = time.perf_counter()
            response = await http.post("/locate", files=[("files", (name, data, "image/jpeg"))])
            latencies.append(time.perf_counter() - t0)
            codes.append(response.status_code)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start, latencies, codes


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bad_inputs(good: bytes) -> list[tuple[str, dict]]:
    """(label, httpx.post keyword arguments) of requests that must be refused with 4xx."""
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, "PNG")
    return [
        ("truncated", {"files": [("files", ("cut.jpg", good[: len(good) // 3], "image/jpeg"))]}),
        ("text", {"files": [("files", ("a.txt", b"hello", "text/plain"))]}),
        ("bomb", {"files": [("files", ("bomb.png", bomb.getvalue(), "image/png"))]}),
        ("oversize", {"files": [("files", ("big.jpg", b"\xff" * (21 << 20), "image/jpeg"))]}),
        ("json", {"json": {"image": "x.jpg"}}),
        ("too_many", {"files": [("files", ("a.jpg", good, "image/jpeg"))] * 17}),
    ]


async def soak(url: str, pid: int, images, seconds: float, clients: int) -> None:
    """Good traffic from ``clients`` plus one client of bad inputs; RSS every 5 s."""
    import httpx

    stop = time.monotonic() + seconds
    good_codes: list[int] = []
    bad_codes: dict[str, list[int]] = {}
    samples: list[tuple[float, float]] = []
    start = time.monotonic()

    async def good_client(http) -> None:
        i = 0
        while time.monotonic() < stop:
            name, data = images[i % len(images)]
            response = await http.post("/locate", files=[("files", (name, data, "image/jpeg"))])
            good_codes.append(response.status_code)
            i += 1

    async def bad_client(http) -> None:
        requests = bad_inputs(images[0][1])
        i = 0
        while time.monotonic() < stop:
            label, kwargs = requests[i % len(requests)]
            try:
                code = (await http.post("/locate", **kwargs)).status_code
            except httpx.TransportError:
                code = -1  # e.g. the oversize body cut off: the server did not read it
            bad_codes.setdefault(label, []).append(code)
            i += 1
            await asyncio.sleep(0.05)

    async def sampler() -> None:
        while time.monotonic() < stop:
            samples.append((time.monotonic() - start, rss_mb(pid)))
            await asyncio.sleep(5)

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(
            sampler(), bad_client(http), *(good_client(http) for _ in range(clients))
        )
        healthy = (await http.get("/health")).status_code == 200
    samples.append((time.monotonic() - start, rss_mb(pid)))
    failed = sum(code != 200 for code in good_codes)
    print(
        f"\nsoak {seconds:.0f} s: {len(good_codes)} good requests from {clients} clients, "
        f"{failed} not 200; healthy after: {healthy}"
    )
    for label, codes in bad_codes.items():
        print(f"  bad {label:>9}: {len(codes):4d} sent, status codes {sorted(set(codes))}")
    after_warmup = [mb for t, mb in samples if t >= min(20.0, seconds / 3)]
    print(
        f"  server RSS MB: start {samples[0][1]:.0f}, after warm-up {after_warmup[0]:.0f}, "
        f"end {samples[-1][1]:.0f}, max {max(mb for _, mb in samples):.0f}"
    )
    print("  RSS samples (s, MB): " + ", ".join(f"{t:.0f}:{mb:.0f}" for t, mb in samples))


def screenshot(url: str, images, path: Path) -> None:
    """Drop two photos on the page in headless Chromium and save the window as PNG."""
    import base64
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,860"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        _until(lambda: "cells at level" in driver.find_element(By.ID, "database").text)
        transfer = """
        const [names, payloads] = arguments; const dt = new DataTransfer();
        names.forEach((n, i) => dt.items.add(new File(
          [Uint8Array.from(atob(payloads[i]), (c) => c.charCodeAt(0))], n, {type: "image/jpeg"})));
        document.getElementById("drop").dispatchEvent(
          new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        """
        chosen = images[:2]
        payloads = [base64.b64encode(data).decode() for _, data in chosen]
        driver.execute_script(transfer, [name for name, _ in chosen], payloads)
        _until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "path.geocells-marker")) == 10)
        _until(lambda: "2 of 2" in driver.find_element(By.ID, "status").text)
        time.sleep(3)  # the map's fit to all candidates and its tiles
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
    print(f"screenshot: {path}")


def _until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the page")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, help="database (default: build a tiny world)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geocells-serve-bench"))
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=256, help="requests per round")
    parser.add_argument("--images", type=int, default=64, help="distinct test images")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--soak-s", type=float, default=90.0, help="0: no soak")
    parser.add_argument("--soak-clients", type=int, default=8)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--window-ms", type=float, help="server --batch-window-ms")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    db = args.db or build_tiny_db(args.work)
    images = test_images(db, args.images)
    extra = [] if args.window_ms is None else ["--batch-window-ms", str(args.window_ms)]
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
        f"server {' '.join(extra) or 'defaults'}; "
        f"db {db}; {len(images)} test images, {args.requests} requests per round"
    )
    baseline = {}
    for batch in sorted({1, *(min(c, 32) for c in args.clients)}):
        repeats = max(1, args.requests // len(images))
        baseline[batch] = in_process(db, images, batch, repeats)
    port = free_port()
    server = start_server(db, port, args.threads, extra)
    url = f"http://127.0.0.1:{port}"
    try:
        print(
            "\nclients  img/s   p50 ms  p95 ms  p99 ms  errors | in-process batch  img/s "
            " p50 ms  p95 ms  p99 ms | HTTP/in-process"
        )
        asyncio.run(load_round(url, images, 4, 32))  # warm-up
        for clients in args.clients:
            seconds, latencies, codes = asyncio.run(load_round(url, images, clients, args.requests))
            rate = len(codes) / seconds
            batch = min(clients, 32)
            local_rate, local_calls = baseline[batch]
            errors = sum(code != 200 for code in codes)
            print(
                f"{clients:7d} {rate:6.1f} {percentiles(latencies)} {errors:7d} | "
                f"{batch:16d} {local_rate:6.1f} {percentiles(local_calls)} | "
                f"{rate / local_rate:10.2f}"
            )
        if args.screenshot:
            screenshot(url, images, args.screenshot)
        if args.soak_s > 0:
            asyncio.run(soak(url, server.pid, images, args.soak_s, args.soak_clients))
        batches = [line for line in _metrics(url) if line.startswith("geocells_batch_size_")]
        print("\nserver batch sizes (Prometheus buckets):", "; ".join(batches[-3:]))
    finally:
        server.terminate()
        server.wait(30)


def _metrics(url: str) -> list[str]:
    import httpx

    return httpx.get(f"{url}/metrics").text.splitlines()


if __name__ == "__main__":
    main()
