"""Hostile gRPC requests never hurt a replica (issue 9).

Each property sends generated requests (raw protobuf, built with the stubs,
so field-level hostility reaches the server) to a real replica and checks:
no INTERNAL/UNKNOWN (or any status saying the server is hurt); a refused
request stores nothing; an accepted submission round-trips exactly; and, after
all the examples, the replica still runs `echo` and answers its listings.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, timedelta

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from treadle.api.v1 import scheduler_pb2 as pb

from .conftest import BROKEN, CALL_TIMEOUT, Harness, decimal_json, same_json
from .strategies import (
    ALL_FIELDS,
    DEFAULT_QUEUE,
    HOSTILE_TEXT,
    INT32,
    MAX_SECONDS,
    MIN_SECONDS,
    hostile_specs,
    stamp,
    valid_specs,
)

#: A failing example may hold a string of 100,000 characters: Hypothesis warns
#: that printing it is costly, and warnings are errors here.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SERVICE = "/treadle.api.v1.SchedulerService/"
#: Codes that refuse a submission: only INVALID_ARGUMENT (issue 9).
SUBMIT_REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
#: Codes that may end a call naming a task by id.
ID_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def refused_properly(error: grpc.aio.AioRpcError, allowed: frozenset[grpc.StatusCode]) -> None:
    assert error.code() not in BROKEN, f"{error.code()}: {error.details()}"
    assert error.code() in allowed, f"{error.code()}: {error.details()}"


def assert_round_trip(spec: pb.TaskSpec, task: pb.Task) -> None:
    """`task`, stored from `spec`, holds what `spec` asked for."""
    assert task.name == spec.name
    assert task.queue == (spec.queue or DEFAULT_QUEUE)
    assert task.priority == spec.priority
    assert same_json(decimal_json(task.payload), decimal_json(spec.payload or "null")), task.payload
    assert task.idempotency_key == spec.idempotency_key
    # A task the replica already ran (`boom` fails) was given a new run time
    # for its retry: the one asked for is checked while none has run.
    if spec.HasField("run_at") and task.attempts == 0:
        assert task.run_at.seconds == spec.run_at.seconds
        assert task.run_at.nanos == spec.run_at.nanos // 1000 * 1000  # microseconds kept
    if spec.HasField("delay_seconds") and task.attempts == 0:
        waited = task.run_at.ToDatetime() - task.created_at.ToDatetime()
        assert abs(waited - timedelta(seconds=spec.delay_seconds)) < timedelta(seconds=5)
    assert task.max_attempts == (spec.max_attempts if spec.HasField("max_attempts") else 1)
    timeout = spec.timeout_seconds if spec.HasField("timeout_seconds") else 0.0
    assert task.timeout_seconds == timeout
    retry = (
        spec.retry
        if spec.HasField("retry")
        else pb.RetryPolicy(base_seconds=1, factor=2, max_seconds=300)
    )
    assert task.retry == retry


def assert_same_stored(first: pb.Task, again: pb.Task) -> None:
    """GetTask returns what SubmitTask answered (the state may have moved on,
    and with it the run time: a failing task the replica ran at once is
    rescheduled for its retry)."""
    if again.attempts == first.attempts:
        assert again.run_at == first.run_at
    for field in (
        "id",
        "name",
        "queue",
        "priority",
        "idempotency_key",
        "created_at",
        "max_attempts",
        "timeout_seconds",
        "retry",
    ):
        assert getattr(again, field) == getattr(first, field), field
    assert same_json(decimal_json(again.payload), decimal_json(first.payload))


async def submit_one(h: Harness, spec: pb.TaskSpec, must_accept: bool) -> None:
    before = await h.count()
    try:
        reply = await h.stub.SubmitTask(pb.SubmitTaskRequest(task=spec), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        refused_properly(error, SUBMIT_REFUSALS)
        assert await h.count() == before, "a refused submission stored a row"
        if must_accept:
            raise AssertionError(f"a valid submission was refused: {error.details()}") from None
        return
    if reply.existing:  # the key was taken: the first task, nothing new
        assert await h.count() == before
        assert reply.task.idempotency_key == spec.idempotency_key
        return
    assert await h.count() == before + 1
    assert_round_trip(spec, reply.task)
    got = await h.stub.GetTask(pb.GetTaskRequest(id=reply.task.id), timeout=CALL_TIMEOUT)
    assert_same_stored(reply.task, got.task)


# -- SubmitTask -------------------------------------------------------------------------


def test_valid_submissions_are_stored_exactly(harness: Harness) -> None:
    @given(valid_specs())
    def prop(spec: pb.TaskSpec) -> None:
        harness.run(submit_one(harness, spec, must_accept=True))

    prop()
    harness.assert_still_serving()


def _hostile_submissions(harness: Harness, fields: frozenset[str], *examples: pb.TaskSpec) -> None:
    def prop(spec: pb.TaskSpec) -> None:
        harness.run(submit_one(harness, spec, must_accept=False))

    for spec in examples:
        prop = example(spec)(prop)
    given(hostile_specs(fields))(prop)()
    harness.assert_still_serving()


#: Backoff past any date: the next attempt's time overflows.
HUGE_RETRY = pb.TaskSpec(
    name="boom",
    max_attempts=3,
    retry=pb.RetryPolicy(base_seconds=1e308, factor=1e308, max_seconds=1e308),
)


def test_hostile_numbers_are_refused_or_stored_exactly(harness: Harness) -> None:
    _hostile_submissions(
        harness,
        frozenset({"numbers"}),
        HUGE_RETRY,
        pb.TaskSpec(name="boom", max_attempts=2, timeout_seconds=1e308),
    )


def test_hostile_times_are_refused_or_stored_exactly(harness: Harness) -> None:
    _hostile_submissions(
        harness,
        frozenset({"time"}),
        pb.TaskSpec(name="echo", run_at=stamp(MAX_SECONDS, 999_999_999)),
        pb.TaskSpec(name="echo", run_at=stamp(MIN_SECONDS, 0)),
        pb.TaskSpec(name="echo", run_at=stamp(0, -1)),
        pb.TaskSpec(name="echo", delay_seconds=1e308),
    )


def test_hostile_payloads_are_refused_or_stored_exactly(harness: Harness) -> None:
    _hostile_submissions(
        harness,
        frozenset({"payload"}),
        pb.TaskSpec(name="echo", payload="1e400"),
        pb.TaskSpec(name="echo", payload='"\\ud800"'),
        pb.TaskSpec(name="echo", payload="[" * 1000 + "]" * 1000),
    )


def test_hostile_text_is_refused_or_stored_exactly(harness: Harness) -> None:
    _hostile_submissions(
        harness,
        frozenset({"text"}),
        pb.TaskSpec(name="echo", queue="a\x00b"),
        pb.TaskSpec(name="echo", idempotency_key="\x00"),
        pb.TaskSpec(name="echo", queue=" "),
        pb.TaskSpec(name="echo", queue="\x1b[31m"),
        pb.TaskSpec(name="x" * 20_000),
    )


def test_backslashes_in_payload_strings_are_kept(harness: Harness) -> None:
    texts = st.text(st.sampled_from(["\\", "u", "0", "x", '"', "/"]), max_size=12)

    @given(texts)
    @example("\\u0000")
    def prop(text: str) -> None:
        spec = pb.TaskSpec(name="echo", payload=json.dumps({text: text}))
        harness.run(submit_one(harness, spec, must_accept=True))

    prop()
    harness.assert_still_serving()


# -- SubmitTasks ------------------------------------------------------------------------


def test_batches_store_all_or_nothing(harness: Harness) -> None:
    @given(st.lists(st.one_of(valid_specs(), hostile_specs(ALL_FIELDS)), max_size=5))
    def prop(specs: list[pb.TaskSpec]) -> None:
        harness.run(submit_batch(harness, specs))

    prop()
    harness.assert_still_serving()


async def submit_batch(h: Harness, specs: list[pb.TaskSpec]) -> None:
    before = await h.count()
    started = await h.db_now()
    try:
        reply = await h.stub.SubmitTasks(pb.SubmitTasksRequest(tasks=specs), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        refused_properly(error, SUBMIT_REFUSALS)
        assert await h.count() == before, "a refused batch stored rows"
        return
    assert len(reply.task_ids) == len(specs)
    stored = await h.count() - before
    for spec, task_id in zip(specs, reply.task_ids, strict=True):
        got = await h.stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=CALL_TIMEOUT)
        if spec.idempotency_key and got.task.created_at.ToDatetime(tzinfo=UTC) < started:
            stored += 1  # an existing task, returned for its key
            continue
        assert_round_trip(spec, got.task)
    assert stored == len(specs)


# -- ListTasks, GetTask, CancelTask, RetryTask ----------------------------------------------


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


PAGE_TOKENS = st.one_of(
    st.just(""),
    st.integers(-(2**70), 2**70).map(lambda n: cursor(f"seq:{n}")),
    st.text(max_size=20).map(lambda t: cursor(f"seq:{t}")),
    HOSTILE_TEXT,
)


def test_listings_answer_or_refuse(harness: Harness) -> None:
    queues = st.one_of(st.just(""), st.just(DEFAULT_QUEUE), HOSTILE_TEXT)
    states = st.one_of(st.sampled_from(pb.TaskState.values()), INT32)
    sizes = st.one_of(st.integers(0, 1000), INT32)

    @given(queues, states, sizes, PAGE_TOKENS)
    @example("", 99, 0, "")
    @example("", 0, 0, cursor("seq:99999999999999999999"))
    @example("a\x00b", 0, 0, "")
    def prop(queue: str, state: int, size: int, token: str) -> None:
        harness.run(
            list_once(
                harness,
                pb.ListTasksRequest(
                    queue=queue,
                    state=state,
                    page_size=size,
                    page_token=token,  # type: ignore[arg-type]
                ),
            )
        )

    harness.run(submit_one(harness, pb.TaskSpec(name="echo"), must_accept=True))
    prop()
    harness.assert_still_serving()


async def list_once(h: Harness, request: pb.ListTasksRequest) -> None:
    before = await h.count()
    try:
        reply = await h.stub.ListTasks(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        refused_properly(error, frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
    else:
        for task in reply.tasks:
            assert not request.queue or task.queue == request.queue
            assert not request.state or task.state == request.state
        assert len(reply.tasks) <= (request.page_size or 50)
    assert await h.count() == before


IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.hex),
    HOSTILE_TEXT,
)


def test_task_ids_are_found_or_refused(harness: Harness) -> None:
    methods = st.sampled_from(["GetTask", "CancelTask", "RetryTask"])
    known: list[str] = []

    @given(methods, st.one_of(IDS, st.integers(0, 3)))
    def prop(method: str, which: str | int) -> None:
        task_id = known[which % len(known)] if isinstance(which, int) else which
        harness.run(by_id(harness, method, task_id))

    async def seed() -> None:
        for name in ("echo", "boom"):
            reply = await harness.stub.SubmitTask(
                pb.SubmitTaskRequest(task=pb.TaskSpec(name=name)), timeout=CALL_TIMEOUT
            )
            known.append(reply.task.id)
        delayed = pb.TaskSpec(name="echo", delay_seconds=3600)
        reply = await harness.stub.SubmitTask(
            pb.SubmitTaskRequest(task=delayed), timeout=CALL_TIMEOUT
        )
        known.append(reply.task.id)

    harness.run(seed())
    prop()
    harness.assert_still_serving()


async def by_id(h: Harness, method: str, task_id: str) -> None:
    request = {
        "GetTask": pb.GetTaskRequest,
        "CancelTask": pb.CancelTaskRequest,
        "RetryTask": pb.RetryTaskRequest,
    }[method](id=task_id)
    before = await h.count()
    try:
        reply = await getattr(h.stub, method)(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        refused_properly(error, ID_REFUSALS)
    else:
        assert reply.task.id == str(uuid.UUID(task_id))
    assert await h.count() == before


# -- bytes that are not the message ---------------------------------------------------------


def _raw(h: Harness, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    assert h.channel is not None
    return h.channel.unary_unary(
        SERVICE + method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def utf8_field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field holding `value` as it is (invalid UTF-8 too)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b", b"\xf8\x88"])


def test_undecodable_bytes_are_refused(harness: Harness) -> None:
    methods = st.sampled_from(["GetTask", "SubmitTask", "SubmitTasks", "ListTasks", "CancelTask"])
    payloads = st.one_of(
        st.binary(max_size=64),
        BAD_UTF8.map(lambda b: utf8_field(1, b)),  # GetTask.id / ListTasks.queue
        BAD_UTF8.map(lambda b: utf8_field(1, utf8_field(1, b))),  # SubmitTask.task.name
    )

    @given(methods, payloads)
    @example("GetTask", b"\xff\xff\xff")
    @example("GetTask", utf8_field(1, b"\xff"))
    def prop(method: str, data: bytes) -> None:
        harness.run(send_raw(harness, method, data))

    prop()
    harness.assert_still_serving()


async def send_raw(h: Harness, method: str, data: bytes) -> None:
    before = await h.count()
    try:
        await _raw(h, method)(data, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        allowed = ID_REFUSALS if method in ("GetTask", "CancelTask") else SUBMIT_REFUSALS
        refused_properly(error, allowed)
        assert await h.count() == before, "a refused request stored a row"
    else:
        # Bytes that happen to decode may be a valid submission; reads store nothing.
        assert method.startswith("Submit") or await h.count() == before


# -- timestamps, one by one --------------------------------------------------------------


def test_run_at_limits(harness: Harness) -> None:
    seconds = st.one_of(
        st.sampled_from([MIN_SECONDS, MIN_SECONDS - 1, MAX_SECONDS, MAX_SECONDS + 1]),
        st.integers(MIN_SECONDS - 10**6, MAX_SECONDS + 10**6),
    )
    nanos = st.one_of(st.sampled_from([-1, 0, 999_999_999, 1_000_000_000]), INT32)

    @given(seconds, nanos)
    @example(MAX_SECONDS, 999_999_999)
    @example(MIN_SECONDS, 0)
    @example(0, -1)
    def prop(secs: int, ns: int) -> None:
        spec = pb.TaskSpec(name="echo", run_at=stamp(secs, ns))
        harness.run(submit_one(harness, spec, must_accept=False))

    prop()
    harness.assert_still_serving()
