"""Typed task references: `task`, `task_ref`, `TaskRef`, `TaskFunction`, handles.

`TaskRef[P, R]` names a task, its payload type `P`, its result type `R` and
its declared options; `defer` submits it and returns a `TaskHandle[R]` whose
`wait()` returns an `R`. `TaskFunction` is a reference with its handler bound:
what `@task` returns, still callable like the function it decorates.

Options, from the strongest: the arguments of one `defer` call, the task's
declared options (`@task(...)`, `task_ref(...)`), the queue's settings
(`treadle queue update`), the global defaults (1 attempt, no time limit,
backoff 1 s doubling up to 300 s). The replica that registers a task applies
its declared queue, max_attempts, timeout and retry to any submission of it
that leaves them unset, by name too; priority and the idempotency key
function are the producer's (`defer`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

from treadle.common import errors
from treadle.common.tasks import RetryPolicy, Task, TaskSpec, TaskState
from treadle.tasks import _client, _payload
from treadle.tasks._context import TaskContext
from treadle.tasks._failures import InvalidPayload

if TYPE_CHECKING:  # a replica reads task declarations and never submits: no client
    from treadle.client import Client, SyncClient

P = TypeVar("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
A = ParamSpec("A")
T = TypeVar("T")

#: What a schedule may be named (the scheduler's rule).
_SCHEDULE_NAME = re.compile(r"[A-Za-z0-9._-]+")


class TaskFailed(errors.TreadleError):
    """The task ended without a result (DEAD or CANCELLED)."""

    code = "TASK_FAILED"

    def __init__(self, task: Task) -> None:
        error = f": {task.error.type}: {task.error.message}" if task.error else ""
        super().__init__(f"task {task.id} ({task.name}) ended {task.state.value}{error}")
        #: The task as it ended.
        self.task = task


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """A task's declared options: the defaults of each submission of it."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    retry: RetryPolicy | None = None
    #: Seconds per attempt.
    timeout: float | None = None
    #: The idempotency key of a payload (None: none unless the call gives one).
    idempotency_key: Callable[[Any], str] | None = None
    #: The concurrency key of a payload: at most `max_concurrent` tasks with
    #: the same key run at once (None: no such limit unless the call gives one).
    concurrency_key: Callable[[Any], str] | None = None
    max_concurrent: int | None = None
    #: Submit the task on every tick of this cron expression (see `schedule`).
    cron: str | None = None
    timezone: str = "UTC"

    def merged(self, other: TaskOptions) -> TaskOptions:
        """These options, each one `other` sets replaced by `other`'s."""
        given = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) != f.default
        }
        return dataclasses.replace(self, **given)


def _check_options(name: str, options: TaskOptions) -> None:
    if not name or not name.strip():
        raise ValueError("a task needs a name")
    if options.timeout is not None and not options.timeout > 0:
        raise ValueError(f"task {name!r}: timeout must be positive, got {options.timeout}")
    if options.max_attempts is not None and options.max_attempts < 1:
        raise ValueError(f"task {name!r}: max_attempts must be at least 1")
    if options.max_concurrent is not None and options.max_concurrent < 1:
        raise ValueError(
            f"task {name!r}: max_concurrent must be at least 1, got {options.max_concurrent}"
        )
    if (options.concurrency_key is None) != (options.max_concurrent is None):
        raise ValueError(
            f"task {name!r}: give concurrency_key (a function of the payload) and "
            "max_concurrent together"
        )
    if options.cron is not None and not _SCHEDULE_NAME.fullmatch(name):
        raise ValueError(
            f"task {name!r} has a cron schedule, which is named after the task: its name "
            "may hold only letters, digits, '.', '_' and '-' (or declare one with schedule())"
        )


def _first(given: T | None, default: T | None) -> T | None:
    """The call's value unless it gives none (None; a 0 is a value, checked later)."""
    return default if given is None else given


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


