"""The GraphQL schema: queries, mutations and a subscription, each one call to the scheduler."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import strawberry
from graphql import (
    SKIP,
    FieldNode,
    GraphQLError,
    VisitorAction,
    get_named_type,
    is_introspection_type,
    located_error,
)
from graphql.validation import ASTValidationRule, ValidationRule
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.extensions import (
    MaxAliasesLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from treadle.client import Client
from treadle.common import tasks
from treadle.common.errors import InvalidArgument, NotFound
from treadle.gateway import cost, tracing
from treadle.gateway.errors import CodedErrors, log_errors
from treadle.gateway.stats import SCALARS, StatsQuery
from treadle.gateway.types import (
    AuditEvent,
    AuditPage,
    BulkResult,
    CreateScheduleInput,
    Queue,
    Replica,
    Schedule,
    SubmitTaskInput,
    Task,
    TaskConnection,
    TaskSelectionInput,
    TaskState,
    UpdateQueueInput,
    from_domain,
)

MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_TOKENS = 2000
#: The default of TREADLE_GRAPHQL_MAX_COST: the estimated cost of an operation (`cost`).
MAX_COST = 10_000


@dataclasses.dataclass
class Context:
    """What every resolver gets as `info.context`."""

    #: The scheduler client, sending the caller's own API key (`app.caller_client`).
    client: Client
    request: Request | WebSocket
    response: Response | WebSocket | None = None
    #: A WebSocket's `connection_init` payload (Strawberry sets it).
    connection_params: dict[str, object] | None = None


Info = strawberry.Info[Context, None]


async def get_task(info: Info, id: strawberry.ID) -> Task | None:
    try:
        return Task.from_task(await info.context.client.get(id))
    except NotFound:
        return None


async def list_tasks(
    info: Info,
    queue: str | None = None,
    state: TaskState | None = None,
    states: list[TaskState] | None = None,
    name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    idempotency_key: str | None = None,
    first: int = 50,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> TaskConnection:
    backward = last is not None or before is not None
    if backward and after is not None:
        raise InvalidArgument("give `after` (paging forward) or `before`/`last`, not both")
    size = last if last is not None else first
    if size < 1:
        raise InvalidArgument(
            f"{'last' if last is not None else 'first'} must be at least 1, got {size}"
        )
    page = await info.context.client.list(
        queue=queue,
        state=state,
        states=states or (),
        name=name,
        created_after=created_after,
        created_before=created_before,
        idempotency_key=idempotency_key,
        page_size=size,
        cursor=before if backward else after,
        backward=backward,
    )
    return TaskConnection.from_page(page)


def _filters(chosen: tasks.TaskSelection) -> dict[str, Any]:
    """A selection as the client's filter keywords (its `limit` apart)."""
    return {
        f.name: getattr(chosen, f.name) for f in dataclasses.fields(chosen) if f.name != "limit"
    }


async def task_count(info: Info, selection: TaskSelectionInput) -> int:
    return await info.context.client.count_tasks(**_filters(selection.selection()))


async def _bulk(info: Info, action: str, selection: TaskSelectionInput) -> BulkResult:
    client = info.context.client
    call = {
        "retry": client.retry_tasks,
        "cancel": client.cancel_tasks,
        "purge": client.purge_tasks,
    }[action]
    chosen = selection.selection()
    done = await call(**_filters(chosen), limit=chosen.limit)
    return BulkResult.from_result(done)


async def retry_tasks(info: Info, selection: TaskSelectionInput) -> BulkResult:
    return await _bulk(info, "retry", selection)


async def cancel_tasks(info: Info, selection: TaskSelectionInput) -> BulkResult:
    return await _bulk(info, "cancel", selection)


async def purge_tasks(info: Info, selection: TaskSelectionInput) -> BulkResult:
    return await _bulk(info, "purge", selection)


async def submit(info: Info, input: SubmitTaskInput) -> Task:
    submitted = await info.context.client.submit_spec(input.spec())
    return Task.from_task(submitted.task, existing=submitted.existing)


async def cancel(info: Info, id: strawberry.ID) -> Task:
    return Task.from_task(await info.context.client.cancel(id))


async def retry(info: Info, id: strawberry.ID) -> Task:
    return Task.from_task(await info.context.client.retry(id))


async def list_replicas(info: Info) -> list[Replica]:
    return [from_domain(Replica, r) for r in await info.context.client.list_replicas()]


async def list_queues(info: Info) -> list[Queue]:
    return [from_domain(Queue, q) for q in await info.context.client.list_queues()]


async def get_queue(info: Info, name: str) -> Queue | None:
    try:
        return from_domain(Queue, await info.context.client.get_queue(name))
    except NotFound:
        return None


