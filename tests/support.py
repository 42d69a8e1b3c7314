"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

from treadle.scheduler.settings import Settings


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
