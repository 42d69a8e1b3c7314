"""The GraphQL types, converted from the plain dataclasses of `treadle.common.tasks`.

`from_domain` fills an output type from the dataclass it mirrors, field by
field and by name; what does not mirror a field is given to it by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types.base import (
    StrawberryList,
    StrawberryObjectDefinition,
    StrawberryOptional,
    get_object_definition,
    has_object_definition,
)

from treadle.common import tasks, wire

T = TypeVar("T")


def from_domain(cls: type[T], source: object, **given: object) -> T:
    """The strawberry output type `cls` filled from the dataclass `source`: each
    field takes `source`'s attribute of the same name, unless `given` names it.
    A nested output type is filled the same way, a sequence becomes a list;
    scalars (`ID`, `Long`, enums) are the values themselves."""
    values = {
        name: given[name] if name in given else _converted(kind, getattr(source, name))
        for name, kind in _fields(cls)
    }
    return cls(**values)


def _shown(task: tasks.Task, field: str) -> JSON | None:
    """A task's payload or result as a JSON value; null when there is none, or
    when the stored text cannot be decoded (a row written by hand, nested too
    deep), so that reading the task never fails on it."""
    try:
        value = getattr(task, field)
    except (ValueError, RecursionError):
        return None
    return None if value is None else JSON(value)


#: Each output type's fields, by class (a handful of classes).
_FIELDS: dict[type, tuple[tuple[str, object], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, object], ...]:
    """The fields of an output type, read once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        definition: StrawberryObjectDefinition = get_object_definition(cls, strict=True)
        found = _FIELDS[cls] = tuple((f.python_name, f.type) for f in definition.fields)
    return found


def _converted(kind: object, value: object) -> object:
    if value is None:
        return None
    if isinstance(kind, StrawberryOptional):
        return _converted(kind.of_type, value)
    if isinstance(kind, StrawberryList):
        assert isinstance(value, Iterable)
        return [_converted(kind.of_type, item) for item in value]
    if isinstance(kind, type) and has_object_definition(kind):
        return from_domain(kind, value)
    return value


# GraphQL shows the shared enum itself (`strawberry.enum` marks the class).
TaskState = tasks.TaskState
strawberry.enum(TaskState, description="Where a task is in its lifecycle.")


@strawberry.type(description="Why an attempt failed.")
class TaskError:
    type: str
    message: str
    traceback: str
    attempt: int = strawberry.field(description="The attempt that failed (1 for the first).")
    failed_at: datetime | None

    @classmethod
    def from_error(cls, error: tasks.TaskError) -> TaskError:
        return from_domain(cls, error)


@strawberry.type(
    description="Backoff between attempts: baseSeconds * factor^(attempt-1), "
    "at most maxSeconds, times a random jitter in [0.5, 1]."
)
class RetryPolicy:
    base_seconds: float
    factor: float
    max_seconds: float

    @classmethod
    def from_policy(cls, policy: tasks.RetryPolicy) -> RetryPolicy:
        return from_domain(cls, policy)


@strawberry.input(
    description="Backoff between attempts: base * factor^(attempt-1) seconds, at most max. "
    "A field left out takes its default shown here, not the queue's current value "
    "(`treadle queue update` merges with the queue's instead)."
)
class RetryPolicyInput:
    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0

    def to_policy(self) -> tasks.RetryPolicy:
        return tasks.RetryPolicy(self.base_seconds, self.factor, self.max_seconds)


@strawberry.type(description="A queue's settings.")
class Queue:
    name: str
    max_concurrent: int | None = strawberry.field(
        description="Tasks RUNNING at once across all replicas; null: no limit."
    )
    paused: bool = strawberry.field(description="Paused queues accept tasks but start none.")
    max_attempts: int = strawberry.field(description="Default for tasks submitted without one.")
    timeout_seconds: float | None = strawberry.field(
        description="Default time limit per attempt; null: none."
    )
    retry: RetryPolicy
    created_at: datetime | None
    updated_at: datetime | None
    start_limit: int | None = strawberry.field(
        description="Task starts per window across all replicas; null: no limit."
    )
    start_window_seconds: float | None = strawberry.field(
        description="The start limit's window (fixed windows); null: none set (1 s)."
    )
    start_limit_key: str | None = strawberry.field(
        description="The start limit holds per distinct value of this top-level payload "
        "field; null: one count for the queue."
    )


