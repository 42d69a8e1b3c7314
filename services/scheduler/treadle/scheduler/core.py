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
from typing import TypeVar

from opentelemetry import trace

from treadle.common import wire
from treadle.common.errors import InvalidArgument, InvalidState, NotFound
from treadle.common.tasks import (
    Queue,
    QueueUpdate,
    ReplicaInfo,
    Submitted,
    Task,
    TaskPage,
    TaskSpec,
    TaskState,
)
from treadle.common.telemetry import Carrier
from treadle.scheduler import principal, tracing
from treadle.scheduler.events import NOTHING, Events
from treadle.scheduler.group import GroupInsert, store_each
from treadle.scheduler.limits import Admission
from treadle.scheduler.loops import Clock, utcnow
from treadle.scheduler.model import (
    NewTask,
    check_name,
    check_queue_update,
    check_spec,
    found,
    parse_task_id,
)
from treadle.scheduler.registry import Registry
from treadle.scheduler.settings import Settings
from treadle.scheduler.store import Store
from treadle.tasks import TaskOptions

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
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
        queue: str | None = None,
        state: TaskState | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        if queue:
            check_name(queue, "queue")
        size = page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {size}")
        before = decode_cursor(cursor) if cursor else None
        caller = principal.current()
        tasks, last_seq = await self.store.page(
            caller.tenant, queue or None, state, before, size, caller.submitted_by
        )
        return TaskPage(tasks, encode_cursor(last_seq) if last_seq is not None else None)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a waiting task at once. A running one is marked cancel-requested
        and its replica is told; it ends CANCELLED once its handler stops."""
        parsed = parse_task_id(task_id)
        tenant = principal.current().tenant
        cancelled = await self.store.cancel(tenant, parsed)
        if cancelled is not None:
            if cancelled.state is TaskState.CANCELLED:
                self.events.cancelled(tenant, cancelled.queue)
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
