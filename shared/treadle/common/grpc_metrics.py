"""Prometheus metrics for gRPC calls, as grpc.aio interceptors.

`ServerMetrics` counts the calls a grpc.aio server handles (the scheduler
passes `ServerMetrics(registry).interceptor()` to its server); `ClientMetrics`
the calls a channel makes (the gateway's client to the scheduler). Labels
follow go-grpc-prometheus: `grpc_service`, `grpc_method`, `grpc_type`
(unary, server_stream, client_stream, bidi_stream) and, once a call ended,
`grpc_code` (OK, NOT_FOUND, UNAVAILABLE, ...).

Only methods a server registers are counted, so an unknown method name sent by
a client adds no series.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from treadle.common.grpc_wrap import MethodWrapper

#: Seconds; spans fast reads (under a millisecond) to slow batch submits.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_LABELS = ("grpc_service", "grpc_method", "grpc_type")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
#: What a client interceptor calls to make the call itself.
_Continuation = Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]]


def split_method(full: str | bytes) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    if isinstance(full, bytes):
        full = full.decode()
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code_name(code: grpc.StatusCode | None) -> str:
    return "OK" if code is None else code.name


class _CallFamilies:
    """The families a gRPC server and a gRPC client both keep: calls started,
    calls finished by status code, call duration, calls open now."""

    def __init__(
        self, registry: CollectorRegistry, side: str, help_texts: tuple[str, str, str, str]
    ) -> None:
        started, handled, duration, in_flight = help_texts
        prefix = f"treadle_grpc_{side}"
        self.started = Counter(f"{prefix}_started_total", started, _LABELS, registry=registry)
        self.handled = Counter(
            f"{prefix}_handled_total", handled, (*_LABELS, "grpc_code"), registry=registry
        )
        self.duration = Histogram(
            f"{prefix}_handling_seconds",
            duration,
            _LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{prefix}_calls_in_flight",
            in_flight,
            ("grpc_service", "grpc_method"),
            registry=registry,
        )


class ServerMetrics(_CallFamilies):
    """The metric families of a gRPC server, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            registry,
            "server",
            (
                "gRPC calls the server started.",
                "gRPC calls the server finished, by status code.",
                "Seconds from the start of a gRPC call to its end (whole stream for streams).",
                "gRPC calls the server is handling now.",
            ),
        )
        self.received = Counter(
            "treadle_grpc_server_msg_received_total",
            "Request messages the server received.",
            _LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "treadle_grpc_server_msg_sent_total",
            "Response messages the server sent.",
            _LABELS,
            registry=registry,
        )
        self._methods: dict[tuple[str, str, str], _Method] = {}

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _ServerInterceptor(self)


class _Method:
    """The series of one method, looked up once (label lookups are the slow part)."""

    def __init__(self, m: ServerMetrics, service: str, method: str, kind: str) -> None:
        labels = (service, method, kind)
        self.labels = labels
        self.started = m.started.labels(*labels)
        self.received = m.received.labels(*labels)
        self.sent = m.sent.labels(*labels)
        self.duration = m.duration.labels(*labels)
        self.in_flight = m.in_flight.labels(service, method)
        self._handled = m.handled
        self._by_code: dict[str, Any] = {}

    def handled(self, code: str) -> Any:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._handled.labels(*self.labels, code)
        return child


