"""The pure rules of the scheduler's domain: retry backoff and its jitter, and
the checks of a submission's every field."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from treadle.common.errors import InvalidArgument
from treadle.common.tasks import RetryPolicy, TaskError, TaskSpec, TaskState
from treadle.scheduler.model import (
    MAX_SECONDS,
    MAX_TIME,
    MIN_TIME,
    ClaimedTask,
    Lease,
    after_failure,
    backoff_seconds,
    check_spec,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("base", "factor"), [(1.0, 2.0), (0.5, 3.0), (0.1, 1.5), (2.0, 1.0)])
def test_backoff_grows_by_the_factor_each_attempt(base: float, factor: float) -> None:
    policy = RetryPolicy(base_seconds=base, factor=factor, max_seconds=1e9)
    delays = [backoff_seconds(policy, attempt, 1.0) for attempt in range(1, 9)]
    assert delays[0] == base, "the first retry waits the base"
    assert delays == pytest.approx([base * factor**n for n in range(8)])
    for earlier, later in itertools.pairwise(delays):
        assert later / earlier == pytest.approx(factor)


def test_backoff_is_capped_at_max_seconds() -> None:
    policy = RetryPolicy(base_seconds=1.0, factor=2.0, max_seconds=10.0)
    assert [backoff_seconds(policy, a, 1.0) for a in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]
    # far past the cap: the exponent is bounded, so no overflow
    assert backoff_seconds(policy, 1_000, 1.0) == 10.0
    assert backoff_seconds(policy, 10**9, 1.0) == 10.0


def test_a_cap_below_the_base_wins() -> None:
    policy = RetryPolicy(base_seconds=5.0, factor=2.0, max_seconds=3.0)
    assert backoff_seconds(policy, 1, 1.0) == 3.0
    assert backoff_seconds(policy, 4, 1.0) == 3.0


@pytest.mark.parametrize("attempt", [1, 3, 5, 9])
def test_jitter_scales_the_capped_delay_within_half_to_full(attempt: int) -> None:
    """The documented range of the jitter is [0.5, 1] of the un-jittered delay,
    and it applies after the cap (a capped delay may come out below max)."""
    policy = RetryPolicy(base_seconds=1.0, factor=2.0, max_seconds=20.0)
    full = backoff_seconds(policy, attempt, 1.0)
    assert full == min(20.0, 2.0 ** (attempt - 1))
    assert backoff_seconds(policy, attempt, 0.5) == full / 2
    for jitter in (0.5, 0.6, 0.75, 0.9, 0.999, 1.0):
        delay = backoff_seconds(policy, attempt, jitter)
        assert delay == pytest.approx(full * jitter)
        assert full / 2 <= delay <= full


def _task(attempts: int, max_attempts: int, retry: RetryPolicy) -> ClaimedTask:
    return ClaimedTask(
        lease=Lease("00000000-0000-4000-8000-000000000001", "replica", attempts),
        tenant="default",
        name="echo",
        queue="default",
        payload_json="null",
        attempts=attempts,
        max_attempts=max_attempts,
        run_at=NOW,
        started_at=NOW,
        timeout_seconds=None,
        retry=retry,
    )


ERROR = TaskError(type="ValueError", message="boom", attempt=1, failed_at=NOW)


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.75, 0.999999])
@pytest.mark.parametrize("attempts", [1, 3, 7])
def test_after_failure_waits_between_half_and_all_of_the_backoff(
    draw: float, attempts: int
) -> None:
    """after_failure turns its random draw in [0, 1) into a jitter in [0.5, 1)."""
    retry = RetryPolicy(base_seconds=0.5, factor=3.0, max_seconds=100.0)
    full = min(100.0, 0.5 * 3.0 ** (attempts - 1))
    outcome = after_failure(_task(attempts, 10, retry), ERROR, True, NOW, lambda: draw)
    assert outcome.state is TaskState.RETRYING
    assert outcome.attempt == attempts
    assert outcome.error == ERROR
    assert outcome.run_at is not None
    waited = (outcome.run_at - NOW).total_seconds()
    assert waited == pytest.approx(full * (0.5 + draw / 2), abs=1e-6)
    assert full / 2 - 1e-6 <= waited <= full


def test_after_failure_is_dead_without_attempts_left_or_when_not_retryable() -> None:
    retry = RetryPolicy(base_seconds=1.0, factor=2.0, max_seconds=10.0)
    last = after_failure(_task(3, 3, retry), ERROR, True, NOW, lambda: 0.5)
    assert (last.state, last.run_at, last.error) == (TaskState.DEAD, None, ERROR)
    permanent = after_failure(_task(1, 3, retry), ERROR, False, NOW, lambda: 0.5)
    assert (permanent.state, permanent.run_at) == (TaskState.DEAD, None)


@pytest.mark.parametrize("factor", [1e5, 1e10, 1e300])
def test_a_huge_factor_reaches_the_cap_instead_of_overflowing(factor: float) -> None:
    policy = RetryPolicy(base_seconds=1.0, factor=factor, max_seconds=300.0)
    for attempt in (1, 2, 32, 63, 64, 1000):
        delay = backoff_seconds(policy, attempt, 1.0)
        assert delay == (1.0 if attempt == 1 else 300.0)
    zero = RetryPolicy(base_seconds=0.0, factor=factor, max_seconds=300.0)
    assert backoff_seconds(zero, 1000, 1.0) == 0.0


@pytest.mark.parametrize(
    "retry",
    [
        RetryPolicy(base_seconds=1e300, factor=10.0, max_seconds=1e300),
        RetryPolicy(base_seconds=1.0, factor=1e300, max_seconds=math.inf),
        RetryPolicy(base_seconds=math.nan, factor=2.0, max_seconds=math.nan),
    ],
)
def test_an_overflowing_backoff_waits_until_max_time_with_its_error(retry: RetryPolicy) -> None:
    """A policy stored before its limits were checked (submit refuses these now)
    gives a delay no datetime holds: the task retries at MAX_TIME, its real
    error recorded, instead of the flush failing with OverflowError."""
    outcome = after_failure(_task(2, 10, retry), ERROR, True, NOW, lambda: 0.5)
    assert outcome.state is TaskState.RETRYING
    assert outcome.run_at == MAX_TIME
    assert outcome.error == ERROR


def test_a_negative_stored_backoff_retries_at_once() -> None:
    retry = RetryPolicy(base_seconds=-5.0, factor=2.0, max_seconds=-5.0)
    outcome = after_failure(_task(1, 3, retry), ERROR, True, NOW, lambda: 0.5)
    assert outcome.run_at == NOW


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TaskSpec("echo", run_at=datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)), "run_at 9999"),
        (TaskSpec("echo", run_at=datetime(1, 1, 1, tzinfo=UTC)), "run_at 0001-01-01"),
        (TaskSpec("echo", run_at=MAX_TIME + timedelta(microseconds=1)), "out of range"),
        (TaskSpec("echo", run_at=datetime(2030, 1, 1)), "run_at must carry a time zone"),
        (TaskSpec("echo", delay_seconds=math.nan), "delay_seconds must be a finite number"),
        (TaskSpec("echo", delay_seconds=math.inf), "delay_seconds must be a finite number"),
        (TaskSpec("echo", delay_seconds=1e300), "delay_seconds must be at most"),
        (TaskSpec("echo", timeout_seconds=math.nan), "timeout_seconds must be a finite"),
        (TaskSpec("echo", timeout_seconds=1e300), "timeout_seconds must be at most"),
        (TaskSpec("echo", retry=RetryPolicy(math.nan, 2, 1)), "retry base_seconds must be a"),
        (TaskSpec("echo", retry=RetryPolicy(1, math.inf, 1)), "retry factor must be a finite"),
        (TaskSpec("echo", retry=RetryPolicy(1, 2, 1e300)), "retry max_seconds must be at most"),
        (TaskSpec("echo", payload_json="1e400"), "out of the range of a double"),
        (TaskSpec("echo", payload_json="-1e400"), "out of the range of a double"),
        (TaskSpec("echo", payload_json="1e-400"), "out of the range of a double"),
        (TaskSpec("echo", payload_json='"\\ud800"'), "lone UTF-16 surrogate"),
        (TaskSpec("echo", payload_json='{"\\udc00": 1}'), "lone UTF-16 surrogate"),
        (TaskSpec("echo", payload_json='{"a\\u0000": 1}'), "must not contain NUL"),
        (TaskSpec("echo", payload_json="[" * 65 + "]" * 65), "nests 65 deep, over the limit"),
        (TaskSpec("echo", payload_json="[" * 1000 + "]" * 1000), "payload nests"),
        (TaskSpec("echo", payload_json="[" * 100_000 + "]" * 100_000), "payload nests"),
        (TaskSpec("e\x00cho"), "task name must be printable"),
        (TaskSpec(" "), "task name must not be blank"),
        (TaskSpec("echo", queue="a\x00b"), "queue must be printable text"),
        (TaskSpec("echo", queue="a\nb"), "queue must be printable text"),
        (TaskSpec("echo", queue="\t "), "queue must not be blank"),
        (TaskSpec("echo", queue="q" * 201), "queue is longer than 200"),
        (TaskSpec("echo", idempotency_key="k\x1b"), "idempotency_key must be printable"),
        (TaskSpec("echo", idempotency_key=""), "idempotency_key must not be blank"),
        (TaskSpec("echo", idempotency_key="k" * 201), "idempotency_key is longer than 200"),
    ],
)
def test_check_spec_refuses_hostile_fields_naming_them(spec: TaskSpec, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        check_spec(spec, "default", 1024 * 1024, NOW, tenant="default")


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec("echo", run_at=MIN_TIME),
        TaskSpec("echo", run_at=MAX_TIME),
        TaskSpec("echo", delay_seconds=MAX_SECONDS),
        TaskSpec("echo", payload_json="[" * 64 + "]" * 64),
        TaskSpec("echo", payload_json='["\\ud83d\\ude00", "\\\\u0000", "é", 1e308, 5e-324]'),
        TaskSpec("échø 名前", queue="file d'attente ✓", idempotency_key="clé 🔑"),
    ],
)
def test_check_spec_accepts_the_edges(spec: TaskSpec) -> None:
    checked = check_spec(spec, "default", 1024 * 1024, NOW, tenant="default")
    assert checked.payload_json == spec.payload_json


def test_the_depth_limit_is_a_parameter() -> None:
    deep = TaskSpec("echo", payload_json="[" * 100 + "]" * 100)
    assert check_spec(deep, "default", 1024 * 1024, NOW, max_payload_depth=100, tenant="default")
    with pytest.raises(InvalidArgument, match="payload nests 100 deep, over the limit of 99"):
        check_spec(deep, "default", 1024 * 1024, NOW, max_payload_depth=99, tenant="default")


def test_payload_size_counts_utf8_bytes() -> None:
    text = '"' + "é" * 10 + '"'  # 12 characters, 22 bytes
    assert check_spec(TaskSpec("echo", payload_json=text), "default", 22, NOW, tenant="default")
    with pytest.raises(InvalidArgument, match="payload is 22 bytes, over the limit of 21"):
        check_spec(TaskSpec("echo", payload_json=text), "default", 21, NOW, tenant="default")


def test_delay_past_max_time_is_refused() -> None:
    late = MAX_TIME - timedelta(days=1)
    with pytest.raises(InvalidArgument, match="delay_seconds 172800 puts run_at past"):
        check_spec(TaskSpec("echo", delay_seconds=172800), "default", 1024, late, tenant="default")