@strawberry.input(description="Queue settings to change; the ones left out stay as they are.")
class UpdateQueueInput:
    name: str
    max_concurrent: int | None = strawberry.field(default=None, description="0 removes the limit.")
    max_attempts: int | None = None
    timeout_seconds: float | None = strawberry.field(
        default=None, description="0 removes the time limit."
    )
    retry: RetryPolicyInput | None = None
    start_limit: int | None = strawberry.field(
        default=None, description="Task starts per window; 0 removes the limit."
    )
    start_window_seconds: float | None = strawberry.field(
        default=None, description="The start limit's window in seconds (at most 86400)."
    )
    start_limit_key: str | None = strawberry.field(
        default=None, description='A top-level payload field to count starts by; "" removes it.'
    )


def _payload(root: Task) -> JSON | None:
    return _shown(root.source, "payload")


def _result(root: Task) -> JSON | None:
    return _shown(root.source, "result")


@strawberry.type(description="A stored task.")
class Task:
    id: strawberry.ID
    name: str
    queue: str
    state: TaskState
    payload: JSON | None = strawberry.field(resolver=_payload)
    result: JSON | None = strawberry.field(resolver=_result)
    error: TaskError | None
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None
    errors: list[TaskError] = strawberry.field(description="Every failed attempt, oldest first.")
    cancel_requested: bool = strawberry.field(
        description="A cancel was asked for while the task was running."
    )
    timeout_seconds: float | None = strawberry.field(
        description="Time limit per attempt; null: none."
    )
    retry: RetryPolicy
    trace_id: str | None = strawberry.field(
        description="The trace id (32 hex digits) of the trace the task was submitted in; "
        "null when none."
    )
    progress: float | None = strawberry.field(
        default=None,
        description="How far the handler got, 0..1, as it last reported; null: not reported.",
    )
    progress_message: str | None = strawberry.field(
        default=None, description="The handler's message with its last progress report."
    )
    progress_at: datetime | None = strawberry.field(
        default=None, description="When the handler last reported its progress."
    )
    concurrency_key: str | None = strawberry.field(
        default=None,
        description="At most maxConcurrent tasks of the tenant with this key run at once; "
        "null: no such limit.",
    )
    max_concurrent: int | None = strawberry.field(
        default=None, description="The limit of the task's concurrency key; null: none."
    )
    existing: bool | None = strawberry.field(
        default=None,
        description=(
            "Only in submitTask's reply: true when the idempotency key matched a task "
            "that already existed (this one, returned instead of a new one), false when "
            "the task is new; null everywhere else."
        ),
    )
    #: The task shown: its payload and result are decoded only when asked for.
    source: strawberry.Private[tasks.Task]

    @classmethod
    def from_task(cls, task: tasks.Task, existing: bool | None = None) -> Task:
        return cls(
            id=strawberry.ID(task.id),
            name=task.name,
            queue=task.queue,
            state=task.state,
            error=None if task.error is None else TaskError.from_error(task.error),
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            priority=task.priority,
            run_at=task.run_at,
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            idempotency_key=task.idempotency_key,
            errors=[TaskError.from_error(e) for e in task.errors],
            cancel_requested=task.cancel_requested,
            timeout_seconds=task.timeout_seconds,
            retry=RetryPolicy.from_policy(task.retry),
            trace_id=task.trace_id,
            progress=task.progress,
            progress_message=task.progress_message,
            progress_at=task.progress_at,
            concurrency_key=task.concurrency_key,
            max_concurrent=task.max_concurrent,
            existing=existing,
            source=task,
        )


@strawberry.type
class TaskEdge:
    node: Task
    cursor: str = strawberry.field(
        description="This task's position: pass as `after` for the tasks older than it, "
        "or as `before` for the newer ones."
    )


