"""`treadle tasks/task/watch/dead/stats/top` and the bulk `retry/cancel/purge`,
run as real subprocesses against one real replica shared by the module (each
test in queues of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from support import TREADLE, running_replica, treadle

from treadle.client import Client, TaskState
from treadle.scheduler.supervisor import Replica

pytestmark = pytest.mark.asyncio(loop_scope="module")

TASK_KEYS = {"id", "name", "queue", "state", "payload", "result", "errors", "trace_id"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(database_url: str) -> AsyncIterator[tuple[Replica, Client]]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        async with (
            running_replica(database_url, schema, stats_flush_interval=0.1) as replica,
            Client(replica.address) as client,
        ):
            yield replica, client
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _dead(client: Client, queue: str, count: int) -> list[str]:
    made = [await client.submit("boom", i, queue=queue) for i in range(count)]
    return [(await client.wait(t.id, timeout=10)).id for t in made]


async def cli(shared: tuple[Replica, Client], *args: str) -> tuple[int, str, str]:
    return await treadle(*args, "--address", shared[0].address)


async def test_tasks_dead_and_task(shared: tuple[Replica, Client]) -> None:
    client = shared[1]
    (dead,) = await _dead(client, "q-list", 1)
    done = await client.wait((await client.submit("echo", 7, queue="q-list")).id, timeout=10)

    code, out, err = await cli(shared, "tasks", "--queue", "q-list")
    assert code == 0, err
    assert dead in out and done.id in out and "DEAD" in out and "ValueError: boom: 0" in out

    code, out, err = await cli(shared, "tasks", "--queue", "q-list", "--limit", "1", "--json")
    assert code == 0, err
    page = json.loads(out)
    assert [t["id"] for t in page["tasks"]] == [done.id] and page["next_cursor"]
    assert set(page["tasks"][0]) >= TASK_KEYS and page["tasks"][0]["result"] == 7
    code, out, _ = await cli(
        shared, "tasks", "--queue", "q-list", "--json", "--after", page["next_cursor"]
    )
    assert [t["id"] for t in json.loads(out)["tasks"]] == [dead]

    code, out, err = await cli(shared, "dead", "--queue", "q-list", "--since", "1h", "--json")
    assert code == 0, err
    assert [t["id"] for t in json.loads(out)["tasks"]] == [dead]

    code, out, err = await cli(shared, "task", dead)
    assert code == 0, err
    assert "attempt 1: ValueError: boom: 0" in out and "Traceback" in out and "q-list" in out
    code, out, _ = await cli(shared, "task", dead, "--json")
    assert json.loads(out)["errors"][0]["type"] == "ValueError"

    code, _, err = await cli(shared, "tasks", "--state", "deadish")
    assert code == 2 and "state 'deadish' is not one of QUEUED" in err
    code, _, err = await cli(shared, "tasks", "--since", "yesterday")
    assert code == 1 and "--since 'yesterday' is not a duration" in err


async def test_watch_exits_by_how_the_task_ended(shared: tuple[Replica, Client]) -> None:
    client = shared[1]
    (dead,) = await _dead(client, "q-watch", 1)
    code, out, err = await cli(shared, "watch", dead)
    assert code == 1, err
    assert "DEAD" in out and "ValueError: boom: 0" in out

    task = await client.submit("sleep", {"seconds": 0.5}, queue="q-watch")
    code, out, err = await cli(shared, "watch", task.id, "--json")
    assert code == 0, err
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert states[-1] == "SUCCEEDED" and len(states) == len(set(states))


async def test_stats_and_top(shared: tuple[Replica, Client]) -> None:
    client = shared[1]
    await client.wait((await client.submit("echo", 1, queue="q-stats")).id, timeout=10)
    code, out, err = await cli(shared, "stats")
    assert code == 0, err
    assert "q-stats" in out and "OLDEST WAIT" in out and "COMPLETED" in out

    code, out, err = await cli(shared, "stats", "--json")
    assert code == 0, err
    (mine,) = [q for q in json.loads(out) if q["queue"] == "q-stats"]
    assert {"length", "running", "scheduled", "retrying", "max_concurrent", "paused"} <= set(mine)
    assert {"oldest_enqueued_at", "total_enqueued", "total_completed"} <= set(mine)

    # Not a terminal: one snapshot, as with --once.
    for args in (("top", "--once"), ("top", "--interval", "0.2")):
        code, out, err = await cli(shared, *args)
        assert code == 0, err
        assert "treadle top" in out and "q-stats" in out and "REPLICA" in out
        assert "throughput" in out
    code, _, err = await cli(shared, "top", "--interval", "0")
    assert code == 1 and "--interval must be more than 0" in err


def _read_until(fd: int, needle: bytes, count: int, timeout: float) -> bytes:
    """What a terminal shows, read until `needle` appeared `count` times."""
    seen = b""
    deadline = time.monotonic() + timeout
    while seen.count(needle) < count and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 65536)
    return seen


async def test_top_refreshes_on_a_terminal_and_leaves_on_ctrl_c(
    shared: tuple[Replica, Client],
) -> None:
    terminal, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *TREADLE,
        "top",
        "--interval",
        "0.2",
        "--address",
        shared[0].address,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    try:
        shown = await asyncio.to_thread(_read_until, terminal, b"treadle top", 2, 30)
        assert shown.count(b"treadle top") >= 2, shown[-500:]  # refreshed
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        rest = await asyncio.to_thread(_read_until, terminal, b"\x1b[?1049l", 1, 5)
        assert b"Traceback" not in shown + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(terminal)


async def test_bulk_actions_count_confirm_and_work_in_batches(
    shared: tuple[Replica, Client],
) -> None:
    client = shared[1]
    dead = await _dead(client, "q-bulk", 3)
    await client.pause_queue("q-bulk")  # retried tasks wait there

    # No terminal on stdin and no --yes: refused at once, nothing changed.
    code, out, err = await cli(shared, "retry", "--dead", "--queue", "q-bulk")
    assert code == 1
    assert "would retry 3 DEAD tasks in queue 'q-bulk'" in err and "--yes" in err
    assert await client.count_tasks(queue="q-bulk", states=["DEAD"]) == 3

    code, out, err = await cli(
        shared, "retry", "--dead", "--queue", "q-bulk", "--since", "1h", "--yes", "--batch", "2"
    )
    assert code == 0, err
    assert "retried 3 tasks" in out and "3/3" in err  # the progress bar, on stderr
    assert await client.count_tasks(queue="q-bulk", states=["QUEUED"]) == 3

    code, out, err = await cli(
        shared, "cancel", "--queue", "q-bulk", "--state", "QUEUED", "--yes", "--json"
    )
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["action"] == "cancel" and outcome["matched"] == outcome["affected"] == 3
    assert sorted(outcome["ids"]) == sorted(dead)

    code, out, err = await cli(
        shared, "purge", "--queue", "q-bulk", "--state", "CANCELLED", "--older-than", "0s", "--yes"
    )
    assert code == 0, err
    assert "purged 3 tasks" in out
    assert await client.count_tasks(queue="q-bulk") == 0
    code, out, _ = await cli(shared, "purge", "--queue", "q-bulk", "--yes", "--json")
    assert json.loads(out) == {"action": "purge", "matched": 0, "affected": 0, "ids": []}

    code, _, err = await cli(shared, "purge", "--state", "QUEUED", "--yes")
    assert code == 1 and "--state QUEUED is not one of them" in err
    code, _, err = await cli(shared, "cancel", "--yes")
    assert code == 1 and "at least one filter" in err


async def _answering(
    shared: tuple[Replica, Client], answers: bytes, *args: str
) -> tuple[int, str, str]:
    """Run a bulk action with a terminal on stdin that types `answers`."""
    terminal, child = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *TREADLE,
            *args,
            "--address",
            shared[0].address,
            stdin=child,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        os.write(terminal, answers)
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        os.close(child)
        os.close(terminal)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bulk_action_asks_on_a_terminal(shared: tuple[Replica, Client]) -> None:
    client = shared[1]
    await _dead(client, "q-ask", 1)
    purge = ("purge", "--queue", "q-ask", "--state", "DEAD")

    code, out, err = await _answering(shared, b"maybe\nn\n", *purge)
    assert code == 1 and out == ""
    assert "Purge 1 DEAD tasks in queue 'q-ask'? [y/n]" in err
    assert "please answer y or n" in err and "purge not confirmed: nothing changed" in err
    assert await client.count_tasks(queue="q-ask") == 1

    code, out, err = await _answering(shared, b"y\n", *purge)
    assert code == 0, err
    assert "purged 1 tasks" in out and "1/1" in err
    assert await client.count_tasks(queue="q-ask") == 0


async def test_one_task_retry_and_cancel_still_print_it(shared: tuple[Replica, Client]) -> None:
    client = shared[1]
    (dead,) = await _dead(client, "q-one", 1)
    code, out, err = await cli(shared, "retry", dead)
    assert code == 0, err
    assert json.loads(out)["state"] in ("QUEUED", "RUNNING", "DEAD")
    waiting = await client.submit("echo", 1, queue="q-one", delay_seconds=3600)
    code, out, err = await cli(shared, "cancel", waiting.id)
    assert code == 0, err
    assert json.loads(out)["state"] == TaskState.CANCELLED.value
    code, _, err = await cli(shared, "retry", dead, "--dead")
    assert code == 1 and "a task id or filters (--dead), not both" in err


async def test_help_shows_the_commands_with_examples() -> None:
    code, out, _ = await treadle("--help")
    assert code == 0
    for command in ("tasks", "task", "watch", "dead", "stats", "top", "purge"):
        assert f"\n    {command} " in out, command
    assert "treadle tasks --queue emails --state DEAD --since 1h" in out
    code, out, _ = await treadle("purge", "--help")
    assert code == 0 and "--older-than" in out and "treadle purge --queue emails" in out
    code, out, _ = await treadle("submit", "--help")
    assert code == 0 and """treadle submit fib   --payload '{"n": 25}'""" in out, out
