"""The async client: grpc.aio calls through the generated stubs.

Credentials: a `Client(api_key=...)` sends its key as `authorization: Bearer`
metadata on every call. Code that serves several callers through one client
(the gateway) gives each caller's own key with `credentials(key)`: inside the
block, every call of every client sends that key instead (None: no key at
all, not the client's own). Calls of different keys never travel in one
group call (`_group`): each key has its own groups.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import copy
import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client._group import Grouper, refusal
from treadle.common import (
    access,
    errors,
    grpc_limits,
    stats,
    stats_wire,
    status,
    target,
    tasks,
    telemetry,
    wire,
)
from treadle.common.audit import AuditEvent, audit_event_from_proto
from treadle.common.health import SchedulerHealth, scheduler_health_from_proto
from treadle.common.keys_wire import KeyInfo, MadeKey, key_from_proto
from treadle.common.stats import Granularity
from treadle.common.tasks import RetryPolicy, Task, TaskSpec, TaskState
from treadle.common.tls import TLSConfig

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50051"

# Calls go round every replica the address names, leaving out those it cannot
# reach (`treadle.common.target`). Reads are idempotent: let gRPC retry them when
# the scheduler is briefly unreachable (a stream only until its first message).
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetTask"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetTasks"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "ListTasks"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "CountTasks"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "WatchTask"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetQueueStats"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "ListQueueStats"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetOverview"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetTrends"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetErrorPatterns"},
                    {"service": "treadle.api.v1.SchedulerService", "method": "GetSystemHealth"},
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def _channel(
    address: str,
    interceptors: list[grpc.aio.ClientInterceptor],
    tls: TLSConfig | None,
    max_request_bytes: int,
    max_response_bytes: int,
) -> grpc.aio.Channel:
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        *grpc_limits.channel_options(max_request_bytes, max_response_bytes),
    ]
    to = target.target(address)
    if tls is None:
        return grpc.aio.insecure_channel(to, interceptors=interceptors or None, options=options)
    return grpc.aio.secure_channel(
        to,
        tls.credentials(),
        interceptors=interceptors or None,
        options=[*options, *tls.options()],
    )


#: Metadata of a call: a tuple of (key, value) pairs, or None for none.
Metadata = tuple[tuple[str, str], ...] | None


class _Own:
    """What `_credential` holds outside any `credentials()` block: each client's own key."""


_OWN = _Own()
_credential: contextvars.ContextVar[str | _Own | None] = contextvars.ContextVar(
    "treadle_client_credential", default=_OWN
)
#: Distinct keys a client keeps call groups for before it starts afresh.
MAX_KEYS = 1000


@contextlib.contextmanager
def credentials(api_key: str | None) -> Iterator[None]:
    """Inside the block, every call of every `Client` sends `api_key` (None:
    no key) instead of the client's own `api_key`. For a server that calls
    the scheduler for its own callers with one shared client:

        with credentials(token_from_the_request):
            task = await client.get(task_id)
    """
    token = _credential.set(api_key)
    try:
        yield
    finally:
        _credential.reset(token)


def _metadata(api_key: str | None) -> Metadata:
    return (access.bearer(api_key),) if api_key else None


class _Groups:
    """The call groups of one key (`_group`): its submits and its reads."""

    def __init__(self, client: Client, metadata: Metadata) -> None:
        async def submit_group(
            submissions: builtins.list[pb.GroupedSubmission],
        ) -> builtins.list[tasks.Submitted | Exception]:
            return await client._submit_group(submissions, metadata)

        async def get_group(task_ids: builtins.list[str]) -> builtins.list[Task | Exception]:
            return await client._get_group(task_ids, metadata)

        self.submits: Grouper[pb.TaskSpec, pb.GroupedSubmission, tasks.Submitted] = Grouper(
            client._submit_single, submit_group, client.timeout
        )
        self.gets: Grouper[str, str, Task] = Grouper(client._get_single, get_group, client.timeout)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise Treadle's errors instead of gRPC's."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise _error(exc) from None


