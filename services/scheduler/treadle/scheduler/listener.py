"""The replica's one LISTEN connection, its reconnects, and every NOTIFY channel's name.

Three channels per schema (the triggers of `sql/migrations` spell the ready
and changes names too; the store sends on ready and cancel with these):

- `treadle_ready_<schema>`: tasks are ready ('ready'; 'keyed' for tasks with a
  concurrency key) or were scheduled ('due');
- `treadle_cancel_<schema>`: the id of a running task someone cancelled;
- `treadle_tasks_<schema>`: the ids, comma-separated, of tasks whose state changed.

`Listener` hands each payload to the callback of its channel. When the
connection drops it reconnects with backoff (the `treadle-listen` loop), then
calls `on_reconnect`, since notifications may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from treadle.common.errors import TreadleError
from treadle.scheduler import postgres
from treadle.scheduler.loops import Backoff, Loop

log = logging.getLogger("treadle.scheduler.listener")

#: Seconds `close()` waits for the connection to close.
CLOSE_TIMEOUT = 2.0


def ready_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that says tasks are ready ('ready', or
    'keyed' for tasks with a concurrency key) or scheduled ('due') in `schema`."""
    return f"treadle_ready_{schema}"


def cancel_channel(schema: str) -> str:
    """The channel on which a running task's id asks its replica to cancel it."""
    return f"treadle_cancel_{schema}"


def changes_channel(schema: str) -> str:
    """The channel naming the tasks whose state changed in `schema`."""
    return f"treadle_tasks_{schema}"


#: Takes a notification's payload.
Callback = Callable[[str], object]


class Listener:
    """LISTEN on the channels of one schema, and stay connected."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        *,
        on_ready: Callback,
        on_cancel: Callback,
        on_changes: Callback,
        on_reconnect: Callable[[], None],
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.callbacks = {
            ready_channel(schema): on_ready,
            cancel_channel(schema): on_cancel,
            changes_channel(schema): on_changes,
        }
        self.on_reconnect = on_reconnect
        self._conn: asyncpg.Connection | None = None
        #: Set when the current connection is lost.
        self._lost = asyncio.Event()

    def loops(self) -> dict[str, Loop]:
        return {"listen": self.run}

    async def connect(self) -> None:
        """Open the LISTEN connection (raises `Unavailable` when it cannot)."""
        lost = asyncio.Event()
        conn = await postgres.connect(self.database_url, self.schema, "treadle-listener")
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel, callback in self.callbacks.items():
                await conn.add_listener(channel, _payload_to(callback))
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._lost = conn, lost

    async def run(self) -> None:
        """Keep the LISTEN connection up: when it drops, reconnect with backoff,
        then call `on_reconnect`, since notifications may have been missed."""
        backoff = Backoff(log)
        while True:
            await self._lost.wait()
            log.warning("lost the LISTEN connection; reconnecting")
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            while True:
                try:
                    await self.connect()
                except TreadleError as exc:
                    await backoff.failed("LISTEN connection", exc)
                    continue
                break
            backoff.ok()
            log.info("LISTEN connection back")
            self.on_reconnect()

    async def close(self) -> None:
        """Close the connection (after the `listen` loop has been cancelled)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.close()


def _payload_to(callback: Callback) -> Callable[[object, int, str, str], None]:
    """An asyncpg listener callback that hands the payload to `callback`."""

    def listener(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return listener
