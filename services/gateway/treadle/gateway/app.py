"""The Starlette application: `/graphql` (with GraphiQL and WebSocket subscriptions),
`/health`, `/health/detailed` and `/metrics`.

`lifespan` owns the one scheduler client, opened at start-up and closed at
shut-down, and hands it to requests through the lifespan state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TypedDict

from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from treadle.client import Client
from treadle.common import telemetry
from treadle.gateway import health, tracing
from treadle.gateway.metrics import GatewayMetrics
from treadle.gateway.schema import Context, create_schema
from treadle.gateway.settings import Settings


class State(TypedDict):
    client: Client


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view, handing each operation the lifespan's scheduler client."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        client: Client = request.state.client
        return Context(client=client, request=request, response=response)


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
            interceptors=[
                *telemetry.client_interceptors(provider),
                *metrics.grpc.interceptors(),
            ],
        ) as client:
            yield {"client": client}

    graphql = GraphQLApp(
        create_schema(tracer_provider=provider, extensions=[metrics.extension()]),
        graphql_ide="graphiql",
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
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
        ],
        lifespan=lifespan,
        middleware=[metrics.middleware(), *tracing.middleware(provider)],
    )
