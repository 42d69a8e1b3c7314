"""The pure rules of the scheduler's domain: retry backoff and its jitter."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from treadle.common.tasks import RetryPolicy, TaskError, TaskState
from treadle.scheduler.model import ClaimedTask, Lease, after_failure, backoff_seconds

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
