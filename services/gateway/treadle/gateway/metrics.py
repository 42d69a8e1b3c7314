"""The gateway's Prometheus metrics: one `GatewayMetrics` per app, in its own registry,
served at `GET /metrics` on the gateway's HTTP port.

- HTTP: a pure ASGI middleware counts requests by method, route and status,
  their duration, request and response sizes, requests in flight, and
  WebSocket connections and messages;
- GraphQL: a Strawberry extension counts operations by type, name and
  outcome (ok, error, invalid), their duration, errors by code, operations in
  flight and subscriptions open;
- gRPC: the scheduler client's calls, through `grpc_metrics.ClientMetrics`
  interceptors.

Labels stay bounded: `route` is one of the gateway's routes (else "other"),
`operation_name` a GraphQL name of at most 64 characters among the first
MAX_OPERATION_NAMES seen ("anonymous" without a name, else "other").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from graphql import GraphQLError
from prometheus_client import Counter, Gauge, Histogram
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError

from treadle.common import exposition, grpc_metrics
from treadle.gateway.errors import is_unexpected, treadle_error

OTHER = "other"
ROUTES = frozenset({"/graphql", "/health", "/health/detailed", "/metrics"})
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
MAX_OPERATION_NAMES = 200
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,63}$")

#: Seconds per request or operation.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Seconds a subscription stays open.
SUBSCRIPTION_BUCKETS = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
#: Bytes of a request or response body.
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


class GatewayMetrics:
    """Every metric family of one gateway app, in `self.registry`."""

    def __init__(self) -> None:
        self.registry = r = exposition.new_registry("gateway")
        self.grpc = grpc_metrics.ClientMetrics(r)
        self._operation_names: set[str] = set()
        self._routes: dict[tuple[str, str], _RouteSeries] = {}
        #: Label children of the GraphQL families, bounded as their labels are.
        self._operation_series: dict[tuple[str, str, str], Any] = {}
        self._duration_series: dict[tuple[str, str], Any] = {}
        mr = ("method", "route")
        # -- HTTP ------------------------------------------------------------------
        self.http_requests = Counter(
            "treadle_http_requests_total",
            "HTTP requests the gateway answered, by method, route and status code.",
            (*mr, "status"),
            registry=r,
        )
        self.http_duration = Histogram(
            "treadle_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response.",
            mr,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.http_request_size = Histogram(
            "treadle_http_request_size_bytes",
            "Bytes of request bodies.",
            mr,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.http_response_size = Histogram(
            "treadle_http_response_size_bytes",
            "Bytes of response bodies.",
            mr,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "treadle_http_requests_in_flight",
            "HTTP requests being answered now.",
            ("route",),
            registry=r,
        )
        self.ws_connections = Counter(
            "treadle_websocket_connections_total",
            "WebSocket connections opened (GraphQL subscriptions use them).",
            registry=r,
        )
        self.ws_open = Gauge(
            "treadle_websocket_connections_open",
            "WebSocket connections open now.",
            registry=r,
        )
        self.ws_received = Counter(
            "treadle_websocket_messages_received_total",
            "WebSocket messages received from clients.",
            registry=r,
        )
        self.ws_sent = Counter(
            "treadle_websocket_messages_sent_total",
            "WebSocket messages sent to clients.",
            registry=r,
        )
        # -- GraphQL ---------------------------------------------------------------
        op = ("operation_type", "operation_name")
        self.operations = Counter(
            "treadle_graphql_operations_total",
            "GraphQL operations, by type, name and outcome: ok; error (it ran, with errors); "
            "invalid (refused before running: syntax, validation, limits).",
            (*op, "outcome"),
            registry=r,
        )
        self.operation_duration = Histogram(
            "treadle_graphql_operation_duration_seconds",
            "Seconds a query or mutation took, parsing and validation included.",
            op,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.graphql_errors = Counter(
            "treadle_graphql_errors_total",
            "Errors in GraphQL responses, by operation and code (INVALID_ARGUMENT, NOT_FOUND, "
            "UNAVAILABLE, INTERNAL, GRAPHQL_VALIDATION_FAILED, ...).",
            ("operation_name", "code"),
            registry=r,
        )
        self.operations_in_flight = Gauge(
            "treadle_graphql_operations_in_flight",
            "GraphQL operations running now (an open subscription counts until it ends).",
            registry=r,
        )
        self.subscriptions_open = Gauge(
            "treadle_graphql_subscriptions_open",
            "GraphQL subscriptions open now.",
            registry=r,
        )
        self.subscription_duration = Histogram(
            "treadle_graphql_subscription_duration_seconds",
            "Seconds a GraphQL subscription stayed open.",
            buckets=SUBSCRIPTION_BUCKETS,
            registry=r,
        )
        # -- health ----------------------------------------------------------------
        self.health_checks = Counter(
            "treadle_health_checks_total",
            "GET /health/detailed answers, by overall status (ok, degraded, down).",
            ("status",),
            registry=r,
        )

    def middleware(self) -> Middleware:
        """The ASGI middleware that measures every request; put it outermost."""
        return Middleware(HttpMetrics, metrics=self)

    def extension(self) -> Callable[[], SchemaExtension]:
        """A factory of the Strawberry extension that measures each operation."""
        return lambda: GraphQLMetrics(self)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics."""
        return Response(exposition.render(self.registry), media_type=exposition.CONTENT_TYPE)

    def route_series(self, method: str, route: str) -> _RouteSeries:
        """The series of one method and route, looked up once (label lookups are slow)."""
        series = self._routes.get((method, route))
        if series is None:
            series = self._routes[method, route] = _RouteSeries(self, method, route)
        return series

    def operation_series(self, kind: str, name: str, outcome: str) -> Any:
        """The operations counter's child for these labels, looked up once
        (prometheus_client's `labels()` costs several µs a call)."""
        key = (kind, name, outcome)
        child = self._operation_series.get(key)
        if child is None:
            child = self._operation_series[key] = self.operations.labels(kind, name, outcome)
        return child

    def duration_series(self, kind: str, name: str) -> Any:
        """The operation duration histogram's child for these labels, looked up once."""
        key = (kind, name)
        child = self._duration_series.get(key)
        if child is None:
            child = self._duration_series[key] = self.operation_duration.labels(kind, name)
        return child

    def operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name in self._operation_names:
            return name
        if _NAME.match(name) and len(self._operation_names) < MAX_OPERATION_NAMES:
            self._operation_names.add(name)
            return name
        return OTHER


