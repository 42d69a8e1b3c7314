"""`wire`: the one JSON rule for payloads, and the codec's rules for types and messages."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import stats, stats_wire, wire
from treadle.common.errors import InvalidArgument
from treadle.common.tasks import Queue, RetryPolicy, Task, TaskError, TaskSpec, TaskState

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": [float("-inf")]}])
def test_encode_json_refuses_nan_and_infinity_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^result is not JSON-serialisable: .*NaN"):
        wire.encode_json(value, "result")


def test_encode_json_refuses_what_has_no_json_form() -> None:
    with pytest.raises(InvalidArgument, match=r"^payload is not JSON-serialisable: .*set"):
        wire.encode_json({1, 2})


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "{"])
def test_decode_json_refuses_what_is_not_standard_json(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^--payload is not valid JSON"):
        wire.decode_json(text, "--payload")


def test_json_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": {}}
    assert wire.decode_json(wire.encode_json(value)) == value


def test_task_round_trip_keeps_every_field_and_the_json_texts_as_they_are() -> None:
    error = TaskError("ValueError", "bad", "tb", 2, NOW)
    task = Task(
        id="t",
        name="echo",
        queue="q",
        state=TaskState.RETRYING,
        payload_json='{"x": 1}',
        result_json=None,
        error=error,
        attempts=2,
        max_attempts=5,
        priority=-3,
        run_at=NOW,
        created_at=NOW,
        started_at=NOW,
        idempotency_key="k",
        errors=(error, error),
        timeout_seconds=1.5,
        retry=RetryPolicy(2, 3, 4),
    )
    msg = wire.task_to_proto(task)
    assert msg.state == pb.TASK_STATE_RETRYING and msg.payload == '{"x": 1}' and msg.result == ""
    back = wire.task_from_proto(msg)
    assert back == task and back.payload == {"x": 1} and back.result is None
    # What the scheduler keeps for itself (lease, trace context) is no Task field.
    assert {"claims", "trace_context"}.isdisjoint(f.name for f in dataclasses.fields(Task))


def test_zero_limits_are_none_and_optional_fields_keep_their_zero() -> None:
    queue = wire.queue_from_proto(wire.queue_to_proto(Queue("q", max_concurrent=None)))
    assert queue.max_concurrent is None and queue.timeout_seconds is None
    # `optional` in the proto: a zero sent is a zero read.
    spec = wire.spec_from_proto(wire.spec_to_proto(TaskSpec("n", max_attempts=0)))
    assert spec.max_attempts == 0 and spec.delay_seconds is None and spec.payload_json == "null"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="time zone"):
        wire.spec_to_proto(TaskSpec("n", run_at=datetime(2030, 1, 1)))


def test_alert_enums_and_renamed_time() -> None:
    alert = stats.Alert(
        stats.Severity.CRITICAL, stats.Metric.ERROR_RATE, "high", "q", 0.5, 0.1, NOW
    )
    health = stats.SystemHealth(stats.SystemStatus.CRITICAL, (alert,), NOW)
    msg = stats_wire.system_health_to_proto(health)
    assert msg.status == pb.SYSTEM_STATUS_CRITICAL
    assert msg.alerts[0].severity == pb.ALERT_SEVERITY_CRITICAL
    assert msg.alerts[0].metric == "error_rate" and msg.alerts[0].replica == ""
    assert msg.alerts[0].time.ToDatetime(tzinfo=UTC) == NOW
    assert stats_wire.system_health_from_proto(msg) == health


def test_a_reply_without_a_required_field_is_refused() -> None:
    with pytest.raises(AssertionError, match="last_updated"):
        stats_wire.overview_from_proto(pb.Overview())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e400", "out of the range of a double"),
        ("[-1e400]", "out of the range of a double"),
        ("1e-400", "out of the range of a double"),
        ('"\\ud800"', "lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "lone UTF-16 surrogate"),
        ('"\\ude00\\ud83d"', "lone UTF-16 surrogate"),
        ('"\ud800"', "lone UTF-16 surrogate"),
        ('["a\\u0000"]', "must not contain NUL"),
        ("[" * 65 + "]" * 65, "payload nests 65 deep, over the limit of 64"),
        ("[" * 100_000 + "]" * 100_000, "payload nests too deep (the limit is 64)"),
    ],
)
def test_decode_json_refuses_what_jsonb_or_the_limits_refuse(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        wire.decode_json(text)


@pytest.mark.parametrize(
    "text",
    [
        '"\\ud83d\\ude00"',
        '"\\\\u0000"',
        '"\\\\ud800"',
        "1e308",
        "5e-324",
        "0e999",
        "[" * 64 + "]" * 64,
    ],
)
def test_decode_json_accepts_what_jsonb_stores(text: str) -> None:
    wire.decode_json(text)


def test_encode_json_keeps_non_ascii_and_refuses_what_jsonb_refuses() -> None:
    assert wire.encode_json("é😀") == '"é😀"', "UTF-8 size, the same as a gRPC client's text"
    for value, message in (
        ("a\x00", "must not contain NUL"),
        ({"k": "\ud800"}, "lone UTF-16 surrogate"),
        ({"\udc00": 1}, "lone UTF-16 surrogate"),
    ):
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            wire.encode_json(value)
    deep: object = 1
    for _ in range(65):
        deep = [deep]
    with pytest.raises(InvalidArgument, match="result nests 65 deep, over the limit of 64"):
        wire.encode_json(deep, "result")
    assert wire.encode_json(deep, "result", max_depth=None).count("[") == 65
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidArgument, match="result nests too deep"):
        wire.encode_json(deep, "result", max_depth=None)


def test_timestamps_and_enums_that_break_their_rules_are_refused() -> None:
    for stamp, message in (
        ({"nanos": -1}, "run_at.nanos must be in 0..999999999, got -1"),
        ({"nanos": 1_000_000_000}, "run_at.nanos"),
        ({"seconds": 253_402_300_800}, "run_at.seconds must be in"),
        ({"seconds": -62_135_596_801}, "run_at.seconds must be in"),
    ):
        spec = pb.TaskSpec(name="echo", run_at=stamp)
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            wire.spec_from_proto(spec)
    with pytest.raises(InvalidArgument, match="state 99 is not a TaskState value"):
        wire.state_from_proto(99)  # type: ignore[arg-type]
    task = wire.task_to_proto(
        wire.task_from_proto(
            pb.Task(
                id="x", name="n", queue="q", state=pb.TASK_STATE_QUEUED, run_at={}, created_at={}
            )
        )
    )
    task.state = 42  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match="state 42 is not a TaskState value"):
        wire.task_from_proto(task)
