"""Listing with filters both ways, counting, and the bulk actions (retry,
cancel, purge in batches), through a real replica and the client."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, InvalidArgument, SyncClient, TaskState
from treadle.common.telemetry import trace_id_of
from treadle.scheduler.supervisor import Replica

LATER = datetime.now(UTC) + timedelta(hours=1)


async def _dead(client: Client, count: int, queue: str = "default") -> list[str]:
    made = [await client.submit("boom", i, queue=queue) for i in range(count)]
    return [(await client.wait(t.id, timeout=10)).id for t in made]


async def test_list_filters_page_both_ways_and_take_state_names(client: Client) -> None:
    before = datetime.now(UTC)
    ids = [(await client.submit("echo", i, run_at=LATER)).id for i in range(5)]
    keyed = await client.submit("sleep", {"seconds": 0}, run_at=LATER, idempotency_key="k1")
    newest_first = [keyed.id, *reversed(ids)]

    first = await client.list(page_size=2)
    assert [t.id for t in first.tasks] == newest_first[:2]
    assert first.previous_cursor is None and len(first.cursors) == 2
    second = await client.list(page_size=2, cursor=first.next_cursor)
    assert [t.id for t in second.tasks] == newest_first[2:4]
    assert second.previous_cursor == second.cursors[0]
    back = await client.list(page_size=2, cursor=second.previous_cursor, backward=True)
    assert [t.id for t in back.tasks] == newest_first[:2]
    assert back.previous_cursor is None and back.next_cursor == back.cursors[-1]
    oldest = await client.list(page_size=2, backward=True)
    assert [t.id for t in oldest.tasks] == newest_first[-2:]
    assert oldest.next_cursor is None and oldest.previous_cursor is not None
    # From any task's own cursor, both ways.
    after_third = await client.list(page_size=10, cursor=first.cursors[1])
    assert [t.id for t in after_third.tasks] == newest_first[2:]

    assert [t.id for t in (await client.list(name="sleep")).tasks] == [keyed.id]
    assert [t.id for t in (await client.list(idempotency_key="k1")).tasks] == [keyed.id]
    assert (await client.list(created_after=datetime.now(UTC) + timedelta(minutes=1))).tasks == []
    window = await client.list(created_after=before, created_before=datetime.now(UTC))
    assert len(window.tasks) == 6
    # States as enums or their names, in any case, one or many.
    assert len((await client.list(state="SCHEDULED")).tasks) == 6
    assert len((await client.list(states=["scheduled", TaskState.DEAD])).tasks) == 6
    assert (await client.list(state="dead")).tasks == []
    assert len([t async for t in client.iter_tasks(state="SCHEDULED", name="echo")]) == 5
    # Other enums and policies too: a granularity by name, a retry policy as a mapping.
    assert (await client.trends(granularity="day")).granularity.value == "DAY"
    policy = await client.submit("echo", 3, run_at=LATER, retry={"base_seconds": 0.5})
    assert policy.retry.base_seconds == 0.5
    with pytest.raises(InvalidArgument, match="granularity 'weekly' is not one of HOUR, DAY"):
        await client.trends(granularity="weekly")
    with pytest.raises(InvalidArgument, match="is not a retry policy"):
        await client.submit("echo", retry={"base": 1})
    with pytest.raises(InvalidArgument, match="state 'DEADISH' is not one of QUEUED"):
        await client.list(state="DEADISH")
    with pytest.raises(InvalidArgument, match=r"created_after .* is later than created_before"):
        await client.list(created_after=LATER, created_before=before)


async def test_retry_cancel_and_purge_work_in_batches(client: Client) -> None:
    dead = await _dead(client, 5, queue="dq")
    await client.pause_queue("dq")  # retried tasks wait there
    done = await client.submit("echo", "ok")
    await client.wait(done.id, timeout=10)
    waiting = [(await client.submit("echo", i, run_at=LATER, queue="later")).id for i in range(3)]

    assert await client.count_tasks(states=["DEAD"]) == 5
    assert await client.count_tasks(queue="later") == 3
    assert await client.count_tasks(ids=[dead[0], done.id]) == 2

    first = await client.retry_tasks(states=["DEAD"], limit=2)
    assert (first.affected, first.more) == (2, True)
    assert set(first.ids) <= set(dead)
    rest = await client.retry_tasks(limit=1000)  # every DEAD or CANCELLED task
    assert (rest.affected, rest.more) == (3, False)
    assert set(first.ids) | set(rest.ids) == set(dead)
    assert await client.count_tasks(queue="dq", states=["QUEUED"]) == 5
    assert (await client.get(done.id)).state is TaskState.SUCCEEDED, "left alone"

    # Cancel a queue's tasks: only those waiting there change.
    cancelled = await client.cancel_tasks(queue="later", states=["SCHEDULED", "SUCCEEDED"])
    assert sorted(cancelled.ids) == sorted(waiting) and not cancelled.more
    again = await client.cancel_tasks(queue="later")
    assert (again.affected, again.more) == (0, False)
    assert await client.count_tasks(queue="dq", states=["QUEUED"]) == 5

    # Purge what finished: never an unfinished task; not a state it cannot purge.
    assert (await client.purge_tasks(states=["QUEUED"])).affected == 0
    purged = await client.purge_tasks(finished_before=datetime.now(UTC))
    assert sorted(purged.ids) == sorted([done.id, *waiting]) and not purged.more
    assert await client.count_tasks() == 5
    assert await client.count_tasks(queue="dq", states=["QUEUED"]) == 5

    with pytest.raises(InvalidArgument, match="limit must be between 1 and 1000, got 1001"):
        await client.purge_tasks(limit=1001)
    with pytest.raises(InvalidArgument, match="not-a-uuid"):
        await client.retry_tasks(ids=["not-a-uuid"])


async def test_bulk_cancel_asks_running_tasks_once(client: Client) -> None:
    running = await client.submit("sleep", {"seconds": 30})

    async def started() -> None:
        while (await client.get(running.id)).state is not TaskState.RUNNING:
            await asyncio.sleep(0.02)

    async with asyncio.timeout(10):
        await started()
    asked = await client.cancel_tasks(ids=[running.id])
    assert (asked.affected, asked.ids, asked.more) == (1, (running.id,), False)
    assert (await client.wait(running.id, timeout=10)).state is TaskState.CANCELLED
    assert (await client.cancel_tasks(ids=[running.id])).affected == 0


async def test_a_task_carries_its_trace_id(replica: Replica, client: Client) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    context = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with grpc.aio.insecure_channel(replica.address) as channel:
        reply = await pb_grpc.SchedulerServiceStub(channel).SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(
                submissions=[
                    pb.GroupedSubmission(task=pb.TaskSpec(name="echo"), trace_context=context)
                ]
            )
        )
    (result,) = reply.results
    assert result.submitted.task.trace_id == trace_id
    assert (await client.get(result.submitted.task.id)).trace_id == trace_id
    untraced = await client.submit("echo", 2, run_at=LATER)
    assert untraced.trace_id is None and (await client.get(untraced.id)).trace_id is None
    assert trace_id_of(json.dumps(context)) == trace_id
    assert trace_id_of(context) == trace_id
    assert trace_id_of('{"traceparent": "00-' + "0" * 32 + "-" + "1" * 16 + '-01"}') is None


async def test_the_sync_client_takes_state_names_too(replica: Replica) -> None:
    def use_sync() -> tuple[int, int, int]:
        with SyncClient(replica.address) as sync:
            sync.submit("echo", 1, run_at=LATER)
            listed = sync.list(state="SCHEDULED")
            counted = sync.count_tasks(states="scheduled")
            cancelled = sync.cancel_tasks(states=["SCHEDULED"])
            return len(listed.tasks), counted, cancelled.affected

    assert await asyncio.to_thread(use_sync) == (1, 1, 1)