class TaskHandle(Generic[R_co]):
    """A submitted task: `await wait()` for its typed result."""

    def __init__(self, task: Task, existing: bool, result_type: Any, client: Client) -> None:
        #: The task as stored when it was submitted.
        self.task = task
        #: True when its idempotency key matched a task submitted earlier (this one).
        self.existing = existing
        self.id = task.id
        self._result_type = result_type
        self._client = client

    async def wait(self, timeout: float = 30.0) -> R_co:
        """The task's result, once it SUCCEEDED, as the task's result type.
        Raises `TaskFailed` when it ended DEAD or CANCELLED, `DeadlineExceeded`
        when it is still unfinished after `timeout` seconds."""
        done = await self._client.wait(self.id, timeout=timeout)
        return _result(done, self._result_type)  # type: ignore[no-any-return]

    async def get(self) -> Task:
        """The task now."""
        return await self._client.get(self.id)

    async def cancel(self) -> Task:
        return await self._client.cancel(self.id)


class SyncTaskHandle(Generic[R_co]):
    """A task submitted by `defer_sync`: `wait()` blocks for its typed result."""

    def __init__(self, task: Task, existing: bool, result_type: Any, client: SyncClient) -> None:
        self.task = task
        self.existing = existing
        self.id = task.id
        self._result_type = result_type
        self._client = client

    def wait(self, timeout: float = 30.0) -> R_co:
        """As `TaskHandle.wait`, blocking."""
        return _result(self._client.wait(self.id, timeout=timeout), self._result_type)  # type: ignore[no-any-return]

    def get(self) -> Task:
        return self._client.get(self.id)

    def cancel(self) -> Task:
        return self._client.cancel(self.id)


def _result(done: Task, result_type: Any) -> Any:
    if done.state is not TaskState.SUCCEEDED:
        raise TaskFailed(done)
    return _payload.convert(done.result, result_type, f"result of task {done.name!r}")


class TaskRef(Generic[P, R]):
    """A task by name, with its payload type `P`, result type `R` and
    declared options. Make one with `task_ref` (no handler: the producer's
    side) or `@task` (with its handler)."""

    def __init__(
        self, name: str, payload_type: Any, result_type: Any, options: TaskOptions
    ) -> None:
        _check_options(name, options)
        self.name = name
        self.options = options
        self._payload_type = payload_type
        self._result_type = result_type

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def payload_type(self) -> Any:
        """The payload's declared type (`Any`: plain JSON)."""
        return self._payload_type

    @property
    def result_type(self) -> Any:
        return self._result_type

    def encode(self, payload: P) -> str:
        """`payload` as the JSON text a submission carries; `InvalidArgument`
        naming the field that does not fit the payload type."""
        return _payload.encode(payload, self.payload_type, f"payload of task {self.name!r}")

    def spec(
        self,
        payload: P,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_key: str | None = None,
        max_concurrent: int | None = None,
    ) -> TaskSpec:
        """The submission `defer` sends: the call's arguments over the task's options."""
        o = self.options
        payload_json = self.encode(payload)  # first: the key function may read any field
        key = idempotency_key
        if key is None and o.idempotency_key is not None:
            key = o.idempotency_key(payload)
        if concurrency_key is None and o.concurrency_key is not None:
            concurrency_key = o.concurrency_key(payload)
            if not isinstance(concurrency_key, str):
                raise errors.InvalidArgument(
                    f"concurrency_key of task {self.name!r} must be a str, the key function "
                    f"returned {type(concurrency_key).__name__}"
                )
        if concurrency_key is not None:
            max_concurrent = _first(max_concurrent, o.max_concurrent)
        return TaskSpec(
            name=self.name,
            payload_json=payload_json,
            queue=queue or o.queue,
            priority=_first(priority, o.priority) or 0,
            run_at=run_at,
            max_attempts=_first(max_attempts, o.max_attempts),
            idempotency_key=key,
            delay_seconds=_seconds(delay),
            timeout_seconds=_first(timeout, o.timeout),
            retry=_first(retry, o.retry),
            concurrency_key=concurrency_key,
            max_concurrent=max_concurrent,
        )

    async def defer(
        self,
        payload: P,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_key: str | None = None,
        max_concurrent: int | None = None,
        client: Client | None = None,
    ) -> TaskHandle[R]:
        """Submit the task with `payload`; `client`: the scheduler to submit
        to (default: `configure()`'s, else TREADLE_SCHEDULER_ADDRESS).
        Arguments given here win over the task's declared options."""
        spec = self.spec(
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            idempotency_key=idempotency_key,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            retry=retry,
            concurrency_key=concurrency_key,
            max_concurrent=max_concurrent,
        )
        client = client or _client.default_client()
        submitted = await client.submit_spec(spec)
        return TaskHandle(submitted.task, submitted.existing, self.result_type, client)

    def defer_sync(
        self,
        payload: P,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_key: str | None = None,
        max_concurrent: int | None = None,
        client: SyncClient | None = None,
    ) -> SyncTaskHandle[R]:
        """`defer` for code without an event loop (a blocking `SyncClient`)."""
        spec = self.spec(
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            idempotency_key=idempotency_key,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            retry=retry,
            concurrency_key=concurrency_key,
            max_concurrent=max_concurrent,
        )
        client = client or _client.default_sync_client()
        submitted = client.submit_spec(spec)
        return SyncTaskHandle(submitted.task, submitted.existing, self.result_type, client)

    async def attach(self, task_id: str, *, client: Client | None = None) -> TaskHandle[R]:
        """A handle on a task of this kind submitted another way (by id: one
        `treadle.client.enqueue` stored in your transaction, say), to `wait`
        for its typed result. A task of another name is an `InvalidArgument`."""
        client = client or _client.default_client()
        found = await client.get(task_id)
        if found.name != self.name:
            raise errors.InvalidArgument(
                f"task {task_id} is a {found.name!r} task, not {self.name!r}"
            )
        return TaskHandle(found, False, self.result_type, client)

    # -- binding a handler ------------------------------------------------------

    @overload
    def handler(
        self, fn: Callable[Concatenate[P, A], Coroutine[Any, Any, R]]
    ) -> TaskFunction[P, R, A, Coroutine[Any, Any, R]]: ...

    @overload
    def handler(self, fn: Callable[Concatenate[P, A], R]) -> TaskFunction[P, R, A, R]: ...

    def handler(self, fn: Callable[..., Any]) -> TaskFunction[Any, Any, Any, Any]:
        """Bind the implementation of this declared task (the worker's side):

            @send_email.handler
            async def send(payload: EmailPayload) -> EmailResult: ...

        mypy checks that `fn` takes this task's payload type and returns its
        result type."""
        return TaskFunction(fn, self.name, self.options, ref=self)


