"""CPU time one GraphQL request costs the gateway's ASGI app, driven in this
process with no server, no socket and no load generator: only the app's own
Python (middleware, Strawberry, extensions, metrics) is measured, which on a
shared machine varies far less than a rate under load.

The app is `create_app(Settings())` with its lifespan (a scheduler client
that connects lazily: a query that calls the scheduler needs one at
TREADLE_SCHEDULER_ADDRESS). Each run posts `--query` `--requests` times after
a warm-up and prints the CPU µs per request of `--runs` runs; compare trees by
running it from each, alternately.

    .venv/bin/python scripts/gateway_cpu.py                       # query { __typename }
    .venv/bin/python scripts/gateway_cpu.py --query '{ health { ok } }' --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from treadle.gateway.app import create_app
from treadle.gateway.settings import Settings


async def drive(
    app: Any, state: Mapping[str, Any] | None, body: bytes, requests: int
) -> dict[str, Any]:
    """Post `body` to /graphql `requests` times; the last response's messages."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "app": app,
    }
    for _ in range(requests):
        sent.clear()
        await app({**scope, "state": dict(state or {})}, receive, send)
    return {"status": sent[0]["status"], "body": sent[-1]["body"]}


async def main(query: str, requests: int, runs: int) -> None:
    body = json.dumps({"query": query}).encode()
    app = create_app(Settings())
    async with app.router.lifespan_context(app) as state:
        answer = await drive(app, state, body, 200)
        print(f"status {answer['status']}: {answer['body'][:200].decode()}")
        figures = []
        for _ in range(runs):
            began = time.process_time()
            await drive(app, state, body, requests)
            figures.append(round((time.process_time() - began) / requests * 1e6))
    print(f"CPU µs per request, {runs} runs of {requests}: {figures}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", default="query { __typename }")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.query, args.requests, args.runs))