@strawberry.type
class PageInfo:
    has_next_page: bool = strawberry.field(description="Older tasks follow this page.")
    has_previous_page: bool = strawberry.field(
        description="Newer tasks precede this page (known when paging backward, or after a cursor)."
    )
    start_cursor: str | None = strawberry.field(
        description="The first edge's cursor: pass as `before` (with `last`) for the "
        "previous page; null when the page is empty."
    )
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor: pass as `after` for the next page; null when "
        "the page is empty."
    )


@strawberry.type(description="One page of tasks, newest first.")
class TaskConnection:
    edges: list[TaskEdge]
    nodes: list[Task]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: tasks.TaskPage) -> TaskConnection:
        nodes = [Task.from_task(t) for t in page.tasks]
        edges = [TaskEdge(node=n, cursor=c) for n, c in zip(nodes, page.cursors, strict=True)]
        return cls(
            edges=edges,
            nodes=nodes,
            page_info=PageInfo(
                has_next_page=page.next_cursor is not None,
                has_previous_page=page.previous_cursor is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
        )


@strawberry.input(
    name="TaskSelection",
    description="The tasks a bulk action or a count applies to: those matching every field "
    "given (a field left out matches every task).",
)
class TaskSelectionInput:
    ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Only these tasks (at most 1,000)."
    )
    queue: str | None = None
    states: list[TaskState] | None = strawberry.field(
        default=None, description="Only tasks in any of these states."
    )
    name: str | None = strawberry.field(default=None, description="Only tasks of this name.")
    created_after: datetime | None = None
    created_before: datetime | None = None
    finished_before: datetime | None = None
    limit: int | None = strawberry.field(
        default=None,
        description="The most tasks one call changes: 1..1000, default 500 (a count ignores it).",
    )

    def selection(self) -> tasks.TaskSelection:
        return tasks.TaskSelection(
            ids=tuple(str(i) for i in self.ids or ()),
            queue=self.queue,
            states=tuple(self.states or ()),
            name=self.name,
            created_after=self.created_after,
            created_before=self.created_before,
            finished_before=self.finished_before,
            limit=self.limit,
        )


@strawberry.type(description="What one call of a bulk action did.")
class BulkResult:
    affected: int = strawberry.field(description="Tasks changed by this call.")
    ids: list[strawberry.ID] = strawberry.field(description="Their ids.")
    more: bool = strawberry.field(
        description="Matching tasks remain that another call would change: call again."
    )

    @classmethod
    def from_result(cls, result: tasks.BulkResult) -> BulkResult:
        return cls(
            affected=result.affected,
            ids=[strawberry.ID(i) for i in result.ids],
            more=result.more,
        )


@strawberry.input(description="A task to submit.")
class SubmitTaskInput:
    name: str
    payload: JSON | None = None
    queue: str | None = strawberry.field(
        default=None, description="Defaults to the handler's queue."
    )
    priority: int = strawberry.field(default=0, description="-100..100; higher runs first.")
    run_at: datetime | None = strawberry.field(
        default=None, description="Run no earlier than this (with a time zone); default now."
    )
    max_attempts: int | None = strawberry.field(
        default=None, description="At least 1; default: the queue's."
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="Submitting the same key again returns the existing task."
    )
    delay_seconds: float | None = strawberry.field(
        default=None, description="Run this many seconds from now (instead of runAt)."
    )
    timeout_seconds: float | None = strawberry.field(
        default=None, description="Time limit per attempt; default: the queue's."
    )
    retry: RetryPolicyInput | None = strawberry.field(
        default=None, description="Backoff between attempts; default: the queue's."
    )
    concurrency_key: str | None = strawberry.field(
        default=None,
        description="At most maxConcurrent tasks of the tenant with this key run at once, "
        "across replicas; the others wait QUEUED. Give both or neither.",
    )
    max_concurrent: int | None = strawberry.field(
        default=None, description="The concurrency key's limit, at least 1."
    )

    def spec(self) -> tasks.TaskSpec:
        return tasks.TaskSpec(
            name=self.name,
            # No depth limit here: the scheduler's TREADLE_MAX_PAYLOAD_DEPTH decides.
            payload_json=wire.encode_json(self.payload, max_depth=None),
            queue=self.queue,
            priority=self.priority,
            run_at=self.run_at,
            max_attempts=self.max_attempts,
            idempotency_key=self.idempotency_key,
            delay_seconds=self.delay_seconds,
            timeout_seconds=self.timeout_seconds,
            retry=self.retry.to_policy() if self.retry else None,
            concurrency_key=self.concurrency_key,
            max_concurrent=self.max_concurrent,
        )


