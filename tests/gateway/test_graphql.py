"""The GraphQL API end to end: HTTP → gateway → gRPC → scheduler → PostgreSQL → handler."""

from __future__ import annotations

import gc
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import DEFAULT_MAXSIZE, _get_validate_cache

from treadle.common import tasks
from treadle.gateway import types
from treadle.gateway.errors import CodedErrors
from treadle.gateway.schema import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS, create_schema

from .helpers import GraphQL, poll

TASK_FIELDS = """
    id name queue state payload result attempts maxAttempts priority
    runAt createdAt startedAt finishedAt idempotencyKey
    error { type message traceback }
"""
SUBMIT = f"""
mutation Submit($input: SubmitTaskInput!) {{
    submitTask(input: $input) {{ {TASK_FIELDS} existing }}
}}
"""
GET = f"query Get($id: ID!) {{ task(id: $id) {{ {TASK_FIELDS} }} }}"
CANCEL = "mutation Cancel($id: ID!) { cancelTask(id: $id) { id state finishedAt } }"
LIST = """
query List($queue: String, $state: TaskState, $first: Int!, $after: String) {
  tasks(queue: $queue, state: $state, first: $first, after: $after) {
    edges { cursor node { id name queue state } }
    nodes { id }
    pageInfo { hasNextPage endCursor }
  }
}
"""
PAGE = """
query Page($states: [TaskState!], $name: String, $key: String, $since: DateTime,
           $first: Int! = 50, $after: String, $last: Int, $before: String) {
  tasks(states: $states, name: $name, idempotencyKey: $key, createdAfter: $since,
        first: $first, after: $after, last: $last, before: $before) {
    nodes { id traceId }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def submit(gql: GraphQL, **task: Any) -> dict[str, Any]:
    body = await gql(SUBMIT, input=task)
    assert "errors" not in body, body
    submitted: dict[str, Any] = body["data"]["submitTask"]
    return submitted


async def finished(gql: GraphQL, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await gql(GET, id=task_id)
        assert "errors" not in body, body
        task: dict[str, Any] = body["data"]["task"]
        return task if task["state"] in ("SUCCEEDED", "DEAD", "CANCELLED") else None

    done: dict[str, Any] = await poll(check)
    return done


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body.get("errors") or []) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


def test_task_states_mirror_the_common_enum() -> None:
    assert [s.value for s in types.TaskState] == [s.value for s in tasks.TaskState]


async def test_submit_echo_then_poll_until_succeeded(gql: GraphQL) -> None:
    payload = {"hello": "world", "n": [1, 2.5, None, True]}
    task = await submit(gql, name="echo", payload=payload, idempotencyKey="k-1")
    assert task["name"] == "echo"
    assert task["state"] == "QUEUED"
    assert task["payload"] == payload
    assert task["result"] is None and task["error"] is None
    assert task["queue"] == "default" and task["priority"] == 0 and task["maxAttempts"] == 1
    assert task["idempotencyKey"] == "k-1"
    assert task["existing"] is False
    assert datetime.fromisoformat(task["createdAt"]).tzinfo is not None

    done = await finished(gql, task["id"])
    assert done["state"] == "SUCCEEDED"
    assert done["result"] == payload
    assert done["attempts"] == 1
    assert done["startedAt"] is not None and done["finishedAt"] is not None

    again = await submit(gql, name="echo", payload={"other": 1}, idempotencyKey="k-1")
    assert again["id"] == task["id"]
    assert again["existing"] is True, "the reply says the key matched an existing task"
    assert again["payload"] == payload, "the existing task, not the new payload"
    got = await gql("query Get($id: ID!) { task(id: $id) { existing } }", id=task["id"])
    assert got["data"]["task"]["existing"] is None, "null outside submitTask"


async def test_submit_with_a_concurrency_key_shows_it(gql: GraphQL) -> None:
    body = await gql(
        SUBMIT.replace("existing", "existing concurrencyKey maxConcurrent"),
        input={"name": "echo", "payload": 1, "concurrencyKey": "user:7", "maxConcurrent": 2},
    )
    assert "errors" not in body, body
    task = body["data"]["submitTask"]
    assert (task["concurrencyKey"], task["maxConcurrent"]) == ("user:7", 2)
    assert (await finished(gql, task["id"]))["state"] == "SUCCEEDED"
    refused = await gql(SUBMIT, input={"name": "echo", "concurrencyKey": "k", "maxConcurrent": 0})
    error = only_error(refused)
    assert error["extensions"]["code"] == "INVALID_ARGUMENT", refused
    assert "max_concurrent must be 1..1000000, got 0" in error["message"]


async def test_sync_handler_through_graphql(gql: GraphQL) -> None:
    task = await submit(gql, name="square", payload={"x": 7})
    assert task["queue"] == "math"
    done = await finished(gql, task["id"])
    assert done["state"] == "SUCCEEDED"
    assert done["result"]["value"] == 49


async def test_failing_handler_reports_its_error(gql: GraphQL) -> None:
    task = await submit(gql, name="boom", payload="bang")
    done = await finished(gql, task["id"])
    assert done["state"] == "DEAD"
    assert done["result"] is None
    assert done["error"]["type"] == "ValueError"
    assert "boom: bang" in done["error"]["message"]


async def test_null_payload_is_the_default(gql: GraphQL) -> None:
    task = await submit(gql, name="noop")
    assert task["payload"] is None
    assert (await finished(gql, task["id"]))["state"] == "SUCCEEDED"


async def test_list_pages_and_filters(gql: GraphQL) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ids = [(await submit(gql, name="echo", payload=i, runAt=later))["id"] for i in range(3)]
    other = (await submit(gql, name="echo", queue="other", runAt=later))["id"]

    # Newest first, two at a time.
    body = await gql(LIST, queue="default", first=2)
    assert "errors" not in body, body
    page = body["data"]["tasks"]
    assert [e["node"]["id"] for e in page["edges"]] == [ids[2], ids[1]]
    assert [n["id"] for n in page["nodes"]] == [ids[2], ids[1]]
    assert page["pageInfo"]["hasNextPage"] is True
    cursor = page["pageInfo"]["endCursor"]
    assert cursor and page["edges"][-1]["cursor"] == cursor

    body = await gql(LIST, queue="default", first=2, after=cursor)
    page = body["data"]["tasks"]
    assert [n["id"] for n in page["nodes"]] == [ids[0]]
    assert page["pageInfo"] == {"hasNextPage": False, "endCursor": page["edges"][0]["cursor"]}

    body = await gql(LIST, queue="other", first=10)
    assert [n["id"] for n in body["data"]["tasks"]["nodes"]] == [other]

    body = await gql(LIST, state="SCHEDULED", first=10)
    assert {n["id"] for n in body["data"]["tasks"]["nodes"]} == {*ids, other}
    body = await gql(LIST, state="SUCCEEDED", first=10)
    assert body["data"]["tasks"]["nodes"] == []
    assert body["data"]["tasks"]["pageInfo"] == {"hasNextPage": False, "endCursor": None}


async def test_list_pages_back_and_forth_with_new_filters(gql: GraphQL) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ids = [(await submit(gql, name="echo", payload=i, runAt=later))["id"] for i in range(5)]
    keyed = (await submit(gql, name="sleep", idempotencyKey="k-1", runAt=later))["id"]
    newest_first = [keyed, *reversed(ids)]

    first = (await gql(PAGE, first=2))["data"]["tasks"]
    assert [n["id"] for n in first["nodes"]] == newest_first[:2]
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]
    second = (await gql(PAGE, first=2, after=first["pageInfo"]["endCursor"]))["data"]["tasks"]
    assert [n["id"] for n in second["nodes"]] == newest_first[2:4]
    assert second["pageInfo"]["hasNextPage"] and second["pageInfo"]["hasPreviousPage"]
    # Back from the second page to the first, still newest first.
    back = (await gql(PAGE, last=2, before=second["pageInfo"]["startCursor"]))["data"]["tasks"]
    assert [n["id"] for n in back["nodes"]] == newest_first[:2]
    assert back["pageInfo"]["hasNextPage"] and not back["pageInfo"]["hasPreviousPage"]
    # `last` alone: the oldest tasks.
    oldest = (await gql(PAGE, last=2))["data"]["tasks"]
    assert [n["id"] for n in oldest["nodes"]] == newest_first[-2:]
    assert oldest["pageInfo"]["hasPreviousPage"] and not oldest["pageInfo"]["hasNextPage"]

    by_name = (await gql(PAGE, name="sleep"))["data"]["tasks"]["nodes"]
    assert [n["id"] for n in by_name] == [keyed]
    assert by_name[0]["traceId"] is None or len(by_name[0]["traceId"]) == 32
    assert [n["id"] for n in (await gql(PAGE, key="k-1"))["data"]["tasks"]["nodes"]] == [keyed]
    states = (await gql(PAGE, states=["SCHEDULED", "DEAD"]))["data"]["tasks"]["nodes"]
    assert len(states) == 6
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert (await gql(PAGE, since=future))["data"]["tasks"]["nodes"] == []

    body = await gql(PAGE, first=2, after=first["pageInfo"]["endCursor"], last=2)
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    assert "not both" in body["errors"][0]["message"]


async def test_cancel_a_scheduled_task_then_again(gql: GraphQL) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    task = await submit(gql, name="echo", payload=1, runAt=later.isoformat())
    assert task["state"] == "SCHEDULED"
    assert datetime.fromisoformat(task["runAt"]) == later

    body = await gql(CANCEL, id=task["id"])
    assert "errors" not in body, body
    assert body["data"]["cancelTask"]["state"] == "CANCELLED"
    assert body["data"]["cancelTask"]["finishedAt"] is not None

    error = only_error(await gql(CANCEL, id=task["id"]))
    assert error["extensions"]["code"] == "FAILED_PRECONDITION"
    assert "already finished (CANCELLED)" in error["message"]
    assert error["path"] == ["cancelTask"]


async def test_unknown_task_is_null_for_queries_and_an_error_for_mutations(gql: GraphQL) -> None:
    missing = str(uuid.uuid4())
    body = await gql(GET, id=missing)
    assert body == {"data": {"task": None}}

    error = only_error(await gql(CANCEL, id=missing))
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert missing in error["message"]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"name": "missing"}, "no handler is registered for task 'missing'"),
        ({"name": ""}, "task name must not be empty"),
        ({"name": "echo", "priority": 1000}, "priority 1000 is out of range"),
        ({"name": "echo", "maxAttempts": 0}, "max_attempts must be at least 1, got 0"),
        ({"name": "echo", "runAt": "2030-01-01T00:00:00"}, "must carry a time zone"),
    ],
)
async def test_bad_submissions_are_invalid_argument(
    gql: GraphQL, task: dict[str, Any], message: str
) -> None:
    body = await gql(SUBMIT, input=task)
    assert body["data"] is None
    error = only_error(body)
    assert error["extensions"] == {"code": "INVALID_ARGUMENT"}
    assert message in error["message"]


async def test_invalid_ids_and_cursors_are_invalid_argument(gql: GraphQL) -> None:
    for body in (
        await gql(GET, id="not-a-uuid"),
        await gql(CANCEL, id="not-a-uuid"),
        await gql(LIST, first=2, after="garbage!"),
        await gql(LIST, first=0),
        await gql(LIST, first=100_000),
    ):
        assert only_error(body)["extensions"]["code"] == "INVALID_ARGUMENT", body
    assert (
        "'not-a-uuid' is not a valid task id"
        in only_error(await gql(GET, id="not-a-uuid"))["message"]
    )


async def test_malformed_operations_are_reported_not_masked(gql: GraphQL) -> None:
    error = only_error(await gql("{ task(id: 1) { nope } }"))
    assert "Cannot query field 'nope'" in error["message"]
    error = only_error(await gql(SUBMIT, input={"name": "echo", "runAt": "not a time"}))
    assert "runAt" in error["message"] or "DateTime" in error["message"]
    assert error["message"] != "Internal error."


async def test_schema_runs_with_caches_limits_and_masking(gql: GraphQL) -> None:
    extensions = {type(e) for e in create_schema().get_extensions()}
    assert {ParserCache, ValidationCache, CodedErrors} <= {
        base for kind in extensions for base in kind.__mro__
    }
    # The deepest path the schema has today stays well inside the limit of 10.
    deepest = "{ tasks { edges { node { error { type } } } } }"
    assert await gql(deepest) == {"data": {"tasks": {"edges": []}}}


def messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body["errors"]]


async def test_operations_past_the_limits_are_refused(gql: GraphQL) -> None:
    nested = "type " + "{ x " * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1)
    deep = await gql(f"query Deep {{ tasks {{ edges {{ node {{ error {{ {nested} }} }} }} }} }}")
    assert f"'Deep' exceeds maximum operation depth of {MAX_DEPTH}" in messages(deep)
    aliases = " ".join(f"q{i}: queues {{ name }}" for i in range(MAX_ALIASES + 1))
    assert messages(await gql(f"{{ {aliases} }}")) == [
        f"{MAX_ALIASES + 1} aliases found. Allowed: {MAX_ALIASES}"
    ]
    tokens = await gql("{ " + "queues { name } " * (MAX_TOKENS // 4) + "}")
    assert messages(tokens) == [
        f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted."
    ]
    # Within the limits, the same operations run.
    assert "errors" not in await gql("{ " + aliases.partition(" q20:")[0] + " }")


async def test_a_repeated_operation_is_parsed_and_validated_once(gql: GraphQL) -> None:
    """The caches hit: the limits' rules are the same classes every time
    (Strawberry's limiters made per operation made a new cache key each time)."""
    query = f'{{ task(id: "{uuid.uuid4()}") {{ id state }} }}'
    validations = _get_validate_cache(DEFAULT_MAXSIZE)
    parses = _get_parse_cache(DEFAULT_MAXSIZE)
    assert await gql(query) == {"data": {"task": None}}
    validated, parsed = validations.cache_info(), parses.cache_info()
    for _ in range(3):
        assert await gql(query) == {"data": {"task": None}}
    assert validations.cache_info().hits == validated.hits + 3
    assert validations.cache_info().misses == validated.misses
    assert parses.cache_info().hits == parsed.hits + 3


def test_a_task_shown_is_not_kept() -> None:
    """The gateway holds on to no task it has shown (a cache of every task
    read, and of its decoded payload and result, grew without bound)."""
    now = datetime.now(UTC)
    task = tasks.Task(
        id=str(uuid.uuid4()),
        name="echo",
        queue="default",
        state=tasks.TaskState.SUCCEEDED,
        payload_json='{"a": [1, 2]}',
        result_json='{"b": true}',
        error=None,
        attempts=1,
        max_attempts=1,
        priority=0,
        run_at=now,
        created_at=now,
    )
    shown = types.Task.from_task(task)
    assert (types._payload(shown), types._result(shown)) == ({"a": [1, 2]}, {"b": True})
    gone = weakref.ref(task)
    del task, shown
    gc.collect()
    assert gone() is None


BULK = """
mutation Bulk($selection: TaskSelection!) {
  cancelTasks(selection: $selection) { affected ids more }
}
"""
COUNT = "query Count($selection: TaskSelection!) { taskCount(selection: $selection) }"


async def test_count_and_bulk_actions(gql: GraphQL) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ids = [(await submit(gql, name="echo", payload=i, runAt=later))["id"] for i in range(3)]
    waiting = {"states": ["SCHEDULED"]}
    assert (await gql(COUNT, selection=waiting))["data"]["taskCount"] == 3

    body = await gql(BULK, selection={**waiting, "limit": 2})
    assert body["data"]["cancelTasks"]["affected"] == 2 and body["data"]["cancelTasks"]["more"]
    body = await gql(BULK, selection=waiting)
    assert body["data"]["cancelTasks"] == {"affected": 1, "ids": [ids[2]], "more": False}

    retried = await gql(
        "mutation($s: TaskSelection!) { retryTasks(selection: $s) { affected more } }",
        s={"ids": ids[:2]},
    )
    assert retried["data"]["retryTasks"] == {"affected": 2, "more": False}, retried
    for task_id in ids[:2]:
        assert (await finished(gql, task_id))["state"] == "SUCCEEDED"
    purge = "mutation($s: TaskSelection!) { purgeTasks(selection: $s) { affected ids } }"
    body = await gql(purge, s={"states": ["SUCCEEDED"], "finishedBefore": later})
    assert sorted(body["data"]["purgeTasks"]["ids"]) == sorted(ids[:2]), body
    assert (await gql(COUNT, selection={}))["data"]["taskCount"] == 1

    body = await gql(BULK, selection={"limit": 0, "ids": ["nope"]})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT", body
