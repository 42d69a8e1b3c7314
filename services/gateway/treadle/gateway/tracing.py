"""The gateway's spans, installed only when tracing is on.

- One server span per HTTP request or WebSocket connection (OpenTelemetry's
  ASGI middleware), continuing the caller's trace from its `traceparent`
  header; `/health` and `/metrics` are left out.
- Under it, Strawberry's spans: the operation, parsing, validation and each
  resolver. The scheduler calls a resolver makes are gRPC client spans below
  the resolver's (see `treadle.common.telemetry.client_interceptors`).

Resolver spans record scalar arguments only (ids, names, limits): input
objects, which carry task payloads, are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLResolveInfo
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from starlette.middleware import Middleware
from strawberry.extensions import SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension

#: Regular expressions (comma-separated) of URLs that get no span.
UNTRACED_URLS = r"//[^/]+/health,//[^/]+/metrics"


def middleware(provider: trace.TracerProvider | None) -> list[Middleware]:
    """The ASGI request span; nothing when tracing is off."""
    if provider is None:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return [
        Middleware(
            OpenTelemetryMiddleware,
            excluded_urls=UNTRACED_URLS,
            tracer_provider=provider,
            # Tracing only: HTTP metrics are the metrics module's business.
            meter_provider=NoOpMeterProvider(),
            exclude_spans=["receive", "send"],
        )
    ]


def scalar_arguments(args: dict[str, Any], info: GraphQLResolveInfo[Any]) -> dict[str, Any]:
    """The resolver arguments a span records: scalars only, no input objects."""
    return {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool))}


def extensions(provider: trace.TracerProvider | None) -> list[Callable[[], SchemaExtension]]:
    """Strawberry's operation and resolver spans; none when tracing is off."""
    if provider is None:
        return []

    def extension() -> SchemaExtension:
        return OpenTelemetryExtension(tracer_provider=provider, arg_filter=scalar_arguments)

    return [extension]
