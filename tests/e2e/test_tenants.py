"""Tenant isolation over every RPC and every GraphQL field.

Tenant A makes objects of every kind (tasks in each state, a queue of its own
with settings, a schedule, statistics, error patterns, audit events, a running
task); tenant B, with an admin key (every scope) of its own, then calls every
method of SchedulerService and every GraphQL field. Each check asserts that B
can neither see, count, change, watch nor infer A's objects: another tenant's
id or name answers exactly as one that does not exist. The tables are checked
against the service descriptor and the schema, so a new method or field
without a check fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from auth_support import authed_replica, make_key
from support import until
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client
from treadle.common import errors
from treadle.common.access import bearer
from treadle.common.tasks import TaskSpec, TaskState
from treadle.gateway.schema import create_schema
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.principal import Scope
from treadle.scheduler.supervisor import Replica

ALL = list(Scope)
A_QUEUE = "a-only"
A_SCHEDULE = "a-nightly"
A_ERROR = "boom: secret-of-a"


@dataclass
class World:
    """What tenant A made, and the clients of both tenants."""

    replica: Replica
    a: Client
    b: Client
    b_key: str
    a_done: str
    a_dead: str
    a_waiting: str
    a_running: str
    a_keyed: str
    missing: str
    a_key_id: str


async def _wait(client: Client, task_id: str, state: TaskState) -> None:
    async def reached() -> bool:
        return (await client.get(task_id)).state is state

    await until(reached)


@pytest.fixture
async def world(database_url: str, schema: str) -> AsyncIterator[World]:
    async with authed_replica(
        database_url, schema, stats_flush_interval=0.1, metrics_interval=0.2, concurrency=4
    ) as replica:
        a_key = await make_key(replica, ALL, tenant="a", name="a-admin")
        b_key = await make_key(replica, ALL, tenant="b", name="b-admin")
        async with (
            Client(replica.address, api_key=a_key) as a,
            Client(replica.address, api_key=b_key) as b,
        ):
            done = await a.submit("echo", {"secret": "of-a"}, queue=A_QUEUE)
            dead = await a.submit("boom", "secret-of-a", queue=A_QUEUE)
            keyed = await a.submit("echo", 1, queue="default", idempotency_key="order-42")
            running = await a.submit("sleep", {"seconds": 30}, queue="slow")
            await _wait(a, done.id, TaskState.SUCCEEDED)
            await _wait(a, dead.id, TaskState.DEAD)
            await _wait(a, running.id, TaskState.RUNNING)
            await a.update_queue(A_QUEUE, max_attempts=3)
            await a.pause_queue(A_QUEUE)
            waiting = await a.submit("echo", 2, queue=A_QUEUE)
            await a.create_schedule(A_SCHEDULE, "0 3 * * *", TaskSpec(name="echo"))

            async def counted() -> bool:
                found = await a.list_queue_stats()
                return any(q.queue == A_QUEUE and q.total_completed >= 1 for q in found)

            await until(counted)  # A's statistics are flushed
            yield World(
                replica,
                a,
                b,
                b_key,
                done.id,
                dead.id,
                waiting.id,
                running.id,
                keyed.id,
                str(uuid.uuid4()),
                a_key.removeprefix("trdl_").split("_")[0],
            )
            with contextlib.suppress(errors.TreadleError):
                await a.cancel(running.id)


async def _same_refusal(
    call: Callable[[str], Awaitable[object]], theirs: str, missing: str
) -> None:
    """`call` with another tenant's id (or name) fails exactly as with one that
    does not exist: NOT_FOUND, the same message but for the id itself."""
    with pytest.raises(errors.NotFound) as found:
        await call(theirs)
    with pytest.raises(errors.NotFound) as absent:
        await call(missing)
    assert found.value.message.replace(theirs, "X") == absent.value.message.replace(missing, "X")


def _mentions(value: object, *needles: str) -> list[str]:
    text = json.dumps(value, default=str)
    return [n for n in needles if n in text]


# -- every RPC ------------------------------------------------------------------


async def _submit_task(w: World) -> None:
    again = await w.b.submit_spec(
        TaskSpec(name="echo", queue="default", idempotency_key="order-42")
    )
    assert not again.existing and again.task.id != w.a_keyed, "keys are a tenant's own"


async def _submit_tasks(w: World) -> None:
    (made,) = await w.b.submit_many([TaskSpec(name="echo", idempotency_key="order-43")])
    assert made != w.a_keyed


async def _submit_task_group(w: World) -> None:
    async with grpc.aio.insecure_channel(w.replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(
                submissions=[
                    pb.GroupedSubmission(
                        task=pb.TaskSpec(
                            name="echo",
                            payload="1",
                            queue="default",
                            idempotency_key="order-42",
                        )
                    )
                ]
            ),
            metadata=(bearer(w.b_key),),
        )
    (result,) = reply.results
    assert result.submitted.task.id != w.a_keyed  # B's own order-42 (SubmitTask made it)


async def _get_task(w: World) -> None:
    await _same_refusal(w.b.get, w.a_done, w.missing)


async def _get_tasks(w: World) -> None:
    async with grpc.aio.insecure_channel(w.replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.GetTasks(
            pb.GetTasksRequest(ids=[w.a_done, w.missing]), metadata=(bearer(w.b_key),)
        )
    theirs, absent = reply.results
    assert (
        not theirs.HasField("task")
        and theirs.code == absent.code == grpc.StatusCode.NOT_FOUND.value[0]
    )
    assert theirs.message.replace(w.a_done, "X") == absent.message.replace(w.missing, "X")


async def _list_tasks(w: World) -> None:
    mine = {t.id for t in (await w.b.list(page_size=1000)).tasks}
    assert mine and not mine & {w.a_done, w.a_dead, w.a_waiting, w.a_running, w.a_keyed}
    for queue in (A_QUEUE, "default", "slow"):
        found = await w.b.list(queue=queue)
        assert not {t.id for t in found.tasks} & {w.a_done, w.a_dead, w.a_waiting, w.a_keyed}
    for state in TaskState:
        found = await w.b.list(state=state)
        assert not {t.id for t in found.tasks} & {w.a_done, w.a_dead, w.a_running}


async def _cancel_task(w: World) -> None:
    await _same_refusal(w.b.cancel, w.a_waiting, w.missing)
    assert (await w.a.get(w.a_waiting)).state is TaskState.QUEUED, "untouched"


async def _retry_task(w: World) -> None:
    await _same_refusal(w.b.retry, w.a_dead, w.missing)
    assert (await w.a.get(w.a_dead)).state is TaskState.DEAD, "untouched"


async def _count_tasks(w: World) -> None:
    theirs = [w.a_done, w.a_dead, w.a_waiting, w.a_running, w.a_keyed]
    assert await w.b.count_tasks(ids=theirs) == 0
    assert await w.b.count_tasks(queue=A_QUEUE) == 0
    assert await w.b.count_tasks(states=["DEAD", "RUNNING"]) == 0
    assert await w.a.count_tasks(ids=theirs) == len(theirs)


async def _untouched(w: World) -> None:
    """A's tasks are as they were, whatever B's bulk actions did."""
    assert (await w.a.get(w.a_dead)).state is TaskState.DEAD
    assert (await w.a.get(w.a_done)).state is TaskState.SUCCEEDED
    assert (await w.a.get(w.a_waiting)).state is TaskState.QUEUED
    running = await w.a.get(w.a_running)
    assert running.state is TaskState.RUNNING and not running.cancel_requested


async def _retry_tasks(w: World) -> None:
    done = await w.b.retry_tasks(ids=[w.a_dead])
    assert (done.affected, done.more) == (0, False)
    assert not set((await w.b.retry_tasks(queue=A_QUEUE)).ids) | set(
        (await w.b.retry_tasks()).ids
    ) & {w.a_dead}
    await _untouched(w)


async def _cancel_tasks(w: World) -> None:
    done = await w.b.cancel_tasks(ids=[w.a_waiting, w.a_running])
    assert (done.affected, done.more) == (0, False)
    assert (await w.b.cancel_tasks(queue=A_QUEUE)).affected == 0
    await _untouched(w)


async def _purge_tasks(w: World) -> None:
    done = await w.b.purge_tasks(ids=[w.a_done, w.a_dead])
    assert (done.affected, done.more) == (0, False)
    purged = await w.b.purge_tasks()  # every finished task of B's
    assert not set(purged.ids) & {w.a_done, w.a_dead}
    await _untouched(w)
    mine, _ = await w.b.audit_events()
    assert "PurgeTasks" in {e.action for e in mine}, "recorded, in B's log"
    theirs, _ = await w.a.audit_events()
    assert "PurgeTasks" not in {e.action for e in theirs}


async def _watch_task(w: World) -> None:
    async def first(task_id: str) -> object:
        async for task in w.b.watch(task_id):
            return task
        return None

    await _same_refusal(first, w.a_running, w.missing)


async def _list_queues(w: World) -> None:
    assert A_QUEUE not in {q.name for q in await w.b.list_queues()}


async def _get_queue(w: World) -> None:
    await _same_refusal(w.b.get_queue, A_QUEUE, "no-such-queue")


async def _update_queue(w: World) -> None:
    async def update(name: str) -> object:
        return await w.b.update_queue(name, max_concurrent=1)

    await _same_refusal(update, A_QUEUE, "no-such-queue")
    assert (await w.a.get_queue(A_QUEUE)).max_concurrent is None, "untouched"


async def _pause_queue(w: World) -> None:
    await _same_refusal(w.b.pause_queue, A_QUEUE, "no-such-queue")


async def _resume_queue(w: World) -> None:
    await _same_refusal(w.b.resume_queue, A_QUEUE, "no-such-queue")
    assert (await w.a.get_queue(A_QUEUE)).paused, "untouched"


async def _create_schedule(w: World) -> None:
    made = await w.b.create_schedule(A_SCHEDULE, "0 4 * * *", TaskSpec(name="echo"))
    assert made.cron == "0 4 * * *", "schedule names are a tenant's own"
    await w.b.delete_schedule(A_SCHEDULE)  # B's own, of the same name
    assert (await w.a.list_schedules())[0].cron == "0 3 * * *", "untouched"


async def _list_schedules(w: World) -> None:
    assert all(s.cron != "0 3 * * *" for s in await w.b.list_schedules())


async def _pause_schedule(w: World) -> None:
    await _same_refusal(w.b.pause_schedule, A_SCHEDULE, "no-such-schedule")


async def _resume_schedule(w: World) -> None:
    await _same_refusal(w.b.resume_schedule, A_SCHEDULE, "no-such-schedule")


async def _delete_schedule(w: World) -> None:
    await _same_refusal(w.b.delete_schedule, A_SCHEDULE, "no-such-schedule")
    assert [s.name for s in await w.a.list_schedules()] == [A_SCHEDULE], "untouched"


async def _list_replicas(w: World) -> None:
    (theirs,) = await w.a.list_replicas()
    (mine,) = await w.b.list_replicas()
    assert theirs.running >= 1 and mine.running == 0, "B counts only its own running tasks"


async def _get_health(w: World) -> None:
    async def counted() -> bool:
        return A_QUEUE in {q.queue for q in (await w.a.health()).backlog}

    await until(counted)  # the replica's periodic count has A's queue
    health = await w.b.health()
    assert health.backlog and all(q.queue != A_QUEUE for q in health.backlog), health.backlog
    assert not _mentions(health, A_QUEUE, w.a_done, A_ERROR), "B's queues only"


async def _get_queue_stats(w: World) -> None:
    await _same_refusal(w.b.queue_stats, A_QUEUE, "no-such-queue")


async def _list_queue_stats(w: World) -> None:
    found = await w.b.list_queue_stats()
    assert A_QUEUE not in {q.queue for q in found}
    assert all(q.running == 0 and q.total_failed == 0 for q in found)


async def _get_overview(w: World) -> None:
    overview = await w.b.overview()
    assert overview.tasks_by_state.get(TaskState.DEAD, 0) == 0
    assert overview.tasks_by_state.get(TaskState.RUNNING, 0) == 0
    assert overview.total_queues == len(await w.b.list_queues())


async def _get_trends(w: World) -> None:
    trends = await w.b.trends()
    assert sum(b.failed for b in trends.buckets) == 0
    assert sum(b.completed for b in trends.buckets) <= 3, "B's own few tasks at most"


async def _get_error_patterns(w: World) -> None:
    assert await w.b.error_patterns() == []
    assert await w.b.error_patterns(queue=A_QUEUE) == []


async def _get_system_health(w: World) -> None:
    assert not _mentions(await w.b.system_health(), A_QUEUE, A_ERROR, w.a_dead)


async def _list_audit_events(w: World) -> None:
    theirs, _ = await w.a.audit_events()
    assert any(A_QUEUE in json.dumps(e.change) or e.target == A_QUEUE for e in theirs)
    mine, _ = await w.b.audit_events()
    assert mine, "B's own admin calls are there"
    assert {e.tenant for e in mine} == {"b"} and "a-admin" not in {e.key_name for e in mine}
    # B's bulk calls are recorded with the selection B sent (A's ids and queue
    # among them, by the checks above): that tells B nothing it did not know.
    bulk = {"RetryTasks", "CancelTasks", "PurgeTasks"}
    told = [str(e) for e in mine if e.action not in bulk]
    assert not _mentions(told, A_QUEUE, w.a_waiting, w.a_dead)


async def _create_key(w: World) -> None:
    made = await w.b.create_key("b-made", ["read"])
    async with Client(w.replica.address, api_key=made.token) as made_b:
        assert {t.id for t in (await made_b.list(page_size=1000)).tasks} & {w.a_done} == set()
        await _same_refusal(made_b.get, w.a_done, w.missing)
    assert "b-made" not in {k.name for k in await w.a.list_keys()}


async def _list_keys(w: World) -> None:
    mine = await w.b.list_keys()
    assert mine and w.a_key_id not in {k.id for k in mine}
    assert "a-admin" not in {k.name for k in mine}


async def _revoke_key(w: World) -> None:
    await _same_refusal(w.b.revoke_key, w.a_key_id, "0" * len(w.a_key_id))
    assert {k.id: k.status for k in await w.a.list_keys()}[w.a_key_id] == "active"


async def _rotate_key(w: World) -> None:
    async def rotate(key_id: str) -> object:
        return await w.b.rotate_key(key_id, 60)

    await _same_refusal(rotate, w.a_key_id, "0" * len(w.a_key_id))
    assert [k.id for k in await w.a.list_keys() if k.name == "a-admin"] == [w.a_key_id]


RPC_CHECKS: dict[str, Callable[[World], Awaitable[None]]] = {
    "SubmitTask": _submit_task,
    "SubmitTasks": _submit_tasks,
    "SubmitTaskGroup": _submit_task_group,
    "GetTask": _get_task,
    "GetTasks": _get_tasks,
    "ListTasks": _list_tasks,
    "CancelTask": _cancel_task,
    "RetryTask": _retry_task,
    "WatchTask": _watch_task,
    "CountTasks": _count_tasks,
    "RetryTasks": _retry_tasks,
    "CancelTasks": _cancel_tasks,
    "PurgeTasks": _purge_tasks,
    "ListQueues": _list_queues,
    "GetQueue": _get_queue,
    "UpdateQueue": _update_queue,
    "PauseQueue": _pause_queue,
    "ResumeQueue": _resume_queue,
    "CreateSchedule": _create_schedule,
    "ListSchedules": _list_schedules,
    "PauseSchedule": _pause_schedule,
    "ResumeSchedule": _resume_schedule,
    "DeleteSchedule": _delete_schedule,
    "ListReplicas": _list_replicas,
    "GetHealth": _get_health,
    "GetQueueStats": _get_queue_stats,
    "ListQueueStats": _list_queue_stats,
    "GetOverview": _get_overview,
    "GetTrends": _get_trends,
    "GetErrorPatterns": _get_error_patterns,
    "GetSystemHealth": _get_system_health,
    "ListAuditEvents": _list_audit_events,
    "CreateKey": _create_key,
    "ListKeys": _list_keys,
    "RevokeKey": _revoke_key,
    "RotateKey": _rotate_key,
}


def test_every_rpc_has_an_isolation_check() -> None:
    methods = pb.DESCRIPTOR.services_by_name["SchedulerService"].methods_by_name
    assert set(RPC_CHECKS) == set(methods)


async def test_another_tenant_is_invisible_over_every_rpc(world: World) -> None:
    failed = []
    for method, check in RPC_CHECKS.items():
        try:
            await check(world)
        except (AssertionError, pytest.fail.Exception) as exc:
            failed.append(f"{method}: {exc}")
    assert failed == []


# -- every GraphQL field ----------------------------------------------------------


@dataclass
class Http:
    world: World
    http: httpx.AsyncClient
    url: str

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {self.world.b_key}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _not_found(body: dict[str, Any]) -> bool:
    return [e["extensions"]["code"] for e in body.get("errors", [])] == ["NOT_FOUND"]


def _clean(g: Http, body: dict[str, Any]) -> None:
    w = g.world
    leaked = _mentions(body, A_QUEUE, A_ERROR, w.a_done, w.a_dead, w.a_waiting, w.a_running)
    assert not leaked, f"{leaked} in {body}"


async def _g_task(g: Http) -> None:
    body = await g("query($id: ID!) { task(id: $id) { id } }", id=g.world.a_done)
    assert body["data"]["task"] is None and "errors" not in body, body  # as a missing id


async def _g_tasks(g: Http) -> None:
    body = await g("{ tasks(first: 1000) { nodes { id queue } } }")
    _clean(g, body)
    body = await g('{ tasks(queue: "a-only") { nodes { id } } }')
    assert body["data"]["tasks"]["nodes"] == []


async def _g_task_count(g: Http) -> None:
    w = g.world
    query = "query($s: TaskSelection!) { taskCount(selection: $s) }"
    body = await g(query, s={"ids": [w.a_done, w.a_dead, w.a_waiting]})
    assert body["data"]["taskCount"] == 0, body
    assert (await g(query, s={"queue": A_QUEUE}))["data"]["taskCount"] == 0


async def _g_bulk(g: Http, field: str, ids: list[str]) -> None:
    query = f"mutation($s: TaskSelection!) {{ {field}(selection: $s) {{ affected ids more }} }}"
    for selection in ({"ids": ids}, {"queue": A_QUEUE}):
        body = await g(query, s=selection)
        assert body["data"][field]["affected"] == 0, body
    _clean(g, await g(query, s={}))
    await _untouched(g.world)


async def _g_retry_tasks(g: Http) -> None:
    await _g_bulk(g, "retryTasks", [g.world.a_dead])


async def _g_cancel_tasks(g: Http) -> None:
    await _g_bulk(g, "cancelTasks", [g.world.a_waiting, g.world.a_running])


async def _g_purge_tasks(g: Http) -> None:
    await _g_bulk(g, "purgeTasks", [g.world.a_done, g.world.a_dead])


async def _g_queues(g: Http) -> None:
    _clean(g, await g("{ queues { name } }"))


async def _g_queue(g: Http) -> None:
    assert (await g('{ queue(name: "a-only") { name } }'))["data"]["queue"] is None


async def _g_schedules(g: Http) -> None:
    body = await g("{ schedules { name cron } }")
    assert "0 3 * * *" not in json.dumps(body)


async def _g_replicas(g: Http) -> None:
    body = await g("{ replicas { running } }")
    assert [r["running"] for r in body["data"]["replicas"]] == [0]


async def _g_queue_stats(g: Http) -> None:
    theirs = await g('{ queueStats(queue: "a-only") { queue } }')
    assert theirs == await g('{ queueStats(queue: "no-such-queue") { queue } }'), theirs


async def _g_queue_stats_list(g: Http) -> None:
    _clean(g, await g("{ queueStatsList { queue running totalFailed } }"))


async def _g_overview(g: Http) -> None:
    body = await g("{ overview { totalQueues tasksByState { state count } } }")
    counts = {c["state"]: c["count"] for c in body["data"]["overview"]["tasksByState"]}
    assert counts.get("DEAD", 0) == counts.get("RUNNING", 0) == 0, body


async def _g_trends(g: Http) -> None:
    body = await g("{ trends { buckets { failed } } }")
    assert sum(b["failed"] for b in body["data"]["trends"]["buckets"]) == 0


async def _g_error_patterns(g: Http) -> None:
    assert (await g("{ errorPatterns { message } }"))["data"]["errorPatterns"] == []


async def _g_system_health(g: Http) -> None:
    _clean(g, await g("{ systemHealth { status alerts { message queue } } }"))


async def _g_audit_events(g: Http) -> None:
    theirs, _ = await g.world.a.audit_events()
    body = await g("{ auditEvents(first: 1000) { events { id keyName action target } } }")
    events = body["data"]["auditEvents"]["events"]
    assert events, "B's own admin calls are there"
    assert not {e["id"] for e in events} & {str(e.id) for e in theirs}
    assert "a-admin" not in {e["keyName"] for e in events}
    # B's bulk calls name the queue B sent (see _list_audit_events).
    bulk = {"RetryTasks", "CancelTasks", "PurgeTasks"}
    _clean(g, [e for e in events if e["action"] not in bulk])


async def _g_submit_task(g: Http) -> None:
    body = await g(
        'mutation { submitTask(input: {name: "echo", idempotencyKey: "order-44"}) { id existing } }'
    )
    assert body["data"]["submitTask"]["existing"] is False, body
    body = await g(
        'mutation { submitTask(input: {name: "echo", idempotencyKey: "order-42"}) { id } }'
    )
    assert body["data"]["submitTask"]["id"] != g.world.a_keyed, body


async def _g_cancel(g: Http) -> None:
    assert _not_found(
        await g("mutation($id: ID!) { cancelTask(id: $id) { id } }", id=g.world.a_waiting)
    )


async def _g_retry(g: Http) -> None:
    assert _not_found(
        await g("mutation($id: ID!) { retryTask(id: $id) { id } }", id=g.world.a_dead)
    )


async def _g_update_queue(g: Http) -> None:
    body = await g('mutation { updateQueue(input: {name: "a-only", maxConcurrent: 1}) { name } }')
    assert _not_found(body), body


async def _g_pause_queue(g: Http) -> None:
    assert _not_found(await g('mutation { pauseQueue(name: "a-only") { name } }'))


async def _g_resume_queue(g: Http) -> None:
    assert _not_found(await g('mutation { resumeQueue(name: "a-only") { name } }'))


async def _g_create_schedule(g: Http) -> None:
    body = await g(
        'mutation { createSchedule(input: {name: "b-own", cron: "0 5 * * *", '
        'task: {name: "echo"}}) { name } }'
    )
    assert body["data"]["createSchedule"]["name"] == "b-own", body
    assert "b-own" not in {s.name for s in await g.world.a.list_schedules()}


async def _g_pause_schedule(g: Http) -> None:
    assert _not_found(await g('mutation { pauseSchedule(name: "a-nightly") { name } }'))


async def _g_resume_schedule(g: Http) -> None:
    assert _not_found(await g('mutation { resumeSchedule(name: "a-nightly") { name } }'))


async def _g_delete_schedule(g: Http) -> None:
    assert _not_found(await g('mutation { deleteSchedule(name: "a-nightly") }'))


async def _g_task_updates(g: Http) -> None:
    async def first_message(task_id: str) -> dict[str, Any]:
        url = g.url.replace("http://", "ws://") + "/graphql"
        async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            init = {"authorization": f"Bearer {g.world.b_key}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = "subscription($id: ID!) { taskUpdates(id: $id) { id state } }"
            payload = {"query": query, "variables": {"id": task_id}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            async with asyncio.timeout(10):
                message: dict[str, Any] = json.loads(await ws.recv())
                return message

    theirs = await first_message(g.world.a_running)
    absent = await first_message(g.world.missing)
    assert theirs["type"] == "error" and theirs["payload"][0]["extensions"]["code"] == "NOT_FOUND"
    said = theirs["payload"][0]["message"].replace(g.world.a_running, "X")
    assert said == absent["payload"][0]["message"].replace(g.world.missing, "X"), theirs


GRAPHQL_CHECKS: dict[str, Callable[[Http], Awaitable[None]]] = {
    "task": _g_task,
    "tasks": _g_tasks,
    "taskCount": _g_task_count,
    "retryTasks": _g_retry_tasks,
    "cancelTasks": _g_cancel_tasks,
    "purgeTasks": _g_purge_tasks,
    "queues": _g_queues,
    "queue": _g_queue,
    "schedules": _g_schedules,
    "replicas": _g_replicas,
    "queueStats": _g_queue_stats,
    "queueStatsList": _g_queue_stats_list,
    "overview": _g_overview,
    "trends": _g_trends,
    "errorPatterns": _g_error_patterns,
    "systemHealth": _g_system_health,
    "auditEvents": _g_audit_events,
    "submitTask": _g_submit_task,
    "cancelTask": _g_cancel,
    "retryTask": _g_retry,
    "updateQueue": _g_update_queue,
    "pauseQueue": _g_pause_queue,
    "resumeQueue": _g_resume_queue,
    "createSchedule": _g_create_schedule,
    "pauseSchedule": _g_pause_schedule,
    "resumeSchedule": _g_resume_schedule,
    "deleteSchedule": _g_delete_schedule,
    "taskUpdates": _g_task_updates,
}


def test_every_graphql_field_has_an_isolation_check() -> None:
    schema = create_schema()._schema
    fields = {
        name
        for kind in ("Query", "Mutation", "Subscription")
        for name in schema.get_type(kind).fields  # type: ignore[union-attr]
    }
    assert set(GRAPHQL_CHECKS) == fields


async def test_another_tenant_is_invisible_over_every_graphql_field(world: World) -> None:
    gateway = Gateway(GatewaySettings(http_port=0, scheduler_address=world.replica.address))
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            g = Http(world, http, gateway.url)
            failed = []
            for field, check in GRAPHQL_CHECKS.items():
                try:
                    await check(g)
                except (AssertionError, KeyError, TypeError, pytest.fail.Exception) as exc:
                    failed.append(f"{field}: {exc!r}")
            assert failed == [], "\n".join(failed)
    finally:
        await gateway.stop()


async def test_metrics_carry_the_tenant(world: World) -> None:
    """Two tenants' queues of one name are two series, each with its tenant."""
    from scrape import scrape

    await world.b.submit("echo", 1, queue="default")
    assert world.replica.metrics_server is not None
    url = f"http://{world.replica.metrics_server.address}/metrics"

    async def both_counted() -> bool:
        scraped = await scrape(url)
        submitted = "treadle_tasks_submitted_total"
        depth = "treadle_queue_depth"
        return (
            scraped.value(submitted, tenant="a", queue="default") >= 1
            and scraped.value(submitted, tenant="b", queue="default") >= 1
            and scraped.value(depth, tenant="a", queue=A_QUEUE, state="QUEUED") == 1
            and scraped.value(depth, tenant="b", queue=A_QUEUE, state="QUEUED") == 0
        )

    await until(both_counted)