class _RouteSeries:
    def __init__(self, m: GatewayMetrics, method: str, route: str) -> None:
        self.in_flight = m.http_in_flight.labels(route)
        self.duration = m.http_duration.labels(method, route)
        self.request_size = m.http_request_size.labels(method, route)
        self.response_size = m.http_response_size.labels(method, route)
        self._requests = m.http_requests
        self._labels = (method, route)
        self._by_status: dict[int, Any] = {}

    def requests(self, status: int) -> Any:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        return child


class HttpMetrics:
    """Pure ASGI middleware: HTTP requests and WebSocket connections, measured."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = self.metrics
        route = scope["path"] if scope["path"] in ROUTES else OTHER
        method = scope["method"] if scope["method"] in METHODS else OTHER
        status = 500  # unless the app starts a response
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        series = m.route_series(method, route)
        series.in_flight.inc()
        began = time.perf_counter()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            series.in_flight.dec()
            series.requests(status).inc()
            series.duration.observe(time.perf_counter() - began)
            series.request_size.observe(received)
            series.response_size.observe(sent)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = self.metrics

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                m.ws_received.inc()
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                m.ws_sent.inc()
            await send(message)

        m.ws_connections.inc()
        m.ws_open.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            m.ws_open.dec()


def error_code(error: GraphQLError) -> str:
    """A bounded code for an error in a GraphQL response."""
    cause = treadle_error(error)
    if cause is not None:
        return cause.code
    if is_unexpected(error):
        return "INTERNAL"
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "GRAPHQL_ERROR"


class GraphQLMetrics(SchemaExtension):
    """Measures one operation; a new instance per operation (see `GatewayMetrics.extension`)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self._executed = False
        self._subscription = False
        #: Errors of every streamed result (subscriptions, operations over WebSocket).
        self._streamed: list[GraphQLError] | None = None

    def on_execute(self) -> Iterator[None]:
        self._executed = True
        if self._operation_type() == "subscription" and not self._subscription:
            self._subscription = True
            self.metrics.subscriptions_open.inc()
        yield

    def on_stream_result(self, result: Any) -> Iterator[None]:
        if self._streamed is None:
            self._streamed = []
        self._streamed.extend(getattr(result, "errors", None) or ())
        yield

    def on_operation(self) -> Iterator[None]:
        m = self.metrics
        m.operations_in_flight.inc()
        began = time.perf_counter()
        try:
            yield
        finally:
            m.operations_in_flight.dec()
            self._record(time.perf_counter() - began)

    def _operation_type(self) -> str:
        try:
            return self.execution_context.operation_type.value.lower()
        except Exception:  # no document: it did not parse
            return "unknown"

    def _record(self, seconds: float) -> None:
        m = self.metrics
        context = self.execution_context
        try:
            name = m.operation_label(context.operation_name)
        except Exception:  # no document to find the operation in
            name = OTHER
        kind = self._operation_type()
        result = context.result
        if self._streamed is not None:
            found = self._streamed
        elif result is not None:
            found = list(result.errors or ())
        else:
            found = list(context.pre_execution_errors or ())
        invalid = not self._executed or isinstance(result, PreExecutionError)
        outcome = "invalid" if invalid else "error" if found else "ok"
        m.operation_series(kind, name, outcome).inc()
        for error in found:
            m.graphql_errors.labels(name, error_code(error)).inc()
        if self._subscription:
            m.subscriptions_open.dec()
            m.subscription_duration.observe(seconds)
        else:
            m.duration_series(kind, name).observe(seconds)
