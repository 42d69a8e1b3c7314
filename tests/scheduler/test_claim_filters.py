"""Replicas choose their work: each claims only tasks its app registers, of
the queues it was given (`--queues`); a task no replica can run stays QUEUED,
never claimed."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
import pytest
from support import make_settings, running_replica, until

from treadle.client.enqueue import enqueue
from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.scheduler import postgres
from treadle.scheduler.registry import Handler, Registry
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica


async def b_echo(payload: Any) -> dict[str, str]:
    return {"ran": "B"}


async def b_job(payload: Any) -> str:
    return "job"


#: Replica B's app: its own `echo`, and a task replica A's app lacks.
B_APP = Registry([Handler("echo", "bq", b_echo), Handler("b.job", "bq", b_job)])


async def test_two_replicas_each_run_only_their_own(
    database_url: str, schema: str, db: asyncpg.Connection
) -> None:
    """A runs the test app (echo, square, ...) and claims "default" (limited)
    and "math"; B runs its own app (echo, b.job) and claims "bq" (limited) and
    "bq2". Both claim paths (limited queues, the others) filter by both."""
    tasks = [
        ("echo@default", "echo", {"ran": "A"}, "default"),  # A's echo
        ("square@math", "square", {"x": 3}, "math"),  # A
        ("echo@bq", "echo", {"ran": "A"}, "bq"),  # B's echo
        ("b.job@bq2", "b.job", None, "bq2"),  # B
        ("b.job@default", "b.job", None, "default"),  # B has it, not of B's queues; A lacks it
        ("square@sq", "square", {"x": 1}, "sq"),  # A has it, not of A's queues
    ]
    b = Replica(make_settings(schema, queues="bq,bq2"), B_APP, database_url)
    await b.start()
    try:
        async with running_replica(database_url, schema, queues="default,math"):
            async with db.transaction():
                ids = {
                    what: (await enqueue(db, name, payload, queue=queue, schema=schema)).id
                    for what, name, payload, queue in tasks
                }
                await db.execute(
                    "UPDATE queues SET max_concurrent = 5 WHERE name IN ('default', 'bq')"
                )

            async def results() -> dict[str, Any] | None:
                rows = await db.fetch("SELECT id::text, state, result, claims FROM tasks")
                by_id = {r["id"]: r for r in rows}
                found = {what: by_id[task_id] for what, task_id in ids.items()}
                done = [found[w]["state"] for w, *_ in tasks[:4]]
                return found if done == ["SUCCEEDED"] * 4 else None

            found = await until(results)
    finally:
        await b.stop()
    assert json.loads(found["echo@default"]["result"]) == {"ran": "A"}, "A's echo ran it"
    assert json.loads(found["square@math"]["result"])["value"] == 9
    assert json.loads(found["echo@bq"]["result"]) == {"ran": "B"}, "B's echo ran it"
    assert json.loads(found["b.job@bq2"]["result"]) == "job"
    for what in ("b.job@default", "square@sq"):
        assert (found[what]["state"], found[what]["claims"]) == ("QUEUED", 0), what


async def test_a_replica_without_the_handler_never_claims_it(
    database_url: str, schema: str, db: asyncpg.Connection
) -> None:
    succeeded = "SELECT state = 'SUCCEEDED' FROM tasks WHERE id = $1"
    async with running_replica(database_url, schema):
        done = await enqueue(db, "nobody.registers.this", 1, schema=schema)
        echo = await enqueue(db, "echo", 1, schema=schema)  # enqueued after it, run before
        await until(lambda: db.fetchval(succeeded, echo.id))
    row = await db.fetchrow("SELECT state, claims FROM tasks WHERE id = $1", done.id)
    assert (row["state"], row["claims"]) == ("QUEUED", 0), "visible, waiting, never handed around"


def test_queues_setting() -> None:
    assert config.load(Settings, {}).claimed_queues is None
    settings = config.load(Settings, {"TREADLE_QUEUES": "email, reports,email"})
    assert settings.claimed_queues == ("email", "reports")
    with pytest.raises(
        InvalidArgument, match=r"TREADLE_QUEUES='email,,x': queue must not be blank"
    ):
        config.load(Settings, {"TREADLE_QUEUES": "email,,x"})


async def test_the_queues_claim_reads_no_other_queue(db: asyncpg.Connection, schema: str) -> None:
    """Structural: a replica claiming one queue reads none of another queue's
    backlog (one ordered scan of tasks_ready_by_queue per queue it claims)."""
    await db.execute(
        "INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at)"
        " SELECT gen_random_uuid(), 'echo', q, 'QUEUED', '1', 1, p, now()"
        " FROM (VALUES ('other', 10, 2000), ('mine', 0, 1)) AS v(q, p, n),"
        " generate_series(1, n)"
    )
    await db.execute(
        "INSERT INTO queues (tenant, name) VALUES ('default', 'other'), ('default', 'mine')"
    )
    await db.execute("ANALYZE tasks")
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            + postgres.QUERIES["claim_queues"].sql,
            10,
            "r",
            30.0,
            ["echo"],
            ["mine"],
        )
    )
    assert "Index Scan using tasks_ready_by_queue on tasks" in plan, plan
    assert all(int(n) < 100 for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
    assert "Seq Scan on tasks" not in plan, plan
    assert (await db.fetchrow("SELECT count(*) FROM tasks WHERE state = 'RUNNING'"))[0] == 1
