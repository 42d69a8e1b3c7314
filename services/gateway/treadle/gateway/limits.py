"""HTTP framing limits: a request body over `max_request_bytes` is refused with 413.

`BodyLimit` is an ASGI middleware. A declared `Content-Length` over the limit
is refused before a byte of the body is read; a body without one (chunked) is
counted as it streams in, and refused as soon as the count passes the limit,
so no more than the limit (and one chunk) is ever held. The refusal has the
GraphQL error shape the gateway uses for every bad request (`error_body`).

A client that keeps sending after the refusal would lose the answer if the
connection closed on its unread bytes (the kernel resets it), so the answer
is sent first and the rest of the body is then read and dropped — at most
`DRAIN_FACTOR` times the limit, for at most `DRAIN_SECONDS` — before the
connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def error_body(message: str) -> bytes:
    """A bad request's GraphQL-shaped error body."""
    error = {"message": message, "extensions": {"code": "INVALID_ARGUMENT"}}
    return json.dumps({"errors": [error]}).encode()


#: After a refusal, drop at most this many times the limit of what follows ...
DRAIN_FACTOR = 4
#: ... for at most this long.
DRAIN_SECONDS = 5.0


class _TooLarge(Exception):
    """Raised from `receive` when the streamed body passes the limit."""


class BodyLimit:
    """Refuse HTTP request bodies over `limit` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(receive, send)

    async def _refuse(self, receive: Receive, send: Send) -> None:
        body = error_body(f"the request body is larger than the limit of {self.limit} bytes")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        # The answer is out; the response stays open while the body is dropped.
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while dropped <= DRAIN_FACTOR * self.limit:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    dropped += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        await send({"type": "http.response.body", "body": b""})


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent. A malformed one is the server's
    business (uvicorn refuses it before the app is called)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
