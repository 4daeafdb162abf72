"""Prometheus text exposition of the service's counters and histograms (no dependency).

Exposed at ``GET /metrics`` (format 0.0.4): requests and errors by route and status,
request latency, images located and refused (by reason), batch sizes and batch time,
and the number of images waiting. With ``--workers N`` each worker counts its own.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` upper bounds)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Exposition lines ``name_bucket``, ``name_sum`` and ``name_count``."""
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        brace = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{brace} {self.total:.6f}")
        out.append(f"{name}_count{brace} {running}")
        return out


class Metrics:
    """Thread-safe counters of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.latency: dict[str, Histogram] = {}
        self.images = 0
        self.image_errors: Counter[str] = Counter()  # reason kind
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS_S)

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self.requests[route, status] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def images_done(self, located: int, errors: list[str]) -> None:
        """Count the images of one /locate request: located, and the kinds of failures."""
        with self._lock:
            self.images += located
            self.image_errors.update(errors)

    def batch(self, size: int, seconds: float) -> None:
        """Count one encoder batch."""
        with self._lock:
            self.batch_sizes.observe(size)
            self.batch_seconds.observe(seconds)

    def render(self, waiting: int) -> str:
        """The whole exposition text."""
        with self._lock:
            lines = [
                "# HELP geocells_requests_total HTTP requests by route and status.",
                "# TYPE geocells_requests_total counter",
            ]
            for (route, status), count in sorted(self.requests.items()):
                lines.append(
                    f'geocells_requests_total{{route="{route}",status="{status}"}} {count}'
                )
            errors = sum(c for (_, s), c in self.requests.items() if s >= 400)
            lines += [
                "# HELP geocells_request_errors_total HTTP requests answered 4xx or 5xx.",
                "# TYPE geocells_request_errors_total counter",
                f"geocells_request_errors_total {errors}",
                "# HELP geocells_request_seconds Request latency by route.",
                "# TYPE geocells_request_seconds histogram",
            ]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("geocells_request_seconds", f'route="{route}"')
            lines += [
                "# HELP geocells_images_located_total Images located.",
                "# TYPE geocells_images_located_total counter",
                f"geocells_images_located_total {self.images}",
                "# HELP geocells_image_errors_total Uploaded images refused, by reason.",
                "# TYPE geocells_image_errors_total counter",
            ]
            for reason, count in sorted(self.image_errors.items()):
                lines.append(f'geocells_image_errors_total{{reason="{reason}"}} {count}')
            lines += [
                "# HELP geocells_batch_size Images per encoder batch.",
                "# TYPE geocells_batch_size histogram",
                *self.batch_sizes.lines("geocells_batch_size"),
                "# HELP geocells_batch_seconds Time per encoder batch (encode + search).",
                "# TYPE geocells_batch_seconds histogram",
                *self.batch_seconds.lines("geocells_batch_seconds"),
                "# HELP geocells_queue_images Images waiting for a batch.",
                "# TYPE geocells_queue_images gauge",
                f"geocells_queue_images {waiting}",
            ]
        return "\n".join(lines) + "\n"