def _error(exc: grpc.aio.AioRpcError) -> errors.TreadleError:
    """Our error for a failed call, with a rate limit's retry-after hint."""
    retry_after = status.retry_after_from(exc.trailing_metadata())
    return status.from_grpc(exc.code(), exc.details() or "", retry_after)


def _state(state: TaskState | str | None, field: str = "state") -> TaskState | None:
    return None if state is None else wire.as_enum(TaskState, state, field)


def _states(states: Iterable[TaskState | str]) -> tuple[TaskState, ...]:
    if isinstance(states, str | TaskState):  # one state given alone
        states = (states,)
    return tuple(wire.as_enum(TaskState, s, "states") for s in states)


def _policy(retry: RetryPolicy | Mapping[str, float]) -> RetryPolicy:
    """A retry policy given as one, or as a mapping of its fields."""
    if isinstance(retry, RetryPolicy):
        return retry
    try:
        return RetryPolicy(**retry)
    except TypeError as exc:
        raise errors.InvalidArgument(
            f"retry {dict(retry)!r} is not a retry policy: {exc}"
        ) from None


def _selection(
    ids: Iterable[str],
    queue: str | None,
    states: Iterable[TaskState | str],
    name: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    finished_before: datetime | None,
    limit: int | None,
) -> pb.TaskSelection:
    if isinstance(ids, str):
        ids = (ids,)
    return wire.selection_to_proto(
        tasks.TaskSelection(
            ids=tuple(ids),
            queue=queue or None,
            states=_states(states),
            name=name or None,
            created_after=created_after,
            created_before=created_before,
            finished_before=finished_before,
            limit=limit,
        )
    )


