"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

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


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` every 50 ms until it returns something true, and return
    that; fail the test when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def count_rows(database_url: str, schema: str) -> int:
    """Tasks stored in `schema` (read behind the replica's back)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".tasks'))
    finally:
        await conn.close()


#: The `treadle` command, as a subprocess runs it.
TREADLE = [sys.executable, "-m", "treadle.cli"]


async def treadle(
    *args: str, env: dict[str, str] | None = None, timeout: float = 40
) -> tuple[int, str, str]:
    """Run the `treadle` command with `args` (the environment plus `env`) without
    blocking the event loop a test replica runs on; its exit status, stdout and
    stderr."""
    proc = await asyncio.create_subprocess_exec(
        *TREADLE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
