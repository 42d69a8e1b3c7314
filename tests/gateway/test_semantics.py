"""Task semantics through GraphQL: cancelling a running task, dead letters, queues."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import taskapp

from .helpers import GraphQL, poll

SUBMIT = """
mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state maxAttempts } }
"""
STATE = (
    "query($id: ID!) { task(id: $id) { state attempts cancelRequested errors { attempt type } } }"
)


async def submit(gql: GraphQL, **task: Any) -> str:
    body = await gql(SUBMIT, input=task)
    assert "errors" not in body, body
    return str(body["data"]["submitTask"]["id"])


async def state_of(gql: GraphQL, task_id: str) -> dict[str, Any]:
    body = await gql(STATE, id=task_id)
    task: dict[str, Any] = body["data"]["task"]
    return task


async def test_running_coroutine_is_cancelled_through_graphql_within_a_second(
    gql: GraphQL,
) -> None:
    key = uuid.uuid4().hex
    task_id = await submit(gql, name="cancellable", payload={"seconds": 30, "key": key})

    async def running() -> bool:
        return (await state_of(gql, task_id))["state"] == "RUNNING"

    await poll(running)
    started = time.monotonic()
    body = await gql(
        "mutation($id: ID!) { cancelTask(id: $id) { state cancelRequested } }", id=task_id
    )
    assert body["data"]["cancelTask"] == {"state": "RUNNING", "cancelRequested": True}

    async def cancelled() -> bool:
        return (await state_of(gql, task_id))["state"] == "CANCELLED"

    await poll(cancelled, timeout=1.0, interval=0.01)
    assert time.monotonic() - started < 1.0
    assert key in taskapp.CLEANED_UP


async def test_dead_letter_retried_through_graphql(gql: GraphQL) -> None:
    task_id = await submit(
        gql, name="boom", maxAttempts=2, retry={"baseSeconds": 0.02, "maxSeconds": 0.05}
    )

    async def dead() -> dict[str, Any] | None:
        task = await state_of(gql, task_id)
        return task if task["state"] == "DEAD" else None

    task = await poll(dead)
    assert task["attempts"] == 2
    assert [e["attempt"] for e in task["errors"]] == [1, 2]
    body = await gql("mutation($id: ID!) { retryTask(id: $id) { state attempts } }", id=task_id)
    assert body["data"]["retryTask"] == {"state": "QUEUED", "attempts": 0}
    await poll(dead)


async def test_retrying_a_running_task_is_a_failed_precondition(gql: GraphQL) -> None:
    task_id = await submit(gql, name="cancellable", payload={"seconds": 30, "key": "x"})

    async def running() -> bool:
        return (await state_of(gql, task_id))["state"] == "RUNNING"

    await poll(running)
    body = await gql("mutation($id: ID!) { retryTask(id: $id) { state } }", id=task_id)
    assert body["errors"][0]["extensions"]["code"] == "FAILED_PRECONDITION"
    await gql("mutation($id: ID!) { cancelTask(id: $id) { state } }", id=task_id)


async def test_queues_are_listed_updated_paused_and_resumed(gql: GraphQL) -> None:
    body = await gql("{ queues { name maxConcurrent paused maxAttempts } }")
    names = {q["name"] for q in body["data"]["queues"]}
    assert {"default", "math"} <= names

    body = await gql(
        """mutation($input: UpdateQueueInput!) {
             updateQueue(input: $input) { name maxConcurrent maxAttempts timeoutSeconds
                                           retry { baseSeconds factor maxSeconds } } }""",
        input={
            "name": "math",
            "maxConcurrent": 5,
            "maxAttempts": 3,
            "timeoutSeconds": 2.5,
            "retry": {"baseSeconds": 0.5, "factor": 3, "maxSeconds": 10},
        },
    )
    assert body["data"]["updateQueue"] == {
        "name": "math",
        "maxConcurrent": 5,
        "maxAttempts": 3,
        "timeoutSeconds": 2.5,
        "retry": {"baseSeconds": 0.5, "factor": 3.0, "maxSeconds": 10.0},
    }
    task = await gql(SUBMIT, input={"name": "square", "payload": {"x": 1}})
    assert task["data"]["submitTask"]["maxAttempts"] == 3

    body = await gql('mutation { pauseQueue(name: "default") { paused } }')
    assert body["data"]["pauseQueue"] == {"paused": True}
    task_id = await submit(gql, name="echo", payload=1)
    await asyncio.sleep(0.3)
    assert (await state_of(gql, task_id))["state"] == "QUEUED"
    body = await gql('mutation { resumeQueue(name: "default") { paused } }')
    assert body["data"]["resumeQueue"] == {"paused": False}

    async def done() -> bool:
        return (await state_of(gql, task_id))["state"] == "SUCCEEDED"

    await poll(done)

    body = await gql('{ queue(name: "nope") { name } }')
    assert body["data"]["queue"] is None
    body = await gql('mutation { updateQueue(input: {name: "nope", maxConcurrent: 1}) { name } }')
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = await gql('mutation { updateQueue(input: {name: "math", maxAttempts: 0}) { name } }')
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


async def test_bad_delay_is_invalid_argument(gql: GraphQL) -> None:
    body = await gql(SUBMIT, input={"name": "echo", "delaySeconds": -1})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    assert "delay_seconds must not be negative" in body["errors"][0]["message"]


async def test_replicas_are_listed(gql: GraphQL) -> None:
    body = await gql("{ replicas { id host pid alive running startedAt lastHeartbeatAt } }")
    replicas = body["data"]["replicas"]
    assert len(replicas) == 1
    assert replicas[0]["alive"] is True
    assert replicas[0]["pid"] > 0
