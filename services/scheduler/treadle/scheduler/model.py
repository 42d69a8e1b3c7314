"""The scheduler's domain: what a submission becomes, the lease a claim holds,
what a claimed task carries, what an attempt produces, and the pure rules that
check them (`found`: a lookup that found nothing is `NotFound`). Imports
nothing of ours but errors, the public task types and the submission rules
(`treadle.common.submission`, shared with the client's `enqueue`, whose names
it re-exports for the scheduler's modules).

Payloads and results stay JSON text here: a submission's payload is parsed
once, in `check_spec`, to refuse what is not standard JSON, and then only the
executor decodes it, just before it calls the handler."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TypeVar

from treadle.common import wire
from treadle.common.errors import InvalidArgument, NotFound
from treadle.common.submission import (
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SECONDS,
    MAX_TIME,
    MIN_TIME,
    NewTask,
    check_name,
    check_retry,
    check_seconds,
    check_spec,
    check_text,
    check_time,
    check_timeout,
)
from treadle.common.tasks import QueueUpdate, RetryPolicy, TaskError, TaskState

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SECONDS",
    "MAX_TIME",
    "MIN_TIME",
    "Applied",
    "ClaimedTask",
    "Lease",
    "NewTask",
    "Outcome",
    "after_failure",
    "backoff_seconds",
    "check_name",
    "check_queue_update",
    "check_retry",
    "check_seconds",
    "check_spec",
    "check_text",
    "check_time",
    "check_timeout",
    "ended",
    "found",
    "parse_task_id",
    "unrunnable",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """What a claim holds: the task, the replica that claimed it, and the claim
    number (the task's claim count then, a fencing token). The store applies an
    outcome, a renewal or a hand-back only while the task's lease is still this
    one; once the lease moved on (reclaimed, claimed again) it is stale."""

    task_id: str
    owner: str
    claim: int


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task as a replica claimed it to run one attempt: what dispatch, the
    executor, tracing and the observers need, and the lease it runs under.
    Scheduler-internal: it never leaves the replica (`Task` is the public form)."""

    lease: Lease
    tenant: str
    name: str
    queue: str
    #: The payload as JSON text; the executor decodes it for the handler.
    payload_json: str
    #: This attempt's number (1-based): claiming counts it.
    attempts: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    timeout_seconds: float | None
    retry: RetryPolicy
    cancel_requested: bool = False
    #: The submitter's W3C trace context, which the execution span continues.
    trace_context: Mapping[str, str] | None = None
    #: Why this task cannot run (its stored row is corrupt: see `unrunnable`);
    #: None for every task stored through the API. Such a task ends DEAD.
    poison: str | None = None

    @property
    def id(self) -> str:
        return self.lease.task_id


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, waiting to be written under its lease."""

    lease: Lease
    attempt: int
    state: TaskState
    finished_at: datetime
    #: The handler's result as JSON text (SUCCEEDED only).
    result_json: str | None = None
    error: TaskError | None = None
    #: When a RETRYING task may run again.
    run_at: datetime | None = None
    #: (trace_id, span_id) of the span a failed attempt ran in, as hex, for
    #: its log line (None: tracing is off, or the attempt did not fail).
    trace: tuple[str, str] | None = None

    @property
    def task_id(self) -> str:
        return self.lease.task_id


@dataclasses.dataclass(frozen=True)
class Applied:
    """An outcome as the store recorded it: the task's tenant and queue, the
    state it ended in (a cancel asked for meanwhile wins) and when its attempt
    started."""

    tenant: str
    queue: str
    state: TaskState
    started_at: datetime | None


#: The longest window of a queue's start limit, in seconds (a day).
MAX_START_WINDOW = 86400


def check_queue_update(update: QueueUpdate) -> None:
    if update.max_concurrent is not None and update.max_concurrent < 0:
        raise InvalidArgument(
            f"max_concurrent must be positive (0 removes the limit), got {update.max_concurrent}"
        )
    if update.max_attempts is not None and update.max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {update.max_attempts}")
    check_timeout(update.timeout_seconds, zero_allowed=True)
    check_retry(update.retry)
    if update.start_limit is not None and update.start_limit < 0:
        raise InvalidArgument(
            f"start_limit must be positive (0 removes the limit), got {update.start_limit}"
        )
    window = update.start_window_seconds
    if window is not None:
        check_seconds(window, "start_window_seconds", zero=False)
        if window > MAX_START_WINDOW:
            raise InvalidArgument(
                f"start_window_seconds must be at most {MAX_START_WINDOW} (a day), got {window}"
            )
    if update.start_limit_key:
        check_name(update.start_limit_key, "start_limit_key")


def parse_task_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{wire.shown(value)} is not a valid task id (a UUID)") from None


def unrunnable(task: ClaimedTask) -> str | None:
    """Why a claimed task's stored values cannot be run (a row written by
    hand, or by older code), or None: what `check_spec` would have refused."""
    timeout = task.timeout_seconds
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        return f"timeout_seconds is {timeout!r}, not a positive finite number"
    retry = task.retry
    for field, value in (
        ("backoff_base", retry.base_seconds),
        ("backoff_factor", retry.factor),
        ("backoff_max", retry.max_seconds),
    ):
        if math.isnan(value):
            return f"{field} is not a number"
    context = task.trace_context
    if context is not None and not (
        isinstance(context, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in context.items())
    ):
        return "trace_context is not an object of strings"
    return None


def backoff_seconds(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based):
    base * factor ** (attempt - 1), capped at max, scaled by `jitter` in [0.5, 1]."""
    if policy.base_seconds == 0:
        return 0.0
    try:
        raw = policy.base_seconds * policy.factor ** min(attempt - 1, 1024)
    except OverflowError:  # a huge factor: far past any cap
        raw = math.inf
    return min(policy.max_seconds, raw) * jitter


def ended(
    task: ClaimedTask,
    state: TaskState,
    at: datetime,
    result_json: str | None = None,
    error: TaskError | None = None,
    run_at: datetime | None = None,
) -> Outcome:
    """How `task`'s current attempt ended, under the lease it runs with."""
    return Outcome(task.lease, task.attempts, state, at, result_json, error, run_at)


def after_failure(
    task: ClaimedTask, error: TaskError, retryable: bool, now: datetime, random: Callable[[], float]
) -> Outcome:
    """The outcome of a failed attempt: RETRYING after a backoff while attempts
    remain and the error is retryable, otherwise DEAD."""
    if retryable and task.attempts < task.max_attempts:
        delay = backoff_seconds(task.retry, task.attempts, 0.5 + random() / 2)
        # A policy stored before its limits were checked may ask for any delay:
        # past MAX_TIME (or NaN), the task waits until MAX_TIME, its error recorded.
        room = (MAX_TIME - now).total_seconds()
        run_at = now + timedelta(seconds=max(0.0, delay)) if delay <= room else MAX_TIME
        return ended(task, TaskState.RETRYING, now, error=error, run_at=run_at)
    return ended(task, TaskState.DEAD, now, error=error)


Found = TypeVar("Found")


def found(value: Found | None, what: str) -> Found:
    """`value`, which a lookup of `what` (such as "queue 'q'") returned; None
    means there is no such thing: `NotFound`."""
    if value is None:
        raise NotFound(f"{what} not found")
    return value
