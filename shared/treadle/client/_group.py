"""Single submits that a client's callers make at the same time travel together.

A submit that finds fewer than `MAX_CALLS` submit calls in flight (and none
waiting) goes out at once as its own `SubmitTask`: a lone caller waits for
nothing. Submits that arrive while `MAX_CALLS` calls are in flight wait for
the first of them to end, then go out together in one `SubmitTaskGroup` call
(at most `MAX_GROUP`), which the scheduler stores in one statement and one
commit while still checking each on its own: every caller gets its own task,
or its own error, as if it had called `SubmitTask` itself. Each submission
carries its caller's trace context, so a grouped task joins its caller's
trace as a single one joins the call's.

A scheduler too old for `SubmitTaskGroup` (UNIMPLEMENTED) gets single calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import status, tasks, telemetry, wire

#: Submit calls in flight before further submits wait to go together.
MAX_CALLS = 2
#: Submissions in one group call.
MAX_GROUP = 1000

Single = Callable[[pb.TaskSpec], Coroutine[Any, Any, tasks.Submitted]]
Group = Callable[[pb.SubmitTaskGroupRequest], Awaitable[pb.SubmitTaskGroupResponse]]
#: A waiting submission, its caller's future, and its caller's context.
_Waiting = tuple[pb.GroupedSubmission, "asyncio.Future[tasks.Submitted]", contextvars.Context]


class Submitter:
    """Sends single submits, grouping those that wait (see the module's doc)."""

    def __init__(self, single: Single, group: Group) -> None:
        self._single = single
        self._group = group
        self._calls = 0
        self._waiting: list[_Waiting] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._grouping = True

    async def submit(self, spec: pb.TaskSpec) -> tasks.Submitted:
        if (self._calls < MAX_CALLS and not self._waiting) or not self._grouping:
            self._calls += 1
            try:
                return await self._single(spec)
            finally:
                self._calls -= 1
                self._send_waiting()
        item = pb.GroupedSubmission(task=spec, trace_context=telemetry.current_carrier() or {})
        future: asyncio.Future[tasks.Submitted] = asyncio.get_running_loop().create_future()
        entry = (item, future, contextvars.copy_context())
        self._waiting.append(entry)
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):  # not sent yet: it never will be
                self._waiting.remove(entry)
            raise

    def _send_waiting(self) -> None:
        while self._waiting and self._calls < MAX_CALLS:
            group = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
            self._calls += 1
            sending = asyncio.create_task(self._send(group), name="treadle-submit-group")
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            if not self._grouping:
                await self._send_each(group)
                return
            try:
                reply = await self._group(
                    pb.SubmitTaskGroupRequest(submissions=[item for item, _, _ in group])
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    self._grouping = False
                    await self._send_each(group)
                    return
                _fail(group, status.from_grpc(exc.code(), exc.details() or ""))
                return
            except Exception as exc:
                _fail(group, exc)
                return
            for (_, future, _), result in zip(group, reply.results, strict=True):
                if future.done():
                    continue
                if result.HasField("submitted"):
                    future.set_result(
                        tasks.Submitted(
                            wire.task_from_proto(result.submitted.task),
                            existing=result.submitted.existing,
                        )
                    )
                else:
                    code = _CODES.get(result.code, grpc.StatusCode.UNKNOWN)
                    future.set_exception(status.from_grpc(code, result.message))
        finally:
            self._calls -= 1
            self._send_waiting()

    async def _send_each(self, group: list[_Waiting]) -> None:
        """Each as its own SubmitTask, in its caller's context (its trace)."""
        calls: list[asyncio.Task[tasks.Submitted]] = [
            asyncio.create_task(self._single(item.task), context=context)
            for item, _, context in group
        ]
        for (_, future, _), call in zip(group, calls, strict=True):
            try:
                submitted = await call
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(submitted)


def _fail(group: list[_Waiting], exc: Exception) -> None:
    for _, future, _ in group:
        if not future.done():
            future.set_exception(exc)


_CODES = {code.value[0]: code for code in grpc.StatusCode}
