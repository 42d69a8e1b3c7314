"""`Watchers` on its own: who is woken, how reads are shared, the safety poll.

The task store is replaced at its seam, the `get` function a replica passes in
(`Scheduler.get`), by rows in a dict that count their reads. The path through
PostgreSQL and NOTIFY is tested in test_watch.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from treadle.common.errors import NotFound, Unavailable
from treadle.common.tasks import Task, TaskState
from treadle.scheduler.watch import Watchers

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Rows:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.reads = 0

    def put(self, task_id: str, state: TaskState, attempts: int = 0) -> None:
        self.tasks[task_id] = Task(
            id=task_id, name="t", queue="default", state=state, payload_json="null",
            result_json=None, error=None, attempts=attempts, max_attempts=1, priority=0,
            run_at=NOW, created_at=NOW,
        )  # fmt: skip

    async def get(self, task_id: str) -> Task:
        self.reads += 1
        await asyncio.sleep(0.005)  # a round trip: reads overlap with notifications
        try:
            return self.tasks[str(uuid.UUID(task_id))]
        except KeyError:
            raise NotFound(f"task {task_id} not found") from None


async def follow(watchers: Watchers, task_id: str, seen: list[TaskState]) -> None:
    async for task in watchers.watch(task_id):
        seen.append(task.state)


async def settle(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """Let the loop run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not settled within {timeout}s"
        await asyncio.sleep(0.001)


async def test_one_read_per_change_however_many_watch() -> None:
    rows, task_id, other = Rows(), str(uuid.uuid4()), str(uuid.uuid4())
    rows.put(task_id, TaskState.QUEUED)
    watchers = Watchers(rows.get, poll_interval=60)
    seen: list[list[TaskState]] = [[] for _ in range(20)]
    following = [asyncio.create_task(follow(watchers, task_id, s)) for s in seen]
    await settle(lambda: all(seen))
    assert rows.reads == 1 and watchers.watched == 1

    watchers.notify(other)  # not watched: nobody reads
    await asyncio.sleep(0.02)
    assert rows.reads == 1

    watchers.notify(task_id)  # no change of state: read once, nothing yielded
    await settle(lambda: rows.reads == 2)
    await asyncio.sleep(0.02)
    assert all(s == [TaskState.QUEUED] for s in seen)

    rows.put(task_id, TaskState.RUNNING, attempts=1)
    watchers.notify(f"{other},{task_id}")
    await settle(lambda: all(len(s) == 2 for s in seen))
    assert rows.reads == 3

    rows.put(task_id, TaskState.SUCCEEDED, attempts=1)
    watchers.notify(task_id)
    await asyncio.wait_for(asyncio.gather(*following), 2)
    assert rows.reads == 4
    assert seen == [[TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED]] * 20
    assert watchers.watched == 0


async def test_reads_anyway_when_no_notification_comes() -> None:
    rows, task_id = Rows(), str(uuid.uuid4())
    rows.put(task_id, TaskState.RUNNING)
    watchers = Watchers(rows.get, poll_interval=0.05)
    seen: list[list[TaskState]] = [[] for _ in range(5)]
    following = [asyncio.create_task(follow(watchers, task_id, s)) for s in seen]
    await asyncio.sleep(0.5)
    # about one read per poll interval for all five watchers, not one each
    assert rows.reads <= 0.5 / 0.05 + 3
    rows.put(task_id, TaskState.DEAD)  # the notification was lost
    await asyncio.wait_for(asyncio.gather(*following), 2)
    assert seen == [[TaskState.RUNNING, TaskState.DEAD]] * 5


async def test_missing_task_raises_before_anything_and_leaves_nothing() -> None:
    rows = Rows()
    watchers = Watchers(rows.get, poll_interval=60)
    with pytest.raises(NotFound):
        await anext(watchers.watch(str(uuid.uuid4())))
    assert watchers.watched == 0
    watchers.notify(str(uuid.uuid4()))  # nobody watches: nothing happens


async def test_ids_are_matched_whatever_their_spelling() -> None:
    rows, task_id = Rows(), str(uuid.uuid4())
    rows.put(task_id, TaskState.QUEUED)
    watchers = Watchers(rows.get, poll_interval=60)
    seen: list[TaskState] = []
    following = asyncio.create_task(follow(watchers, task_id.upper().replace("-", ""), seen))
    await settle(lambda: seen)
    rows.put(task_id, TaskState.CANCELLED)
    watchers.notify(task_id)  # as the database spells it
    await asyncio.wait_for(following, 2)
    assert seen == [TaskState.QUEUED, TaskState.CANCELLED]


async def test_close_ends_every_watch_and_refuses_new_ones() -> None:
    rows, task_id = Rows(), str(uuid.uuid4())
    rows.put(task_id, TaskState.RUNNING)
    watchers = Watchers(rows.get, poll_interval=60)
    seen: list[TaskState] = []
    following = asyncio.create_task(follow(watchers, task_id, seen))
    await settle(lambda: seen)
    watchers.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(following, 2)
    with pytest.raises(Unavailable):
        await anext(watchers.watch(task_id))
    assert watchers.watched == 0