class TaskFunction(TaskRef[P, R], Generic[P, R, A, T]):
    """A task reference with its handler: what `@task` returns. Calling it
    calls the handler (so a test can call it directly)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
        ref: TaskRef[Any, Any] | None = None,
    ) -> None:
        super().__init__(name, None, None, options)
        self.fn = fn
        self.ref = ref
        functools.update_wrapper(self, fn)

    def __call__(self, payload: P, /, *args: A.args, **kwargs: A.kwargs) -> T:
        return self.fn(payload, *args, **kwargs)  # type: ignore[no-any-return]

    @functools.cached_property
    def _signature(self) -> tuple[Any, Any, str | None]:
        """The payload type, the result type and the TaskContext parameter's
        name, read from the handler's annotations (once, when first needed:
        the types may be defined after the handler)."""
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as exc:
            problem = f"task {self.name!r}: cannot read the handler's annotations: {exc}"
            raise TypeError(problem) from None
        params = list(inspect.signature(self.fn).parameters.values())
        if not params:
            raise TypeError(f"task {self.name!r}: the handler must take the payload")
        payload_type = hints.get(params[0].name, Any)
        context = next((p.name for p in params[1:] if hints.get(p.name) is TaskContext), None)
        required = [p.name for p in params[1:] if p.default is p.empty and p.name != context]
        if required:
            raise TypeError(
                f"task {self.name!r}: the handler's parameters after the payload must be "
                f"a TaskContext or have defaults: {', '.join(required)}"
            )
        result_type = hints.get("return", Any)
        if self.ref is not None:
            payload_type, result_type = self.ref.payload_type, self.ref.result_type
        return payload_type, result_type, context

    @property
    def payload_type(self) -> Any:
        return self._signature[0]

    @property
    def result_type(self) -> Any:
        return self._signature[1]

    @property
    def context_parameter(self) -> str | None:
        """The name of the handler's `TaskContext` parameter, None when it takes none."""
        return self._signature[2]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def load(self, value: Any) -> Any:
        """A decoded JSON payload as the handler's payload type; `InvalidPayload`
        (the task fails for good) when it does not fit."""
        kind = self.payload_type
        if _payload.untyped(kind):
            return value  # plain JSON: as it is (the common case, kept cheap)
        try:
            return _payload.convert(value, kind, f"payload of task {self.name!r}")
        except errors.InvalidArgument as exc:
            raise InvalidPayload(exc.message) from None

    def dump(self, result: Any) -> Any:
        """The handler's result as plain JSON values (a dataclass, Struct or
        model converted)."""
        return _payload.to_builtins(result)

    def invoke(self, payload: Any, context: TaskContext | None) -> Any:
        """Call the handler with `payload` and, when it asks for one, `context`."""
        name = self.context_parameter
        if name is None:
            return self.fn(payload)
        return self.fn(payload, **{name: context})


