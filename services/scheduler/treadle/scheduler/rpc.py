"""The gRPC edge: decode requests, call the core, encode replies.

The only scheduler module that touches protobuf. Treadle's errors become gRPC
statuses through `treadle.common.status`; anything unexpected is logged with
its traceback and sent as a generic INTERNAL. A status message is cut to
`MAX_DETAILS` characters, so a message that quotes a huge argument still fits
in the trailers; a rate limit's refusal also sends its retry-after there
(`status.trailers`).

Framing (`Server`): bytes that do not decode as a method's request message
end the call with INVALID_ARGUMENT (`DecodeGuard`), not grpc's UNKNOWN with
protobuf's exception text; a request over the request limit is refused by
grpc itself with RESOURCE_EXHAUSTED ("Received message larger than max"), and
so is a response over the response limit (`treadle.common.grpc_limits`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.common import errors, grpc_limits, grpc_wrap, stats_wire, status, telemetry, wire
from treadle.common.audit import audit_event_to_proto
from treadle.common.health import SchedulerHealth, scheduler_health_to_proto
from treadle.common.keys_wire import key_to_proto
from treadle.common.tasks import BulkResult, QueueUpdate, Submitted, Task, TaskFilter, TaskSpec
from treadle.scheduler import audit, keys, model, principal
from treadle.scheduler.audit import AuditLog
from treadle.scheduler.core import Scheduler
from treadle.scheduler.keys import ApiKey, KeyStore
from treadle.scheduler.schedules import Schedules
from treadle.scheduler.stats import Stats
from treadle.scheduler.watch import Watchers

log = logging.getLogger("treadle.scheduler.rpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SchedulerService"].full_name
#: The longest status message sent; grpc refuses trailers over 16 KiB.
MAX_DETAILS = 1024

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
#: What GetHealth answers (`treadle.scheduler.health.HealthReporter.report`).
HealthReport = Callable[[], Awaitable[SchedulerHealth]]
#: The servicer methods' context (their own request and reply types are on the method).
Context = grpc.aio.ServicerContext[Any, Any]
StreamMethod = Callable[[Any, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncGenerator[Resp, None]]


def _status_of(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message that end a call whose servicer `method` raised
    `exc`; our errors keep theirs, anything else is a generic INTERNAL. What an
    operator must see (INTERNAL, ours or not) is logged with its traceback."""
    if not isinstance(exc, errors.TreadleError):
        log.error("%s failed unexpectedly", method, exc_info=exc)
        exc = errors.Internal()
    elif isinstance(exc, errors.Internal):
        log.error("%s failed: %s", method, exc, exc_info=exc)
    message = exc.message
    if len(message) > MAX_DETAILS:
        message = message[: MAX_DETAILS - 1] + "…"
    return status.to_grpc(exc), message


def _edge(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Map errors raised by a servicer method to gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = _status_of(method.__name__, exc)
            trailing = status.trailers(exc) if isinstance(exc, errors.TreadleError) else ()
        # abort() raises, so it must run outside the handler above.
        await context.abort(code, message, trailing)
        raise AssertionError("unreachable: abort raises")

    return wrapper


def _edge_stream(method: StreamMethod[Req, Resp]) -> StreamMethod[Req, Resp]:
    """`_edge` for server-streaming methods (async generators): an error ends
    the stream with its status, after the messages already sent. A client that
    goes away cancels the generator, which closes the method's own."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncGenerator[Resp, None]:
        try:
            async with contextlib.aclosing(method(self, request, context)) as responses:
                async for response in responses:
                    yield response
            return
        except Exception as exc:
            code, message = _status_of(method.__name__, exc)
        await context.abort(code, message)

    return wrapper


def _spec_from_proto(spec: pb.TaskSpec, index: int) -> TaskSpec:
    """Task `index` of a batch; a field it cannot decode says `task <index>`,
    as the scheduler's checks do."""
    try:
        return wire.spec_from_proto(spec)
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"task {index}: {exc.message}") from None


