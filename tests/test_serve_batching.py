"""Dynamic batching and the bounded queue: the Batcher alone, then through a server."""

import asyncio
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from fixtures_serve import serve_app
from geocells.locate import Localizer
from geocells.serve import ServeConfig
from geocells.serve.batching import Batcher, QueueFullError


def _run(coroutine):
    return asyncio.run(coroutine)


def _recording_batcher(sizes, **options):
    def run_batch(images, top_k):
        sizes.append(len(images))
        return [[f"{image}:{rank}" for rank in range(top_k)] for image in images]

    return Batcher(run_batch, **options)


def test_concurrent_submits_share_one_batch_and_keep_their_top_k():
    sizes = []

    async def main():
        batcher = _recording_batcher(sizes, max_batch=8, window_s=0.05, max_queue=16)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(["a"], 1), batcher.submit(["b", "c"], 3), batcher.submit(["d"], 2)
        )
        await batcher.stop()
        return results

    assert _run(main()) == [
        [["a:0"]],
        [["b:0", "b:1", "b:2"], ["c:0", "c:1", "c:2"]],
        [["d:0", "d:1"]],
    ]
    assert sizes == [4]


def test_batches_are_capped_and_the_queue_is_bounded():
    sizes = []

    async def main():
        batcher = _recording_batcher(sizes, max_batch=3, window_s=0.01, max_queue=7)
        batcher.start()
        first = asyncio.create_task(batcher.submit(list("abcdefg"), 1))
        await asyncio.sleep(0)  # `first` is queued, the worker has not run yet
        with pytest.raises(QueueFullError, match="exceed the queue of 7"):
            await batcher.submit(["h"], 1)
        assert batcher.waiting == 7  # the refused request added nothing
        results = await first
        await batcher.stop()
        return results

    assert [r[0] for r in _run(main())] == [f"{c}:0" for c in "abcdefg"]
    assert sizes == [3, 3, 1]


def test_a_failed_batch_fails_its_requests_only():
    calls = []

    def run_batch(images, top_k):
        calls.append(list(images))
        if "boom" in images:
            raise RuntimeError("encoder exploded")
        return [[image] for image in images]

    async def main():
        batcher = Batcher(run_batch, max_batch=4, window_s=0.0, max_queue=8)
        batcher.start()
        with pytest.raises(RuntimeError, match="encoder exploded"):
            await batcher.submit(["boom"], 1)
        after = await batcher.submit(["fine"], 1)
        await batcher.stop()
        return after

    assert _run(main()) == [["fine"]]
    assert calls == [["boom"], ["fine"]]


class GatedLocalizer(Localizer):
    """The micro database's real Localizer; ``embed`` waits for ``gate`` and records sizes."""

    def __init__(self, base: Localizer) -> None:
        super().__init__(base.database, base.model, base.searcher, base.confidence, 8)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def embed(self, images):
        self.sizes.append(len(images))
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return super().embed(images)


def _queue_depth(url: str) -> int:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("geocells_queue_images "):
            return int(line.split()[1])
    raise AssertionError("no geocells_queue_images in /metrics")


def test_server_batches_waiting_requests_and_answers_503_when_full(micro_db, micro_dataset):
    localizer = GatedLocalizer(Localizer.load(micro_db))
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(buffer, "JPEG")
    files = [("files", ("p.jpg", buffer.getvalue(), "image/jpeg"))]
    cfg = ServeConfig(
        db=str(micro_db), batch_size=8, queue_size=4, batch_window_ms=1.0, retry_after_s=3
    )
    with serve_app(cfg, localizer) as url:
        answers: list[httpx.Response] = []

        def post():
            answers.append(httpx.post(f"{url}/locate", files=files, timeout=60))

        threads = [threading.Thread(target=post)]
        threads[0].start()
        assert localizer.entered.wait(30)  # the first request is in the encoder, blocked
        for _ in range(4):
            threads.append(threading.Thread(target=post))
            threads[-1].start()
        deadline = time.monotonic() + 30
        while _queue_depth(url) < 4:
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.02)
        refused = httpx.post(f"{url}/locate", files=files)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert "exceed the queue of 4" in refused.json()["error"]
        localizer.gate.set()
        for thread in threads:
            thread.join(60)
    assert [a.status_code for a in answers] == [200] * 5
    assert localizer.sizes == [1, 4]  # the four waiting requests shared one encoder call
    tokens = {a.json()["results"][0]["predictions"][0]["token"] for a in answers}
    assert len(tokens) == 1  # the same photo gets the same answer, batched or not
