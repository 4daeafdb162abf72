"""The typed configuration of ``geocells serve`` (every limit the service enforces)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from geocells.search.refine import WARM_MODES

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen, what to serve and the limits that keep the service up."""

    db: str = ""  # database folder built by `geocells index`
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn worker processes, each with its own Localizer
    token: str = ""  # bearer token required on the API; "" = none (loopback only)
    aerial: str = ""  # aerial source for tiles; "" = the aerial/ folder of the DB's dataset
    backend: str = "auto"  # search backend: auto | exact | ivfpq
    warm: str = "auto"  # refine file of an IVF-PQ index: auto | load | query | off
    device: str = "auto"  # where the model runs: auto (cuda when available) | cpu | cuda[:N]
    threads: int = 0  # torch CPU threads (0: torch's default)
    max_upload_mb: float = 20.0  # largest request body
    max_files: int = 16  # images per POST /locate
    max_pixels: int = 40_000_000  # larger images are refused before decoding
    max_side: int = 2048  # decoded images are shrunk to this longest side before queueing
    max_top_k: int = 50
    batch_size: int = 32  # most images per encoder call
    batch_window_ms: float = 2.0  # how long the first image of a batch waits for company
    queue_size: int = 256  # most images queued or being decoded; beyond it /locate answers 503
    retry_after_s: int = 1  # the Retry-After of a 503
    tile_cache: int = 1024  # rendered map tiles kept in memory
    decode_pixels: int = 64_000_000  # pixels decoded at once over all requests (~3 B each)
    decode_threads: int = 2  # threads decoding uploads
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    body_timeout_s: float = 30.0  # a request's body must arrive within this (408 after)
    shutdown_timeout_s: float = 10.0  # on SIGTERM/Ctrl-C, requests get this long to finish

    def __post_init__(self) -> None:
        positive = (
            "port",
            "workers",
            "max_files",
            "max_pixels",
            "max_side",
            "max_top_k",
            "batch_size",
            "queue_size",
            "retry_after_s",
            "tile_cache",
            "decode_pixels",
            "decode_threads",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"serve: {name} must be >= 1, got {getattr(self, name)}")
        if not self.max_upload_mb > 0:
            raise ValueError(f"serve: max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.batch_window_ms < 0:
            raise ValueError(f"serve: batch_window_ms must be >= 0, got {self.batch_window_ms}")
        for name in ("header_timeout_s", "body_timeout_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"serve: {name} must be > 0, got {getattr(self, name)}")
        if self.decode_pixels < self.max_pixels:
            raise ValueError(
                f"serve: decode_pixels ({self.decode_pixels}) must be >= max_pixels "
                f"({self.max_pixels}): the largest accepted image must fit the decode budget"
            )
        if self.backend not in ("auto", "exact", "ivfpq"):
            raise ValueError(f"serve: backend must be auto, exact or ivfpq, got {self.backend!r}")
        if self.warm not in WARM_MODES:
            modes = ", ".join(WARM_MODES)
            raise ValueError(f"serve: warm must be one of {modes}, got {self.warm!r}")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    def to_json(self) -> str:
        """The config as JSON (how ``--workers`` processes receive it)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """Inverse of ``to_json``; unknown keys are errors."""
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"serve config: unknown keys {unknown}; valid: {sorted(known)}")
        return cls(**data)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
