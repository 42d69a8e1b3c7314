"""Hostile GraphQL requests never hurt the gateway or the replica behind it (issue 9).

Each property posts generated operations to a real gateway in front of a real
replica and checks: never a 5xx, never `extensions.code: INTERNAL`; a refused
submission stores nothing; an accepted one round-trips exactly through
`task(id)`; and, after all the examples, the replica still runs `echo` and the
gateway still answers `tasks(state: DEAD)`, `queueStatsList` and `systemHealth`.

Bodies are written by hand so that what no JSON encoder writes reaches the
gateway: payloads nested 1,500 deep, `NaN`, `1e400`, lone surrogates (as JSON
escapes), broken JSON and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import Harness, decimal_json, same_json
from .strategies import (
    DEFAULT_QUEUE,
    HOSTILE_FLOATS,
    HOSTILE_PAYLOADS,
    HOSTILE_TIME_TEXT,
    NAME_TEXT,
    NAMES,
    VALID_PAYLOADS,
    VALID_TIMES,
)

#: A failing example may hold a string of 100,000 characters: Hypothesis warns
#: that printing it is costly, and warnings are errors here.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

TASK_FIELDS = """id name queue priority payload runAt createdAt maxAttempts idempotencyKey
    timeoutSeconds retry { baseSeconds factor maxSeconds }"""
SUBMIT = f"""mutation Submit($input: SubmitTaskInput!) {{
    submitTask(input: $input) {{ {TASK_FIELDS} existing }} }}"""
GET = f"query Get($id: ID!) {{ task(id: $id) {{ {TASK_FIELDS} }} }}"
#: The gateway's default request body limit (issue 9: 2 MiB).
MAX_BODY = 2 << 20
#: Stands for the payload in the body, replaced by the payload's raw text.
PAYLOAD_MARK = "\x01payload\x01"
#: Any text, lone surrogates included: JSON carries them as escapes.
ANY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "\n", "\u202e"]),
    st.integers(150, 100_000).map(lambda n: "q" * n),
)


def body(query: str, variables: dict[str, Any], payload: str | None = None) -> bytes:
    """The request body; `payload` (raw JSON text, or not JSON) replaces PAYLOAD_MARK."""
    text = json.dumps({"query": query, "variables": variables})  # NaN written as NaN
    if payload is not None:
        text = text.replace(json.dumps(PAYLOAD_MARK), payload)
    return text.encode("utf-8", "surrogatepass")


async def post(h: Harness, content: bytes) -> tuple[int, dict[str, Any] | None]:
    """POST `content`; the status and the body's JSON (numbers as Decimal), checked
    for what must never happen: a 5xx, an INTERNAL error."""
    assert h.http is not None
    response = await h.http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    try:
        reply = decimal_json(response.text)
    except ValueError:
        reply = None
    assert response.status_code != 200 or isinstance(reply, dict), response.text[:500]
    for error in (reply or {}).get("errors") or ():
        code = (error.get("extensions") or {}).get("code")
        assert code != "INTERNAL", error
        assert error.get("message") != "Internal error.", error
    return response.status_code, reply


def field_errors(reply: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((reply or {}).get("errors") or ())


def refusal_codes_ok(reply: dict[str, Any] | None) -> None:
    """A refusal raised while executing is INVALID_ARGUMENT (or NOT_FOUND/
    FAILED_PRECONDITION for an id); errors found before execution (syntax,
    validation, variable coercion) have no path and no code of ours."""
    for error in field_errors(reply):
        if error.get("path"):
            code = (error.get("extensions") or {}).get("code")
            assert code in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"), error


def inputs(hostile: bool) -> st.SearchStrategy[tuple[dict[str, Any], str | None]]:
    """(input variables, payload text): the input holds PAYLOAD_MARK where the
    payload goes; None leaves the payload out."""

    def pick(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return st.one_of(valid, bad) if hostile else valid

    @st.composite
    def build(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
        fields: dict[str, Any] = {"name": draw(pick(st.sampled_from(NAMES), ANY_TEXT))}
        payload = draw(st.one_of(st.none(), pick(VALID_PAYLOADS, HOSTILE_PAYLOADS)))
        if payload is not None:
            fields["payload"] = PAYLOAD_MARK
        optional: dict[str, st.SearchStrategy[Any]] = {
            "queue": pick(NAME_TEXT, ANY_TEXT),
            "priority": pick(st.integers(-100, 100), st.integers(-(2**40), 2**40)),
            "maxAttempts": pick(st.integers(1, 5), st.integers(-(2**40), 2**40)),
            "idempotencyKey": pick(NAME_TEXT, ANY_TEXT),
            "timeoutSeconds": pick(st.floats(0.001, 86400), HOSTILE_FLOATS),
            "retry": st.fixed_dictionaries(
                {},
                optional={
                    "baseSeconds": pick(st.floats(0, 3600), HOSTILE_FLOATS),
                    "factor": pick(st.floats(1, 10), HOSTILE_FLOATS),
                    "maxSeconds": pick(st.floats(0, 86400), HOSTILE_FLOATS),
                },
            ),
        }
        for key, values in optional.items():
            if draw(st.booleans()):
                fields[key] = draw(values)
        when = draw(st.sampled_from(["now", "runAt", "delay", "both"][: 4 if hostile else 3]))
        if when in ("runAt", "both"):
            fields["runAt"] = draw(pick(VALID_TIMES.map(datetime.isoformat), HOSTILE_TIME_TEXT))
        if when in ("delay", "both"):
            fields["delaySeconds"] = draw(pick(st.floats(0, 365 * 86400), HOSTILE_FLOATS))
        return fields, payload

    return build()


def _float_of(value: Any) -> float:
    return float(value)


def assert_round_trip(given: dict[str, Any], payload: str | None, task: dict[str, Any]) -> None:
    assert task["name"] == given["name"]
    assert task["queue"] == given.get("queue", DEFAULT_QUEUE)
    assert task["priority"] == given.get("priority", 0)
    expected = decimal_json(payload) if payload is not None else None
    assert same_json(task["payload"], expected), task["payload"]
    assert task["maxAttempts"] == given.get("maxAttempts", 1)
    assert task["idempotencyKey"] == given.get("idempotencyKey")
    if "timeoutSeconds" in given:
        assert _float_of(task["timeoutSeconds"]) == given["timeoutSeconds"]
    else:
        assert task["timeoutSeconds"] is None
    retry = {"baseSeconds": 1.0, "factor": 2.0, "maxSeconds": 300.0}  # RetryPolicyInput's
    retry.update(given.get("retry", {}))
    assert {k: _float_of(v) for k, v in task["retry"].items()} == retry
    run_at = datetime.fromisoformat(task["runAt"])
    if "runAt" in given:
        assert run_at == datetime.fromisoformat(given["runAt"])
    if "delaySeconds" in given:
        waited = run_at - datetime.fromisoformat(task["createdAt"])
        assert abs(waited - timedelta(seconds=given["delaySeconds"])) < timedelta(seconds=5)


async def submit_one(
    h: Harness, given: dict[str, Any], payload: str | None, must_accept: bool
) -> None:
    before = await h.count()
    _, reply = await post(h, body(SUBMIT, {"input": given}, payload))
    task = ((reply or {}).get("data") or {}).get("submitTask")
    if task is None:
        refusal_codes_ok(reply)
        assert await h.count() == before, "a refused submission stored a row"
        assert not must_accept, f"a valid submission was refused: {field_errors(reply)}"
        return
    assert field_errors(reply) == []
    if task["existing"]:
        assert await h.count() == before
        return
    assert await h.count() == before + 1
    assert_round_trip(given, payload, task)
    _, again = await post(h, body(GET, {"id": task["id"]}))
    assert again is not None
    assert field_errors(again) == []
    stored = again["data"]["task"]
    assert {k: v for k, v in stored.items() if k != "payload"} == {
        k: v for k, v in task.items() if k not in ("payload", "existing")
    }
    assert same_json(stored["payload"], task["payload"])


async def gateway_still_answers(h: Harness) -> None:
    query = """{ tasks(state: DEAD) { nodes { id } } dead: tasks { nodes { id state } }
        queueStatsList { queue } systemHealth { status } overview { totalQueues } }"""
    status, reply = await post(h, body(query, {}))
    assert status == 200
    assert field_errors(reply) == []


def still_serving(h: Harness) -> None:
    h.run(gateway_still_answers(h))
    h.assert_still_serving()


# -- submitTask ---------------------------------------------------------------------------


def test_valid_submissions_round_trip(harness: Harness) -> None:
    @given(inputs(hostile=False))
    def prop(case: tuple[dict[str, Any], str | None]) -> None:
        harness.run(submit_one(harness, *case, must_accept=True))

    prop()
    still_serving(harness)


def test_hostile_submissions_are_refused_or_round_trip(harness: Harness) -> None:
    @given(inputs(hostile=True))
    @example(({"name": "echo", "runAt": "9999-12-31T23:59:59.999999Z"}, None))
    @example(({"name": "echo", "runAt": "0001-01-01T00:00:00Z"}, None))
    @example(({"name": "echo", "payload": PAYLOAD_MARK}, "1e400"))
    @example(({"name": "echo", "payload": PAYLOAD_MARK}, '"\\ud800"'))
    @example(({"name": "echo", "queue": "a\x00b"}, None))
    @example(({"name": "echo", "payload": PAYLOAD_MARK}, "[" * 1000 + "]" * 1000))
    @example(({"name": "echo", "delaySeconds": 1e308}, None))
    def prop(case: tuple[dict[str, Any], str | None]) -> None:
        harness.run(submit_one(harness, *case, must_accept=False))

    prop()
    still_serving(harness)


# -- reads and id mutations ------------------------------------------------------------------

READS = {
    "tasks": "query Q($v: String, $s: TaskState, $f: Int!, $a: String) { "
    "tasks(queue: $v, state: $s, first: $f, after: $a) { nodes { id queue state } "
    "pageInfo { hasNextPage endCursor } } }",
    "task": "query Q($v: ID!) { task(id: $v) { id } }",
    "cancelTask": "mutation M($v: ID!) { cancelTask(id: $v) { id } }",
    "retryTask": "mutation M($v: ID!) { retryTask(id: $v) { id } }",
    "queue": "query Q($v: String!) { queue(name: $v) { name } }",
    "queueStats": "query Q($v: String!) { queueStats(queue: $v) { queue } }",
}


def test_reads_answer_or_refuse(harness: Harness) -> None:
    values = st.one_of(ANY_TEXT, st.uuids().map(str))
    states = st.one_of(
        st.none(),
        st.sampled_from(["QUEUED", "DEAD", "SUCCEEDED", "BOGUS", "queued", ""]),
    )
    firsts = st.one_of(st.integers(-5, 1100), st.integers(-(2**40), 2**40))
    afters = st.one_of(st.none(), ANY_TEXT, st.just("c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5"))

    @given(st.sampled_from(sorted(READS)), values, states, firsts, afters)
    @example("tasks", "", None, 10, "c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5")  # seq:9999…
    @example("queueStats", "a\x00b", None, 1, None)
    def prop(read: str, value: str, state: str | None, first: int, after: str | None) -> None:
        variables: dict[str, Any] = {"v": value}
        if read == "tasks":
            variables.update(s=state, f=first, a=after)
        harness.run(read_once(harness, READS[read], variables))

    prop()
    still_serving(harness)


async def read_once(h: Harness, query: str, variables: dict[str, Any]) -> None:
    before = await h.count()
    _, reply = await post(h, body(query, variables))
    refusal_codes_ok(reply)
    assert await h.count() == before


# -- bodies that are not GraphQL ----------------------------------------------------------------


def test_broken_bodies_are_client_errors(harness: Harness) -> None:
    bodies = st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"\xff\xfe",
                b'{"query": "{ __typename }", "x": "\xff"}',
                b"[]",
                b"null",
                b"1e400",
                b'{"query": 1}',
                b'{"query": "{ task(id: \\"\\ud800\\") { id } }"}',
                b'{"query": "{ __typename }", "variables": ' + b"[" * 1500 + b"]" * 1500 + b"}",
                b'{"query": "' + b"{" * 100 + b'"}',
            ]
        ),
        st.text().map(lambda t: t.encode("utf-8", "surrogatepass")),
    )

    @given(bodies)
    @example(b'{"query": "{ __typename }", "x": "' + b"a" * (MAX_BODY + 1) + b'"}')
    @example(b"\xff")
    @example(b'{"query": "{ __typename }", "variables": ' + b"[" * 1500 + b"]" * 1500 + b"}")
    def prop(content: bytes) -> None:
        harness.run(raw_once(harness, content))

    prop()
    still_serving(harness)


async def raw_once(h: Harness, content: bytes) -> None:
    before = await h.count()
    status, _ = await post(h, content)
    assert status in (200, 400, 413), status
    if len(content) > MAX_BODY:
        assert status == 413, "a body over the limit was read"
    assert await h.count() == before


def test_non_finite_numbers_never_reach_the_scheduler(harness: Harness) -> None:
    """NaN and the infinities as GraphQL floats are refused before anything is stored."""

    @given(
        st.sampled_from(["delaySeconds", "timeoutSeconds"]),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    )
    def prop(field: str, value: float) -> None:
        harness.run(submit_one(harness, {"name": "echo", field: value}, None, False))

    prop()
    still_serving(harness)
