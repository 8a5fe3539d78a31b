"""Request-size protection: a body over the limit is refused with 413 before it is parsed.

Starlette's own limit (``FastAPI(max_body_size=...)``) is not used: for a declared
``Content-Length`` over the limit it replaces whatever the app answers with a plain-text
413, while every error of this API is JSON with a ``kind``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class BodyLimitMiddleware:
    """Pure ASGI middleware answering 413 to bodies larger than ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused without reading the body. A body
    without one (chunked) is read up to the limit and refused as soon as it goes over; under
    the limit it is handed on unchanged. Nothing of the body is echoed.

    Args:
        app: The ASGI app.
        max_bytes: Largest body accepted.
        on_refused: Called once per refused request (metrics).
    """

    def __init__(self, app: Any, *, max_bytes: int, on_refused: Callable[[], None]):
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No declared length: read it here (bounded), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _refuse(self, send: Any) -> None:
        self.on_refused()
        payload = json.dumps(
            {
                "kind": "payload_too_large",
                "detail": f"the request body exceeds the limit of {self.max_bytes} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[dict[str, Any]], then: Any = None) -> Any:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
