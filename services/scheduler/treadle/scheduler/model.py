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
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
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
    #: The tenant the task belongs to (`principal.DEFAULT_TENANT` without tenants).
    tenant: str
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
    #: The API key that submitted it (None: none, or authentication off).
    submitted_by: str | None = None


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


#: The times a request may carry (run_at, or now + delay_seconds): from the
#: Unix epoch to the start of year 9999, well inside what Python's datetime and
#: PostgreSQL both represent, with room left for any delay added to a stored
#: time (asyncpg turns datetime.max and .min into PostgreSQL's ±infinity).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)
#: The longest duration a request may give (delays, timeouts, backoffs): 100 years.
MAX_SECONDS = 100 * 365 * 24 * 3600.0
#: Unicode categories refused in names, queues and keys: control characters,
#: surrogates, line and paragraph separators.
_NOT_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})


def check_text(value: str, field: str, max_length: int) -> None:
    """`value` must be printable text: not blank, at most `max_length`
    characters, no control characters (NUL included)."""
    if not value.strip():
        raise InvalidArgument(f"{field} must not be blank")
    if len(value) > max_length:
        raise InvalidArgument(f"{field} is longer than {max_length} characters")
    if not value.isprintable():
        for char in value:
            if unicodedata.category(char) in _NOT_TEXT:
                raise InvalidArgument(
                    f"{field} must be printable text, without control characters "
                    f"(found U+{ord(char):04X})"
                )


#: The longest window of a queue's start limit, in seconds (a day).
MAX_START_WINDOW = 86400


def check_name(value: str, field: str) -> None:
    """A task or queue name: printable text of at most `MAX_NAME_LENGTH` characters."""
    check_text(value, field, MAX_NAME_LENGTH)


def check_time(value: datetime, field: str) -> None:
    """`value` must carry a time zone and lie within `MIN_TIME`..`MAX_TIME`."""
    if value.utcoffset() is None:
        raise InvalidArgument(f"{field} must carry a time zone")
    if not MIN_TIME <= value <= MAX_TIME:
        raise InvalidArgument(
            f"{field} {value.isoformat()} is out of range "
            f"{MIN_TIME.isoformat()}..{MAX_TIME.isoformat()}"
        )


def check_seconds(value: float, field: str, *, zero: bool = True) -> None:
    """A duration in seconds: finite, not negative (nor zero unless `zero`), at
    most `MAX_SECONDS`."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not zero):
        raise InvalidArgument(
            f"{field} must {'not be negative' if zero else 'be positive'}, got {value}"
        )
    if value > MAX_SECONDS:
        raise InvalidArgument(f"{field} must be at most {MAX_SECONDS:.0f} (100 years), got {value}")


def check_retry(retry: RetryPolicy | None) -> None:
    if retry is None:
        return
    check_seconds(retry.base_seconds, "retry base_seconds")
    check_seconds(retry.max_seconds, "retry max_seconds")
    if not math.isfinite(retry.factor):
        raise InvalidArgument(f"retry factor must be a finite number, got {retry.factor}")
    if retry.factor < 1:
        raise InvalidArgument(f"retry factor must be at least 1, got {retry.factor}")


def check_timeout(timeout: float | None, zero_allowed: bool = False) -> None:
    if timeout is None or (zero_allowed and timeout == 0):
        return
    check_seconds(timeout, "timeout_seconds", zero=False)


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


def check_spec(
    spec: TaskSpec,
    default_queue: str,
    max_payload_bytes: int,
    now: datetime,
    trace_context: Mapping[str, str] | None = None,
    max_payload_depth: int = wire.MAX_JSON_DEPTH,
    *,
    tenant: str,
    submitted_by: str | None = None,
) -> NewTask:
    """Turn a submission into a `NewTask`, or raise `InvalidArgument` naming the
    field that is wrong. Every field is checked here, before anything is stored."""
    if not spec.name:
        raise InvalidArgument("task name must not be empty")
    check_name(spec.name, "task name")
    # UTF-8 bytes of the text, however it arrived (a lone surrogate counts 3 and
    # is refused by decode_json).
    size = len(spec.payload_json.encode("utf-8", "surrogatepass"))
    if size > max_payload_bytes:
        raise InvalidArgument(
            f"payload is {size} bytes, over the limit of {max_payload_bytes} bytes"
        )
    # The one parse: standard JSON only, nesting bounded, nothing jsonb refuses.
    wire.decode_json(spec.payload_json, "payload", max_payload_depth)
    if not PRIORITY_MIN <= spec.priority <= PRIORITY_MAX:
        raise InvalidArgument(
            f"priority {spec.priority} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}"
        )
    if spec.max_attempts is not None and spec.max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {spec.max_attempts}")
    check_timeout(spec.timeout_seconds)
    check_retry(spec.retry)
    queue = spec.queue or default_queue
    check_name(queue, "queue")
    if spec.idempotency_key is not None:
        check_text(spec.idempotency_key, "idempotency_key", MAX_KEY_LENGTH)
    run_at = spec.run_at
    if run_at is not None:
        check_time(run_at, "run_at")
    if spec.delay_seconds is not None:
        if spec.run_at is not None:
            raise InvalidArgument("give run_at or delay_seconds, not both")
        check_seconds(spec.delay_seconds, "delay_seconds")
        run_at = now + timedelta(seconds=spec.delay_seconds)
        if run_at > MAX_TIME:
            raise InvalidArgument(
                f"delay_seconds {spec.delay_seconds} puts run_at past {MAX_TIME.isoformat()}"
            )
    return NewTask(
        id=uuid.uuid4(),
        tenant=tenant,
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
        submitted_by=submitted_by,
    )


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
