"""Dynamic batching: images from concurrent requests share one encoder call.

A request hands its decoded images to ``Batcher.submit`` and awaits their predictions.
One worker task takes the oldest waiting image, waits at most ``window_s`` for more (or
until ``max_batch`` are waiting), and runs the whole batch on one thread, so encoder calls
never overlap and many small requests cost about as much as one large one. The queue
is bounded in images: a request that does not fit is refused at once (``QueueFullError``),
which the app answers with 503 and Retry-After instead of letting latency grow without end;
one that could never fit (more images than the queue holds) is ``RequestTooLargeError``
(413). A request ``reserve``s its places before it decodes its uploads, so images being
decoded count against the same bound as images waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# (images, top_k) -> one ranked list per image; runs on the batch thread.
BatchFunction = Callable[[list[Any], int], list[list[Any]]]


class QueueFullError(RuntimeError):
    """More images are waiting than the queue holds."""

    def __init__(self, waiting: int, incoming: int, capacity: int) -> None:
        super().__init__(
            f"server busy: {waiting} images queued or being decoded, {incoming} more would "
            f"exceed the queue of {capacity}; retry later"
        )


class RequestTooLargeError(ValueError):
    """More images in one request than the whole queue holds: retrying cannot help."""

    def __init__(self, incoming: int, capacity: int) -> None:
        super().__init__(
            f"{incoming} images in one request, but the queue holds at most {capacity} "
            f"(--queue-size); send at most {capacity} per request"
        )


class Reservation:
    """Places in the queue held for a request's images while they are decoded."""

    def __init__(self, batcher: Batcher, count: int) -> None:
        self.batcher = batcher
        self.count = count

    def release(self) -> None:
        """Give the places back (idempotent)."""
        self.batcher._reserved -= self.count
        self.count = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class _Job:
    image: Any
    top_k: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects images into batches of at most ``max_batch`` for ``run_batch``."""

    def __init__(
        self,
        run_batch: BatchFunction,
        max_batch: int,
        window_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.on_batch = on_batch  # (batch size, seconds) after each batch, for metrics
        self._jobs: deque[_Job] = deque()
        self._reserved = 0  # places held by requests still decoding
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: batches run one after another, torch uses its own intra-op threads.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="geocells-batch")

    @property
    def waiting(self) -> int:
        """Images queued and not yet taken into a batch."""
        return len(self._jobs)

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work(), name="geocells-batcher")

    async def stop(self) -> None:
        """Stop the worker; images still queued fail with an error."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))
        self._executor.shutdown(wait=True)

    def reserve(self, count: int) -> Reservation:
        """Hold ``count`` places (``RequestTooLargeError`` if the queue could never hold
        them, ``QueueFullError`` if it cannot now); use as ``with batcher.reserve(n) as r``."""
        if count > self.max_queue:
            raise RequestTooLargeError(count, self.max_queue)
        taken = len(self._jobs) + self._reserved
        if taken + count > self.max_queue:
            raise QueueFullError(taken, count, self.max_queue)
        self._reserved += count
        return Reservation(self, count)

    async def submit(
        self, images: Sequence[Any], top_k: int, reservation: Reservation | None = None
    ) -> list[list[Any]]:
        """Predictions for ``images`` (all admitted or none: ``QueueFullError``); with a
        ``reservation`` (from ``reserve``) they take its places, which it then gives up."""
        if self._arrived is None:
            raise RuntimeError("Batcher.start() was not called")
        if reservation is not None:
            if len(images) > reservation.count:
                raise ValueError(f"{len(images)} images but {reservation.count} places reserved")
            reservation.release()
        else:
            self.reserve(len(images)).release()  # the same checks, nothing held
        loop = asyncio.get_running_loop()
        jobs = [_Job(image, top_k, loop.create_future()) for image in images]
        self._jobs.extend(jobs)
        self._arrived.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _collect(self) -> list[_Job]:
        """The next batch: waits for a first image, then up to ``window_s`` for more."""
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._jobs[0].queued_at + self.window_s
        while len(self._jobs) < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        batch = []
        while self._jobs and len(batch) < self.max_batch:
            job = self._jobs.popleft()
            if not job.future.done():  # a client that went away has its future cancelled
                batch.append(job)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            top_k = max(job.top_k for job in batch)
            start = time.perf_counter()
            try:
                ranked = await loop.run_in_executor(
                    self._executor, self.run_batch, [job.image for job in batch], top_k
                )
            except Exception as err:  # one failed encoder call fails its batch, not the server
                log.exception("serve: batch of %d images failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for job, predictions in zip(batch, ranked, strict=True):
                if not job.future.done():
                    job.future.set_result(predictions[: job.top_k])