# -- the decorators -----------------------------------------------------------------


class _Decorator(Protocol):
    """What `task(name, ...)` returns: types the ref from the handler's annotations."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[P, A], Coroutine[Any, Any, R]]
    ) -> TaskFunction[P, R, A, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[P, A], R]) -> TaskFunction[P, R, A, R]: ...


class _Binder(Protocol[P, R]):
    """What `task(ref=...)` returns: binds a handler of the ref's types."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[P, A], Coroutine[Any, Any, R]]
    ) -> TaskFunction[P, R, A, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[P, A], R]) -> TaskFunction[P, R, A, R]: ...


@overload
def task(
    name: str,
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: Callable[[Any], str] | None = None,
    concurrency_key: Callable[[Any], str] | None = None,
    max_concurrent: int | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
) -> _Decorator: ...


@overload
def task(
    *,
    ref: TaskRef[P, R],
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: Callable[[Any], str] | None = None,
    concurrency_key: Callable[[Any], str] | None = None,
    max_concurrent: int | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
) -> _Binder[P, R]: ...


def task(
    name: str | None = None,
    *,
    ref: TaskRef[Any, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: Callable[[Any], str] | None = None,
    concurrency_key: Callable[[Any], str] | None = None,
    max_concurrent: int | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
) -> Any:
    """Register the decorated function as the handler of task `name` (or of
    the declared `ref`), with its options; returns a `TaskFunction`.

    The handler takes the payload, typed by its annotation (a dataclass,
    TypedDict, msgspec Struct, Pydantic model, or plain JSON), and optionally
    a parameter annotated `TaskContext`; it returns the result (of its return
    annotation's type). `async def` handlers run on the replica's event loop,
    plain `def` handlers in its thread pool. `concurrency_key` (a function of
    the payload) with `max_concurrent`: at most that many tasks of one key run
    at once, across replicas. `cron`: submit the task on every
    tick (read in `timezone`), with the payload type built from no fields.
    """
    options = TaskOptions(
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        retry=retry,
        timeout=timeout,
        idempotency_key=idempotency_key,
        concurrency_key=concurrency_key,
        max_concurrent=max_concurrent,
        cron=cron,
        timezone=timezone,
    )
    if ref is not None:
        if name is not None and name != ref.name:
            raise ValueError(f"task name {name!r} differs from its reference's ({ref.name!r})")
        bound = ref.options.merged(options)
        return lambda fn: TaskFunction(fn, ref.name, bound, ref=ref)
    if name is None:
        raise ValueError("a task needs a name (or ref=, a declared task)")
    _check_options(name, options)
    return lambda fn: TaskFunction(fn, name, options)


def task_ref(
    name: str,
    payload: type[P],
    result: type[R],
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: Callable[[P], str] | None = None,
    concurrency_key: Callable[[P], str] | None = None,
    max_concurrent: int | None = None,
) -> TaskRef[P, R]:
    """Declare a task without its handler, for producers (and the worker,
    which binds the handler with `@ref.handler` or `@task(ref=ref)`):

        send_email = task_ref("email.send", EmailPayload, EmailResult, queue="email")
        handle = await send_email.defer(EmailPayload(to="a@example.com"))
    """
    options = TaskOptions(
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        retry=retry,
        timeout=timeout,
        idempotency_key=idempotency_key,
        concurrency_key=concurrency_key,
        max_concurrent=max_concurrent,
    )
    return TaskRef(name, payload, result, options)
