"""The web console at `/` and GraphiQL at `/graphql`, both served from files in
this package (`console/`): plain HTML, CSS and ES modules of ours, and
third-party assets vendored from npm at pinned versions (`console/vendor/`,
copied by scripts/vendor_assets.py). Nothing is built at run time and nothing is
loaded from elsewhere: each page's Content-Security-Policy allows this origin
only (docs/console.md).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

#: The console's files; `/console/<path>` serves them.
FILES = Path(__file__).parent / "console"


@cache
def _page(name: str) -> str:
    return (FILES / name).read_text(encoding="utf-8")


def policy(request: Request, *, inline_styles: bool = False) -> str:
    """A Content-Security-Policy that allows this origin only: scripts, styles,
    fetches and the WebSocket to `/graphql` (the WebSocket named by scheme and
    host: `'self'` does not cover ws: in every browser). GraphiQL (React) sets
    inline styles, so its page allows them (`inline_styles`); no page allows
    inline or evaluated scripts."""
    host = request.headers.get("host") or request.url.netloc
    ws = "wss" if request.url.scheme in ("https", "wss") else "ws"
    styles = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src {styles}; img-src 'self' data:; font-src 'self' data:; "
        f"connect-src 'self' {ws}://{host}; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _html(request: Request, name: str, *, inline_styles: bool = False) -> Response:
    return HTMLResponse(
        _page(name),
        headers={
            "content-security-policy": policy(request, inline_styles=inline_styles),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",
        },
    )


async def index(request: Request) -> Response:
    """The console's one page; its views are chosen by the URL's fragment (`#/tasks`)."""
    return _html(request, "index.html")


def graphiql(request: Request) -> Response:
    """GraphiQL, from the vendored assets (Strawberry's own page loads them from a CDN)."""
    return _html(request, "graphiql.html", inline_styles=True)


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Mount("/console", StaticFiles(directory=FILES), name="console"),
    ]
