"""Runs one attempt of a handler and says how it ended.

Coroutine handlers run on the event loop (the caller wraps them in a task);
plain `def` handlers run in a thread pool through `run_in_executor`, so
nothing blocking runs on the loop. A per-attempt timeout cancels a coroutine
at its deadline; a sync handler cannot be stopped, so its late result is
discarded and the attempt counts as timed out. `shutdown()` says which
tasks' sync handlers still run in their threads then: the worker must not
hand those back, and the process exits without waiting for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import random
import threading
import traceback
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from opentelemetry import trace

from treadle.common import telemetry, wire
from treadle.common.errors import InvalidArgument
from treadle.common.health import ExecutorHealth
from treadle.common.tasks import TaskError, TaskState
from treadle.scheduler import tracing
from treadle.scheduler.loops import Clock
from treadle.scheduler.model import ClaimedTask, Outcome, after_failure, ended
from treadle.scheduler.registry import Handler, Permanent
from treadle.tasks import TaskContext

TRACEBACK_FRAMES = 8


def error_of(exc: BaseException, attempt: int, at: datetime) -> TaskError:
    """The stored form of a handler's exception: type, message, a short traceback
    (whatever characters the handler put in them: the store makes them storable)."""
    frames = traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)
    return TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(frames)[-4000:],
        attempt=attempt,
        failed_at=at,
    )


class Executor:
    """Runs handlers: coroutines inline, sync callables in a bounded thread pool."""

    def __init__(
        self,
        threads: int,
        clock: Clock,
        random: Callable[[], float] = random.random,
        tracer: trace.Tracer | None = None,
        max_result_depth: int = wire.MAX_JSON_DEPTH,
    ) -> None:
        self.threads = threads
        #: How deep a handler's result may nest (TREADLE_MAX_PAYLOAD_DEPTH).
        self.max_result_depth = max_result_depth
        self.clock = clock
        self.random = random
        #: None: tracing is off, and attempts make no spans.
        self.tracer = tracer
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="treadle-handler")
        #: Threads running a handler now (for metrics and health).
        self.busy = 0
        self._busy_lock = threading.Lock()
        #: Each sync handler's call in the pool (queued or running), by task id.
        self._calls: dict[str, concurrent.futures.Future[object]] = {}

    async def _call(
        self, task: ClaimedTask, handler: Handler, payload: object, context: TaskContext | None
    ) -> object:
        invoke = handler.definition.invoke
        if handler.is_async:
            return await invoke(payload, context)
        # The thread sees the attempt's context (its span, for logs and child spans).
        call = functools.partial(contextvars.copy_context().run, invoke, payload, context)
        submitted = self._pool.submit(self._counted, call)
        self._calls[task.id] = submitted
        try:
            return await asyncio.wrap_future(submitted)
        finally:
            if submitted.done():
                self._calls.pop(task.id, None)
            else:  # cancelled here, still running in its thread
                submitted.add_done_callback(lambda _: self._calls.pop(task.id, None))

    def _counted(self, call: Callable[[], object]) -> object:
        """Run `call` in a pool thread, counted in `busy` while it runs."""
        with self._busy_lock:
            self.busy += 1
        try:
            return call()
        finally:
            with self._busy_lock:
                self.busy -= 1

    @property
    def queued(self) -> int:
        """Handler calls waiting for a free thread."""
        return self._pool._work_queue.qsize()

    def health(self) -> ExecutorHealth:
        """Threads, those busy, and calls waiting (for metrics and GetHealth)."""
        return ExecutorHealth(threads=self.threads, busy=self.busy, queued=self.queued)

    async def run(
        self, task: ClaimedTask, handler: Handler, context: TaskContext | None = None
    ) -> Outcome:
        """Run one attempt. Cancellation propagates; anything else the handler
        raises becomes a failed attempt that is retried or ends the task DEAD.
        A stored payload that cannot be decoded (a row written by hand: too
        deep, not standard JSON) is no attempt: that error propagates, and the
        worker ends the task DEAD; one that does not fit the handler's payload
        type fails the task for good (`InvalidPayload`). With tracing on, the
        attempt runs in its own span (see `tracing`); a failed attempt's outcome
        names that span (`Outcome.trace`), for its log line. `context`: what a
        handler that asks for a `TaskContext` gets."""
        if self.tracer is None:
            return await self._run(task, handler, context)
        with tracing.attempt(self.tracer, task) as span:
            outcome = await self._run(task, handler, context)
            tracing.ended(span, outcome)
            if outcome.state is TaskState.SUCCEEDED:
                return outcome
            return dataclasses.replace(outcome, trace=telemetry.ids(span))

    async def _run(
        self, task: ClaimedTask, handler: Handler, context: TaskContext | None
    ) -> Outcome:
        # The one place the scheduler decodes a payload: for the handler, as it runs.
        # Checked at submit, so no depth limit here but Python's own; a stored
        # payload that cannot be decoded raises InvalidArgument (see `run`).
        payload = wire.decode_json(task.payload_json, max_depth=None)
        deadline = asyncio.timeout(task.timeout_seconds)
        try:
            typed = handler.definition.load(payload)
            async with deadline:
                value = await self._call(task, handler, typed, context)
            try:
                result = handler.definition.dump(value)
                result_json = wire.encode_json(result, "handler result", self.max_result_depth)
            except InvalidArgument as exc:  # not standard JSON, too deep, NUL...
                raise Permanent(exc.message) from None
            return ended(task, TaskState.SUCCEEDED, self.clock(), result_json)
        except TimeoutError as exc:
            if context is not None:
                context.cancelled.set()  # a sync handler runs on in its thread: tell it
            now = self.clock()
            error = error_of(exc, task.attempts, now)
            if deadline.expired() and task.timeout_seconds is not None:
                # Our deadline, not a TimeoutError the handler raised itself
                # (that one is an ordinary failure, kept as it was raised).
                error = dataclasses.replace(
                    error, message=f"timed out after {task.timeout_seconds:g}s"
                )
            return after_failure(task, error, True, now, self.random)
        except Exception as exc:
            now = self.clock()
            retryable = not isinstance(exc, Permanent)
            return after_failure(
                task, error_of(exc, task.attempts, now), retryable, now, self.random
            )

    async def settle(self, task_ids: Collection[str], timeout: float) -> None:
        """Wait up to `timeout` seconds for the sync handler calls of `task_ids`
        still running in their threads (told to stop through their
        `TaskContext.cancelled`) to return."""
        running = [c for i in task_ids if (c := self._calls.get(i)) is not None and not c.done()]
        if running:
            await asyncio.wait([asyncio.wrap_future(c) for c in running], timeout=timeout)

    def shutdown(self) -> set[str]:
        """Stop the thread pool: calls not started yet never start; those
        running finish in their threads. Returns the ids of the tasks whose
        handler still runs in a thread (nothing can stop it but the process
        exiting; the pool's threads would keep the process alive until then)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        return {task_id for task_id, call in list(self._calls.items()) if not call.done()}
