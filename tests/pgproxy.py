"""A TCP proxy in front of the test PostgreSQL, to take the database away and bring it back.

    async with PgProxy(database_url) as proxy:
        replica = Replica(settings, app, proxy.url)   # talks to PostgreSQL through the proxy
        await proxy.stop()     # connections drop, new ones are refused: "PostgreSQL is down"
        await proxy.start()    # same port again: "PostgreSQL is back"

It forwards to the host and port of `database_url`, or to its Unix socket
(`?host=/dir`, as the embedded server's URL has).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class PgProxy:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        socket_dir = query.pop("host", [None])[0]
        self._unix = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir else None
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        user = parts.username or "postgres"
        auth = f"{user}:{parts.password}@" if parts.password else f"{user}@"
        self.url = urlunsplit(
            (
                parts.scheme,
                f"{auth}127.0.0.1:{self.port}",
                parts.path,
                urlencode(query, doseq=True),
                "",
            )
        )
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> PgProxy:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._unix:
                up_reader, upstream = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, upstream = await asyncio.open_connection(*self._target)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except OSError:
            pass  # PostgreSQL itself is away: the client sees the connection drop
        finally:
            self._pipes.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.transport.abort()