async def update_queue(info: Info, input: UpdateQueueInput) -> Queue:
    queue = await info.context.client.update_queue(
        input.name,
        max_concurrent=input.max_concurrent,
        max_attempts=input.max_attempts,
        timeout_seconds=input.timeout_seconds,
        retry=input.retry.to_policy() if input.retry else None,
        start_limit=input.start_limit,
        start_window_seconds=input.start_window_seconds,
        start_limit_key=input.start_limit_key,
    )
    return from_domain(Queue, queue)


async def pause_queue(info: Info, name: str) -> Queue:
    return from_domain(Queue, await info.context.client.pause_queue(name))


async def resume_queue(info: Info, name: str) -> Queue:
    return from_domain(Queue, await info.context.client.resume_queue(name))


async def list_schedules(info: Info) -> list[Schedule]:
    return [Schedule.from_schedule(s) for s in await info.context.client.list_schedules()]


async def create_schedule(info: Info, input: CreateScheduleInput) -> Schedule:
    schedule = input.schedule()
    created = await info.context.client.create_schedule(
        schedule.name, schedule.cron, schedule.task, schedule.timezone
    )
    return Schedule.from_schedule(created)


async def pause_schedule(info: Info, name: str) -> Schedule:
    return Schedule.from_schedule(await info.context.client.pause_schedule(name))


async def resume_schedule(info: Info, name: str) -> Schedule:
    return Schedule.from_schedule(await info.context.client.resume_schedule(name))


async def delete_schedule(info: Info, name: str) -> bool:
    await info.context.client.delete_schedule(name)
    return True


async def audit_events(info: Info, first: int | None = None, after: str | None = None) -> AuditPage:
    events, cursor = await info.context.client.audit_events(limit=first, cursor=after)
    return AuditPage(
        events=[
            AuditEvent(
                id=strawberry.ID(str(e.id)),
                at=e.at,
                key_name=e.key_name,
                action=e.action,
                target=e.target,
                change=JSON(e.change),
            )
            for e in events
        ],
        next_cursor=cursor,
    )


@strawberry.type
class Query(StatsQuery):
    task: Task | None = strawberry.field(
        resolver=get_task, description="One task, or null when there is no such task."
    )
    tasks: TaskConnection = strawberry.field(
        resolver=list_tasks,
        description="Tasks newest first, matching every filter given (`state` and `states`: "
        "any of them), `first` at a time after `after`; with `last` and/or `before`, the "
        "`last` tasks just newer than `before` (without it, the oldest), still newest first.",
    )
    task_count: int = strawberry.field(
        resolver=task_count, description="How many tasks the selection matches."
    )
    schedules: list[Schedule] = strawberry.field(
        resolver=list_schedules, description="Every cron schedule, by name."
    )
    replicas: list[Replica] = strawberry.field(
        resolver=list_replicas,
        description="Scheduler replicas that registered recently, alive or gone.",
    )
    queues: list[Queue] = strawberry.field(
        resolver=list_queues, description="Every queue that has been used or configured."
    )
    queue: Queue | None = strawberry.field(
        resolver=get_queue, description="One queue, or null when there is no such queue."
    )
    audit_events: AuditPage = strawberry.field(
        resolver=audit_events,
        description="The caller's tenant's admin actions, newest first, `first` at a time "
        "(admin scope).",
    )


@strawberry.type
class Mutation:
    submit_task: Task = strawberry.mutation(
        resolver=submit,
        description="Submit a task; a known idempotency key returns the existing task.",
    )
    cancel_task: Task = strawberry.mutation(
        resolver=cancel,
        description="Cancel a waiting task at once; a running one is cancelled on the "
        "replica running it (cancelRequested until its handler stops).",
    )
    retry_task: Task = strawberry.mutation(
        resolver=retry, description="Requeue a DEAD or CANCELLED task with fresh attempts."
    )
    retry_tasks: BulkResult = strawberry.mutation(
        resolver=retry_tasks,
        description="Requeue one batch (`limit`) of the selection's DEAD or CANCELLED tasks; "
        "call again while `more` is true.",
    )
    cancel_tasks: BulkResult = strawberry.mutation(
        resolver=cancel_tasks,
        description="Cancel one batch of the selection's unfinished tasks (running ones on "
        "the replica running them); call again while `more` is true.",
    )
    purge_tasks: BulkResult = strawberry.mutation(
        resolver=purge_tasks,
        description="Delete one batch of the selection's finished tasks (SUCCEEDED, DEAD, "
        "CANCELLED); call again while `more` is true. Admin scope.",
    )
    update_queue: Queue = strawberry.mutation(
        resolver=update_queue, description="Change a queue's settings."
    )
    pause_queue: Queue = strawberry.mutation(
        resolver=pause_queue, description="Accept the queue's tasks but start none."
    )
    resume_queue: Queue = strawberry.mutation(
        resolver=resume_queue, description="Start the queue's tasks again."
    )
    create_schedule: Schedule = strawberry.mutation(
        resolver=create_schedule,
        description="Submit a task from a template on every tick of a cron expression.",
    )
    pause_schedule: Schedule = strawberry.mutation(
        resolver=pause_schedule, description="Stop a schedule firing until it is resumed."
    )
    resume_schedule: Schedule = strawberry.mutation(
        resolver=resume_schedule,
        description="Resume a paused schedule; its next tick is computed from now.",
    )
    delete_schedule: bool = strawberry.mutation(
        resolver=delete_schedule,
        description="Remove a schedule; the tasks it submitted stay.",
    )


