"""How a scheduler process ends, run as real processes: a replica whose
background loop died exits non-zero naming the loop; a stop with a sync
handler still running past the drain timeout exits anyway, without handing
that task back while its thread runs (so it never runs twice at once)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import pytest
from test_faults import ReplicaProcess, counts, launch, replica_env

from treadle.client import Client

#: `treadle scheduler`'s exit status when a background loop died.
EXIT_LOOP_DIED = 70


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "command",
    [
        ("-m", "treadle.cli", "scheduler"),
        ("-m", "treadle.scheduler"),
        ("-m", "treadle.cli", "up", "--http-port", "0"),
    ],
    ids=["treadle scheduler", "python -m treadle.scheduler", "treadle up"],
)
async def test_a_replica_whose_loop_died_exits_non_zero_naming_it(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
    command: tuple[str, ...],
) -> None:
    replica = await launch(processes, replica_env(database_url, schema), *command)
    # A handler with a bug cancels one of its replica's loops: nothing asked
    # the replica to stop, so the loop is dead, and the replica with it.
    async with Client(replica.address) as client:
        await client.submit("cancel_loop", {"loop": "treadle-cron"})
    assert await replica.wait(30) == EXIT_LOOP_DIED, replica.log
    log = replica.log
    assert "background loop treadle-cron died (cancelled)" in log
    assert "exiting with status 70: background loop treadle-cron died" in log


@pytest.mark.timeout(60)
async def test_a_sigterm_stop_exits_zero(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
) -> None:
    replica = await launch(processes, replica_env(database_url, schema))
    replica.signal(signal.SIGTERM)
    assert await replica.wait(20) == 0, replica.log
    assert "exiting with status" not in replica.log


async def running_on(
    results: asyncpg.Connection, schema: str, task_id: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await results.fetchrow(
        f'SELECT state, lease_owner, attempts, claims FROM "{schema}".tasks WHERE id = $1',
        uuid.UUID(task_id),
    )
    return row


async def start_sync_sleeper(
    replica: ReplicaProcess, results: asyncpg.Connection, schema: str, seconds: float
) -> str:
    async with Client(replica.address) as client:
        task_id = (await client.submit("sync_record", {"n": 1, "sleep": seconds})).id
    async with asyncio.timeout(10):
        while (await counts(results, schema)).get("RUNNING", 0) < 1:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # its thread has picked it up
    return task_id


@pytest.mark.timeout(90)
async def test_a_sync_handler_past_the_drain_timeout_does_not_hold_the_exit(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
) -> None:
    env = replica_env(database_url, schema, drain_timeout=1, lease_seconds=3)
    first = await launch(processes, env)
    task_id = await start_sync_sleeper(first, results, schema, 8)
    began = time.monotonic()
    first.signal(signal.SIGTERM)
    assert await first.wait(10) == 0, first.log
    took = time.monotonic() - began
    print(f"\nsync handler of 8 s, drain timeout 1 s: exited {took:.1f}s after SIGTERM")
    assert took < 6, f"exited {took:.1f}s after SIGTERM: it waited for the handler's thread"
    log = first.log
    assert "1 task(s) still run in sync handler threads" in log
    assert "exiting now with status 0" in log
    # Not handed back while its thread ran: still leased to the exited replica.
    row = await running_on(results, schema, task_id)
    assert row is not None
    assert (row["state"], row["lease_owner"]) == ("RUNNING", first.replica_id)
    assert await results.fetchval(f'SELECT count(*) FROM "{schema}".fault_results') == 0

    # Once its lease has expired, another replica takes it back and runs it, once.
    second = await launch(processes, env)
    async with asyncio.timeout(30):
        while (await counts(results, schema)).get("SUCCEEDED", 0) < 1:
            await asyncio.sleep(0.1)
    ran = await results.fetch(f'SELECT pid FROM "{schema}".fault_results')
    assert len(ran) == 1, "ran once: the first process never finished it"
    assert second.proc is not None and ran[0]["pid"] == second.proc.pid


@pytest.mark.timeout(60)
async def test_a_second_signal_exits_at_once_with_a_sync_handler_running(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
) -> None:
    env = replica_env(database_url, schema, drain_timeout=30, lease_seconds=3)
    replica = await launch(processes, env)
    task_id = await start_sync_sleeper(replica, results, schema, 30)
    replica.signal(signal.SIGTERM)
    await replica.logged("draining 1 running task(s), up to 30.0s", 10)
    began = time.monotonic()
    replica.signal(signal.SIGTERM)
    assert await replica.wait(10) == 0, replica.log
    took = time.monotonic() - began
    print(f"\nsecond SIGTERM with a 30 s sync handler running: exited after {took:.1f}s")
    assert took < 6, f"exited {took:.1f}s after the second signal"
    row = await running_on(results, schema, task_id)
    assert row is not None
    assert (row["state"], row["lease_owner"]) == ("RUNNING", replica.replica_id)
