"""Reads over GraphQL survive rows written by hand: infinite times, a timeout
or retry value that is not a number, garbage in the error columns."""

from __future__ import annotations

import uuid

import asyncpg

from treadle.client import Client, TaskState
from treadle.scheduler.supervisor import Replica

from .helpers import GraphQL

FIELDS = """
id state runAt createdAt startedAt finishedAt timeoutSeconds
retry { baseSeconds factor maxSeconds }
error { type message failedAt } errors { type }
"""


async def test_graphql_reads_answer_after_poison_rows(
    database_url: str, schema: str, replica: Replica, client: Client, gql: GraphQL
) -> None:
    task = await client.submit("boom", 1)
    assert (await client.wait(task.id)).state is TaskState.DEAD
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(
            "UPDATE tasks SET run_at = '-infinity', created_at = '-infinity', "
            "started_at = 'infinity', finished_at = 'infinity', timeout_seconds = 'NaN', "
            "backoff_factor = 'infinity', backoff_max = 'NaN', "
            """error = '{"type": 1}', errors = '"x"' WHERE id = $1""",
            uuid.UUID(task.id),
        )
    finally:
        await conn.close()

    body = await gql(
        f"""query($id: ID!) {{
          task(id: $id) {{ {FIELDS} }}
          tasks(state: DEAD) {{ edges {{ node {{ {FIELDS} }} }} }}
          queueStats(queue: "default") {{ queue totalDead oldestEnqueuedAt }}
          systemHealth {{ status }}
          overview {{ totalQueues }}
        }}""",
        id=task.id,
    )
    assert "errors" not in body, body
    read = body["data"]["task"]
    assert read["state"] == "DEAD"
    assert read["runAt"].startswith("0001-01-01")
    assert read["finishedAt"].startswith("9999-12-31")
    assert read["timeoutSeconds"] is None
    assert read["error"]["type"] == "UnreadableError"
    assert read["errors"] == []
    assert [e["node"]["id"] for e in body["data"]["tasks"]["edges"]] == [task.id]


async def test_graphql_reads_a_payload_too_deep_to_decode(
    database_url: str, schema: str, replica: Replica, client: Client, gql: GraphQL
) -> None:
    task = await client.submit("echo", 1, delay_seconds=3600)
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(
            "UPDATE tasks SET payload = $2::jsonb WHERE id = $1",
            uuid.UUID(task.id),
            "[" * 5000 + "]" * 5000,
        )
    finally:
        await conn.close()
    body = await gql("query($id: ID!) { task(id: $id) { id state payload } }", id=task.id)
    assert "errors" not in body, body
    assert body["data"]["task"] == {"id": task.id, "state": "SCHEDULED", "payload": None}
