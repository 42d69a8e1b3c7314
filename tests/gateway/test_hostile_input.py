"""Hostile input over GraphQL: each refused mutation is `extensions.code`
INVALID_ARGUMENT naming the field, stores nothing, and the gateway and its
replica still answer afterwards (tests/scheduler/test_hostile_input.py has the
same over gRPC)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from support import count_rows, make_settings

from treadle.scheduler.settings import Settings

from .helpers import GraphQL, poll

#: A small payload limit, so that size accounting is seen with small payloads.
LIMIT = 1000

SUBMIT = """
mutation Submit($input: SubmitTaskInput!) { submitTask(input: $input) { id runAt payload } }
"""
GET = "query Get($id: ID!) { task(id: $id) { id state result } }"


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, max_payload_bytes=LIMIT)


def invalid_argument(body: dict[str, Any], field: str) -> None:
    assert body.get("data") in (None, {}) or body["data"].get("submitTask") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_ARGUMENT", body
    assert field in error["message"], body
    assert len(error["message"]) < 400


async def raw(http: httpx.AsyncClient, query: str, variables: str) -> dict[str, Any]:
    """POST a body whose variables are JSON text as given (lone surrogates,
    1e400, deep nesting: what json.dumps would not write)."""
    body = '{"query": ' + json.dumps(query) + ', "variables": ' + variables + "}"
    response = await http.post(
        "/graphql", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def still_answers(gql: GraphQL) -> None:
    """Reads that a stored ±infinity once broke answer, and `echo` runs."""
    for query in (
        "{ tasks(state: DEAD) { nodes { id } } }",
        "{ queueStatsList { queue } }",
        "{ systemHealth { status } }",
    ):
        body = await gql(query)
        assert "errors" not in body, body
    body = await gql(SUBMIT, input={"name": "echo", "payload": {"still": "runs"}})
    task_id = body["data"]["submitTask"]["id"]

    async def succeeded() -> dict[str, Any] | None:
        task: dict[str, Any] = (await gql(GET, id=task_id))["data"]["task"]
        return task if task["state"] == "SUCCEEDED" else None

    assert (await poll(succeeded))["result"] == {"still": "runs"}


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"runAt": "9999-12-31T23:59:59.999999Z"}, "run_at"),
        ({"runAt": "0001-01-01T00:00:00Z"}, "run_at"),
        ({"runAt": "9999-12-31T23:59:59-05:00"}, "run_at"),
        ({"runAt": "0001-01-01T00:00:00+05:00"}, "run_at"),
        ({"runAt": "10000-01-01T00:00:00Z"}, "DateTime"),
        ({"delaySeconds": 1e300}, "delay_seconds"),
        ({"delaySeconds": 3e11}, "delay_seconds"),
        ({"timeoutSeconds": 1e308}, "timeout_seconds"),
        ({"retry": {"baseSeconds": 1, "factor": 2, "maxSeconds": 1e308}}, "max_seconds"),
        ({"payload": "a\u0000b"}, "payload"),
        ({"payload": {"k\u0000": 1}}, "payload"),
        ({"queue": "a\u0000b"}, "queue"),
        ({"queue": "  "}, "queue"),
        ({"idempotencyKey": "k\u0007"}, "idempotency_key"),
        ({"name": "x" * 10_000}, "task name"),
        ({"payload": "é" * 600}, "payload is 1202 bytes, over the limit of 1000"),
    ],
)
async def test_hostile_submission_is_invalid_argument_and_stores_nothing(
    gql: GraphQL, database_url: str, schema: str, task: dict[str, Any], field: str
) -> None:
    invalid_argument(await gql(SUBMIT, input={"name": "echo", **task}), field)
    assert await count_rows(database_url, schema) == 0
    await still_answers(gql)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('"\\ud800"', "lone UTF-16 surrogate"),
        ('{"\\udc00": 1}', "lone UTF-16 surrogate"),
        ("1e400", "payload"),
        ("[" * 200 + "]" * 200, "payload nests"),
        ('{"a":' * 65 + "1" + "}" * 65, "payload nests 65 deep"),
    ],
)
async def test_hostile_json_variables_are_invalid_argument(
    http: httpx.AsyncClient,
    gql: GraphQL,
    database_url: str,
    schema: str,
    payload: str,
    field: str,
) -> None:
    query = 'mutation($p: JSON) { submitTask(input: {name: "echo", payload: $p}) { id } }'
    invalid_argument(await raw(http, query, '{"p": ' + payload + "}"), field)
    assert await count_rows(database_url, schema) == 0
    await still_answers(gql)


async def test_an_out_of_range_datetime_literal_is_invalid_argument(gql: GraphQL) -> None:
    body = await gql(
        'mutation { submitTask(input: {name: "echo", runAt: "10000-01-01T00:00:00Z"}) { id } }'
    )
    invalid_argument(body, "DateTime")


async def test_an_oversized_id_is_invalid_argument_without_transport_text(gql: GraphQL) -> None:
    body = await gql(GET, id="a" * 10_000)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_ARGUMENT", body
    assert "is not a valid task id" in error["message"]
    assert "metadata" not in error["message"] and len(error["message"]) < 400
    body = await gql("query($q: String!) { queueStats(queue: $q) { queue } }", q="q\u0000")
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT", body
    await still_answers(gql)


async def test_payload_size_counts_utf8_bytes_as_over_grpc(gql: GraphQL) -> None:
    """400 'é' are 802 bytes of JSON text in UTF-8 (2,402 once escaped as \\u00e9):
    under the limit of 1000, over GraphQL as over gRPC."""
    body = await gql(SUBMIT, input={"name": "echo", "payload": "é" * 400})
    assert "errors" not in body, body
    assert body["data"]["submitTask"]["payload"] == "é" * 400


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("mutation($n: String!) { submitTask(input: {name: $n}) { id } }", '{"n": "\\ud800"}'),
        (
            'mutation($q: String) { submitTask(input: {name: "echo", queue: $q}) { id } }',
            '{"q": "a\\udfff"}',
        ),
        ("query($id: ID!) { task(id: $id) { id } }", '{"id": "\\udfff"}'),
        ("mutation($id: ID!) { retryTask(id: $id) { id } }", '{"id": "x\\ud800"}'),
    ],
    ids=["name", "queue", "task id", "retry id"],
)
async def test_a_lone_surrogate_in_a_text_argument_is_invalid_argument(
    http: httpx.AsyncClient,
    gql: GraphQL,
    database_url: str,
    schema: str,
    query: str,
    variables: str,
) -> None:
    """JSON can spell a lone surrogate; protobuf cannot carry one (it was a 500
    with the codec's error text)."""
    body = await raw(http, query, variables)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_ARGUMENT", body
    assert "lone UTF-16 surrogate" in error["message"]
    assert await count_rows(database_url, schema) == 0
    await still_answers(gql)
