"""The app the fault-injection tests run in scheduler processes.

`record` writes its payload's `n` and the process id into `fault_results` in
the test's schema, so a test can see which tasks ran, how often, and where.
The database comes from FAULT_DATABASE_URL and FAULT_SCHEMA.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg

from treadle.scheduler import task

_pool: asyncpg.Pool | None = None
_lock = asyncio.Lock()


async def _results() -> asyncpg.Pool:
    global _pool
    async with _lock:  # many handlers start at once: create one pool, not fifty
        if _pool is None:
            _pool = await asyncpg.create_pool(
                os.environ["FAULT_DATABASE_URL"],
                min_size=1,
                max_size=2,
                server_settings={"search_path": os.environ["FAULT_SCHEMA"]},
            )
    return _pool


@task("record")
async def record(payload: Any) -> int:
    await asyncio.sleep(float(payload.get("sleep", 0)))
    pool = await _results()
    await pool.execute(
        "INSERT INTO fault_results (n, pid) VALUES ($1, $2)", payload["n"], os.getpid()
    )
    return int(payload["n"])


@task("sync_record")
def sync_record(payload: Any) -> int:
    """A plain `def` handler (it runs in a pool thread, and nothing can stop
    it): sleeps, then records its `n` and the process id like `record`."""
    import time

    time.sleep(float(payload.get("sleep", 0)))

    async def write() -> None:
        conn = await asyncpg.connect(
            os.environ["FAULT_DATABASE_URL"],
            server_settings={"search_path": os.environ["FAULT_SCHEMA"]},
        )
        try:
            await conn.execute(
                "INSERT INTO fault_results (n, pid) VALUES ($1, $2)", payload["n"], os.getpid()
            )
        finally:
            await conn.close()

    asyncio.run(write())
    return int(payload["n"])


@task("cancel_loop")
async def cancel_loop(payload: Any) -> None:
    """A handler with a bug that reaches into its replica: it cancels the
    background loop named `payload["loop"]` (e.g. `treadle-cron`)."""
    for running in asyncio.all_tasks():
        if running.get_name() == payload["loop"]:
            running.cancel()
