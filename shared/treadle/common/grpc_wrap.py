"""Server interceptors that wrap each method's handler once.

A grpc.aio server asks every interceptor for each call's handler, and a
method resolves to the same handler object every time; `MethodWrapper` makes
its wrapped handler on a method's first call (`wrap`) and hands that out from
then on, so a call pays one dictionary lookup, not a new handler.
`async_behavior` and `rewrapped` are for interceptors that wrap the behaviour
of a method that takes one request (unary and server-streaming methods).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

#: What a method handler runs for a call: (request, context) -> response or
#: async iterator of responses.
Behavior = Callable[..., Any]


class MethodWrapper(grpc.aio.ServerInterceptor):
    """Serves `wrap(handler, full_method)` for each method, made once."""

    def __init__(self) -> None:
        #: Each method's handler and its wrapped handler, made on its first call.
        self._made: dict[str, tuple[Any, Any]] = {}

    def wrap(self, handler: Any, full_method: str) -> Any:
        """The handler to serve for `handler` (None for an unknown method)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        made = self._made.get(method)
        if made is not None and made[0] is handler:
            return made[1]
        wrapped = self.wrap(handler, method)
        if handler is not None:
            self._made[method] = (handler, wrapped)
        return wrapped


def async_behavior(handler: Any) -> Behavior | None:
    """The coroutine (unary) or async generator (server-streaming) behaviour of
    a method that takes one request; None for anything else (client-streaming,
    synchronous)."""
    if handler is None or handler.request_streaming:
        return None
    behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
        return behavior  # type: ignore[no-any-return]
    return None


def rewrapped(
    handler: Any,
    behavior: Behavior,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Any:
    """A handler like `handler` (one request) running `behavior`, reading requests
    with `request_deserializer` (default: the handler's own)."""
    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
