"""`GET /health` (the gateway is up) and `GET /health/detailed` (everything behind it).

`/health/detailed` asks the scheduler replica the gateway talks to for its
report (`GetHealth`, with a short deadline) and answers with an overall status:

- `ok` (200): the scheduler answered and found nothing wrong;
- `degraded` (200): the scheduler answered, but its database is unreachable
  or one of its background loops stopped (`problems` says which);
- `down` (503): the scheduler did not answer in time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.client import Client
from treadle.common import access
from treadle.common.errors import TreadleError
from treadle.common.health import SchedulerHealth
from treadle.gateway.metrics import GatewayMetrics

Endpoint = Callable[[Request], Awaitable[Response]]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def report(
    address: str, found: SchedulerHealth | None, latency: float | None, error: str | None
) -> tuple[dict[str, Any], int]:
    """The `/health/detailed` body and its HTTP status."""
    now = datetime.now(UTC)
    if found is None:
        body: dict[str, Any] = {
            "status": "down",
            "checked_at": _iso(now),
            "problems": [f"scheduler unreachable: {error}"],
            "scheduler": {"reachable": False, "address": address, "error": error},
            "database": None,
            "pool": None,
            "executor": None,
            "tasks": None,
            "backlog": None,
            "loops": None,
            "replicas_alive": None,
        }
        return body, 503
    problems = found.problems()
    db = found.database
    body = {
        "status": "degraded" if problems else "ok",
        "checked_at": _iso(now),
        "problems": problems,
        "scheduler": {
            "reachable": True,
            "address": address,
            "latency_seconds": latency,
            "replica_id": found.replica_id,
            "version": found.version,
            "serving": found.serving,
        },
        "database": {
            "status": "ok" if db.reachable else "down",
            "latency_seconds": db.latency_seconds,
            "size_bytes": db.size_bytes,
            "error": db.error or None,
        },
        "pool": dataclasses.asdict(found.pool),
        "executor": dataclasses.asdict(found.executor),
        "tasks": {"running": found.running, "capacity": found.capacity},
        "backlog": {
            "as_of": _iso(found.backlog_as_of),
            "queues": [dataclasses.asdict(q) for q in found.backlog],
        },
        "loops": dict(sorted(found.loops.items())),
        "replicas_alive": found.replicas_alive,
    }
    return body, 200


def detailed(timeout: float, metrics: GatewayMetrics) -> Endpoint:
    """The `/health/detailed` endpoint, asking the scheduler within `timeout` seconds."""

    async def endpoint(request: Request) -> Response:
        # The caller's key: with authentication on, only a caller the
        # scheduler lets read its health sees it.
        client: Client = request.state.client.with_api_key(
            access.key_of(request.headers.get(access.HEADER))
        )
        began = time.perf_counter()
        try:
            found: SchedulerHealth | None = await client.health(timeout=timeout)
            error = None
        except TreadleError as exc:
            found, error = None, f"{exc.code}: {exc.message}"
        body, status = report(client.address, found, time.perf_counter() - began, error)
        metrics.health_checks.labels(body["status"]).inc()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return endpoint
