"""How ``geocells serve`` runs uvicorn: a header timeout and a bounded graceful shutdown.

uvicorn times out idle keep-alive connections but not a client that sends its request
headers one line every few seconds: such a connection would hold a socket for as long as
the client likes. ``HeaderTimeoutProtocol`` answers 408 and closes a connection whose
request headers are not complete ``header_timeout_s`` after the connection opened (or
after its previous response). The body has its own deadline in ``Guard``; on SIGTERM or
Ctrl-C, requests still running get ``shutdown_timeout_s`` before they are cancelled.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from geocells.serve.config import ServeConfig


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": f"request headers did not arrive within {seconds:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer = None
        self._finished_cycle = None  # the cycle that was current when the timer was armed

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        self._finished_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # A new cycle means the next request's headers arrived (it may still be running).
        waiting = self.cycle is self._finished_cycle and (
            self.cycle is None or self.cycle.response_complete
        )
        if waiting:
            self.logger.info("closing a connection whose request headers came too slowly")
            self.transport.write(_timeout_response(self.header_timeout_s))
            self.transport.close()


def uvicorn_options(cfg: ServeConfig) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run``/``uvicorn.Config`` that enforce ``cfg``'s timeouts."""
    return {
        "http": functools.partial(HeaderTimeoutProtocol, header_timeout_s=cfg.header_timeout_s),
        "timeout_graceful_shutdown": cfg.shutdown_timeout_s,
    }
