"""Treadle's public task types: plain frozen dataclasses, no protobuf.

The scheduler's core, the Python client and the gateway all speak these;
`treadle.common.wire` converts them to and from protobuf at the edges.
Payloads and results are JSON text in these types, as they are in the
database and on the wire; `Task.payload` and `Task.result` decode them on
first read, so only a reader that looks at them pays for the decoding.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from datetime import datetime
from typing import Any

#: Priorities run from lowest to highest; higher runs first.
PRIORITY_MIN = -100
PRIORITY_MAX = 100
DEFAULT_QUEUE = "default"


class TaskState(enum.StrEnum):
    """Where a task is in its lifecycle."""

    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    RETRYING = "RETRYING"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class TaskError:
    """Why an attempt failed."""

    type: str
    message: str
    traceback: str = ""
    attempt: int = 0
    failed_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts: base * factor ** (attempt - 1) seconds, at most
    `max_seconds`, times a random jitter in [0.5, 1]."""

    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0


@dataclasses.dataclass(frozen=True)
class Task:
    """A stored task. `payload_json` and `result_json` are its payload and
    result as JSON text (`result_json` None: no result yet); `payload` and
    `result` are their values, decoded on first read."""

    id: str
    name: str
    queue: str
    state: TaskState
    payload_json: str
    result_json: str | None
    error: TaskError | None
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str | None = None
    #: Every failed attempt's error, oldest first.
    errors: tuple[TaskError, ...] = ()
    cancel_requested: bool = False
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()
    #: The trace id (32 hex digits) of the trace it was submitted in; None: none.
    trace_id: str | None = None
    #: What the handler last reported (`TaskContext.heartbeat`): how far it
    #: got (0..1), its message, and when; None until it reports.
    progress: float | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    #: At most `max_concurrent` tasks of the tenant with this key run at once;
    #: None: no such limit.
    concurrency_key: str | None = None
    max_concurrent: int | None = None

    @functools.cached_property
    def payload(self) -> Any:
        """The payload, decoded from `payload_json`."""
        return json.loads(self.payload_json)

    @functools.cached_property
    def result(self) -> Any:
        """The handler's result, decoded from `result_json`; None when there is none."""
        return None if self.result_json is None else json.loads(self.result_json)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task to submit. `payload_json` is the payload as JSON text."""

    name: str
    payload_json: str = "null"
    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    #: Run this many seconds from now (instead of `run_at`).
    delay_seconds: float | None = None
    #: Per-attempt time limit; None means the queue's.
    timeout_seconds: float | None = None
    #: Backoff between attempts; None means the queue's.
    retry: RetryPolicy | None = None
    #: At most `max_concurrent` tasks of the tenant with the same
    #: `concurrency_key` run at once, across every replica; the others wait
    #: QUEUED. Both or neither.
    concurrency_key: str | None = None
    max_concurrent: int | None = None


@dataclasses.dataclass(frozen=True)
class Submitted:
    """The reply to one submission: the task, and whether it existed already."""

    task: Task
    existing: bool = False


@dataclasses.dataclass(frozen=True)
class TaskPage:
    """One page of a task listing, newest first. `next_cursor` pages on to
    older tasks (None on the last page); `previous_cursor`, listed backward,
    to newer ones (None when there are none). `cursors`: each task's own
    position, in order (to page after or before it)."""

    tasks: list[Task]
    next_cursor: str | None
    previous_cursor: str | None = None
    cursors: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TaskFilter:
    """What a task listing shows: tasks matching every field given (None or
    empty: any)."""

    queue: str | None = None
    #: Any of these states.
    states: tuple[TaskState, ...] = ()
    name: str | None = None
    #: Created at or after / before.
    created_after: datetime | None = None
    created_before: datetime | None = None
    idempotency_key: str | None = None


@dataclasses.dataclass(frozen=True)
class TaskSelection:
    """The tasks a bulk action (count, retry, cancel, purge) acts on: those
    matching every field given (None or empty: any). `limit`: the most one
    call changes (None: the scheduler's default, 500)."""

    ids: tuple[str, ...] = ()
    queue: str | None = None
    states: tuple[TaskState, ...] = ()
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_before: datetime | None = None
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """What one batch of a bulk action did: how many tasks it changed, their
    ids, and whether matching tasks remain that another call would change."""

    affected: int
    ids: tuple[str, ...]
    more: bool


@dataclasses.dataclass(frozen=True)
class Queue:
    """A queue's settings. `max_concurrent` None means no limit.

    `start_limit`: at most that many task starts per `start_window_seconds`
    (fixed windows), across all replicas; per distinct value of the payload
    field `start_limit_key` when set. None: no limit."""

    name: str
    max_concurrent: int | None = None
    paused: bool = False
    max_attempts: int = 1
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    start_limit: int | None = None
    start_window_seconds: float | None = None
    start_limit_key: str | None = None


@dataclasses.dataclass(frozen=True)
class QueueUpdate:
    """The settings to change; None leaves a setting as it is. A
    `max_concurrent`, `timeout_seconds` or `start_limit` of 0 removes the
    limit, a `start_limit_key` of "" the key."""

    max_concurrent: int | None = None
    max_attempts: int | None = None
    timeout_seconds: float | None = None
    retry: RetryPolicy | None = None
    start_limit: int | None = None
    start_window_seconds: float | None = None
    start_limit_key: str | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Submit `task` on every tick of `cron`, read in `timezone`."""

    name: str
    cron: str
    task: TaskSpec
    timezone: str = "UTC"
    paused: bool = False
    next_fire_at: datetime | None = None
    last_fired_at: datetime | None = None
    created_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class ReplicaInfo:
    """A scheduler replica as the registry sees it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    #: False once it stopped, or was silent for longer than a lease.
    alive: bool
    stopped_at: datetime | None = None
    #: Tasks it holds leases on.
    running: int = 0
