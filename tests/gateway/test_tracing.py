"""One trace from a GraphQL request to the handler's execution, across replicas.

Each "process" (the gateway, replica A, replica B) gets its own tracer
provider, as it would in production, all exporting to one in-memory exporter;
the resource's `service.instance.id` says which process made a span. Nothing
is shared between them but the database and the W3C context on the wire.

The task must run on replica B, not on A that accepted it: its queue is
paused through the API before the submission, A is stopped after it, and B
starts and resumes the queue. Nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support import make_settings
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from treadle.client import Client, TaskState
from treadle.common import logs, telemetry
from treadle.common.tasks import DEFAULT_QUEUE
from treadle.gateway import tracing
from treadle.gateway.app import create_app
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.registry import Handler, Registry, load_app
from treadle.scheduler.supervisor import Replica

SUBMIT = "/treadle.api.v1.SchedulerService/SubmitTask"
SUBMIT_MUTATION = """
mutation Submit($input: SubmitTaskInput!) { submitTask(input: $input) { id state } }
"""
handler_log = logging.getLogger("tests.tracing.handler")


def logging_handler(payload: Any) -> str:
    """Sync, so it runs in the thread pool: its log line must still carry the span."""
    handler_log.info("handling %s in %s", payload, threading.current_thread().name)
    return "logged"


REGISTRY = Registry([*load_app("taskapp").handlers, Handler("log", DEFAULT_QUEUE, logging_handler)])


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def providers(exporter: InMemorySpanExporter) -> Iterator[dict[str, TracerProvider]]:
    """One provider per process, named by `service.instance.id`."""
    made: dict[str, TracerProvider] = {}
    for service, instance in (
        ("client", "front-end"),
        ("treadle-gateway", "gateway"),
        ("treadle-scheduler", "replica-a"),
        ("treadle-scheduler", "replica-b"),
    ):
        provider = TracerProvider(
            resource=Resource({SERVICE_NAME: service, SERVICE_INSTANCE_ID: instance})
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        made[instance] = provider
    yield made
    for provider in made.values():
        provider.shutdown()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON log lines of the handler's logger, through Treadle's handler."""
    out = io.StringIO()
    handler = logs.handler(json_lines=True, stream=out)
    handler_log.addHandler(handler)
    handler_log.setLevel(logging.INFO)
    yield out
    handler_log.removeHandler(handler)


async def start_replica(
    database_url: str, schema: str, instance: str, providers: dict[str, TracerProvider]
) -> Replica:
    replica = Replica(
        make_settings(schema, replica_id=instance),
        REGISTRY,
        database_url,
        tracer_provider=providers[instance],
    )
    await replica.start()
    return replica


async def start_gateway(address: str, providers: dict[str, TracerProvider]) -> Gateway:
    settings = GatewaySettings(http_port=0, scheduler_address=address, rpc_timeout=5.0)
    gateway = Gateway(settings, create_app(settings, tracer_provider=providers["gateway"]))
    await gateway.start()
    return gateway


@pytest.fixture
async def replica_a(
    database_url: str, schema: str, providers: dict[str, TracerProvider]
) -> AsyncIterator[Replica]:
    replica = await start_replica(database_url, schema, "replica-a", providers)
    yield replica
    await replica.stop()


async def submit_traced(
    gateway: Gateway, providers: dict[str, TracerProvider], task: dict[str, Any]
) -> tuple[str, int]:
    """Submit through GraphQL inside a front end's span, whose context goes in
    the `traceparent` header; returns the task id and the trace id."""
    tracer = providers["front-end"].get_tracer("front-end")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with tracer.start_as_current_span("front end submits") as root:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            response = await http.post(
                "/graphql",
                json={"query": SUBMIT_MUTATION, "variables": {"input": task}},
                headers=headers,
            )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["submitTask"]["id"], root.get_span_context().trace_id


def instance(span: ReadableSpan) -> object:
    return span.resource.attributes.get(SERVICE_INSTANCE_ID)


def one(spans: Sequence[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind.name, instance(s)) for s in spans]
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def assert_continues(execution: ReadableSpan, submit_server: ReadableSpan) -> None:
    """The execution span is the submission's child, and links to it too."""
    submitted = submit_server.get_span_context()
    assert parent_id(execution) == submitted.span_id
    assert execution.parent is not None and execution.parent.is_remote
    assert [link.context.span_id for link in execution.links] == [submitted.span_id]
    assert execution.links[0].context.trace_id == submitted.trace_id


