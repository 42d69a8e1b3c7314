"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from treadle.scheduler.registry import load_app
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica


def make_settings(schema: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_schema": schema,
        "grpc_port": 0,
        "metrics_port": 0,
        "poll_interval": 0.5,
        "drain_timeout": 2.0,
        "database_pool_size": 4,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_replica(
    database_url: str, schema: str, app: str = "taskapp", **overrides: object
) -> AsyncIterator[Replica]:
    """A started replica of `app` on `schema`, stopped on exit."""
    replica = Replica(make_settings(schema, **overrides), load_app(app), database_url)
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()
