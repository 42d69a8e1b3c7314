"""Authentication and authorization on a real replica with TREADLE_AUTH=keys,
called over loopback through the generated stubs and the client: every scope
against every method (from the one scope table), missing and malformed
credentials, open health and reflection, per-call credentials on a shared
client, revocation, and the audit log of admin changes (written by the
interceptor, read over ListAuditEvents)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from auth_support import authed_replica, key_store, make_key
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, SyncClient, TaskSpec, credentials
from treadle.common import errors
from treadle.scheduler import auth
from treadle.scheduler.principal import Principal, Scope
from treadle.scheduler.supervisor import Replica

SERVICE = pb.DESCRIPTOR.services_by_name["SchedulerService"]
Code = grpc.StatusCode


@pytest.fixture
async def secured(database_url: str, schema: str) -> AsyncIterator[Replica]:
    async with authed_replica(database_url, schema) as replica:
        yield replica


@pytest.fixture
async def stub(secured: Replica) -> AsyncIterator[pb_grpc.SchedulerServiceStub]:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        yield pb_grpc.SchedulerServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def status_of(
    stub: pb_grpc.SchedulerServiceStub, method: str, metadata: Any = None
) -> grpc.StatusCode:
    """How a call of `method` with an empty request ends."""
    descriptor = SERVICE.methods_by_name[method]
    request = getattr(pb, descriptor.input_type.name)()
    call = getattr(stub, method)
    try:
        if descriptor.server_streaming:
            async for _ in call(request, metadata=metadata, timeout=10):
                break
        else:
            await call(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


def test_every_method_of_the_service_has_a_rule() -> None:
    methods = {m.name for m in SERVICE.methods}
    assert methods - auth.RULES.keys() == set(), "methods without an access rule"
    assert auth.RULES.keys() - methods == set(), "rules for methods that do not exist"


async def test_every_scope_against_every_method(
    secured: Replica, stub: pb_grpc.SchedulerServiceStub
) -> None:
    tokens = {scope: await make_key(secured, [scope], name=scope.value) for scope in Scope}
    wrong = []
    for method, rule in sorted(auth.RULES.items()):
        got = await status_of(stub, method)
        if got is not Code.UNAUTHENTICATED:
            wrong.append(f"{method} without a key: {got.name}")
        for scope, token in tokens.items():
            may = auth.allowed(Principal("default", frozenset({scope})), rule)
            got = await status_of(stub, method, bearer(token))
            refused = got in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)
            if may == refused or (not may and got is not Code.PERMISSION_DENIED):
                wrong.append(f"{method} with {scope.value}: {got.name}")
    assert wrong == []
    # What the table says, spelled out for the scopes people ask about.
    submit = Principal("default", frozenset({Scope.SUBMIT}))
    read = Principal("default", frozenset({Scope.READ}))
    assert auth.allowed(submit, auth.RULES["SubmitTask"])
    assert auth.allowed(submit, auth.RULES["GetTask"]) and auth.own_only(submit)
    assert not auth.allowed(submit, auth.RULES["GetOverview"])
    assert not auth.allowed(read, auth.RULES["SubmitTask"]) and not auth.own_only(read)
    assert not auth.allowed(read, auth.RULES["CancelTask"])


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "no API key: send `authorization: Bearer <key>`"),
        ((("authorization", "Basic dXNlcjpwdw=="),), "malformed authorization metadata"),
        ((("authorization", "Bearer"),), "malformed authorization metadata"),
        ((("authorization", "Bearer   "),), "malformed authorization metadata"),
        ((("authorization", "Bearer not-a-key"),), "malformed API key: expected trdl_"),
        (
            (("authorization", "Bearer trdl_x"), ("authorization", "Bearer trdl_y")),
            "more than one authorization",
        ),
        (bearer(f"trdl_{'0' * 16}_{'0' * 64}"), "is not valid: no such key"),
    ],
)
async def test_missing_or_malformed_credentials_are_unauthenticated(
    stub: pb_grpc.SchedulerServiceStub, metadata: Any, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetTask(pb.GetTaskRequest(id="x"), metadata=metadata, timeout=10)
    assert raised.value.code() is Code.UNAUTHENTICATED
    assert message in (raised.value.details() or "")


async def test_the_scheme_is_case_insensitive(
    secured: Replica, stub: pb_grpc.SchedulerServiceStub
) -> None:
    token = await make_key(secured, [Scope.READ])
    reply = await stub.ListQueues(
        pb.ListQueuesRequest(), metadata=(("authorization", f"bearer {token}"),), timeout=10
    )
    assert reply is not None


async def test_a_wrong_scope_says_what_it_needs(
    secured: Replica, stub: pb_grpc.SchedulerServiceStub
) -> None:
    token = await make_key(secured, [Scope.SUBMIT, Scope.READ], name="ci-deploy")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PauseQueue(pb.PauseQueueRequest(name="default"), metadata=bearer(token))
    assert raised.value.code() is Code.PERMISSION_DENIED
    assert raised.value.details() == (
        "API key 'ci-deploy' (scopes: read, submit) may not call PauseQueue: "
        "it needs the admin scope"
    )


async def test_health_and_reflection_stay_open(secured: Replica) -> None:
    async with grpc.aio.insecure_channel(secured.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        async for reply in call:
            names = {s.name for s in reply.list_services_response.service}
            assert SERVICE.full_name in names
            break


async def test_the_client_sends_its_key_and_raises_our_errors(secured: Replica) -> None:
    submit = await make_key(secured, [Scope.SUBMIT])
    read = await make_key(secured, [Scope.READ])
    async with Client(secured.address, api_key=submit) as client:
        task = await client.submit("echo", {"hi": 1})
        done = await client.wait(task.id, timeout=10)  # WatchTask: own submissions
        assert done.result == {"hi": 1}
        assert (await client.get(task.id)).id == task.id
        with pytest.raises(errors.PermissionDenied, match="it needs the read scope"):
            await client.overview()
    async with Client(secured.address, api_key=read) as client:
        assert (await client.get(task.id)).id == task.id
        with pytest.raises(errors.PermissionDenied, match="may not call SubmitTask"):
            await client.submit("echo")
    async with Client(secured.address) as client:
        with pytest.raises(errors.Unauthenticated, match="no API key"):
            await client.get(task.id)
        with pytest.raises(errors.Unauthenticated):
            await client.wait(task.id, timeout=5)

    def blocking() -> str:
        with SyncClient(secured.address, api_key=submit) as sync:
            return sync.submit("echo", 2).id

    assert await asyncio.to_thread(blocking)


async def test_credentials_give_each_caller_its_own_key_through_one_client(
    secured: Replica,
) -> None:
    """The gateway's case: one client, each call with its caller's key. Calls
    made together travel in group calls, never mixing two keys in one."""
    submit = await make_key(secured, [Scope.SUBMIT], name="writer")
    read = await make_key(secured, [Scope.READ], name="reader")

    async def as_caller(token: str | None, n: int) -> str:
        with credentials(token):
            try:
                return (await client.submit("echo", n)).id
            except errors.TreadleError as exc:
                return exc.code

    async with Client(secured.address, api_key=submit) as client:
        outcomes = await asyncio.gather(
            *(as_caller([submit, read, None][i % 3], i) for i in range(60))
        )
        # Outside any credentials() block: the client's own key.
        assert (await client.submit("echo")).id
    for i, outcome in enumerate(outcomes):
        expected = ["task id", "PERMISSION_DENIED", "UNAUTHENTICATED"][i % 3]
        if expected == "task id":
            assert len(outcome) == 36, (i, outcome)
        else:
            assert outcome == expected, (i, outcome)


async def test_a_revoked_key_is_refused_within_the_cache_time(secured: Replica) -> None:
    authenticator = secured.parts.authenticator
    assert authenticator is not None
    authenticator.cache_seconds = 0.2
    store = key_store(secured)
    made = await store.create("default", "short-lived", [Scope.SUBMIT], actor=auth_operator())
    async with Client(secured.address, api_key=made.token) as client:
        await client.submit("echo")
        await store.revoke("default", made.key.id, actor=auth_operator())
        await asyncio.sleep(0.3)
        with pytest.raises(errors.Unauthenticated, match=r"\(short-lived\) was revoked at"):
            await client.submit("echo")


def auth_operator() -> Principal:
    return Principal("default", frozenset(Scope), key_name="cli:tests")


async def test_admin_changes_are_audited_and_read_over_list_audit_events(
    secured: Replica,
) -> None:
    admin = await make_key(secured, [Scope.ADMIN], name="ops")
    other = await make_key(secured, [Scope.ADMIN], tenant="acme", name="acme-ops")
    async with Client(secured.address, api_key=admin) as client:
        await client.pause_queue("default")
        await client.update_queue("default", max_concurrent=3)
        task = await client.submit("echo", delay_seconds=3600)
        await client.cancel(task.id)
        template = TaskSpec(name="echo", payload_json='{"password": "hunter2"}')
        await client.create_schedule("nightly", "0 3 * * *", template)
        with pytest.raises(errors.NotFound):
            await client.delete_schedule("no-such-schedule")  # failed: not recorded
        events, cursor = await client.audit_events()
        assert cursor is None
        got = [(e.action, e.target, e.key_name, e.tenant) for e in events]
        assert got[:5] == [
            ("CreateSchedule", "nightly", "ops", "default"),
            ("CancelTask", task.id, "ops", "default"),
            ("UpdateQueue", "default", "ops", "default"),
            ("PauseQueue", "default", "ops", "default"),
            ("CreateKey", events[4].target, "cli:tests", "default"),
        ]
        assert events[2].change == {"name": "default", "max_concurrent": 3}
        schedule_change = events[0].change
        assert schedule_change["schedule"]["cron"] == "0 3 * * *"
        assert "hunter2" not in str(schedule_change)
        assert "payload" not in schedule_change["schedule"]["task"]
        page, cursor = await client.audit_events(limit=2)
        assert [e.id for e in page] == [e.id for e in events[:2]] and cursor is not None
        rest, _ = await client.audit_events(limit=2, cursor=cursor)
        assert [e.id for e in rest] == [e.id for e in events[2:4]]
    # The caller's tenant only: acme's admin sees acme's events.
    async with Client(secured.address, api_key=other) as client:
        events, _ = await client.audit_events()
        assert [(e.action, e.tenant) for e in events] == [("CreateKey", "acme")]
        with pytest.raises(errors.InvalidArgument, match="page_token"):
            await client.audit_events(cursor="nope")


async def test_last_use_is_written_off_the_call_path_and_on_stop(
    database_url: str, schema: str
) -> None:
    async with authed_replica(database_url, schema) as replica:
        token = await make_key(replica, [Scope.SUBMIT])
        async with Client(replica.address, api_key=token) as client:
            await client.submit("echo")
        assert (await key_store(replica).list("default"))[0].last_used_at is None
    conn = await asyncpg.connect(database_url)
    try:
        used = await conn.fetchval(f'SELECT last_used_at FROM "{schema}".api_keys')
    finally:
        await conn.close()
    assert used is not None


async def test_with_auth_off_calls_are_anonymous_and_admin_changes_still_audited(
    client: Client,
) -> None:
    await client.pause_queue("default")
    events, _ = await client.audit_events()
    assert [(e.action, e.target, e.tenant, e.key_id, e.key_name) for e in events] == [
        ("PauseQueue", "default", "default", None, None)
    ]