class Client:
    """An async client of the scheduler: one address (any replica will do), a
    DNS name that resolves to every replica, or a comma-separated list of their
    IP addresses; calls go round the replicas it reaches (`treadle.common.target`)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 10.0,
        channel: grpc.aio.Channel | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        tls: TLSConfig | None = None,
        api_key: str | None = None,
        max_request_bytes: int = grpc_limits.MAX_REQUEST_BYTES,
        max_response_bytes: int = grpc_limits.MAX_RESPONSE_BYTES,
    ) -> None:
        """`interceptors` wrap every call on the client's own channel (not on a
        `channel` passed in), e.g. `treadle.common.telemetry.client_interceptors()`.
        `tls`: call over TLS (the CA to trust; a client certificate for mutual
        TLS); None: plaintext. `max_request_bytes` and `max_response_bytes` are
        the scheduler's gRPC message limits (`treadle.common.grpc_limits`): a
        larger request is refused here, RESOURCE_EXHAUSTED, without being sent.
        `api_key` is sent with every call (unless `credentials()` says otherwise)."""
        self.address = address
        self.timeout = timeout
        self.api_key = api_key
        self._own_metadata = _metadata(api_key)
        self._channel = channel or _channel(
            address, list(interceptors), tls, max_request_bytes, max_response_bytes
        )
        self._stub = pb_grpc.SchedulerServiceStub(self._channel)
        # Calls made together share calls (`_group`): submits, and task reads;
        # each key its own.
        self._groups: dict[str | None, _Groups] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def with_api_key(self, api_key: str | None) -> Client:
        """This client sending `api_key` (None: no key) instead of its own: it
        shares the channel and the call groups of each key, so a server that
        calls the scheduler for many callers (the gateway) makes one view per
        request, each with its caller's key. Close only the client it came from."""
        view = copy.copy(self)
        view.api_key = api_key
        view._own_metadata = _metadata(api_key)
        return view

    def _key(self) -> str | None:
        """The key calls made now send."""
        key = _credential.get()
        return self.api_key if isinstance(key, _Own) else key

    def _metadata(self) -> Metadata:
        key = _credential.get()
        return self._own_metadata if isinstance(key, _Own) else _metadata(key)

    def _grouped(self) -> _Groups:
        """The call groups of the key calls made now send."""
        key = self._key()
        groups = self._groups.get(key)
        if groups is None:
            if len(self._groups) >= MAX_KEYS:
                self._groups.clear()  # groups in flight finish on their own
            groups = self._groups[key] = _Groups(self, _metadata(key))
        return groups

    async def _call(self, call: Callable[..., Awaitable[T]], request: Any) -> T:
        with translated():
            return await call(request, timeout=self.timeout, metadata=self._metadata())

    async def submit(
        self,
        name: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        delay_seconds: float | None = None,
        timeout_seconds: float | None = None,
        retry: RetryPolicy | Mapping[str, float] | None = None,
        wait_for_rate_limit: bool = False,
        concurrency_key: str | None = None,
        max_concurrent: int | None = None,
    ) -> Task:
        """Submit one task; returns it as stored (state QUEUED or SCHEDULED).
        Unset `max_attempts`, `timeout_seconds` and `retry` take the queue's.
        `concurrency_key` with `max_concurrent`: at most that many tasks of the
        key run at once (the others wait QUEUED).

        A submit over a rate limit raises `ResourceExhausted` (its
        `retry_after` says when to try again); with `wait_for_rate_limit`, the
        client sleeps that long and submits again, as long as the client's
        `timeout` (counted from the first try) allows, then raises. A quota
        refusal carries no retry-after: it is raised at once."""
        spec = TaskSpec(
            name=name,
            payload_json=wire.encode_json(payload, max_depth=None),  # the scheduler decides
            queue=queue,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            delay_seconds=delay_seconds,
            timeout_seconds=timeout_seconds,
            retry=None if retry is None else _policy(retry),
            concurrency_key=concurrency_key,
            max_concurrent=max_concurrent,
        )
        return (await self.submit_spec(spec, wait_for_rate_limit=wait_for_rate_limit)).task

    async def submit_spec(
        self, spec: TaskSpec, *, wait_for_rate_limit: bool = False
    ) -> tasks.Submitted:
        """Submit one task; says whether its idempotency key matched an existing task.

        Submits made at the same time on this client (more than two in
        flight) travel together in one call and one commit; each still gets
        its own task or error (`treadle.client._group`). `wait_for_rate_limit`:
        as for `submit`."""
        message = wire.spec_to_proto(spec)

        async def once() -> tasks.Submitted:
            return await self._grouped().submits.call(
                message,
                lambda: pb.GroupedSubmission(
                    task=message, trace_context=telemetry.current_carrier() or {}
                ),
            )

        return await self._rate_limited(once, wait_for_rate_limit)

    async def _rate_limited(self, call: Callable[[], Awaitable[T]], wait: bool) -> T:
        """`call()`; with `wait`, again after each rate-limit refusal's
        retry-after, while that fits in the client's timeout from now."""
        if not wait:
            return await call()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                return await call()
            except errors.ResourceExhausted as exc:
                if exc.retry_after is None or loop.time() + exc.retry_after > deadline:
                    raise
                await asyncio.sleep(exc.retry_after)

    async def _submit_single(self, spec: pb.TaskSpec) -> tasks.Submitted:
        reply = await self._call(self._stub.SubmitTask, pb.SubmitTaskRequest(task=spec))
        return tasks.Submitted(wire.task_from_proto(reply.task), existing=reply.existing)

    async def _submit_group(
        self, submissions: builtins.list[pb.GroupedSubmission], metadata: Metadata
    ) -> builtins.list[tasks.Submitted | Exception]:
        reply = await self._stub.SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(submissions=submissions),
            timeout=self.timeout,
            metadata=metadata,
        )
        return [
            tasks.Submitted(wire.task_from_proto(r.submitted.task), existing=r.submitted.existing)
            if r.HasField("submitted")
            else refusal(r.code, r.message, r.retry_after_seconds or None)
            for r in reply.results
        ]

    async def submit_many(
        self, specs: Sequence[TaskSpec], *, wait_for_rate_limit: bool = False
    ) -> list[str]:
        """Submit many tasks in one call (all or none); returns their ids in
        order. `wait_for_rate_limit`: as for `submit` (the batch needs as many
        tokens as it has tasks)."""
        request = pb.SubmitTasksRequest(tasks=[wire.spec_to_proto(s) for s in specs])
        reply = await self._rate_limited(
            lambda: self._call(self._stub.SubmitTasks, request), wait_for_rate_limit
        )
        return list(reply.task_ids)

    async def get(self, task_id: str) -> Task:
        """One task. Reads made at the same time on this client share calls,
        as submits do."""
        return await self._grouped().gets.call(task_id, lambda: task_id)

    async def _get_single(self, task_id: str) -> Task:
        reply = await self._call(self._stub.GetTask, pb.GetTaskRequest(id=task_id))
        return wire.task_from_proto(reply.task)

    async def _get_group(
        self, task_ids: builtins.list[str], metadata: Metadata
    ) -> builtins.list[Task | Exception]:
        reply = await self._stub.GetTasks(
            pb.GetTasksRequest(ids=task_ids), timeout=self.timeout, metadata=metadata
        )
        return [
            wire.task_from_proto(r.task) if r.HasField("task") else refusal(r.code, r.message)
            for r in reply.results
        ]

    async def list(
        self,
        *,
        queue: str | None = None,
        state: TaskState | str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
        states: Iterable[TaskState | str] = (),
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        idempotency_key: str | None = None,
        backward: bool = False,
    ) -> tasks.TaskPage:
        """One page of tasks, newest first, matching every filter given
        (`state` and `states`: any of them; a state as `TaskState` or its name).
        Pass `next_cursor` back as `cursor` for the page of older tasks, or
        `previous_cursor` with `backward=True` for the page of newer ones."""
        request = pb.ListTasksRequest(
            queue=queue or "",
            state=wire.state_to_proto(_state(state)),
            states=wire.states_to_proto(_states(states)),
            page_size=page_size or 0,
            page_token=cursor or "",
            name=name or "",
            idempotency_key=idempotency_key or "",
            backward=backward,
        )
        wire.time_to_proto(created_after, request.created_after, "created_after")
        wire.time_to_proto(created_before, request.created_before, "created_before")
        reply = await self._call(self._stub.ListTasks, request)
        return tasks.TaskPage(
            [wire.task_from_proto(t) for t in reply.tasks],
            reply.next_page_token or None,
            reply.previous_page_token or None,
            tuple(reply.cursors),
        )

    async def iter_tasks(
        self,
        *,
        queue: str | None = None,
        state: TaskState | str | None = None,
        page_size: int = 500,
        **filters: Any,
    ) -> AsyncIterator[Task]:
        """Every matching task, newest first, fetched a page at a time;
        `filters`: those of `list`."""
        cursor: str | None = None
        while True:
            page = await self.list(
                queue=queue, state=state, page_size=page_size, cursor=cursor, **filters
            )
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def count_tasks(
        self,
        *,
        ids: Iterable[str] = (),
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """How many tasks match every filter given (none: all the caller's)."""
        selection = _selection(
            ids, queue, states, name, created_after, created_before, finished_before, None
        )
        reply = await self._call(self._stub.CountTasks, pb.CountTasksRequest(selection=selection))
        return reply.count

    async def retry_tasks(
        self,
        *,
        ids: Iterable[str] = (),
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
    ) -> tasks.BulkResult:
        """Requeue, as `retry` does, one batch (at most `limit`, default 500) of
        the DEAD or CANCELLED tasks matching every filter given; call again
        while the result's `more` is true. Admin scope."""
        selection = _selection(
            ids, queue, states, name, created_after, created_before, finished_before, limit
        )
        reply = await self._call(self._stub.RetryTasks, pb.RetryTasksRequest(selection=selection))
        return tasks.BulkResult(reply.affected, tuple(reply.ids), reply.more)

    async def cancel_tasks(
        self,
        *,
        ids: Iterable[str] = (),
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
    ) -> tasks.BulkResult:
        """Cancel, as `cancel` does, one batch of the unfinished tasks matching
        every filter given (RUNNING ones: asked to cancel); call again while
        `more` is true. Admin scope."""
        selection = _selection(
            ids, queue, states, name, created_after, created_before, finished_before, limit
        )
        reply = await self._call(self._stub.CancelTasks, pb.CancelTasksRequest(selection=selection))
        return tasks.BulkResult(reply.affected, tuple(reply.ids), reply.more)

    async def purge_tasks(
        self,
        *,
        ids: Iterable[str] = (),
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int | None = None,
    ) -> tasks.BulkResult:
        """Delete one batch of the finished (SUCCEEDED, DEAD, CANCELLED) tasks
        matching every filter given; call again while `more` is true. Admin
        scope; recorded in the audit log."""
        selection = _selection(
            ids, queue, states, name, created_after, created_before, finished_before, limit
        )
        reply = await self._call(self._stub.PurgeTasks, pb.PurgeTasksRequest(selection=selection))
        return tasks.BulkResult(reply.affected, tuple(reply.ids), reply.more)

    async def cancel(self, task_id: str) -> Task:
        """Cancel a waiting task at once; for a running task, ask its replica to
        cancel the handler (the task ends CANCELLED when the handler stops)."""
        reply = await self._call(self._stub.CancelTask, pb.CancelTaskRequest(id=task_id))
        return wire.task_from_proto(reply.task)

    async def retry(self, task_id: str) -> Task:
        """Requeue a DEAD or CANCELLED task with fresh attempts."""
        reply = await self._call(self._stub.RetryTask, pb.RetryTaskRequest(id=task_id))
        return wire.task_from_proto(reply.task)

    async def list_replicas(self) -> builtins.list[tasks.ReplicaInfo]:
        """Scheduler replicas that registered recently; `alive` is False for gone ones."""
        reply = await self._call(self._stub.ListReplicas, pb.ListReplicasRequest())
        return [wire.replica_from_proto(r) for r in reply.replicas]

    async def health(self, timeout: float | None = None) -> SchedulerHealth:
        """The replica's report on itself (GetHealth): database, pool, executor,
        backlog per queue, background loops, replicas alive. Not retried; raises
        `Unavailable` (or `DeadlineExceeded`) when the replica does not answer
        within `timeout` seconds (default: the client's timeout)."""
        with translated():
            reply = await self._stub.GetHealth(
                pb.GetHealthRequest(),
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata(),
            )
        return scheduler_health_from_proto(reply)

    async def list_queues(self) -> builtins.list[tasks.Queue]:
        reply = await self._call(self._stub.ListQueues, pb.ListQueuesRequest())
        return [wire.queue_from_proto(q) for q in reply.queues]

    async def get_queue(self, name: str) -> tasks.Queue:
        reply = await self._call(self._stub.GetQueue, pb.GetQueueRequest(name=name))
        return wire.queue_from_proto(reply.queue)

    async def update_queue(
        self,
        name: str,
        *,
        max_concurrent: int | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
        retry: RetryPolicy | Mapping[str, float] | None = None,
        start_limit: int | None = None,
        start_window_seconds: float | None = None,
        start_limit_key: str | None = None,
    ) -> tasks.Queue:
        """Change the settings given (None leaves one as it is; a
        `max_concurrent`, `timeout_seconds` or `start_limit` of 0 removes the
        limit, a `start_limit_key` of "" the key).

        `start_limit`: at most that many of the queue's tasks start per
        `start_window_seconds` (default 1), across all replicas; with
        `start_limit_key`, per distinct value of that top-level payload field."""
        request = pb.UpdateQueueRequest(
            name=name,
            max_concurrent=max_concurrent,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            start_limit=start_limit,
            start_window_seconds=start_window_seconds,
            start_limit_key=start_limit_key,
        )
        if retry is not None:
            request.retry.CopyFrom(wire.retry_to_proto(_policy(retry)))
        reply = await self._call(self._stub.UpdateQueue, request)
        return wire.queue_from_proto(reply.queue)

    async def pause_queue(self, name: str) -> tasks.Queue:
        """Keep accepting the queue's tasks but start none of them."""
        reply = await self._call(self._stub.PauseQueue, pb.PauseQueueRequest(name=name))
        return wire.queue_from_proto(reply.queue)

    async def resume_queue(self, name: str) -> tasks.Queue:
        reply = await self._call(self._stub.ResumeQueue, pb.ResumeQueueRequest(name=name))
        return wire.queue_from_proto(reply.queue)

    async def create_schedule(
        self, name: str, cron: str, task: TaskSpec, timezone: str = "UTC"
    ) -> tasks.Schedule:
        """Submit `task` on every tick of `cron` (five fields, or six with seconds
        first), read in the IANA time zone `timezone`."""
        schedule = tasks.Schedule(name=name, cron=cron, task=task, timezone=timezone)
        request = pb.CreateScheduleRequest(schedule=wire.schedule_to_proto(schedule))
        reply = await self._call(self._stub.CreateSchedule, request)
        return wire.schedule_from_proto(reply.schedule)

    async def list_schedules(self) -> builtins.list[tasks.Schedule]:
        reply = await self._call(self._stub.ListSchedules, pb.ListSchedulesRequest())
        return [wire.schedule_from_proto(s) for s in reply.schedules]

    async def pause_schedule(self, name: str) -> tasks.Schedule:
        """Stop the schedule firing until it is resumed."""
        reply = await self._call(self._stub.PauseSchedule, pb.PauseScheduleRequest(name=name))
        return wire.schedule_from_proto(reply.schedule)

    async def resume_schedule(self, name: str) -> tasks.Schedule:
        """Fire again from the first tick after now."""
        reply = await self._call(self._stub.ResumeSchedule, pb.ResumeScheduleRequest(name=name))
        return wire.schedule_from_proto(reply.schedule)

    async def delete_schedule(self, name: str) -> None:
        """Remove the schedule; the tasks it submitted stay."""
        await self._call(self._stub.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    # -- statistics -----------------------------------------------------------

    async def queue_stats(self, queue: str) -> stats.QueueStats:
        """One queue now (length, running, oldest ready task) and its lifetime totals."""
        reply = await self._call(self._stub.GetQueueStats, pb.GetQueueStatsRequest(queue=queue))
        return stats_wire.queue_stats_from_proto(reply.stats)

    async def list_queue_stats(self) -> builtins.list[stats.QueueStats]:
        """`queue_stats` for every queue, by name."""
        reply = await self._call(self._stub.ListQueueStats, pb.ListQueueStatsRequest())
        return [stats_wire.queue_stats_from_proto(s) for s in reply.stats]

    async def overview(self) -> stats.Overview:
        """Tasks by state, throughput, error rate, processing time, replicas."""
        reply = await self._call(self._stub.GetOverview, pb.GetOverviewRequest())
        return stats_wire.overview_from_proto(reply.overview)

    async def trends(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: Granularity | str = Granularity.HOUR,
        queues: Sequence[str] = (),
    ) -> stats.Trends:
        """Per-hour or per-day counts from `since` (default: 24 h before `until`,
        rounded down) until `until` (default: now), over `queues` (default: all)."""
        granularity = wire.as_enum(Granularity, granularity, "granularity")
        request = pb.GetTrendsRequest(
            granularity=stats_wire.granularity_to_proto(granularity), queues=list(queues)
        )
        wire.time_to_proto(since, request.since, "since")
        wire.time_to_proto(until, request.until, "until")
        reply = await self._call(self._stub.GetTrends, request)
        return stats_wire.trends_from_proto(reply, tuple(queues))

    async def error_patterns(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[stats.ErrorPattern]:
        """The most frequent errors (type, message) of attempts that failed in the
        range (default: the last 24 h), with up to three example task ids each."""
        if limit is not None and limit < 1:
            raise errors.InvalidArgument(f"limit must be at least 1, got {limit}")
        request = pb.GetErrorPatternsRequest(queue=queue or "", limit=limit or 0)
        wire.time_to_proto(since, request.since, "since")
        wire.time_to_proto(until, request.until, "until")
        reply = await self._call(self._stub.GetErrorPatterns, request)
        return [stats_wire.pattern_from_proto(p) for p in reply.patterns]

    async def system_health(self) -> stats.SystemHealth:
        """HEALTHY, WARNING or CRITICAL, with the alert thresholds crossed."""
        reply = await self._call(self._stub.GetSystemHealth, pb.GetSystemHealthRequest())
        return stats_wire.system_health_from_proto(reply)

    # -- audit log ------------------------------------------------------------

    async def create_key(
        self, name: str, scopes: Sequence[str], *, expires_in_seconds: float | None = None
    ) -> MadeKey:
        """A new API key of the caller's tenant (admin scope); its token is in
        the reply and never again."""
        request = pb.CreateKeyRequest(name=name, scopes=list(scopes))
        if expires_in_seconds is not None:
            request.expires_in_seconds = expires_in_seconds
        reply = await self._call(self._stub.CreateKey, request)
        return MadeKey(key_from_proto(reply.key), reply.token)

    async def list_keys(self) -> builtins.list[KeyInfo]:
        """The caller's tenant's API keys, oldest first (admin scope)."""
        reply = await self._call(self._stub.ListKeys, pb.ListKeysRequest())
        return [key_from_proto(k) for k in reply.keys]

    async def revoke_key(self, key_id: str) -> KeyInfo:
        """Refuse the key from now on (every replica within a few seconds)."""
        reply = await self._call(self._stub.RevokeKey, pb.RevokeKeyRequest(id=key_id))
        return key_from_proto(reply.key)

    async def rotate_key(self, key_id: str, grace_seconds: float = 0.0) -> MadeKey:
        """A new key with the old one's name and scopes; the old one keeps
        working `grace_seconds` more. Returns the new key and its token."""
        request = pb.RotateKeyRequest(id=key_id, grace_seconds=grace_seconds)
        reply = await self._call(self._stub.RotateKey, request)
        return MadeKey(key_from_proto(reply.key), reply.token)

    async def audit_events(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> tuple[builtins.list[AuditEvent], str | None]:
        """One page of the caller's tenant's audit log, newest first (admin
        scope), and the cursor of the next page (None on the last)."""
        request = pb.ListAuditEventsRequest(page_size=limit or 0, page_token=cursor or "")
        reply = await self._call(self._stub.ListAuditEvents, request)
        events = [audit_event_from_proto(e) for e in reply.events]
        return events, reply.next_page_token or None

    async def watch(self, task_id: str) -> AsyncGenerator[Task, None]:
        """The task now, then again each time its state changes; ends after
        SUCCEEDED, DEAD or CANCELLED. States that come and go between two
        reads on the scheduler may be skipped; the same state never comes twice
        in a row.

        Raises `NotFound` before yielding anything for an unknown task, and
        `Unavailable` when the scheduler cannot be reached or the stream breaks
        (its replica stopped: watch again). Leaving the loop early ends the call.
        """
        async with contextlib.aclosing(self._watch(task_id)) as updates:
            async for task in updates:
                yield task

    async def _watch(
        self, task_id: str, wait_for_ready: bool = False
    ) -> AsyncGenerator[Task, None]:
        call = self._stub.WatchTask(
            pb.WatchTaskRequest(id=task_id),
            wait_for_ready=wait_for_ready,
            metadata=self._metadata(),
        )
        try:
            with translated():
                async for reply in call:
                    yield wire.task_from_proto(reply.task)
        finally:
            call.cancel()

    async def wait(self, task_id: str, timeout: float = 30.0, poll: float = 0.05) -> Task:
        """Wait until the task is SUCCEEDED, DEAD or CANCELLED and return it.

        Follows the task's stream of states (`watch`). When the stream breaks
        (its replica stopped), watches again, at most every `poll` seconds,
        through whichever replica answers, until the deadline. Raises
        `DeadlineExceeded` when the task is still unfinished after `timeout`
        seconds, `NotFound` for an unknown task, and `Unavailable` when the
        scheduler cannot be reached at all.
        """
        last: Task | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # After a break, wait for the channel to reconnect rather than fail fast.
                    updates = self._watch(task_id, wait_for_ready=last is not None)
                    try:
                        async with contextlib.aclosing(updates):
                            async for task in updates:
                                last = task
                                if task.state.terminal:
                                    return task
                    except errors.Unavailable:
                        if last is None:
                            raise
                    await asyncio.sleep(poll)
        except TimeoutError:
            state = last.state.value if last is not None else "unfinished"
            raise errors.DeadlineExceeded(
                f"task {task_id} is still {state} after {timeout}s"
            ) from None