async def test_one_trace_from_graphql_to_execution_on_another_replica(
    database_url: str,
    schema: str,
    replica_a: Replica,
    providers: dict[str, TracerProvider],
    exporter: InMemorySpanExporter,
    log_lines: io.StringIO,
) -> None:
    gateway = await start_gateway(replica_a.address, providers)
    try:
        async with Client(replica_a.address) as client:
            await client.pause_queue(DEFAULT_QUEUE)  # A accepts the task but cannot run it
        task_id, trace_id = await submit_traced(
            gateway, providers, {"name": "log", "payload": {"n": 1}}
        )
    finally:
        await gateway.stop()
    await replica_a.stop()

    replica_b = await start_replica(database_url, schema, "replica-b", providers)
    try:
        async with Client(replica_b.address) as client:
            await client.resume_queue(DEFAULT_QUEUE)
            done = await client.wait(task_id, timeout=10)
    finally:
        await replica_b.stop()
    assert done.state is TaskState.SUCCEEDED

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    request = one(spans, "POST /graphql", SpanKind.SERVER)
    resolver = one(spans, "GraphQL Resolving: submitTask", SpanKind.INTERNAL)
    client_call = one(spans, SUBMIT, SpanKind.CLIENT)
    server_call = one(spans, SUBMIT, SpanKind.SERVER)
    insert = one(spans, "INSERT tasks", SpanKind.CLIENT)
    execution = one(spans, "treadle.task log", SpanKind.CONSUMER)

    # Who made each span: the gateway, the replica that accepted, the one that ran it.
    assert {instance(s) for s in (request, resolver, client_call)} == {"gateway"}
    assert {instance(s) for s in (server_call, insert)} == {"replica-a"}
    assert instance(execution) == "replica-b"

    # The chain of parents, across HTTP, gRPC and the database.
    front_end = one(spans, "front end submits", SpanKind.INTERNAL)
    assert parent_id(request) == front_end.context.span_id
    assert parent_id(server_call) == client_call.context.span_id
    assert server_call.parent is not None and server_call.parent.is_remote
    assert parent_id(insert) == server_call.context.span_id
    assert insert.attributes is not None
    assert insert.attributes["db.system.name"] == "postgresql"
    assert_continues(execution, server_call)
    assert execution.attributes == {
        "treadle.task.id": task_id,
        "treadle.task.name": "log",
        "treadle.task.attempt": 1,
        "treadle.task.max_attempts": 1,
        "treadle.task.queue": DEFAULT_QUEUE,
        "treadle.task.outcome": "SUCCEEDED",
    }
    assert execution.status.status_code is StatusCode.UNSET
    # Resolver spans leave input objects (payloads) out.
    assert resolver.attributes is not None
    assert not any(k.startswith("graphql.param.") for k in resolver.attributes)

    # The handler's log line, written in a handler thread, names the execution span.
    (line,) = [json.loads(raw) for raw in log_lines.getvalue().splitlines()]
    assert line["message"].startswith("handling {'n': 1} in treadle-handler")
    assert line["trace_id"] == trace.format_trace_id(trace_id)
    assert line["span_id"] == trace.format_span_id(execution.context.span_id)


async def test_each_attempt_is_a_span_in_the_submitters_trace(
    replica_a: Replica,
    providers: dict[str, TracerProvider],
    exporter: InMemorySpanExporter,
) -> None:
    gateway = await start_gateway(replica_a.address, providers)
    try:
        task = {
            "name": "flaky",
            "payload": {"key": uuid.uuid4().hex, "fail": 2},
            "maxAttempts": 3,
            "retry": {"baseSeconds": 0},
        }
        task_id, trace_id = await submit_traced(gateway, providers, task)
        async with Client(replica_a.address) as client:
            done = await client.wait(task_id, timeout=10)
    finally:
        await gateway.stop()
    assert done.state is TaskState.SUCCEEDED

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    server_call = one(spans, SUBMIT, SpanKind.SERVER)
    attempts = sorted(
        (s for s in spans if s.name == "treadle.task flaky"),
        key=lambda s: s.attributes["treadle.task.attempt"] if s.attributes else 0,
    )
    assert [s.attributes["treadle.task.attempt"] for s in attempts if s.attributes] == [1, 2, 3]
    for span in attempts:
        assert_continues(span, server_call)
    outcomes = [s.attributes["treadle.task.outcome"] for s in attempts if s.attributes]
    assert outcomes == ["RETRYING", "RETRYING", "SUCCEEDED"]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    failure = attempts[0].events[0]
    assert failure.name == "exception"
    assert failure.attributes is not None
    assert failure.attributes["exception.type"] == "RuntimeError"
    assert failure.attributes["exception.message"] == "flaky failure 1"


async def stored_context(replica: Replica, task_id: str) -> dict[str, str] | None:
    """The trace context stored with a task (scheduler-internal: no `Task` field)."""
    assert replica.parts.scheduler is not None
    raw = await replica.parts.scheduler.store.pool.fetchval(
        "SELECT trace_context FROM tasks WHERE id = $1", uuid.UUID(task_id)
    )
    return None if raw is None else dict(json.loads(raw))


async def test_the_submitters_context_is_stored_with_the_task(
    replica_a: Replica, providers: dict[str, TracerProvider], exporter: InMemorySpanExporter
) -> None:
    async with Client(
        replica_a.address, interceptors=telemetry.client_interceptors(providers["front-end"])
    ) as client:
        await client.pause_queue(DEFAULT_QUEUE)
        task = await client.submit("echo", 1)
    stored = await stored_context(replica_a, task.id)
    assert stored is not None
    server_call = one(exporter.get_finished_spans(), SUBMIT, SpanKind.SERVER)
    context = server_call.get_span_context()
    _, trace_hex, span_hex, _ = stored["traceparent"].split("-")
    assert (trace_hex, span_hex) == (
        trace.format_trace_id(context.trace_id),
        trace.format_span_id(context.span_id),
    )
    # What clients see carries no trace context.
    assert not hasattr(task, "trace_context")


