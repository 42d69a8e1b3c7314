"""The Starlette application: `/graphql` (with GraphiQL and WebSocket subscriptions),
`/health`, `/health/detailed`, `/metrics`, and the web console at `/` (`console`).

`lifespan` owns the one scheduler client, opened at start-up and closed at
shut-down, and hands it to requests through the lifespan state.

A request the GraphQL view cannot read (a body that is not UTF-8, not standard
JSON, or not a JSON object; an unsupported content type) is a 400 with a
GraphQL-shaped error (`extensions.code: INVALID_ARGUMENT`), never a 500; a
body over `max_request_bytes` is a 413 (`limits`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypedDict

from cross_web import HTTPException
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from treadle.client import Client
from treadle.common import access, telemetry, wire
from treadle.common.errors import InvalidArgument
from treadle.gateway import console, cors, health, limits, tracing
from treadle.gateway.metrics import GatewayMetrics
from treadle.gateway.schema import Context, create_schema
from treadle.gateway.settings import Settings


class State(TypedDict):
    client: Client


def caller_client(request: Request | WebSocket, header: str | None = None) -> Client:
    """The lifespan's scheduler client, sending the caller's own API key (from
    `header`, else the request's `authorization` header) and no other: the
    scheduler decides what the caller may do, never the gateway."""
    client: Client = request.state.client
    return client.with_api_key(access.key_of(header or request.headers.get(access.HEADER)))


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view, handing each operation the lifespan's scheduler
    client with the caller's credential: the HTTP request's `authorization`
    header, or for a WebSocket the `authorization` of its `connection_init`
    payload (else of the upgrade request)."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(client=caller_client(request), request=request, response=response)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        given = params.get(access.HEADER) or params.get(access.HEADER.capitalize())
        if given is not None:
            if not isinstance(given, str):
                raise ConnectionRejectionError({"message": "authorization must be a string"})
            context.client = caller_client(context.request, given)
        return await super().on_ws_connect(context)

    async def render_graphql_ide(self, request: Request) -> Response:
        return console.graphiql(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            response = Response(
                limits.error_body(exc.reason),
                status_code=exc.status_code,
                media_type="application/json",
            )
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """Standard JSON in UTF-8 only (not the UTF-16/32 `json.loads` would guess)."""
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise HTTPException(400, f"the request body is not UTF-8: {exc.reason}") from None
        try:
            # What the body carries (payloads, names) is checked field by field
            # when used, so the error names the field (and the scheduler's
            # payload depth setting applies); here only that it is JSON.
            return wire.parse_json(text, field="the request body")
        except InvalidArgument as exc:
            raise HTTPException(400, exc.message) from None

    def parse_json(self, data: str | bytes) -> Any:
        """A request body (bytes) must be an object (or a list: a batch); the
        query string's `variables` and `extensions` (text) are checked later."""
        value = self.decode_json(data)
        if isinstance(data, bytes) and not isinstance(value, (dict, list)):
            raise HTTPException(400, "the request body must be a JSON object")
        return value


def create_app(
    settings: Settings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: GatewayMetrics | None = None,
) -> Starlette:
    """The app; with tracing on (`tracer_provider`, else the global provider when
    set up), each request is a span that continues the caller's trace, and the
    scheduler calls carry it on."""
    provider = telemetry.active_provider(tracer_provider)
    #: Prometheus metrics of this app, served at /metrics.
    metrics = metrics or GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with Client(
            settings.scheduler_address,
            timeout=settings.rpc_timeout,
            tls=settings.scheduler_tls,
            interceptors=[
                *telemetry.client_interceptors(provider),
                *metrics.grpc.interceptors(),
            ],
            max_request_bytes=settings.grpc_max_request_bytes,
            max_response_bytes=settings.grpc_max_response_bytes,
        ) as client:
            yield {"client": client}

    introspection = settings.introspection()
    allowed = settings.allowed_origins()
    graphql = GraphQLApp(
        create_schema(
            tracer_provider=provider,
            extensions=[metrics.extension()],
            introspection=introspection,
            max_cost=settings.graphql_max_cost,
        ),
        # GraphiQL needs introspection; without it GET /graphql in a browser is a 404.
        graphql_ide="graphiql" if introspection else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        # A WebSocket opened by a page of another origin is refused (403) unless listed.
        allowed_origins=allowed,
    )
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/health", health.health, methods=["GET"]),
            Route(
                "/health/detailed",
                health.detailed(settings.health_timeout, metrics),
                methods=["GET"],
            ),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            *console.routes(),
        ],
        lifespan=lifespan,
        middleware=[
            metrics.middleware(),
            *tracing.middleware(provider),
            *cors.middleware(allowed),
            # Innermost: a refused body is still measured and traced.
            Middleware(limits.BodyLimit, limit=settings.max_request_bytes),
        ],
    )
