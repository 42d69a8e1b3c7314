"""The gateway's spans, installed only when tracing is on.

- One server span per HTTP request or WebSocket connection (OpenTelemetry's
  ASGI middleware), continuing the caller's trace from its `traceparent`
  header; `/health` and `/metrics` are left out.
- Under it, Strawberry's spans: the operation, parsing, validation and each
  resolver. The scheduler calls a resolver makes are gRPC client spans below
  the resolver's (see `treadle.common.telemetry.client_interceptors`).

No span holds a value written in the operation's text, where a caller may
have put a secret (`payload: {password: "…"}`):

- the operation span records `graphql.operation.name`, `graphql.operation.type`
  and `graphql.document.hash` (`document_hash`: the SHA-256 of the document
  with every literal value left out), never the document (Strawberry's
  extension records it whole as `query`);
- the request span's URL keeps the names of its query parameters, not their
  values (a `GET /graphql?query=…` carries the document there);
- resolver spans record scalar arguments only (ids, names, limits): input
  objects, which carry task payloads, are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import parse_qsl, urlencode

from graphql import (
    DocumentNode,
    FloatValueNode,
    GraphQLResolveInfo,
    IntValueNode,
    ListValueNode,
    Node,
    ObjectValueNode,
    StringValueNode,
    Visitor,
    parse,
    print_ast,
    visit,
)
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span, SpanKind
from starlette.middleware import Middleware
from starlette.types import Scope
from strawberry.extensions import LifecycleStep, SchemaExtension
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
            server_request_hook=without_query_values,
        )
    ]


#: The attributes that hold a request's URL or query string, in the old and
#: the stable HTTP conventions.
_URL_ATTRIBUTES = ("http.url", "url.full", "url.query")


def without_query_values(span: Span, scope: Scope) -> None:
    """Replace the values of the request's query parameters in its span's URL
    attributes by `REDACTED` (the middleware has set them already)."""
    raw = scope.get("query_string")
    attributes = getattr(span, "attributes", None)
    if not raw or attributes is None or not span.is_recording():
        return
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    query = urlencode([(name, "REDACTED") for name, _ in pairs])
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            redacted = query if key == "url.query" else f"{value.partition('?')[0]}?{query}"
            span.set_attribute(key, redacted)


def scalar_arguments(args: dict[str, Any], info: GraphQLResolveInfo[Any]) -> dict[str, Any]:
    """The resolver arguments a span records: scalars only, no input objects."""
    return {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool))}


class _Literals(Visitor):
    """Replaces each string, number, list and object written in a document
    (arguments, variable defaults) by an empty one."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> Node:
        return StringValueNode(value="")

    def enter_int_value(self, node: IntValueNode, *_args: Any) -> Node:
        return IntValueNode(value="0")

    def enter_float_value(self, node: FloatValueNode, *_args: Any) -> Node:
        return FloatValueNode(value="0")

    def enter_list_value(self, node: ListValueNode, *_args: Any) -> Node:
        return ListValueNode(values=())

    def enter_object_value(self, node: ObjectValueNode, *_args: Any) -> Node:
        return ObjectValueNode(fields=())


#: Documents hashed lately, by the SHA-256 of their text (not the text: a
#: document may be megabytes long), oldest first.
_HASHED: dict[bytes, str] = {}
_HASHED_MAX = 256


def document_hash(text: str, document: DocumentNode | None = None) -> str:
    """The SHA-256 (hex) of the document `text` (parsed: `document`) printed
    with every literal value left out: the same for operations that differ
    only in their literals, and no way to guess a literal from it. A document
    seen lately is not printed again."""
    key = hashlib.sha256(text.encode()).digest()
    found = _HASHED.get(key)
    if found is None:
        bare = visit(document or parse(text, no_location=True), _Literals())
        found = hashlib.sha256(print_ast(bare).encode()).hexdigest()
        if len(_HASHED) >= _HASHED_MAX:
            del _HASHED[next(iter(_HASHED))]
        _HASHED[key] = found
    return found


#: A GraphQL name: what an operation name must be to be recorded.
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,127}")


class OperationSpans(OpenTelemetryExtension):
    """Strawberry's spans, the operation's recording its name, type and
    `document_hash` instead of the document."""

    def on_operation(self) -> Generator[None, None, None]:
        span = self._tracer.start_span("GraphQL Query", kind=SpanKind.SERVER)
        span.set_attribute("component", "graphql")
        self._span_holder[LifecycleStep.OPERATION] = span
        try:
            yield
        finally:
            self._describe(span)
            span.end()

    def _describe(self, span: Span) -> None:
        context = self.execution_context
        if context.graphql_document is None:
            return  # it did not parse: nothing to tell but that
        name = context.operation_name
        if name and _NAME.fullmatch(name):
            span.set_attribute("graphql.operation.name", name)
            span.update_name(f"GraphQL Query: {name}")
        with contextlib.suppress(RuntimeError):  # no operation of that name
            span.set_attribute("graphql.operation.type", context.operation_type.value.lower())
        document = context.graphql_document
        span.set_attribute("graphql.document.hash", document_hash(context.query or "", document))


def extensions(provider: trace.TracerProvider | None) -> list[Callable[[], SchemaExtension]]:
    """Strawberry's operation and resolver spans; none when tracing is off."""
    if provider is None:
        return []

    def extension() -> SchemaExtension:
        return OperationSpans(tracer_provider=provider, arg_filter=scalar_arguments)

    return [extension]
