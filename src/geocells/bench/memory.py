"""Process memory readings from /proc (Linux): resident sizes, peaks, a background sampler."""

from __future__ import annotations

import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def memory_status() -> dict[str, int]:
    """Selected /proc/self/status fields in bytes: VmRSS, VmHWM, RssAnon, RssFile."""
    values = {}
    for line in _STATUS.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakSampler:
    """Samples anonymous RSS every ``interval`` s in a thread; ``peak_anon`` is its maximum.

    VmHWM counts file pages of memmaps too, which the kernel can drop at will; the
    anonymous peak is the memory the process really needs.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, memory_status().get("RssAnon", 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self.peak_anon = memory_status().get("RssAnon", 0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, memory_status().get("RssAnon", 0))
