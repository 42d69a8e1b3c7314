"""The scheduler's use cases: submit, read, list and cancel tasks.

Speaks only domain types; knows nothing of gRPC or asyncpg. Each use case acts
for the current caller (`principal.current()`, set per call by the gRPC edge):
in its tenant, and, for a key that may only submit, on its own submissions. Validation lives
here (and in `model`), so every entry point refuses bad input the same way
and nothing is stored when a submission is refused.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import dataclasses
import functools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from opentelemetry import trace

from treadle.common import wire
from treadle.common.errors import InvalidArgument, InvalidState, NotFound
from treadle.common.tasks import (
    BulkResult,
    Queue,
    QueueUpdate,
    ReplicaInfo,
    Submitted,
    Task,
    TaskFilter,
    TaskPage,
    TaskSelection,
    TaskSpec,
    TaskState,
)
from treadle.common.telemetry import Carrier
from treadle.scheduler import principal, task_log, tracing
from treadle.scheduler.events import NOTHING, Events
from treadle.scheduler.group import GroupInsert, store_each
from treadle.scheduler.limits import Admission
from treadle.scheduler.loops import Clock, utcnow
from treadle.scheduler.model import (
    NewTask,
    check_name,
    check_queue_update,
    check_spec,
    check_time,
    found,
    parse_task_id,
)
from treadle.scheduler.registry import Registry
from treadle.scheduler.settings import Settings
from treadle.scheduler.store import Store
from treadle.tasks import TaskOptions

#: A listing's filter that keeps every task.
EVERY_TASK = TaskFilter()
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Tasks one call of a bulk action changes at most, and when the caller does not say.
MAX_BULK = 1000
DEFAULT_BULK = 500
#: The states each bulk action acts on (those its one-task call allows).
BULK_STATES: dict[str, frozenset[TaskState]] = {
    "retry": frozenset({TaskState.DEAD, TaskState.CANCELLED}),
    "cancel": frozenset(
        {TaskState.QUEUED, TaskState.SCHEDULED, TaskState.RETRYING, TaskState.RUNNING}
    ),
    "purge": frozenset({TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED}),
}
MAX_BATCH = 10_000
#: Longer than any cursor `encode_cursor` makes.
MAX_CURSOR_LENGTH = 64
Given = TypeVar("Given")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "seq" or not value.isdigit():
            raise ValueError(kind)
        seq = int(value)
        if seq >= 2**63:  # a bigint
            raise ValueError(value)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(f"invalid page cursor {wire.shown(cursor)}") from None


def _check_filter(where: TaskFilter) -> None:
    if where.queue:
        check_name(where.queue, "queue")
    if where.name:
        check_name(where.name, "name")
    if where.idempotency_key:
        check_name(where.idempotency_key, "idempotency_key")
    _check_range(where.created_after, where.created_before)


def _check_range(after: datetime | None, before: datetime | None) -> None:
    for value, field in ((after, "created_after"), (before, "created_before")):
        if value is not None:
            check_time(value, field)
    if after is not None and before is not None and after > before:
        raise InvalidArgument(
            f"created_after {after.isoformat()} is later than created_before {before.isoformat()}"
        )


def _check_selection(selection: TaskSelection) -> None:
    if len(selection.ids) > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"at most {MAX_PAGE_SIZE} ids per selection, got {len(selection.ids)}"
        )
    for task_id in selection.ids:
        parse_task_id(task_id)
    if selection.queue:
        check_name(selection.queue, "queue")
    if selection.name:
        check_name(selection.name, "name")
    _check_range(selection.created_after, selection.created_before)
    if selection.finished_before is not None:
        check_time(selection.finished_before, "finished_before")


def _first(given: Given | None, default: Given | None) -> Given | None:
    return default if given is None else given


def declared(spec: TaskSpec, options: TaskOptions) -> TaskSpec:
    """`spec` with what it leaves unset taken from its task's declared options
    (max_attempts, timeout, retry; the queue is the handler's): the call wins
    over the task, the task over the queue's settings and the global defaults."""
    return dataclasses.replace(
        spec,
        max_attempts=_first(spec.max_attempts, options.max_attempts),
        timeout_seconds=_first(spec.timeout_seconds, options.timeout),
        retry=_first(spec.retry, options.retry),
    )


@dataclasses.dataclass(eq=False)
class Collaborators:
    """What the task use cases (`Scheduler`, `worker.Worker`) are built on."""

    store: Store
    registry: Registry
    settings: Settings
    clock: Clock = utcnow
    #: None: tracing is off.
    tracer: trace.Tracer | None = None
    #: Told what happened: submissions, cancellations of waiting tasks, claims,
    #: attempts, flushes and reclaimed tasks.
    events: Events = NOTHING


@dataclasses.dataclass(eq=False)
class Scheduler(Collaborators):
    """Submit, read, list and cancel tasks in one installation."""

    #: Submit rate limits and quotas; None: none (`limits.Admission`).
    admission: Admission | None = None

    def check(
        self,
        spec: TaskSpec,
        index: int | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> NewTask:
        """`spec` checked against the registry and the rules, ready to insert
        in the caller's tenant; or `InvalidArgument` (saying `task <index>`
        within a batch)."""
        caller = principal.current()
        try:
            if spec.name:
                check_name(spec.name, "task name")
            handler = self.registry.get(spec.name)
            if spec.name and handler is None:
                raise InvalidArgument(
                    f"no handler is registered for task {wire.shown(spec.name)}; "
                    f"known tasks: {', '.join(self.registry.names) or 'none'}"
                )
            default_queue = handler.queue if handler else ""
            spec = self.with_declared(spec)
            return check_spec(
                spec,
                default_queue,
                self.settings.max_payload_bytes,
                self.clock(),
                trace_context,
                self.settings.max_payload_depth,
                tenant=caller.tenant,
                submitted_by=caller.submitter,
            )
        except InvalidArgument as exc:
            if index is None:
                raise
            raise InvalidArgument(f"task {index}: {exc.message}") from None

    def with_declared(self, spec: TaskSpec) -> TaskSpec:
        """`spec` with what it leaves unset taken from its task's declared
        options, when this replica registers the task (`declared`)."""
        handler = self.registry.get(spec.name)
        return spec if handler is None else declared(spec, handler.options)

    @functools.cached_property
    def _grouped(self) -> GroupInsert:
        return GroupInsert(self.store.insert)

    async def submit(self, spec: TaskSpec) -> Submitted:
        """Store one task. Submissions that arrive while another is being
        stored share the next statement and commit (`group.GroupInsert`)."""
        checked = self.check(spec, trace_context=tracing.submitted())
        if self.admission is not None:
            await self.admission.admit(principal.current(), 1)
        with tracing.inserting(self.tracer, self.store.schema, 1) as span:
            submitted, together = await self._grouped(checked)
            tracing.stored_together(span, together)
        self.events.submitted(checked.tenant, [submitted])
        return submitted

    async def submit_each(
        self, submissions: Sequence[TaskSpec | Exception], contexts: Sequence[Carrier | None]
    ) -> list[Submitted | Exception]:
        """Store independent submissions together: each is checked on its own
        (`contexts[i]`: its submitter's trace context, default the current
        one), all that pass in one statement. Each one's outcome, in order; a
        submission that is already an error (it did not decode) stays one."""
        if len(submissions) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} submissions per group, got {len(submissions)}"
            )
        current = tracing.submitted()
        refused: list[Exception | None] = []  # None: checked, to be stored
        checked: list[NewTask] = []
        for spec, context in zip(submissions, contexts, strict=True):
            if isinstance(spec, Exception):
                refused.append(spec)
                continue
            try:
                checked.append(self.check(spec, trace_context=context or current))
                refused.append(None)
            except InvalidArgument as exc:
                refused.append(exc)
        if checked and self.admission is not None:
            # The first that the rate limits and quota let in now are stored.
            admitted, refusal = await self.admission.admit_some(principal.current(), len(checked))
            if refusal is not None:
                checked = checked[:admitted]
                left = admitted
                for i, r in enumerate(refused):
                    if r is None:
                        if left == 0:
                            refused[i] = refusal
                        else:
                            left -= 1
        stored: Iterator[Submitted | Exception] = iter(())
        if checked:
            with tracing.inserting(self.tracer, self.store.schema, len(checked)):
                stored = iter(await store_each(self.store.insert, checked))
        outcomes = [next(stored) if r is None else r for r in refused]
        self.events.submitted(
            principal.current().tenant, [o for o in outcomes if isinstance(o, Submitted)]
        )
        return outcomes

    async def submit_many(self, specs: Sequence[TaskSpec]) -> list[Submitted]:
        """Store every task or none, in one statement."""
        if not specs:
            raise InvalidArgument("no tasks to submit")
        if len(specs) > MAX_BATCH:
            raise InvalidArgument(f"at most {MAX_BATCH} tasks per batch, got {len(specs)}")
        context = tracing.submitted()
        checked = [self.check(spec, i, context) for i, spec in enumerate(specs)]
        keys = [(t.queue, t.idempotency_key) for t in checked if t.idempotency_key]
        if len(keys) != len(set(keys)):
            raise InvalidArgument("the same idempotency key appears twice in one batch")
        if self.admission is not None:
            await self.admission.admit(principal.current(), len(checked))
        with tracing.inserting(self.tracer, self.store.schema, len(checked)):
            submitted = await self.store.insert(checked)
        self.events.submitted(checked[0].tenant, submitted)
        return submitted

    async def get(self, task_id: str) -> Task:
        """The task, if the caller may see it: another tenant's (or, for a key
        that may only submit, another key's) is `NotFound`, like a missing one."""
        caller = principal.current()
        task = await self.store.get(caller.tenant, parse_task_id(task_id), caller.submitted_by)
        return found(task, f"task {task_id}")

    async def get_each(self, task_ids: Sequence[str]) -> builtins.list[Task | Exception]:
        """Each task of `task_ids`, in order, or why it cannot be read (as
        `get` would raise it); one statement for all."""
        if len(task_ids) > MAX_PAGE_SIZE:
            raise InvalidArgument(f"at most {MAX_PAGE_SIZE} ids per call, got {len(task_ids)}")
        parsed: builtins.list[uuid.UUID | Exception] = []
        for task_id in task_ids:
            try:
                parsed.append(parse_task_id(task_id))
            except InvalidArgument as exc:
                parsed.append(exc)
        caller = principal.current()
        found_ = await self.store.get_many(
            caller.tenant, [p for p in parsed if isinstance(p, uuid.UUID)], caller.submitted_by
        )
        out: builtins.list[Task | Exception] = []
        for task_id, p in zip(task_ids, parsed, strict=True):
            if isinstance(p, Exception):
                out.append(p)
            else:
                try:
                    out.append(found(found_.get(p), f"task {task_id}"))
                except NotFound as exc:
                    out.append(exc)
        return out

    async def list(
        self,
        where: TaskFilter = EVERY_TASK,
        page_size: int | None = None,
        cursor: str | None = None,
        backward: bool = False,
    ) -> TaskPage:
        """A page of the tasks `where` matches, newest first: older than
        `cursor` (None: the newest), or, `backward`, the newer ones just past
        it (None: the oldest)."""
        _check_filter(where)
        size = page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
        at = decode_cursor(cursor) if cursor else None
        caller = principal.current()
        states = set(where.states)
        plain = where == TaskFilter(queue=where.queue, states=where.states) and len(states) <= 1
        if plain and not backward:
            # The common listings, each with a statement of its own (their indexes).
            tasks, seqs, more = await self.store.page(
                caller.tenant,
                where.queue or None,
                next(iter(states), None),
                at,
                size,
                caller.submitted_by,
            )
        else:
            tasks, seqs, more = await self.store.page_filtered(
                caller.tenant, where, at, size, caller.submitted_by, backward
            )
        cursors = tuple(encode_cursor(seq) for seq in seqs)
        # Past the page in its direction: `more`. Behind it: whatever lies
        # past the cursor it started from, when it had one (from the cursor
        # itself when the page is empty).
        older: str | None
        newer: str | None
        if backward:
            newer = cursors[0] if more else None
            older = cursors[-1] if cursors else None
            if at is None:
                older = None
            elif not cursors:
                older = encode_cursor(at + 1)
        else:
            older = cursors[-1] if more else None
            newer = cursors[0] if cursors else None
            if not at:
                newer = None
            elif not cursors:
                newer = encode_cursor(at - 1)
        return TaskPage(tasks, older, newer, cursors)

    async def count(self, selection: TaskSelection) -> int:
        """How many of the caller's tasks `selection` matches."""
        _check_selection(selection)
        caller = principal.current()
        return await self.store.count(caller.tenant, selection, caller.submitted_by)

    async def bulk(self, action: str, selection: TaskSelection) -> BulkResult:
        """One batch of `action` (retry, cancel, purge; `BULK_STATES`) on the
        tasks `selection` matches, in one transaction; tasks the action does not
        apply to are left alone."""
        _check_selection(selection)
        limit = selection.limit or DEFAULT_BULK
        if not 1 <= limit <= MAX_BULK:
            raise InvalidArgument(f"limit must be between 1 and {MAX_BULK}, got {limit}")
        acting_on = BULK_STATES[action]
        states = acting_on & set(selection.states) if selection.states else acting_on
        if not states:
            return BulkResult(0, (), False)
        tenant = principal.current().tenant
        changed, more = await self.store.bulk(action, tenant, selection, sorted(states), limit)
        if action == "cancel":
            for task in changed:
                if task.state is TaskState.CANCELLED:
                    self.events.cancelled(tenant, task.queue)
        return BulkResult(len(changed), tuple(c.task_id for c in changed), more)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a waiting task at once. A running one is marked cancel-requested
        and its replica is told; it ends CANCELLED once its handler stops."""
        parsed = parse_task_id(task_id)
        tenant = principal.current().tenant
        stored = await self.store.cancel(tenant, parsed)
        if stored is not None:
            cancelled, trace_context = stored
            if cancelled.state is TaskState.CANCELLED:
                self.events.cancelled(tenant, cancelled.queue)
                task_log.cancelled_waiting(cancelled, tenant, trace_context)
            # A running one is logged by the replica running it, when it ends.
            return cancelled
        task = found(await self.store.get(tenant, parsed), f"task {task_id}")
        raise InvalidState(f"task {task_id} has already finished ({task.state.value})")

    async def retry(self, task_id: str) -> Task:
        """Requeue a DEAD or CANCELLED task with fresh attempts."""
        parsed = parse_task_id(task_id)
        tenant = principal.current().tenant
        retried = await self.store.retry(tenant, parsed)
        if retried is not None:
            return retried
        task = found(await self.store.get(tenant, parsed), f"task {task_id}")
        raise InvalidState(
            f"task {task_id} is {task.state.value}; only DEAD or CANCELLED tasks can be retried"
        )

    async def replicas(self) -> builtins.list[ReplicaInfo]:
        """Replicas that registered recently; silent longer than a lease means
        gone. Each counts the caller's tenant's tasks it runs."""
        return await self.store.replicas(principal.current().tenant, self.settings.lease_seconds)

    # -- queues ---------------------------------------------------------------

    async def queues(self) -> builtins.list[Queue]:
        return await self.store.queues(principal.current().tenant)

    async def queue(self, name: str) -> Queue:
        check_name(name, "queue name")
        return found(await self.store.queue(principal.current().tenant, name), f"queue {name!r}")

    async def update_queue(
        self, name: str, update: QueueUpdate, paused: bool | None = None
    ) -> Queue:
        """Change a queue's settings (None leaves one as it is)."""
        check_name(name, "queue name")
        check_queue_update(update)
        updated = await self.store.update_queue(principal.current().tenant, name, update, paused)
        return found(updated, f"queue {name!r}")

    async def pause_queue(self, name: str) -> Queue:
        return await self.update_queue(name, QueueUpdate(), paused=True)

    async def resume_queue(self, name: str) -> Queue:
        return await self.update_queue(name, QueueUpdate(), paused=False)