def _result(outcome: Submitted | Exception) -> pb.SubmissionResult:
    """One submission's result in a group: its task, or the status SubmitTask
    would have ended with."""
    if isinstance(outcome, Exception):
        code, message = _status_of("SubmitTaskGroup", outcome)
        retry_after = (
            status.retry_after_of(outcome) if isinstance(outcome, errors.TreadleError) else None
        )
        return pb.SubmissionResult(
            code=code.value[0], message=message, retry_after_seconds=retry_after or 0.0
        )
    return pb.SubmissionResult(
        submitted=pb.SubmitTaskResponse(
            task=wire.task_to_proto(outcome.task), existing=outcome.existing
        )
    )


def _task_result(outcome: Task | Exception) -> pb.TaskResult:
    """One id's result in GetTasks: its task, or the status GetTask would have
    ended with."""
    if isinstance(outcome, Exception):
        code, message = _status_of("GetTasks", outcome)
        return pb.TaskResult(code=code.value[0], message=message)
    return pb.TaskResult(task=wire.task_to_proto(outcome))


class SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        scheduler: Scheduler,
        schedules: Schedules | None = None,
        watchers: Watchers | None = None,
        stats: Stats | None = None,
        health_report: HealthReport | None = None,
        audit_log: AuditLog | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._audit_log = audit_log
        self._keys = keys
        self._schedules = schedules
        self._health_report = health_report
        self._stats = stats
        # Without the replica's (woken by NOTIFY), watches only poll.
        self.watchers = watchers or Watchers(scheduler.get, scheduler.settings.poll_interval)

    @property
    def schedules(self) -> Schedules:
        if self._schedules is None:
            raise errors.Unavailable("cron schedules are not enabled on this replica")
        return self._schedules

    @property
    def stats(self) -> Stats:
        if self._stats is None:
            raise errors.Unavailable("statistics are not enabled on this replica")
        return self._stats

    @_edge
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        submitted = await self.scheduler.submit(wire.spec_from_proto(request.task))
        return pb.SubmitTaskResponse(
            task=wire.task_to_proto(submitted.task), existing=submitted.existing
        )

    @_edge
    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Context
    ) -> pb.SubmitTasksResponse:
        specs = [_spec_from_proto(spec, i) for i, spec in enumerate(request.tasks)]
        submitted = await self.scheduler.submit_many(specs)
        return pb.SubmitTasksResponse(task_ids=[s.task.id for s in submitted])

    @_edge
    async def SubmitTaskGroup(
        self, request: pb.SubmitTaskGroupRequest, context: Context
    ) -> pb.SubmitTaskGroupResponse:
        specs: list[TaskSpec | Exception] = []
        for item in request.submissions:
            try:
                specs.append(wire.spec_from_proto(item.task))
            except errors.InvalidArgument as exc:
                specs.append(exc)
        contexts = [telemetry.clean_carrier(item.trace_context) for item in request.submissions]
        outcomes = await self.scheduler.submit_each(specs, contexts)
        return pb.SubmitTaskGroupResponse(results=[_result(o) for o in outcomes])

    @_edge
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        return pb.GetTaskResponse(task=wire.task_to_proto(await self.scheduler.get(request.id)))

    @_edge
    async def GetTasks(self, request: pb.GetTasksRequest, context: Context) -> pb.GetTasksResponse:
        outcomes = await self.scheduler.get_each(list(request.ids))
        return pb.GetTasksResponse(results=[_task_result(o) for o in outcomes])

    @_edge
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        state = wire.state_from_proto(request.state)
        states = wire.states_from_proto(request.states)
        where = TaskFilter(
            queue=request.queue or None,
            states=tuple(dict.fromkeys((*states, *([state] if state else [])))),
            name=request.name or None,
            created_after=wire.time_from_proto(request, "created_after"),
            created_before=wire.time_from_proto(request, "created_before"),
            idempotency_key=request.idempotency_key or None,
        )
        page = await self.scheduler.list(
            where,
            page_size=request.page_size or None,
            cursor=request.page_token or None,
            backward=request.backward,
        )
        return pb.ListTasksResponse(
            tasks=[wire.task_to_proto(t) for t in page.tasks],
            next_page_token=page.next_cursor or "",
            previous_page_token=page.previous_cursor or "",
            cursors=page.cursors,
        )

    @_edge
    async def CountTasks(
        self, request: pb.CountTasksRequest, context: Context
    ) -> pb.CountTasksResponse:
        selection = wire.selection_from_proto(request.selection)
        return pb.CountTasksResponse(count=await self.scheduler.count(selection))

    async def _bulk(self, action: str, selection: pb.TaskSelection) -> BulkResult:
        return await self.scheduler.bulk(action, wire.selection_from_proto(selection))

    @_edge
    async def RetryTasks(
        self, request: pb.RetryTasksRequest, context: Context
    ) -> pb.RetryTasksResponse:
        done = await self._bulk("retry", request.selection)
        return pb.RetryTasksResponse(affected=done.affected, ids=done.ids, more=done.more)

    @_edge
    async def CancelTasks(
        self, request: pb.CancelTasksRequest, context: Context
    ) -> pb.CancelTasksResponse:
        done = await self._bulk("cancel", request.selection)
        return pb.CancelTasksResponse(affected=done.affected, ids=done.ids, more=done.more)

    @_edge
    async def PurgeTasks(
        self, request: pb.PurgeTasksRequest, context: Context
    ) -> pb.PurgeTasksResponse:
        done = await self._bulk("purge", request.selection)
        return pb.PurgeTasksResponse(affected=done.affected, ids=done.ids, more=done.more)

    @_edge
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        return pb.CancelTaskResponse(
            task=wire.task_to_proto(await self.scheduler.cancel(request.id))
        )

    @_edge
    async def ListReplicas(
        self, request: pb.ListReplicasRequest, context: Context
    ) -> pb.ListReplicasResponse:
        replicas = await self.scheduler.replicas()
        return pb.ListReplicasResponse(replicas=[wire.replica_to_proto(r) for r in replicas])

    @_edge
    async def GetHealth(
        self, request: pb.GetHealthRequest, context: Context
    ) -> pb.GetHealthResponse:
        if self._health_report is None:
            raise errors.Unavailable("health reports are not enabled on this server")
        report = await self._health_report()
        # The replica's own figures are for anyone who may read; the queues,
        # only the caller's tenant's.
        tenant = principal.current().tenant
        backlog = tuple(q for q in report.backlog if q.tenant == tenant)
        return scheduler_health_to_proto(dataclasses.replace(report, backlog=backlog))

    @_edge
    async def RetryTask(
        self, request: pb.RetryTaskRequest, context: Context
    ) -> pb.RetryTaskResponse:
        return pb.RetryTaskResponse(task=wire.task_to_proto(await self.scheduler.retry(request.id)))

    @_edge_stream
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncGenerator[pb.WatchTaskResponse, None]:
        async with contextlib.aclosing(self.watchers.watch(request.id)) as updates:
            async for task in updates:
                yield pb.WatchTaskResponse(task=wire.task_to_proto(task))

    # -- queues ---------------------------------------------------------------

    @_edge
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Context
    ) -> pb.ListQueuesResponse:
        queues = await self.scheduler.queues()
        return pb.ListQueuesResponse(queues=[wire.queue_to_proto(q) for q in queues])

    @_edge
    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        return pb.GetQueueResponse(
            queue=wire.queue_to_proto(await self.scheduler.queue(request.name))
        )

    @_edge
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: Context
    ) -> pb.UpdateQueueResponse:
        update = QueueUpdate(
            max_concurrent=(request.max_concurrent if request.HasField("max_concurrent") else None),
            max_attempts=request.max_attempts if request.HasField("max_attempts") else None,
            timeout_seconds=(
                request.timeout_seconds if request.HasField("timeout_seconds") else None
            ),
            retry=wire.retry_from_proto(request.retry) if request.HasField("retry") else None,
            start_limit=request.start_limit if request.HasField("start_limit") else None,
            start_window_seconds=(
                request.start_window_seconds if request.HasField("start_window_seconds") else None
            ),
            start_limit_key=(
                request.start_limit_key if request.HasField("start_limit_key") else None
            ),
        )
        queue = await self.scheduler.update_queue(request.name, update)
        return pb.UpdateQueueResponse(queue=wire.queue_to_proto(queue))

    @_edge
    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        queue = await self.scheduler.pause_queue(request.name)
        return pb.PauseQueueResponse(queue=wire.queue_to_proto(queue))

    @_edge
    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        queue = await self.scheduler.resume_queue(request.name)
        return pb.ResumeQueueResponse(queue=wire.queue_to_proto(queue))

    # -- schedules ------------------------------------------------------------

    @_edge
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.CreateScheduleResponse:
        created = await self.schedules.create(wire.schedule_from_proto(request.schedule))
        return pb.CreateScheduleResponse(schedule=wire.schedule_to_proto(created))

    @_edge
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        found = await self.schedules.list()
        return pb.ListSchedulesResponse(schedules=[wire.schedule_to_proto(s) for s in found])

    @_edge
    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Context
    ) -> pb.PauseScheduleResponse:
        paused = await self.schedules.pause(request.name)
        return pb.PauseScheduleResponse(schedule=wire.schedule_to_proto(paused))

    @_edge
    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: Context
    ) -> pb.ResumeScheduleResponse:
        resumed = await self.schedules.resume(request.name)
        return pb.ResumeScheduleResponse(schedule=wire.schedule_to_proto(resumed))

    @_edge
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Context
    ) -> pb.DeleteScheduleResponse:
        await self.schedules.delete(request.name)
        return pb.DeleteScheduleResponse()

    # -- statistics -----------------------------------------------------------

    @_edge
    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: Context
    ) -> pb.GetQueueStatsResponse:
        found = await self.stats.queue(request.queue)
        return pb.GetQueueStatsResponse(stats=stats_wire.queue_stats_to_proto(found))

    @_edge
    async def ListQueueStats(
        self, request: pb.ListQueueStatsRequest, context: Context
    ) -> pb.ListQueueStatsResponse:
        found = await self.stats.queues()
        return pb.ListQueueStatsResponse(stats=[stats_wire.queue_stats_to_proto(q) for q in found])

    @_edge
    async def GetOverview(
        self, request: pb.GetOverviewRequest, context: Context
    ) -> pb.GetOverviewResponse:
        overview = await self.stats.overview()
        return pb.GetOverviewResponse(overview=stats_wire.overview_to_proto(overview))

    @_edge
    async def GetTrends(
        self, request: pb.GetTrendsRequest, context: Context
    ) -> pb.GetTrendsResponse:
        trends = await self.stats.trends(
            since=wire.time_from_proto(request, "since"),
            until=wire.time_from_proto(request, "until"),
            granularity=stats_wire.granularity_from_proto(request.granularity),
            queues=list(request.queues),
        )
        return stats_wire.trends_to_proto(trends)

    @_edge
    async def GetErrorPatterns(
        self, request: pb.GetErrorPatternsRequest, context: Context
    ) -> pb.GetErrorPatternsResponse:
        patterns = await self.stats.error_patterns(
            since=wire.time_from_proto(request, "since"),
            until=wire.time_from_proto(request, "until"),
            queue=request.queue or None,
            limit=request.limit or None,
        )
        return pb.GetErrorPatternsResponse(
            patterns=[stats_wire.pattern_to_proto(p) for p in patterns]
        )

    @_edge
    async def GetSystemHealth(
        self, request: pb.GetSystemHealthRequest, context: Context
    ) -> pb.GetSystemHealthResponse:
        return stats_wire.system_health_to_proto(await self.stats.health())

    # -- audit log --------------------------------------------------------------

    @_edge
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        if self._audit_log is None:
            raise errors.Unavailable("the audit log is not enabled on this server")
        limit = audit.check_limit(request.page_size)
        before = audit.cursor_from_token(request.page_token)
        events = await self._audit_log.list(principal.current().tenant, limit, before)
        return pb.ListAuditEventsResponse(
            events=[audit_event_to_proto(e) for e in events],
            next_page_token=str(events[-1].id) if len(events) == limit else "",
        )

    # -- API keys of the caller's tenant ---------------------------------------

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            raise errors.Unavailable("API keys are not enabled on this server")
        return self._keys

    def _key(self, key: ApiKey) -> pb.ApiKey:
        return key_to_proto(
            id=key.id,
            name=key.name,
            scopes=[s.value for s in key.scopes],
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at,
            rotated_from=key.rotated_from,
            status=key.status(self.keys.clock()),
        )

    @_edge
    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        caller = principal.current()
        expires_at = None
        if request.HasField("expires_in_seconds"):
            model.check_seconds(request.expires_in_seconds, "expires_in_seconds")
            expires_at = self.keys.clock() + timedelta(seconds=request.expires_in_seconds)
        made = await self.keys.create(
            caller.tenant,
            request.name,
            keys.parse_scopes(list(request.scopes)),
            actor=caller,
            expires_at=expires_at,
        )
        return pb.CreateKeyResponse(key=self._key(made.key), token=made.token)

    @_edge
    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        found = await self.keys.list(principal.current().tenant)
        return pb.ListKeysResponse(keys=[self._key(k) for k in found])

    @_edge
    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Context
    ) -> pb.RevokeKeyResponse:
        caller = principal.current()
        revoked = await self.keys.revoke(caller.tenant, request.id, actor=caller)
        return pb.RevokeKeyResponse(key=self._key(revoked))

    @_edge
    async def RotateKey(
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        caller = principal.current()
        model.check_seconds(request.grace_seconds, "grace_seconds")
        made, old = await self.keys.rotate(
            caller.tenant,
            request.id,
            actor=caller,
            grace=timedelta(seconds=request.grace_seconds),
        )
        return pb.RotateKeyResponse(key=self._key(made.key), token=made.token, old=self._key(old))


class _Undecodable:
    """What a guarded deserializer returns for bytes that are not the request message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


Behavior = Callable[..., Any]


def _lenient(deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Undecodable(f"the request to {method} is not a valid protobuf message")

    return deserialize


def _refusing(behavior: Behavior) -> Behavior:
    """`behavior`, ending the call with INVALID_ARGUMENT when its request did not decode."""
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return streaming

    async def unary(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behavior(request, context)

    return unary


class DecodeGuard(grpc_wrap.MethodWrapper):
    """Undecodable request bytes become INVALID_ARGUMENT on every method that takes
    one request (the deserializer's error would be grpc's UNKNOWN, with protobuf's
    text). Put it last, so that the other interceptors see the status."""

    def wrap(self, handler: Any, full_method: str) -> Any:
        behavior = grpc_wrap.async_behavior(handler)
        if behavior is None or handler.request_deserializer is None:
            return handler  # unknown (UNIMPLEMENTED), client-streaming (reflection) or raw
        method = full_method.rsplit("/", 1)[-1]
        return grpc_wrap.rewrapped(
            handler, _refusing(behavior), _lenient(handler.request_deserializer, method)
        )


#: The grpc.health.v1 service name that answers SERVING for as long as the
#: server runs, whatever the database does: a liveness probe asks it (a probe
#: of "" fails while PostgreSQL is away, and restarting replicas then helps
#: nothing). It fails when the process no longer answers at all.
LIVENESS = "liveness"


class Server:
    """The replica's grpc.aio server: SchedulerService, grpc.health.v1 and reflection;
    messages and open calls limited by `options` (`grpc_limits.server_options`),
    undecodable requests INVALID_ARGUMENT. Health: "" and SchedulerService say
    whether the replica serves (NOT_SERVING while its database is away and once
    it stops), `LIVENESS` only that it runs."""

    def __init__(
        self,
        scheduler: Scheduler,
        host: str,
        port: int,
        schedules: Schedules | None = None,
        watchers: Watchers | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        stats: Stats | None = None,
        health_report: HealthReport | None = None,
        credentials: grpc.ServerCredentials | None = None,
        options: Sequence[tuple[str, int]] | None = None,
        audit_log: AuditLog | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        """`credentials`: serve over TLS with them (`treadle.common.tls.ServerIdentity`);
        None: plaintext."""
        self.server = grpc.aio.server(
            interceptors=[*interceptors, DecodeGuard()],
            options=grpc_limits.server_options() if options is None else list(options),
        )
        servicer = SchedulerServicer(
            scheduler, schedules, watchers, stats, health_report, audit_log=audit_log, keys=keys
        )
        pb_grpc.add_SchedulerServiceServicer_to_server(servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        if credentials is None:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        if self.port == 0:
            raise errors.Unavailable(f"cannot listen on {host}:{port}")
        self.address = f"{host}:{self.port}"

    async def start(self) -> None:
        await self.server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, state)

    async def stop(self, grace: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
