"""The scripted workload the statistics tests check every API against.

Queues and what happens in them:

- `s-ok`: 7 echo tasks succeed (one submitted twice with the same idempotency
  key: the second submission is not counted);
- `s-mixed`: 3 flaky tasks fail once then succeed (max_attempts=2), 2 boom
  tasks fail twice and end DEAD, 1 scheduled task is cancelled while it waits;
- `s-held`: paused, with 3 ready tasks and 1 scheduled one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from treadle.client import Client, RetryPolicy, Task, TaskSpec, TaskState
from treadle.scheduler.supervisor import Replica
from treadle.scheduler.tally import Tally, hour_of

OK, MIXED, HELD = "s-ok", "s-mixed", "s-held"
FAST = RetryPolicy(base_seconds=0.02, factor=1, max_seconds=0.02)


@dataclasses.dataclass
class Workload:
    ok: list[Task]
    flaky: list[Task]
    dead: list[Task]
    cancelled: Task
    held: list[Task]
    held_scheduled: Task

    @property
    def oldest_held(self) -> datetime:
        return min(t.run_at for t in self.held)

    def ok_by_hour(self) -> dict[datetime, Tally]:
        """The processing times of the `s-ok` tasks (one attempt each), per hour."""
        tallies: dict[datetime, Tally] = {}
        for task in self.ok:
            assert task.finished_at is not None and task.started_at is not None
            tally = tallies.setdefault(hour_of(task.finished_at), Tally())
            tally.took((task.finished_at - task.started_at).total_seconds())
        return tallies

    def ok_tally(self) -> Tally:
        total = Tally()
        for tally in self.ok_by_hour().values():
            total.add(tally)
        return total


async def run(client: Client) -> Workload:
    first = await client.submit("echo", 0, queue=OK, idempotency_key="stats-once")
    again = await client.submit_spec(
        TaskSpec(name="echo", payload_json="0", queue=OK, idempotency_key="stats-once")
    )
    assert again.existing
    more = await client.submit_many(
        [TaskSpec(name="echo", payload_json=str(i), queue=OK) for i in range(1, 7)]
    )
    flaky = [
        await client.submit(
            "flaky", {"key": uuid.uuid4().hex, "fail": 1}, queue=MIXED, max_attempts=2, retry=FAST
        )
        for _ in range(3)
    ]
    dead = [
        await client.submit("boom", "x", queue=MIXED, max_attempts=2, retry=FAST) for _ in range(2)
    ]
    waiting = await client.submit("echo", queue=MIXED, delay_seconds=3600)
    cancelled = await client.cancel(waiting.id)
    assert cancelled.state is TaskState.CANCELLED

    held_scheduled = await client.submit("echo", queue=HELD, delay_seconds=3600)
    await client.pause_queue(HELD)
    held = [await client.submit("echo", i, queue=HELD) for i in range(3)]

    ok = [await client.wait(t, timeout=10) for t in [first.id, *more]]
    flaky_done = [await client.wait(t.id, timeout=10) for t in flaky]
    dead_done = [await client.wait(t.id, timeout=10) for t in dead]
    assert {t.state for t in ok + flaky_done} == {TaskState.SUCCEEDED}
    assert {t.state for t in dead_done} == {TaskState.DEAD}
    assert [t.attempts for t in flaky_done + dead_done] == [2] * 5
    held = [await client.get(t.id) for t in held]
    assert {t.state for t in held} == {TaskState.QUEUED}
    return Workload(ok, flaky_done, dead_done, cancelled, held, held_scheduled)


async def settle(replica: Replica, client: Client) -> None:
    """Flush the replica's counters until every outcome of the workload is in."""
    assert replica.parts.recorder is not None
    deadline = time.monotonic() + 10
    while True:
        await replica.parts.recorder.flush()
        mixed = await client.queue_stats(MIXED)
        ok = await client.queue_stats(OK)
        if (mixed.total_completed, mixed.total_dead, ok.total_completed) == (3, 2, 7):
            return
        assert time.monotonic() < deadline, f"the workload was never counted: {mixed}, {ok}"
        await asyncio.sleep(0.02)


async def poll(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return value
