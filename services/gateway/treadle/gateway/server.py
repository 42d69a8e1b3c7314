"""The gateway's HTTP server: uvicorn serving the app, started and stopped from code.

    gateway = Gateway(settings)
    await gateway.start()          # listening; gateway.port is the bound port
    ...
    await gateway.stop()           # finishes open requests, runs the lifespan's shut-down

Uvicorn installs no signal handlers here; whoever owns the process does
(`__main__` with `loop.add_signal_handler`) and calls `stop_soon()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from treadle.common.errors import Unavailable
from treadle.common.exposition import bound_port
from treadle.gateway.app import create_app
from treadle.gateway.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn.Server that leaves signals to its owner and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class Gateway:
    """One gateway process's HTTP server. `stop()` is safe to call twice."""

    def __init__(self, settings: Settings, app: ASGIApp | None = None) -> None:
        self.settings = settings
        config = uvicorn.Config(
            app or create_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            lifespan="on",
            access_log=False,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=5,
            ws_max_size=settings.max_request_bytes,
            ssl_certfile=settings.http_tls_cert,
            ssl_keyfile=settings.http_tls_key,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when settings asked for port 0)."""
        sockets = self._server.servers[0].sockets if self._server.started else ()
        return bound_port(sockets, "the gateway")

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.https else "http"
        return f"{scheme}://{self.settings.http_host}:{self.port}"

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind or the lifespan fails to start;
            # when it could not bind, the lifespan has started and must still shut down.
            lifespan = getattr(self._server, "lifespan", None)
            if lifespan is not None and not lifespan.should_exit:
                await lifespan.shutdown()
            raise Unavailable(
                f"the gateway could not start on {self.settings.http_host}:"
                f"{self.settings.http_port} (see the log)"
            ) from None

    async def start(self) -> None:
        """Start serving; returns once the socket listens, raises `Unavailable` if it cannot."""
        if self._task is not None:
            raise RuntimeError("the gateway was started already")
        self._task = asyncio.create_task(self._serve(), name="treadle-gateway-http")
        listening = asyncio.create_task(self._server.listening.wait())
        try:
            await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        if self._task.done():
            await self._task  # raises why it stopped
            raise Unavailable("the gateway stopped while starting")

    def stop_soon(self) -> None:
        """Ask the server to stop (from a signal handler, say); `wait()` returns when it has."""
        self._server.should_exit = True

    async def wait(self) -> None:
        """Wait until the server has stopped."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop serving and wait until stopped; never raises what `wait()` would."""
        self.stop_soon()
        if self._task is not None:
            await asyncio.wait({self._task})
            if not self._task.cancelled():
                self._task.exception()  # reported by start() or wait(), not here