@strawberry.type(description="The task a schedule submits on every tick.")
class TaskTemplate:
    name: str
    payload: JSON | None
    queue: str
    priority: int
    max_attempts: int | None = strawberry.field(description="Null: the queue's default.")
    timeout_seconds: float | None = strawberry.field(description="Null: the queue's default.")
    retry: RetryPolicy | None = strawberry.field(description="Null: the queue's default.")
    concurrency_key: str | None = strawberry.field(
        default=None, description="The tasks' concurrency key; null: none."
    )
    max_concurrent: int | None = strawberry.field(
        default=None, description="The concurrency key's limit; null: none."
    )


@strawberry.type(description="Submits a task from its template on every tick of a cron expression.")
class Schedule:
    name: str
    cron: str = strawberry.field(
        description="Five fields (minute hour day-of-month month day-of-week), "
        "or six with seconds first, or a nickname such as @daily."
    )
    timezone: str = strawberry.field(description="The IANA time zone the expression is read in.")
    task: TaskTemplate
    paused: bool
    next_fire_at: datetime
    last_fired_at: datetime | None
    created_at: datetime | None

    @classmethod
    def from_schedule(cls, schedule: tasks.Schedule) -> Schedule:
        assert schedule.next_fire_at is not None, "a stored schedule always has a next tick"
        spec = schedule.task
        return cls(
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            task=TaskTemplate(
                name=spec.name,
                payload=JSON(wire.decode_json(spec.payload_json)),
                queue=spec.queue or "",
                priority=spec.priority,
                max_attempts=spec.max_attempts,
                timeout_seconds=spec.timeout_seconds,
                retry=None if spec.retry is None else RetryPolicy.from_policy(spec.retry),
                concurrency_key=spec.concurrency_key,
                max_concurrent=spec.max_concurrent,
            ),
            paused=schedule.paused,
            next_fire_at=schedule.next_fire_at,
            last_fired_at=schedule.last_fired_at,
            created_at=schedule.created_at,
        )


@strawberry.input(description="A schedule to create.")
class CreateScheduleInput:
    name: str = strawberry.field(description="Unique; letters, digits, '.', '_', '-'.")
    cron: str = strawberry.field(
        description="Five fields (minute hour day-of-month month day-of-week), "
        "or six with seconds first, or a nickname such as @daily."
    )
    task: SubmitTaskInput = strawberry.field(
        description="The task to submit on every tick "
        "(runAt, delaySeconds and idempotencyKey are ignored)."
    )
    timezone: str = strawberry.field(default="UTC", description="An IANA time zone.")

    def schedule(self) -> tasks.Schedule:
        # The scheduler drops the template's runAt, delaySeconds and idempotencyKey.
        spec = self.task.spec()
        return tasks.Schedule(name=self.name, cron=self.cron, task=spec, timezone=self.timezone)


@strawberry.type(description="A scheduler replica as the registry sees it.")
class Replica:
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool = strawberry.field(
        description="False once it stopped, or was silent for longer than a lease."
    )
    stopped_at: datetime | None
    running: int = strawberry.field(description="Tasks it holds leases on.")


@strawberry.type(description="An admin action, as the audit log recorded it.")
class AuditEvent:
    id: strawberry.ID
    at: datetime
    key_name: str | None = strawberry.field(
        description="The API key it was made with (None with authentication off); "
        "cli:<user> for `treadle keys` on the database."
    )
    action: str = strawberry.field(
        description="The gRPC method (PauseQueue, RetryTask, ...) or the key action "
        "(CreateKey, RevokeKey, RotateKey)."
    )
    target: str = strawberry.field(description="The id or name it acted on.")
    change: JSON = strawberry.field(description="What changed; payloads left out.")


@strawberry.type
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next (older) page; null on the last."
    )
