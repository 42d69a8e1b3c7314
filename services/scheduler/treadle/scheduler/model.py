"""The scheduler's domain: what a submission becomes, the lease a claim holds,
what a claimed task carries, what an attempt produces, and the pure rules that
check them (`found`: a lookup that found nothing is `NotFound`). Imports
nothing of ours but errors, the public task types and the one JSON rule
(`wire.decode_json`).

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
from treadle.common.tasks import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    QueueUpdate,
    RetryPolicy,
    TaskError,
    TaskSpec,
    TaskState,
)

MAX_NAME_LENGTH = 200
MAX_KEY_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class NewTask:
    """A checked submission, ready to insert."""

    id: uuid.UUID
    name: str
    queue: str
    #: The payload as standard JSON text (checked, never decoded again here).
    payload_json: str
    priority: int
    run_at: datetime | None
    #: None: the queue's default.
    max_attempts: int | None
    idempotency_key: str | None
    #: None: the queue's default.
    timeout_seconds: float | None = None
    #: None: the queue's default.
    retry: RetryPolicy | None = None
    #: The submitter's W3C trace context, which the execution span continues.
    trace_context: Mapping[str, str] | None = None


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

    @property
    def task_id(self) -> str:
        return self.lease.task_id


@dataclasses.dataclass(frozen=True)
class Applied:
    """An outcome as the store recorded it: the task's queue, the state it
    ended in (a cancel asked for meanwhile wins) and when its attempt started."""

    queue: str
    state: TaskState
    started_at: datetime | None


def check_retry(retry: RetryPolicy | None) -> None:
    if retry is None:
        return
    values = (retry.base_seconds, retry.factor, retry.max_seconds)
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument("retry policy values must be finite numbers")
    if retry.base_seconds < 0 or retry.max_seconds < 0:
        raise InvalidArgument("retry base_seconds and max_seconds must not be negative")
    if retry.factor < 1:
        raise InvalidArgument(f"retry factor must be at least 1, got {retry.factor}")


def check_timeout(timeout: float | None, zero_allowed: bool = False) -> None:
    if timeout is None or (zero_allowed and timeout == 0):
        return
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidArgument(f"timeout_seconds must be positive, got {timeout}")


def check_queue_update(update: QueueUpdate) -> None:
    if update.max_concurrent is not None and update.max_concurrent < 0:
        raise InvalidArgument(
            f"max_concurrent must be positive (0 removes the limit), got {update.max_concurrent}"
        )
    if update.max_attempts is not None and update.max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {update.max_attempts}")
    check_timeout(update.timeout_seconds, zero_allowed=True)
    check_retry(update.retry)


def check_spec(
    spec: TaskSpec,
    default_queue: str,
    max_payload_bytes: int,
    now: datetime,
    trace_context: Mapping[str, str] | None = None,
) -> NewTask:
    """Turn a submission into a `NewTask`, or raise `InvalidArgument` saying what is wrong."""
    if not spec.name or not spec.name.strip():
        raise InvalidArgument("task name must not be empty")
    if len(spec.name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"task name is longer than {MAX_NAME_LENGTH} characters")
    size = len(spec.payload_json.encode())
    if size > max_payload_bytes:
        raise InvalidArgument(
            f"payload is {size} bytes, over the limit of {max_payload_bytes} bytes"
        )
    wire.decode_json(spec.payload_json, "payload")  # the one parse: standard JSON only
    if "\\u0000" in spec.payload_json:
        raise InvalidArgument("payload must not contain NUL characters (\\u0000)")
    if not PRIORITY_MIN <= spec.priority <= PRIORITY_MAX:
        raise InvalidArgument(
            f"priority {spec.priority} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}"
        )
    if spec.max_attempts is not None and spec.max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {spec.max_attempts}")
    check_timeout(spec.timeout_seconds)
    check_retry(spec.retry)
    queue = spec.queue or default_queue
    if len(queue) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"queue name is longer than {MAX_NAME_LENGTH} characters")
    if spec.idempotency_key is not None and len(spec.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"idempotency key is longer than {MAX_KEY_LENGTH} characters")
    if spec.run_at is not None and spec.run_at.tzinfo is None:
        raise InvalidArgument("run_at must carry a time zone")
    run_at = spec.run_at
    if spec.delay_seconds is not None:
        if spec.run_at is not None:
            raise InvalidArgument("give run_at or delay_seconds, not both")
        if not math.isfinite(spec.delay_seconds) or spec.delay_seconds < 0:
            raise InvalidArgument(f"delay_seconds must not be negative, got {spec.delay_seconds}")
        run_at = now + timedelta(seconds=spec.delay_seconds)
    return NewTask(
        id=uuid.uuid4(),
        name=spec.name,
        queue=queue,
        payload_json=spec.payload_json,
        priority=spec.priority,
        run_at=run_at,
        max_attempts=spec.max_attempts,
        idempotency_key=spec.idempotency_key,
        timeout_seconds=spec.timeout_seconds,
        retry=spec.retry,
        trace_context=trace_context,
    )


def parse_task_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{value!r} is not a valid task id") from None


#: The longest wait before a retry (about 100 years): a policy whose delay
#: comes out longer, infinite or not a number is capped here, so the time of
#: the next attempt can always be computed and stored.
MAX_RETRY_DELAY = 100 * 365 * 86400.0


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
        if not delay <= MAX_RETRY_DELAY:  # too long, infinite, or NaN
            delay = MAX_RETRY_DELAY
        return ended(
            task, TaskState.RETRYING, now, error=error, run_at=now + timedelta(seconds=delay)
        )
    return ended(task, TaskState.DEAD, now, error=error)


Found = TypeVar("Found")


def found(value: Found | None, what: str) -> Found:
    """`value`, which a lookup of `what` (such as "queue 'q'") returned; None
    means there is no such thing: `NotFound`."""
    if value is None:
        raise NotFound(f"{what} not found")
    return value
