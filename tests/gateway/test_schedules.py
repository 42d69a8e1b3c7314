"""Cron schedules over GraphQL: HTTP → gateway → gRPC → scheduler → PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .helpers import GraphQL, poll

SCHEDULE_FIELDS = """
    name cron timezone paused nextFireAt lastFiredAt createdAt
    task { name payload queue priority maxAttempts timeoutSeconds retry { baseSeconds } }
"""
CREATE = f"""
mutation Create($input: CreateScheduleInput!) {{
  createSchedule(input: $input) {{ {SCHEDULE_FIELDS} }}
}}
"""
LIST = f"query {{ schedules {{ {SCHEDULE_FIELDS} }} }}"
PAUSE = "mutation Pause($name: String!) { pauseSchedule(name: $name) { name paused } }"
RESUME = (
    "mutation Resume($name: String!) { resumeSchedule(name: $name) { name paused nextFireAt } }"
)
DELETE = "mutation Delete($name: String!) { deleteSchedule(name: $name) }"
TASKS = "query { tasks(first: 100) { nodes { id name idempotencyKey state result } } }"


def error_code(body: dict[str, Any]) -> str:
    assert len(body.get("errors") or []) == 1, body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def test_create_list_pause_resume_delete(gql: GraphQL) -> None:
    body = await gql(
        CREATE,
        input={
            "name": "nightly-report",
            "cron": "0 3 * * *",
            "timezone": "Europe/Paris",
            "task": {
                "name": "echo",
                "payload": {"report": "daily"},
                "priority": 3,
                "timeoutSeconds": 30,
                "retry": {"baseSeconds": 2},
            },
        },
    )
    assert "errors" not in body, body
    created = body["data"]["createSchedule"]
    assert created["name"] == "nightly-report" and created["cron"] == "0 3 * * *"
    assert created["timezone"] == "Europe/Paris" and created["paused"] is False
    assert created["task"] == {
        "name": "echo",
        "payload": {"report": "daily"},
        "queue": "default",
        "priority": 3,
        "maxAttempts": None,
        "timeoutSeconds": 30,
        "retry": {"baseSeconds": 2},
    }
    assert datetime.fromisoformat(created["nextFireAt"]) > datetime.now(UTC)
    assert created["lastFiredAt"] is None

    body = await gql(LIST)
    assert body == {"data": {"schedules": [created]}}

    body = await gql(PAUSE, name="nightly-report")
    assert body == {"data": {"pauseSchedule": {"name": "nightly-report", "paused": True}}}
    body = await gql(RESUME, name="nightly-report")
    assert body["data"]["resumeSchedule"]["paused"] is False
    assert await gql(DELETE, name="nightly-report") == {"data": {"deleteSchedule": True}}
    assert await gql(LIST) == {"data": {"schedules": []}}


async def test_a_schedule_keeps_its_tasks_concurrency_key(gql: GraphQL) -> None:
    fields = "name task { name concurrencyKey maxConcurrent }"
    body = await gql(
        "mutation Create($input: CreateScheduleInput!) "
        f"{{ createSchedule(input: $input) {{ {fields} }} }}",
        input={
            "name": "per-user",
            "cron": "0 3 * * *",
            "task": {"name": "echo", "concurrencyKey": "user:1", "maxConcurrent": 1},
        },
    )
    assert "errors" not in body, body
    task = {"name": "echo", "concurrencyKey": "user:1", "maxConcurrent": 1}
    assert body["data"]["createSchedule"]["task"] == task
    listed = await gql(f"query {{ schedules {{ {fields} }} }}")
    assert listed == {"data": {"schedules": [{"name": "per-user", "task": task}]}}, "stored"


async def test_every_second_schedule_submits_tasks(gql: GraphQL) -> None:
    body = await gql(
        CREATE,
        input={"name": "tick", "cron": "* * * * * *", "task": {"name": "echo", "payload": 1}},
    )
    assert "errors" not in body, body

    async def fired() -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = (await gql(TASKS))["data"]["tasks"]["nodes"]
        return [n for n in nodes if n["state"] == "SUCCEEDED"]

    done = (await poll(fired, timeout=5))[0]
    assert done["name"] == "echo" and done["result"] == 1
    assert done["idempotencyKey"].startswith("cron:tick:")
    assert (await gql(LIST))["data"]["schedules"][0]["lastFiredAt"] is not None
    await gql(DELETE, name="tick")


async def test_errors_carry_their_codes(gql: GraphQL) -> None:
    task = {"name": "echo"}
    bad_cron = await gql(CREATE, input={"name": "x", "cron": "nope", "task": task})
    assert error_code(bad_cron) == "INVALID_ARGUMENT"
    assert "invalid cron expression 'nope'" in bad_cron["errors"][0]["message"]
    bad_zone = await gql(
        CREATE, input={"name": "x", "cron": "@daily", "timezone": "Nowhere/City", "task": task}
    )
    assert error_code(bad_zone) == "INVALID_ARGUMENT"
    unknown_task = await gql(
        CREATE, input={"name": "x", "cron": "@daily", "task": {"name": "missing"}}
    )
    assert error_code(unknown_task) == "INVALID_ARGUMENT"
    assert "errors" not in await gql(CREATE, input={"name": "x", "cron": "@daily", "task": task})
    again = await gql(CREATE, input={"name": "x", "cron": "@daily", "task": task})
    assert error_code(again) == "ALREADY_EXISTS"
    for mutation in (PAUSE, RESUME, DELETE):
        assert error_code(await gql(mutation, name="absent")) == "NOT_FOUND"
    assert [s["name"] for s in (await gql(LIST))["data"]["schedules"]] == ["x"]
