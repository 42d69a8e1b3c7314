"""Submit rate limits and quotas (treadle.scheduler.limits), on real replicas
and a real PostgreSQL: a tenant's token bucket holds across replicas, refusals
are RESOURCE_EXHAUSTED with a retry-after hint the client can wait for, the
quota refuses cleanly (nothing stored), and tenants and keys have buckets of
their own."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from support import count_rows, running_replica, until

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, SyncClient, TaskSpec
from treadle.common import errors, status
from treadle.common.tasks import TaskState
from treadle.scheduler import principal
from treadle.scheduler.limits_store import LimitsStore
from treadle.scheduler.principal import ALL_SCOPES, Principal
from treadle.scheduler.supervisor import Replica

ECHO = pb.TaskSpec(name="echo", payload="1")


async def refusal(call: grpc.aio.UnaryUnaryCall) -> grpc.aio.AioRpcError:  # type: ignore[type-arg]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_submit_over_the_rate_is_refused_with_a_retry_after(
    database_url: str, schema: str
) -> None:
    async with (
        running_replica(
            database_url, schema, tenant_submit_rate=5.0, tenant_submit_burst=5
        ) as replica,
        grpc.aio.insecure_channel(replica.address) as channel,
    ):
        stub = pb_grpc.SchedulerServiceStub(channel)
        accepted = 0
        while True:  # the burst, and what came back meanwhile (none on a quiet machine)
            try:
                await stub.SubmitTask(pb.SubmitTaskRequest(task=ECHO))
                accepted += 1
            except grpc.aio.AioRpcError as exc:
                refused = exc
                break
        assert 5 <= accepted <= 7
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "tenant 'default' may submit 5 submits per second (burst 5)" in refused.details()
        retry_after = status.retry_after_from(refused.trailing_metadata())
        assert retry_after is not None and 0 < retry_after <= 0.25, retry_after

        # A batch takes as many tokens as it has tasks, all or none...
        refused = await refusal(stub.SubmitTasks(pb.SubmitTasksRequest(tasks=[ECHO] * 4)))
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < (status.retry_after_from(refused.trailing_metadata()) or 0) <= 0.85
        # ...and one larger than the burst can never pass: no hint then.
        refused = await refusal(stub.SubmitTasks(pb.SubmitTasksRequest(tasks=[ECHO] * 6)))
        assert "6 submissions at once exceed the burst" in refused.details()
        assert status.retry_after_from(refused.trailing_metadata()) is None

        # A group is taken item by item: the first that fit pass.
        await asyncio.sleep(1.1)  # the bucket is full again
        group = await stub.SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(submissions=[pb.GroupedSubmission(task=ECHO)] * 8)
        )
        passed = [r for r in group.results if r.HasField("submitted")]
        refused_items = [r for r in group.results if not r.HasField("submitted")]
        assert 4 <= len(passed) <= 5
        assert group.results[: len(passed)] == passed, "the first ones pass"
        assert {r.code for r in refused_items} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
        assert all(0 < r.retry_after_seconds <= 0.25 for r in refused_items)

        by_client = 0
        async with Client(replica.address) as client:
            hint: float | None = None
            for _ in range(6):
                try:
                    await client.submit("echo")
                except errors.ResourceExhausted as exc:
                    hint = exc.retry_after
                    break
                by_client += 1
            assert hint is not None and hint > 0
    assert await count_rows(database_url, schema) == accepted + len(passed) + by_client


async def test_two_replicas_sharing_a_tenant_stay_within_rate_times_time_plus_burst(
    database_url: str, schema: str
) -> None:
    rate, burst = 40.0, 10
    limits = {"tenant_submit_rate": rate, "tenant_submit_burst": burst}
    async with (
        running_replica(database_url, schema, **limits) as first,
        running_replica(database_url, schema, **limits) as second,
        Client(first.address) as one,
        Client(second.address) as other,
    ):
        accepted = refused = 0
        hints: list[float] = []
        began = time.monotonic()

        async def submitter(client: Client, seconds: float) -> None:
            nonlocal accepted, refused
            while time.monotonic() - began < seconds:
                try:
                    await client.submit("noop")
                    accepted += 1
                except errors.ResourceExhausted as exc:
                    refused += 1
                    hints.append(exc.retry_after or -1.0)
                    await asyncio.sleep(0.005)

        await asyncio.gather(*(submitter(c, 2.0) for c in (one, other, one, other)))
        elapsed = time.monotonic() - began
    stored = await count_rows(database_url, schema)
    assert stored == accepted
    assert refused > 0, "the submitters went over the rate"
    ceiling = rate * elapsed + burst
    print(
        f"\naccepted {accepted} of ceiling {ceiling:.1f}, refused {refused}, elapsed {elapsed:.2f}"
    )
    assert accepted <= ceiling, (accepted, ceiling)
    # Conservative, not stingy: close to what the bucket allowed.
    assert accepted >= 0.8 * ceiling, (accepted, ceiling)
    assert min(hints) > 0 and max(hints) <= 1.0


async def test_the_quota_refuses_cleanly(database_url: str, schema: str) -> None:
    async with (
        running_replica(database_url, schema, tenant_max_queued=5) as replica,
        Client(replica.address) as client,
        grpc.aio.insecure_channel(replica.address) as channel,
    ):
        stub = pb_grpc.SchedulerServiceStub(channel)
        waiting = [await client.submit("echo", delay_seconds=3600) for _ in range(3)]
        ids = await client.submit_many([TaskSpec(name="echo", delay_seconds=3600)] * 2)
        assert len(ids) == 2
        with pytest.raises(errors.ResourceExhausted) as caught:
            await client.submit("echo", delay_seconds=3600)
        assert "has 5 tasks waiting to run" in caught.value.message
        assert "quota of 5" in caught.value.message
        assert caught.value.retry_after is None
        with pytest.raises(errors.ResourceExhausted):  # waiting does not help with a quota
            await client.submit("echo", wait_for_rate_limit=True)
        refused = await refusal(stub.SubmitTasks(pb.SubmitTasksRequest(tasks=[ECHO])))
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert status.retry_after_from(refused.trailing_metadata()) is None
        assert await count_rows(database_url, schema) == 5, "nothing refused was stored"

        # Tasks that leave the waiting states make room, once counted (<= 1 s).
        for task in waiting[:2]:
            await client.cancel(task.id)

        async def room() -> bool:
            try:
                await client.submit("echo", delay_seconds=3600)
            except errors.ResourceExhausted:
                return False
            return True

        assert await until(room, timeout=5)
        group = await stub.SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(submissions=[pb.GroupedSubmission(task=ECHO)] * 3)
        )
        assert [r.HasField("submitted") for r in group.results] == [True, False, False]
        assert "reached its quota of 5" in group.results[1].message
        assert group.results[1].retry_after_seconds == 0
    assert await count_rows(database_url, schema) == 7  # 5 waiting, 2 cancelled


async def test_the_client_waits_for_the_rate_limit_when_asked(
    database_url: str, schema: str
) -> None:
    async with (
        running_replica(database_url, schema, tenant_submit_rate=4.0, tenant_submit_burst=1) as r,
        Client(r.address) as client,
    ):
        began = time.monotonic()
        tasks = [await client.submit("echo", n, wait_for_rate_limit=True) for n in range(3)]
        took = time.monotonic() - began
        assert [t.state for t in tasks] == [TaskState.QUEUED] * 3
        assert 0.35 <= took < 2.0, took  # two waits of about 0.25 s
        with pytest.raises(errors.ResourceExhausted):
            await client.submit("echo")  # not asked to wait
        await asyncio.sleep(0.3)
        ids = await client.submit_many([TaskSpec(name="echo")], wait_for_rate_limit=True)
        assert len(ids) == 1

        def blocking() -> int:
            with SyncClient(r.address) as sync:
                return len([sync.submit("echo", wait_for_rate_limit=True) for _ in range(2)])

        assert await asyncio.to_thread(blocking) == 2


async def test_the_client_does_not_wait_past_its_timeout(database_url: str, schema: str) -> None:
    async with (
        running_replica(database_url, schema, tenant_submit_rate=0.5, tenant_submit_burst=1) as r,
        Client(r.address, timeout=0.5) as client,
    ):
        await client.submit("echo", wait_for_rate_limit=True)
        began = time.monotonic()
        with pytest.raises(errors.ResourceExhausted) as caught:
            await client.submit("echo", wait_for_rate_limit=True)
        assert time.monotonic() - began < 0.4
        assert caught.value.retry_after is not None and caught.value.retry_after > 1


def as_caller(tenant: str, key_id: str | None = None) -> Principal:
    return Principal(tenant, ALL_SCOPES, key_id=key_id, key_name=key_id)


async def submit_as(replica: Replica, caller: Principal, count: int) -> int:
    """Submits of `caller` through the replica's use case (as the gRPC edge
    calls it once authentication has set the caller): how many passed."""
    passed = 0
    token = principal.acting_as(caller)
    try:
        for _ in range(count):
            try:
                await replica.parts.scheduler.submit(TaskSpec(name="echo", delay_seconds=3600))
                passed += 1
            except errors.ResourceExhausted:
                pass
    finally:
        principal.reset(token)
    return passed


async def test_tenants_and_keys_have_buckets_of_their_own(database_url: str, schema: str) -> None:
    async with running_replica(
        database_url,
        schema,
        tenant_submit_rate=0.1,
        tenant_submit_burst=3,
        key_submit_rate=0.1,
        key_submit_burst=2,
    ) as replica:
        assert await submit_as(replica, as_caller("acme"), 5) == 3
        assert await submit_as(replica, as_caller("globex"), 5) == 3
        # Each key has its own bucket, within its tenant's.
        assert await submit_as(replica, as_caller("initech", "k1"), 5) == 2
        assert await submit_as(replica, as_caller("initech", "k2"), 5) == 1  # the tenant's 3rd
        assert await submit_as(replica, as_caller("umbrella", "k1"), 5) == 2

        # The operator's own limits for a tenant override the defaults.
        limits = LimitsStore(replica.parts.store.pool)
        await limits.set("acme", {"submit_rate": 0, "max_queued": 4})
        await replica.parts.admission.load()
        assert await submit_as(replica, as_caller("acme"), 5) == 1, "3 + 1 waiting: quota 4"
        await limits.set("acme", {"max_queued": None})
        await replica.parts.admission.load()
        assert await submit_as(replica, as_caller("acme"), 5) == 5, "no rate limit of its own"
        assert [t.tenant for t in await limits.all()] == ["acme"]
        assert await limits.clear("acme")
        await replica.parts.admission.load()
        assert await submit_as(replica, as_caller("acme"), 1) == 1, "a fresh bucket"
        assert await submit_as(replica, as_caller("acme"), 5) == 2
