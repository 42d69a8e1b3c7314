"""Prometheus exposition: a registry per component, and a small `/metrics` server.

Each scheduler replica and each gateway app owns its own `CollectorRegistry`
(several run in one process in tests and under `treadle up`), made by
`new_registry`; nothing registers in prometheus_client's global registry.

`MetricsServer` serves one registry at `GET /metrics` in the Prometheus text
format, on the caller's event loop: collectors that read live state (pool,
worker, loops) run on the loop that owns that state, never from a thread.

    server = MetricsServer(registry, "127.0.0.1", 9464)
    await server.start()        # raises Unavailable naming the address when it cannot bind
    ...
    await server.stop()         # closes the socket; safe to call twice
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from treadle.common.errors import Unavailable

log = logging.getLogger("treadle.metrics")

try:
    VERSION = metadata.version("treadle")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "unknown"

# `_created` series double every counter and histogram and say little that
# `process_start_time_seconds` does not.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Bytes of request head we read before giving up on a client.
_MAX_HEAD = 16 * 1024
#: Seconds a client may take to send its request.
_READ_TIMEOUT = 10.0


def new_registry(service: str) -> CollectorRegistry:
    """A registry with the process, platform and GC collectors and `treadle_build_info`."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Gauge(
        "treadle_build_info",
        "Always 1; the labels say which Treadle service and version this is.",
        ("service", "version"),
        registry=registry,
    )
    info.labels(service, VERSION).set(1)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (version 0.0.4)."""
    return generate_latest(registry)


#: The classic text format, which every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def bound_port(sockets: Sequence[socket.socket], server: str) -> int:
    """The port the first of a listening server's `sockets` is bound to (the
    real one when port 0 was asked for); `server` names it in the error."""
    if not sockets:
        raise RuntimeError(f"{server} is not listening")
    port: int = sockets[0].getsockname()[1]
    return port


class MetricsServer:
    """`GET /metrics` for one registry over HTTP/1.1, one request per connection."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str) -> None:
        self.registry = registry
        self.host = host
        self._port = port
        #: The environment variable that chose the port, named when it is taken.
        self.setting = setting
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0)."""
        return bound_port(self._server.sockets if self._server else (), "the metrics server")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._client, self.host, self._port, limit=_MAX_HEAD
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot serve metrics on {self.host}:{self._port} ({exc.strerror or exc}); "
                f"set {self.setting} to a free port, or 0 for any"
            ) from None
        log.info("serving Prometheus metrics on http://%s/metrics", self.address)

    async def stop(self) -> None:
        """Stop listening, end open scrapes, and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._answer(reader, writer)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"use GET\n", "text/plain"
        elif path == "/metrics":
            status, body, kind = "200 OK", render(self.registry), CONTENT_TYPE
        elif path == "/":
            status, body, kind = "200 OK", b"Treadle metrics: GET /metrics\n", "text/plain"
        else:
            status, body, kind = "404 Not Found", b"not found; try /metrics\n", "text/plain"
        headers = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(headers.encode("latin-1") + (body if method != "HEAD" else b""))
        await writer.drain()
