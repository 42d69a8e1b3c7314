"""Calls that a client's callers make at the same time travel together.

A call that finds fewer than `MAX_CALLS` calls of its kind in flight (and none
waiting) goes out at once, on its own (`SubmitTask`, `GetTask`): a lone
caller waits for nothing. Calls that arrive while `MAX_CALLS` are in flight
wait for the first of them to end, then go out together in one group call
(`SubmitTaskGroup`, `GetTasks`; at most `MAX_GROUP`) that the scheduler
answers item by item: every caller gets its own result, or its own error, as
if it had made its own call. A grouped submission carries its caller's trace
context, so its task joins its caller's trace as a single one joins the call's.

A scheduler too old for a group call (UNIMPLEMENTED) gets single calls, each
in its caller's context.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import grpc

from treadle.common import errors, status

#: Calls of one kind in flight before further calls wait to go together.
MAX_CALLS = 2
#: Items in one group call.
MAX_GROUP = 1000

S = TypeVar("S")  # what a single call takes
G = TypeVar("G")  # what a group call takes, per item
R = TypeVar("R")  # what each caller gets


class Grouper(Generic[S, G, R]):
    """Makes `single` calls, grouping those that wait into `group` calls;
    `group` returns one result or exception per item, in order."""

    def __init__(
        self,
        single: Callable[[S], Coroutine[Any, Any, R]],
        group: Callable[[list[G]], Awaitable[list[R | Exception]]],
        timeout: float | None = None,
    ) -> None:
        self._single = single
        self._group = group
        #: A waiting caller's deadline, counted from its call as a single
        #: call's is: waiting, then its group call, end by then.
        self._timeout = timeout
        self._calls = 0
        self._waiting: list[_Waiting[S, G, R]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._grouping = True

    async def call(self, item: S, grouped: Callable[[], G]) -> R:
        """The result of `item`: by a single call, or, when it has to wait,
        as `grouped()` (made now, in the caller's context) in a group call."""
        if not self._grouping or (self._calls < MAX_CALLS and not self._waiting):
            self._calls += 1
            try:
                return await self._single(item)
            finally:
                self._calls -= 1
                self._send_waiting()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = _Waiting(item, grouped(), future, contextvars.copy_context())
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(self._timeout):
                return await entry.future
        except (asyncio.CancelledError, TimeoutError) as exc:
            with contextlib.suppress(ValueError):  # not sent yet: it never will be
                self._waiting.remove(entry)
            if isinstance(exc, TimeoutError):
                raise errors.DeadlineExceeded(
                    f"no answer within {self._timeout:g} s (waiting to go with other calls)"
                ) from None
            raise

    def _send_waiting(self) -> None:
        while self._waiting and self._calls < MAX_CALLS:
            group = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
            self._calls += 1
            sending = asyncio.create_task(self._send(group), name="treadle-call-group")
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, group: list[_Waiting[S, G, R]]) -> None:
        try:
            if not self._grouping:
                await self._send_each(group)
                return
            try:
                results = await self._group([entry.grouped for entry in group])
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    self._grouping = False
                    await self._send_each(group)
                    return
                retry_after = status.retry_after_from(exc.trailing_metadata())
                _fail(group, status.from_grpc(exc.code(), exc.details() or "", retry_after))
                return
            except Exception as exc:
                _fail(group, exc)
                return
            _settle(group, results)
        finally:
            self._calls -= 1
            self._send_waiting()

    async def _send_each(self, group: list[_Waiting[S, G, R]]) -> None:
        """Each as its own single call, in its caller's context (its trace)."""
        calls: list[asyncio.Task[R]] = [
            asyncio.create_task(self._single(e.item), context=e.context) for e in group
        ]
        outcomes: list[R | Exception] = []
        for call in calls:
            try:
                outcomes.append(await call)
            except Exception as exc:
                outcomes.append(exc)
        _settle(group, outcomes)


class _Waiting(Generic[S, G, R]):
    """A call waiting to go out in a group: its single and grouped forms, its
    caller's future and context."""

    __slots__ = ("context", "future", "grouped", "item")

    def __init__(
        self,
        item: S,
        grouped: G,
        future: asyncio.Future[R],
        context: contextvars.Context,
    ) -> None:
        self.item = item
        self.grouped = grouped
        self.future = future
        self.context = context


def _settle(group: list[_Waiting[S, G, R]], outcomes: list[R | Exception]) -> None:
    """Each waiting caller gets its outcome (unless it went away)."""
    for entry, outcome in zip(group, outcomes, strict=True):
        if entry.future.done():
            continue
        if isinstance(outcome, Exception):
            entry.future.set_exception(outcome)
        else:
            entry.future.set_result(outcome)


def _fail(group: list[_Waiting[S, G, R]], exc: Exception) -> None:
    failed: list[R | Exception] = [exc] * len(group)
    _settle(group, failed)


#: gRPC's status codes by number (a group call's per-item `code`).
CODES = {code.value[0]: code for code in grpc.StatusCode}


def refusal(code: int, message: str, retry_after: float | None = None) -> Exception:
    """Our error for an item a group call refused with `code` (and, for a rate
    limit, its retry-after hint)."""
    return status.from_grpc(CODES.get(code, grpc.StatusCode.UNKNOWN), message, retry_after)
