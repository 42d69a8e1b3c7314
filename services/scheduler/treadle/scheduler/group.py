"""Group commit: single submissions that arrive together share one INSERT.

A submission that finds no insert in flight is stored at once, on its own, so
a lone caller waits for nothing but its own statement. Submissions that arrive
while an insert is in flight queue up, and the next insert stores all of them
(up to `max_group`) in one statement and one commit. Each caller still gets
its own outcome, and returns only once its row is committed.

When a shared statement is refused for what one row carries (a constraint, a
value the database rejects), nothing of it was stored; each member is then
stored on its own, so only the culprit sees the error. Any other failure
(database unreachable, a timeout) is every member's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from treadle.common.tasks import Submitted
from treadle.scheduler import postgres
from treadle.scheduler.model import NewTask

Insert = Callable[[Sequence[NewTask]], Awaitable[list[Submitted]]]
#: A group's members are one statement's unnest arrays; like a SubmitTasks batch.
MAX_GROUP = 1000


class GroupInsert:
    """Store single tasks through `insert`, grouping those that arrive together."""

    def __init__(self, insert: Insert, max_group: int = MAX_GROUP) -> None:
        self._insert = insert
        self._max_group = max_group
        self._waiting: list[tuple[NewTask, asyncio.Future[tuple[Submitted, int]]]] = []
        self._busy = False
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, task: NewTask) -> tuple[Submitted, int]:
        """`task` stored; and how many tasks its statement stored."""
        if not self._busy:
            self._busy = True
            try:
                (submitted,) = await self._insert([task])
                return submitted, 1
            finally:
                self._release()
        future: asyncio.Future[tuple[Submitted, int]] = asyncio.get_running_loop().create_future()
        entry = (task, future)
        self._waiting.append(entry)
        try:
            return await future
        except asyncio.CancelledError:
            # Not yet taken into a statement: it will not be stored.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            raise

    def _release(self) -> None:
        if self._waiting:
            self._flusher = asyncio.create_task(self._flush(), name="treadle-group-insert")
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                await self._store(group)
        except asyncio.CancelledError:
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._busy = False
            self._flusher = None

    async def _store(
        self, group: list[tuple[NewTask, asyncio.Future[tuple[Submitted, int]]]]
    ) -> None:
        try:
            outcomes = await store_each(self._insert, [task for task, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result((outcome, len(group)))


async def store_each(insert: Insert, tasks: Sequence[NewTask]) -> list[Submitted | Exception]:
    """Store independent `tasks` in one statement through `insert`; each one's
    outcome, in order. When that statement is refused for what a row carries,
    each is stored on its own, so only the culprit fails; any other failure is
    every task's."""
    try:
        return list(await insert(tasks))
    except Exception as exc:
        if len(tasks) > 1 and postgres.refused(exc):
            outcomes: list[Submitted | Exception] = []
            for task in tasks:
                outcomes.extend(await store_each(insert, [task]))
            return outcomes
        return [exc] * len(tasks)
