"""How fast can any Strawberry app on this stack answer, against Starlette's own
`GET /health`? The floor under the gateway's GraphQL figures (docs/benchmarks.md).

Starts, in a process of its own, the barest app that serves both: Starlette
with a `/health` route answering `{"status": "ok"}` and Strawberry's ASGI view
at `/graphql` for a one-field schema (`hello: String`), with Strawberry's own
parser and validation caches, under uvicorn with httptools, as the gateway
runs. Nothing of Treadle is in it: no middleware, no extension, no scheduler
call. Then loads it from other processes (`treadle.cli.httpload`: wrk when on
PATH) with `GET /health`, `query { __typename }` and `query { hello }`,
alternating, `--rounds` times, and prints the rates and each GraphQL rate's
ratio to `/health`.

    .venv/bin/python scripts/graphql_floor.py --connections 64 --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from treadle.cli import httpload
from treadle.cli.benchsys import free_port

APP = """
import strawberry
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


async def health(request):
    return JSONResponse({"status": "ok"})


schema = strawberry.Schema(query=Query, extensions=[ParserCache(), ValidationCache()])
app = Starlette(
    routes=[Route("/health", health), Route("/graphql", GraphQL(schema), methods=["GET", "POST"])]
)
"""

LOADS = {
    "health": None,
    "typename": {"query": "query { __typename }"},
    "hello": {"query": "query { hello }"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "floorapp.py").write_text(APP)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floorapp:app", "--port", str(port),
             "--host", "127.0.0.1", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": folder},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/health", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the app did not start") from None
                    time.sleep(0.05)
            rates: dict[str, list[float]] = {kind: [] for kind in LOADS}
            for _ in range(args.rounds):
                for kind, body in LOADS.items():
                    result = httpload.run_load(
                        base + ("/health" if body is None else "/graphql"),
                        connections=args.connections,
                        seconds=args.seconds,
                        method="GET" if body is None else "POST",
                        body=None if body is None else json.dumps(body).encode(),
                    )
                    if result.errors:
                        raise SystemExit(f"{result.errors} {kind} requests failed")
                    rates[kind].append(result.rate)
        finally:
            server.terminate()
            server.wait(10)
    health = statistics.median(rates["health"])
    report = {
        "generator": result.tool,
        "connections": args.connections,
        "rates": {kind: round(statistics.median(v)) for kind, v in rates.items()},
        "ratio_to_health": {
            kind: round(statistics.median(v) / health, 3)
            for kind, v in rates.items()
            if kind != "health"
        },
        "all": {kind: [round(r) for r in v] for kind, v in rates.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
