"""Which browser origins may call the gateway from their pages (CORS).

A browser lets a page read an answer from another origin only when that
answer says so, and sends a cross-origin POST of JSON only after a preflight
`OPTIONS` that the gateway allows. With `TREADLE_CORS_ORIGINS` empty (the
default) the gateway says nothing: no CORS header on any answer, so pages of
other origins get nothing. Each origin listed gets
`Access-Control-Allow-Origin` on its preflights and answers (Starlette's
`CORSMiddleware`): `GET` and `POST`, the headers in `HEADERS`, and no cookies
(`Access-Control-Allow-Credentials` is never sent).

Browsers apply no CORS to WebSockets; Strawberry's view checks their `Origin`
instead (the gateway's own, or one of the same list: see `app`).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

#: What a listed origin's pages may send.
METHODS = ("GET", "POST")
HEADERS = ("authorization", "content-type", "traceparent", "tracestate")
#: Seconds a browser may keep a preflight's answer.
MAX_AGE = 600


def middleware(allowed: Collection[str]) -> list[Middleware]:
    """CORS for the `allowed` origins; nothing when there are none."""
    if not allowed:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(allowed),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            max_age=MAX_AGE,
        )
    ]