async def task_updates(info: Info, id: strawberry.ID) -> AsyncGenerator[Task, None]:
    # The first read happens before the subscription starts, so that an unknown
    # task is an `error` message (with its code), not a stream of errors.
    updates = info.context.client.watch(id)
    first = await anext(updates)
    return _following(info, first, updates)


async def _following(
    info: Info, first: tasks.Task, updates: AsyncGenerator[tasks.Task, None]
) -> AsyncGenerator[Task, None]:
    async with contextlib.aclosing(updates):
        yield Task.from_task(first)
        try:
            async for task in updates:
                yield Task.from_task(task)
        except Exception as exc:
            # Give the field's path, as a resolver's error has, so the error is
            # coded or masked like any other (see `errors`).
            raise located_error(exc, None, info.path.as_list()) from exc


@strawberry.type
class Subscription:
    task_updates: AsyncGenerator[Task, None] = strawberry.subscription(
        resolver=task_updates,
        description=(
            "The task now, then again each time its state changes; completes after "
            "SUCCEEDED, DEAD or CANCELLED. States that come and go between two reads "
            "may be skipped."
        ),
    )


class NoIntrospection(ValidationRule):
    """Refuses introspection: one error (code INVALID_ARGUMENT) for each
    `__schema` or `__type` selected; `__typename` is not introspection.
    graphql-core's `NoSchemaIntrospectionCustomRule` does the same, but
    reports every field below them too."""

    def enter_field(self, node: FieldNode, *_args: Any) -> VisitorAction:
        kind = get_named_type(self.context.get_type())
        if kind is None or not is_introspection_type(kind):
            return None
        self.report_error(
            GraphQLError(
                f"GraphQL introspection is turned off on this gateway: '{node.name.value}' "
                "cannot be queried",
                node,
                extensions={"code": InvalidArgument.code},
            )
        )
        return SKIP  # its own fields would only say the same again


class Checks(ParserCache, ValidationCache):
    """What every operation goes through before it runs, in one extension:
    parsing (at most `MAX_TOKENS` tokens) and validation (with the depth and
    alias limits, and the schema's own `RULES`), each cached by Strawberry's
    shared LRU caches.

    Strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter` make a new rule
    class each time one is constructed, and the validation cache is keyed by
    the document and the rule classes: a limiter made per operation made every
    key new, so every operation was validated again. The rules are made once,
    here and in `checks` (once per schema). One extension rather than five also
    spares each operation four sets of hooks (Strawberry wraps each hook of
    each extension anew per operation).
    """

    #: The limits' rule classes, made once.
    RULES: tuple[type[ASTValidationRule], ...] = (
        *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    )

    def on_operation(self) -> Iterator[None]:
        # What MaxTokensLimiter and the limiters (AddValidationRules) do.
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        context.validation_rules = (*context.validation_rules, *self.RULES)
        yield


class Schema(strawberry.Schema):
    """Logs only what operators need: Treadle's own errors are the client's business."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


def checks(*, introspection: bool, max_cost: int) -> type[Checks]:
    """The `Checks` of one schema, its rule classes made here once: the limits,
    the cost limit, and `NoIntrospection` unless `introspection`."""
    rules = (
        *Checks.RULES,
        cost.rule(max_cost),
        *(() if introspection else (NoIntrospection,)),
    )
    return type("Checks", (Checks,), {"RULES": rules})


def create_schema(
    tracer_provider: trace.TracerProvider | None = None,
    extensions: Sequence[Callable[[], SchemaExtension]] = (),
    *,
    introspection: bool = True,
    max_cost: int = MAX_COST,
) -> Schema:
    """The schema; with a `tracer_provider`, each operation and resolver is a span.
    `extensions` (factories) run outermost, around every other extension.
    Without `introspection`, `__schema` and `__type` are refused; an operation
    whose estimated cost is over `max_cost` is refused (`cost`)."""
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map=SCALARS),
        extensions=[
            *extensions,
            checks(introspection=introspection, max_cost=max_cost),
            CodedErrors,
            *tracing.extensions(tracer_provider),
        ],
    )
