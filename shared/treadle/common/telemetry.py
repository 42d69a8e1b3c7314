"""OpenTelemetry tracing, configured by the standard `OTEL_*` variables.

Tracing is on when the environment asks for it, and then only:

- `OTEL_SDK_DISABLED=true`: off, whatever else is set;
- `OTEL_TRACES_EXPORTER`: comma-separated exporter names — `otlp`, `console`,
  or the entry-point name of any installed exporter; `none` means off;
- else `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: OTLP.

When nothing asks, nothing is installed: no provider, no gRPC interceptors,
no middleware, no spans, so tracing that is off costs nothing. Everything
else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
`OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`, `OTEL_PROPAGATORS`) is read by the SDK.

Components take an explicit `tracer_provider` (tests pass their own, one per
"process"); without one they use the global provider when one has been set
up, by `setup_tracing` or by an application that embeds them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from treadle.common.errors import InvalidArgument

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("treadle.telemetry")

#: The entry-point group under which OpenTelemetry exporters register.
EXPORTER_GROUP = "opentelemetry_traces_exporter"
_OTLP = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
#: gRPC services whose calls are not traced (probes and tooling).
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

#: A W3C trace context as a carrier: {"traceparent": ..., "tracestate": ...}.
Carrier = dict[str, str]


def requested_exporters(env: Mapping[str, str]) -> list[str]:
    """The exporter names the environment asks for; empty means tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    if not names or "none" in names:
        return []
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    resolved = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP:
                raise InvalidArgument(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; "
                    f"use one of {', '.join(_OTLP)}"
                )
            name = _OTLP[protocol]
        resolved.append(name)
    return resolved


def load_exporter(name: str) -> SpanExporter:
    """An instance of the installed exporter registered as `name`."""
    found = metadata.entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        installed = sorted(e.name for e in metadata.entry_points(group=EXPORTER_GROUP))
        hint = " (pip install opentelemetry-exporter-otlp-proto-http)" if "http" in name else ""
        raise InvalidArgument(
            f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed{hint}; "
            f"installed: {', '.join(installed) or 'none'}"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def build_provider(service_name: str, exporters: list[str]) -> TracerProvider:
    """An SDK provider exporting through `exporters` in batches.

    `service_name` names the service unless `OTEL_SERVICE_NAME` or
    `OTEL_RESOURCE_ATTRIBUTES` does.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(load_exporter(name)))
    return provider


def setup_tracing(
    service_name: str, env: Mapping[str, str] | None = None
) -> trace.TracerProvider | None:
    """Install tracing as the environment asks, once per process; None when off.

    A provider already set by the application (or `opentelemetry-instrument`)
    is used as it is.
    """
    existing = active_provider()
    if existing is not None:
        return existing
    exporters = requested_exporters(os.environ if env is None else env)
    if not exporters:
        return None
    provider = build_provider(service_name, exporters)
    trace.set_tracer_provider(provider)
    log.info("tracing on: service %s, exporting to %s", service_name, ", ".join(exporters))
    return provider


def active_provider(
    provider: trace.TracerProvider | None = None,
) -> trace.TracerProvider | None:
    """`provider`, else the global provider when one has been set; None: tracing is off."""
    if provider is not None:
        return provider
    current = trace.get_tracer_provider()
    if isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return current


def get_tracer(name: str, provider: trace.TracerProvider | None = None) -> trace.Tracer | None:
    """A tracer from the active provider; None when tracing is off."""
    active = active_provider(provider)
    return None if active is None else active.get_tracer(name)


def _untraced(details: Any) -> bool:
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    return not str(method).lstrip("/").startswith(UNTRACED_SERVICES)


def server_interceptors(
    provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """A server span per call (context taken from the caller's metadata); none when off."""
    active = active_provider(provider)
    if active is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=active, filter_=_untraced
    )
    return [interceptor]


def client_interceptors(
    provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """A client span per call, its context sent in the metadata; none when off."""
    active = active_provider(provider)
    if active is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=active, filter_=_untraced
    )
    return interceptors


def current_carrier() -> Carrier | None:
    """The current span's context as a W3C carrier; None outside a (sampled or not) span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: Carrier = {}
    propagate.inject(carrier)
    return carrier or None


def clean_carrier(received: Mapping[str, str]) -> Carrier | None:
    """A carrier received from a caller, parsed and written again: only what
    the propagator understands of it (a valid traceparent, its tracestate);
    None when it holds no valid context."""
    if not received:
        return None
    context = context_from(received)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    carrier: Carrier = {}
    propagate.inject(carrier, context=context)
    return carrier or None


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """The context a carrier holds; an empty one (a new trace) for None."""
    if not carrier:
        return otel_context.Context()
    return propagate.extract(dict(carrier), context=otel_context.Context())


#: A W3C traceparent: version-traceid-parentid-flags, lowercase hex.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
#: The traceparent in a carrier's JSON text (as stored with a task).
_TRACEPARENT_JSON = re.compile(r'"traceparent"\s*:\s*"([^"]*)"')


def carrier_ids(carrier: object) -> tuple[str, str] | None:
    """(trace_id, span_id) as hex of the span a stored W3C carrier names, given
    as a mapping or as its JSON text; None when it names none (a row written by
    hand may hold anything). Read without the propagator: a task read pays
    for it."""
    if isinstance(carrier, str):
        match = _TRACEPARENT_JSON.search(carrier)
        traceparent: object = match[1] if match else None
    elif isinstance(carrier, Mapping):
        traceparent = carrier.get("traceparent")
    else:
        return None
    if not isinstance(traceparent, str):
        return None
    parts = _TRACEPARENT.fullmatch(traceparent)
    if parts is None or parts[1] == "ff" or parts[2] == "0" * 32 or parts[3] == "0" * 16:
        return None
    return parts[2], parts[3]


def trace_id_of(carrier: object) -> str | None:
    """The trace id (32 hex digits) of a stored W3C carrier (`carrier_ids`)."""
    found = carrier_ids(carrier)
    return found[0] if found else None


def ids(span: trace.Span | None = None) -> tuple[str, str] | None:
    """(trace_id, span_id) of `span` (default: the current one) as hex; None outside a span."""
    span_context = (span or trace.get_current_span()).get_span_context()
    if not span_context.is_valid:
        return None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)
