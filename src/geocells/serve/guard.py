"""ASGI middleware in front of every route: bearer token, upload limits, metrics.

It runs before any body is parsed, so an oversized upload is refused from its
Content-Length (or, when streamed without one, as soon as the bytes read pass the limit)
and a request without the token never reaches the multipart parser. A body that has not
fully arrived ``body_timeout_s`` after its headers is answered 408 and its connection
closed, so a client sending one byte a second holds no worker for long.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException

from geocells.serve.metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

TOKEN_COOKIE = "geocells_token"
DRAIN_FACTOR = 4  # bodies up to 4x the limit are read before the 413; larger ones are cut
PUBLIC_PREFIXES = ("/health", "/static/", "/docs", "/openapi.json", "/favicon")
ROUTES = ("/locate", "/cells", "/tiles", "/health", "/metrics", "/info", "/static", "/docs")


class BodyTooLargeError(HTTPException):
    """A request body over ``--max-upload-mb``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit / 2**20:g} MB")


class BodyTimeoutError(HTTPException):
    """A request body still arriving after ``--body-timeout-s``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {seconds:g} s",
            headers={"connection": "close"},
        )


def route_label(path: str) -> str:
    """A bounded label for metrics (never the raw path: tokens and tiles are unbounded)."""
    if path == "/":
        return "/"
    for route in ROUTES:
        if path == route or path.startswith(route + "/"):
            return route
    return "other"


async def send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    """A complete JSON response straight from the middleware."""
    data = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a request body."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def presented_token(headers: dict[str, str]) -> str | None:
    """The bearer token of a request (Authorization header, else the page's cookie)."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value
    return None


class Guard:
    """Token check, body-size and content-type limits on uploads, request metrics."""

    def __init__(
        self, app, token: str, max_body: int, metrics: Metrics, body_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_counted)
        finally:
            label = route_label(scope["path"])
            self.metrics.request(label, status["code"], time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        path = scope["path"]
        public = path == "/" or path.startswith(PUBLIC_PREFIXES)
        if self.token and not public:
            offered = presented_token(headers)
            if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
                reason = "missing" if offered is None else "wrong"
                await send_json(
                    send, 401, {"error": f"{reason} bearer token"}, [("www-authenticate", "Bearer")]
                )
                return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if path == "/locate":
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "multipart/form-data":
                message = f"content type {content_type or 'missing'!r}: send multipart/form-data"
                await send_json(send, 415, {"error": message})
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            if int(declared) <= DRAIN_FACTOR * self.max_body:
                # A client still sending when the connection closes never sees the answer,
                # so a body not far over the limit is read (and dropped) first.
                await _drain(receive)
            await send_json(
                send,
                413,
                {"error": str(BodyTooLargeError(self.max_body).detail)},
                [("connection", "close")],
            )
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises ``BodyTooLargeError`` once the body passes the limit and
        ``BodyTimeoutError`` once it has taken longer than ``body_timeout_s``."""
        received = 0
        deadline = time.monotonic() + self.body_timeout_s

        async def limited() -> dict[str, Any]:
            nonlocal received
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeoutError(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLargeError(self.max_body)
            return message

        return limited