async def test_tracing_off_installs_nothing(
    database_url: str, schema: str, exporter: InMemorySpanExporter
) -> None:
    """No provider given and none set globally: no interceptors, no spans, no context stored."""
    assert telemetry.active_provider() is None
    replica = Replica(make_settings(schema), REGISTRY, database_url)
    await replica.start()
    try:
        assert replica.tracer_provider is None
        assert replica.parts.scheduler is not None and replica.parts.scheduler.tracer is None
        assert replica.parts.worker is not None and replica.parts.worker.executor.tracer is None
        async with Client(replica.address) as client:
            task = await client.submit("echo", 1)
            await client.wait(task.id, timeout=10)
        assert await stored_context(replica, task.id) is None
    finally:
        await replica.stop()
    assert telemetry.server_interceptors() == []
    assert telemetry.client_interceptors() == []


async def test_subscriptions_work_traced(
    replica_a: Replica, providers: dict[str, TracerProvider], exporter: InMemorySpanExporter
) -> None:
    """A subscription over a traced WebSocket streams as usual; its watch is a
    gRPC client span in the connection's trace."""
    gateway = await start_gateway(replica_a.address, providers)
    try:
        async with Client(replica_a.address) as client:
            task = await client.submit("sleep", {"seconds": 0.2})
        url = gateway.url.replace("http://", "ws://", 1) + "/graphql"
        async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = "subscription($id: ID!) { taskUpdates(id: $id) { state } }"
            subscribe = {"query": query, "variables": {"id": task.id}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            states = []
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] == "next":
                states.append(message["payload"]["data"]["taskUpdates"]["state"])
            assert message["type"] == "complete", message
    finally:
        await gateway.stop()
    assert states[-1] == "SUCCEEDED"
    spans = exporter.get_finished_spans()
    watch = one(spans, "/treadle.api.v1.SchedulerService/WatchTask", SpanKind.CLIENT)
    connection = one(spans, "HTTP /graphql", SpanKind.SERVER)  # a WebSocket has no method
    assert watch.context.trace_id == connection.context.trace_id
    assert instance(watch) == "gateway"


async def test_no_span_holds_a_literal_written_in_an_operation(
    replica_a: Replica, providers: dict[str, TracerProvider], exporter: InMemorySpanExporter
) -> None:
    """A secret written as a literal in a mutation (POST) or a query (GET, in
    the URL) reaches no span of the gateway or the replica: not the operation's
    (which records a hash of the document without its literals), not the
    request's URL, not a resolver's arguments, not an event."""
    secret = f"hunter2-{uuid.uuid4().hex}"
    mutation = (
        'mutation Leak { submitTask(input: {name: "echo", idempotencyKey: "SECRET", '
        'payload: {password: "SECRET", pin: 1234}}) { id } }'
    ).replace("SECRET", secret)
    query = '{ trends(queues: ["SECRET"]) { since } }'.replace("SECRET", secret)
    gateway = await start_gateway(replica_a.address, providers)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            submitted = (await http.post("/graphql", json={"query": mutation})).json()
            read = (await http.get("/graphql", params={"query": query})).json()
            async with Client(replica_a.address) as client:
                await client.wait(submitted["data"]["submitTask"]["id"], timeout=10)
    finally:
        await gateway.stop()
    assert "errors" not in submitted and "errors" not in read, (submitted, read)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans if secret in s.to_json()] == []
    assert "treadle.task echo" in {s.name for s in spans}  # the replica's spans were looked at
    operation = one(spans, "GraphQL Query: Leak", SpanKind.SERVER)
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.name"] == "Leak"
    assert operation.attributes["graphql.operation.type"] == "mutation"
    assert "query" not in operation.attributes
    # The hash is the document's without its literals: the same for other
    # literals (an input object's keys included), another for other fields.
    digest = operation.attributes["graphql.document.hash"]
    assert digest == tracing.document_hash(mutation.replace(secret, "x").replace("pin", "pan"))
    assert digest != tracing.document_hash(mutation.replace("{ id }", "{ id state }"))
    (get,) = [s for s in spans if s.name == "GET /graphql"]
    assert get.attributes is not None
    assert str(get.attributes["http.url"]).endswith("/graphql?query=REDACTED")


async def test_an_operation_that_does_not_parse_is_a_span_without_a_hash(
    replica_a: Replica, providers: dict[str, TracerProvider], exporter: InMemorySpanExporter
) -> None:
    gateway = await start_gateway(replica_a.address, providers)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            answer = await http.post("/graphql", json={"query": '{ task(id: "secret" '})
    finally:
        await gateway.stop()
    assert "Syntax Error" in answer.json()["errors"][0]["message"]
    operation = one(exporter.get_finished_spans(), "GraphQL Query", SpanKind.SERVER)
    assert operation.attributes == {"component": "graphql"}