class _Call:
    """One server call being measured."""

    def __init__(self, method: _Method) -> None:
        self.method = method
        self.began = 0.0

    def start(self, requests: int) -> None:
        self.began = time.perf_counter()
        self.method.started.inc()
        if requests:
            self.method.received.inc(requests)
        self.method.in_flight.inc()

    def end(self, context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> None:
        if isinstance(error, asyncio.CancelledError):
            code = "CANCELLED"
        elif error is not None and context.code() is None:
            code = "UNKNOWN"  # an exception grpc turns into UNKNOWN
        else:
            code = _code_name(context.code())
        m = self.method
        m.in_flight.dec()
        m.handled(code).inc()
        m.duration.observe(time.perf_counter() - self.began)


class _ServerInterceptor(MethodWrapper):
    """Measures each method's calls (its measured handler is made once)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap(self, handler: Any, full_method: str) -> Any:
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED, we add no series
        return self._measured(handler, full_method)

    def _measured(
        self, handler: grpc.RpcMethodHandler[_Req, _Resp], full_method: str
    ) -> grpc.RpcMethodHandler[_Req, _Resp]:
        service, method = split_method(full_method)
        methods = self.metrics._methods

        def call(kind: str) -> _Call:
            found = methods.get((service, method, kind))
            if found is None:
                found = methods[service, method, kind] = _Method(
                    self.metrics, service, method, kind
                )
            return _Call(found)

        for attr, make, wrap, kind in _HANDLERS:
            behaviour = getattr(handler, attr)
            if behaviour is not None:
                made: grpc.RpcMethodHandler[_Req, _Resp] = make(
                    wrap(behaviour, call, kind),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return made
        return handler


Behavior = Callable[..., Any]
#: The kinds of call that bring one request.
_SINGLE_REQUEST = frozenset({"unary", "server_stream"})


def _unary(behavior: Behavior, call: Callable[[str], _Call], kind: str) -> Behavior:
    """Wrap a behavior that returns one response (unary or client-streaming)."""
    return _awaited(behavior, call, kind, counts_response=True)


def _streaming(behavior: Behavior, call: Callable[[str], _Call], kind: str) -> Behavior:
    """Wrap a behavior that streams responses: an async generator, or a
    coroutine that writes with `context.write` (grpc_health's Watch)."""
    if not inspect.isasyncgenfunction(behavior):
        return _awaited(behavior, call, kind, counts_response=False)

    async def measured_gen(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        c = call(kind)
        c.start(1 if kind in _SINGLE_REQUEST else 0)
        sent = c.method.sent
        error: BaseException | None = None
        try:
            # Closing this stream closes the method's own at once.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    sent.inc()
                    yield response
        except GeneratorExit:
            error = asyncio.CancelledError()  # closed early: the client went away
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            c.end(context, error)

    return measured_gen


def _awaited(
    behavior: Behavior, call: Callable[[str], _Call], kind: str, counts_response: bool
) -> Behavior:
    """Wrap a coroutine behavior; `counts_response`: its result is the one response."""

    async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        c = call(kind)
        c.start(1 if kind in _SINGLE_REQUEST else 0)
        error: BaseException | None = None
        try:
            result = await behavior(request, context)
            if counts_response:
                c.method.sent.inc()
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            c.end(context, error)

    return measured


class ClientMetrics(_CallFamilies):
    """The metric families of a gRPC client, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            registry,
            "client",
            (
                "gRPC calls the client started.",
                "gRPC calls the client saw finish, by status code.",
                "Seconds from the start of a gRPC call to its status (whole stream for streams).",
                "gRPC calls the client has open now.",
            ),
        )
        self._pending: set[asyncio.Task[None]] = set()

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for `grpc.aio` channels (`treadle.client.Client(interceptors=...)`)."""
        return [_UnaryClientInterceptor(self), _StreamClientInterceptor(self)]

    def _begin(self, details: grpc.aio.ClientCallDetails, kind: str) -> _ClientCall:
        service, method = split_method(details.method)
        self.started.labels(service, method, kind).inc()
        self.in_flight.labels(service, method).inc()
        return _ClientCall(self, (service, method, kind), time.perf_counter())

    def _watch(self, call: grpc.aio.Call, measured: _ClientCall) -> None:
        """Record a streaming call's status once it ends (its done callback cannot await)."""

        async def finish() -> None:
            measured.end(await call.code())

        def done(_: object) -> None:
            task = asyncio.get_running_loop().create_task(finish())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)


class _ClientCall:
    def __init__(self, metrics: ClientMetrics, labels: tuple[str, str, str], began: float) -> None:
        self.metrics = metrics
        self.labels = labels
        self.began = began
        self.ended = False

    def end(self, code: grpc.StatusCode | None) -> None:
        if self.ended:
            return
        self.ended = True
        m = self.metrics
        m.in_flight.labels(*self.labels[:2]).dec()
        m.handled.labels(*self.labels, _code_name(code)).inc()
        m.duration.labels(*self.labels).observe(time.perf_counter() - self.began)

    def failed(self, exc: BaseException) -> None:
        """End with the status the call failed with: gRPC's, CANCELLED, or UNKNOWN."""
        if isinstance(exc, grpc.aio.AioRpcError):
            self.end(exc.code())
        elif isinstance(exc, asyncio.CancelledError):
            self.end(grpc.StatusCode.CANCELLED)
        else:
            self.end(grpc.StatusCode.UNKNOWN)


class _Measuring:
    """A client interceptor that records the calls it sees in `metrics`."""

    #: Server-streaming calls are recorded when their stream ends, unary ones at once.
    streaming = False

    def __init__(self, metrics: ClientMetrics) -> None:
        self.metrics = metrics

    async def _measure(
        self, continuation: _Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Start the call; a unary one is recorded when it ends, before this returns,
        a streaming one from its done callback (`ClientMetrics._watch`)."""
        measured = self.metrics._begin(details, "server_stream" if self.streaming else "unary")
        try:
            call = await continuation(details, request)
            if not self.streaming:
                measured.end(await call.code())
        except BaseException as exc:
            measured.failed(exc)
            raise
        if self.streaming:
            self.metrics._watch(call, measured)
        return call


class _UnaryClientInterceptor(_Measuring, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: _Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._measure(continuation, details, request)


class _StreamClientInterceptor(_Measuring, grpc.aio.UnaryStreamClientInterceptor):
    streaming = True

    async def intercept_unary_stream(
        self, continuation: _Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._measure(continuation, details, request)


#: Each kind of method handler: its behaviour's attribute, how grpc makes one,
#: how we wrap the behaviour, and the `kind` label.
_HANDLERS: tuple[tuple[str, Callable[..., Any], Callable[..., Behavior], str], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _unary, "unary"),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _streaming, "server_stream"),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _unary, "client_stream"),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _streaming, "bidi_stream"),
)
