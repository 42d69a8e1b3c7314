"""Live task status: streams of a task's states, woken by the database.

The database names the tasks whose state changed: a statement trigger sends
`NOTIFY treadle_tasks_<schema>` with their ids, comma-separated, after every
statement that changed some. The replica's one LISTEN connection (`listener`)
hands each payload to `Watchers.notify`, which wakes only the watchers of
those ids (a dict lookup per id; nothing at all while nobody watches).

A woken watcher re-reads its task and yields it when its state differs from
the last state it yielded. Watchers of one task share their reads: a read
serves every watcher woken before it started, so a change costs one query
however many clients watch the task, and the reads of one task never overlap,
so no watcher sees an older row after a newer one. When no notification comes
for a poll interval, the task is read anyway (once for all its watchers): the
safety net for a lost notification.

Reads are shared only among watchers who may see the same: a topic is one
task as one caller sees it (`principal.current()`: its tenant, and for a key
that may only submit, its own submissions), so a watcher of another tenant
never receives a read made for someone else.

A watcher sees the task as it is when read, never older than the notification
that woke it; a state that comes and goes between two reads is not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from treadle.common.errors import Unavailable
from treadle.common.tasks import Task
from treadle.scheduler import principal

#: Reads one task; raises `NotFound` when there is none (`Scheduler.get`).
Get = Callable[[str], Coroutine[Any, Any, Task]]

_CLOSED = "the scheduler replica is shutting down; watch the task again"


def _key(task_id: str) -> str:
    """The id as the database spells it, so notifications find their watchers."""
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        return task_id  # not an id: the first read says so


class _Topic:
    """The watchers of one task and the latest read they share."""

    __slots__ = ("read", "read_version", "version", "wakeups")

    def __init__(self) -> None:
        #: One event per watcher, set when the task may have changed.
        self.wakeups: set[asyncio.Event] = set()
        #: Counts the notifications (and safety polls) for this task.
        self.version = 0
        #: The latest read, and `version` when it started.
        self.read: asyncio.Task[Task] | None = None
        self.read_version = -1

    def changed(self) -> None:
        self.version += 1
        for wakeup in self.wakeups:
            wakeup.set()


class Watchers:
    """Every open watch on one replica, keyed by task id."""

    def __init__(self, get: Get, poll_interval: float) -> None:
        self._get = get
        self.poll_interval = poll_interval
        #: By task id, by who watches it (tenant, and whose submissions).
        self._topics: dict[str, dict[tuple[str, str | None], _Topic]] = {}
        self._reads: set[asyncio.Task[Task]] = set()
        self._closed = False

    @property
    def watched(self) -> int:
        """How many tasks are being watched."""
        return sum(len(by_caller) for by_caller in self._topics.values())

    def notify(self, payload: str) -> None:
        """Wake the watchers of the tasks named in `payload` (ids separated by commas)."""
        if not self._topics:
            return
        for task_id in payload.split(","):
            for topic in self._topics.get(task_id, {}).values():
                topic.changed()

    def close(self) -> None:
        """End every watch with `Unavailable` and refuse new ones (the replica is stopping)."""
        self._closed = True
        for topic in [t for by_caller in self._topics.values() for t in by_caller.values()]:
            for wakeup in topic.wakeups:
                wakeup.set()

    async def watch(self, task_id: str) -> AsyncGenerator[Task, None]:
        """The task now, then after each change of state; ends after a terminal state.

        Raises `NotFound` (or `InvalidArgument`) before yielding anything when
        there is no such task, and `Unavailable` when the replica stops.
        """
        if self._closed:
            raise Unavailable(_CLOSED)
        key = _key(task_id)
        caller = principal.current()
        seen_as = (caller.tenant, caller.submitted_by)
        by_caller = self._topics.setdefault(key, {})
        topic = by_caller.get(seen_as)
        if topic is None:
            topic = by_caller[seen_as] = _Topic()
        wakeup = asyncio.Event()
        topic.wakeups.add(wakeup)
        try:
            if topic.read is None or topic.read.done():
                topic.version += 1  # a newcomer reads afresh, or shares a read in flight
            task = await self._read(topic, task_id)
            yield task
            last = task.state
            while not last.terminal:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await wakeup.wait()
                if self._closed:
                    raise Unavailable(_CLOSED)
                if not wakeup.is_set():
                    topic.changed()  # heard nothing for a while: read anyway, for everyone
                wakeup.clear()
                task = await self._read(topic, task_id)
                if task.state != last:
                    yield task
                    last = task.state
        finally:
            topic.wakeups.discard(wakeup)
            if not topic.wakeups and by_caller.get(seen_as) is topic:
                del by_caller[seen_as]
                if not by_caller and self._topics.get(key) is by_caller:
                    del self._topics[key]

    async def _read(self, topic: _Topic, task_id: str) -> Task:
        """The task, read after the latest change of `topic` was heard of.

        Shares a read already started since then; otherwise waits for the read
        in flight (reads of one task never overlap) and starts a new one.
        """
        need = topic.version
        while True:
            read = topic.read
            if read is not None and topic.read_version >= need:
                # shielded: a watcher that goes away does not cancel the others' read
                return await asyncio.shield(read)
            if read is not None and not read.done():
                await asyncio.wait([read])
                continue
            read = asyncio.create_task(self._get(task_id), name=f"treadle-watch-read-{task_id}")
            self._reads.add(read)
            read.add_done_callback(self._read_done)
            topic.read, topic.read_version = read, topic.version

    def _read_done(self, read: asyncio.Task[Task]) -> None:
        self._reads.discard(read)
        if not read.cancelled():
            read.exception()  # retrieved: each watcher sharing it raises it itself
