"""One scheduler replica: owns its pool, loops and server, starts and stops them in order.

Start: pool, migrations (safe with many replicas), NOTIFY listener, worker
loops, gRPC server. Stop (SIGTERM/SIGINT, `stop()`, or any loop dying): stop
claiming and report NOT_SERVING, drain running handlers up to the drain
timeout and hand the rest back, stop the server, cancel and await every
background task, close the listener and the pool. `stop()` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

import asyncpg
from opentelemetry import trace

from treadle.common import errors, telemetry
from treadle.common.exposition import MetricsServer
from treadle.scheduler import postgres
from treadle.scheduler.core import Scheduler
from treadle.scheduler.health import HealthReporter
from treadle.scheduler.metrics import SchedulerMetrics
from treadle.scheduler.registry import Registry
from treadle.scheduler.rpc import Server
from treadle.scheduler.schedule_store import ScheduleStore
from treadle.scheduler.schedules import Schedules
from treadle.scheduler.settings import Settings
from treadle.scheduler.stats import Stats, StatsRecorder
from treadle.scheduler.stats_store import StatsStore
from treadle.scheduler.store import Store
from treadle.scheduler.watch import Watchers, changes_channel
from treadle.scheduler.worker import Worker, _Backoff

log = logging.getLogger("treadle.scheduler")

#: How long `stop()` waits for the cancelled background loops, and how many
#: times it cancels one that is still running (see `_cancel_loops`).
CANCEL_WAIT = 5.0
CANCEL_ROUNDS = 3

try:
    VERSION = metadata.version("treadle")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "unknown"


class Replica:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        database_url: str,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        #: None: the global provider if one is set up, else tracing is off.
        self.tracer_provider = telemetry.active_provider(tracer_provider)
        self.database_url = database_url
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_requested = asyncio.Event()
        self._stopped: asyncio.Future[None] | None = None
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self.server: Server | None = None
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None
        self.watchers: Watchers | None = None
        self._store: Store | None = None
        self._channels: dict[str, Callable[[Any, int, str, str], None]] = {}
        #: As of the last ping; grpc.health.v1 says NOT_SERVING while False.
        self.database_ok = True
        self.schedules: Schedules | None = None
        #: This replica's statistics counters (`flush()` them to read exact figures).
        self.stats: StatsRecorder | None = None
        #: This replica's Prometheus metrics, served on TREADLE_METRICS_PORT once started.
        self.metrics = SchedulerMetrics(registry)
        self.metrics_server: MetricsServer | None = None

    @property
    def address(self) -> str:
        assert self.server is not None, "not started"
        return self.server.address

    @property
    def loops(self) -> dict[str, bool]:
        """Each background loop by name, and whether it still runs."""
        return {task.get_name(): not task.done() for task in self._tasks}

    async def start(self) -> None:
        s = self.settings
        try:
            self._pool = await postgres.create_pool(
                self.database_url,
                s.database_schema,
                s.database_pool_size,
                "treadle-scheduler",
                connect=self.metrics.connect,
            )
            async with postgres.acquired(self._pool) as conn:
                await postgres.migrate(conn, s.database_schema)
            store = Store(self._pool, s.database_schema)
            stats_store = StatsStore(self._pool, s.database_schema)
            self.stats = StatsRecorder(stats_store, s)
            tracer = telemetry.get_tracer("treadle.scheduler", self.tracer_provider)
            self.scheduler = Scheduler(
                store, self.registry, s, tracer=tracer, stats=self.stats, metrics=self.metrics
            )
            self.schedules = Schedules(ScheduleStore(self._pool), self.scheduler, s)
            self.worker = Worker(
                store, self.registry, s, tracer=tracer, stats=self.stats, metrics=self.metrics
            )
            self.watchers = Watchers(self.scheduler.get, s.poll_interval)
            self._channels = {
                store.channel: self.worker.on_ready,
                store.cancel_channel: self.worker.on_cancel,
                changes_channel(s.database_schema): self._tasks_changed,
            }
            listener_lost = await self._connect_listener()
            await store.ensure_queues(sorted({h.queue for h in self.registry.handlers}))
            await store.register_replica(s.replica_id, socket.gethostname(), os.getpid(), VERSION)
            self._store = store
            self._spawn("listen", self._listen(listener_lost))
            self._spawn("health", self._watch_database())
            self._spawn("heartbeat", self.worker.heartbeat())
            self._spawn("reap", self.worker.reap())
            self._spawn("dispatch", self.worker.dispatch())
            self._spawn("promote", self.worker.promote())
            self._spawn("flush", self.worker.flush())
            self._spawn("prune", self.worker.prune())
            self._spawn("cron", self.schedules.run())
            self._spawn("stats", self.stats.run())
            self.metrics.attach(self)
            self._spawn("metrics", self.metrics.run(store, s.metrics_interval, s.lease_seconds))
            self.metrics_server = MetricsServer(
                self.metrics.registry, s.grpc_host, s.metrics_port, "TREADLE_METRICS_PORT"
            )
            await self.metrics_server.start()
            self.server = Server(
                self.scheduler,
                s.grpc_host,
                s.grpc_port,
                self.schedules,
                self.watchers,
                stats=Stats(stats_store, s),
                interceptors=[
                    *telemetry.server_interceptors(self.tracer_provider),
                    self.metrics.grpc.interceptor(),
                ],
                health_report=HealthReporter(self).report,
            )
            await self.server.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "replica %s serving gRPC on %s; tasks: %s",
            s.replica_id,
            self.server.address,
            ", ".join(self.registry.names),
        )

    async def _connect_listener(self) -> asyncio.Event:
        """Open the LISTEN connection; the event is set when it is lost."""
        lost = asyncio.Event()
        conn = await postgres.connect(
            self.database_url, self.settings.database_schema, "treadle-listener"
        )
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel, callback in self._channels.items():
                await conn.add_listener(channel, callback)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn
        return lost

    async def _listen(self, lost: asyncio.Event) -> None:
        """Keep the LISTEN connection up: when it drops, reconnect with backoff,
        then wake every loop, since notifications may have been missed."""
        backoff = _Backoff()
        while True:
            await lost.wait()
            log.warning("lost the LISTEN connection; reconnecting")
            if self._listener is not None:
                self._listener.terminate()
                self._listener = None
            while True:
                try:
                    lost = await self._connect_listener()
                except errors.TreadleError as exc:
                    await backoff.failed("LISTEN connection", exc)
                    continue
                break
            backoff.ok()
            log.info("LISTEN connection back")
            if self.worker is not None:
                self.worker.wake()
                self.worker.wake_promoter()

    async def _watch_database(self) -> None:
        """Ping the database every second: while it does not answer, report
        NOT_SERVING on grpc.health.v1 (the loops back off and retry on their
        own); when it answers again, report SERVING and wake the loops."""
        interval = min(1.0, self.settings.poll_interval)
        while True:
            await asyncio.sleep(interval)
            try:
                assert self._store is not None
                async with asyncio.timeout(max(2.0, interval)):
                    await self._store.ping()
                ok = True
            except (errors.TreadleError, TimeoutError) as exc:
                ok = False
                if self.database_ok:
                    log.error("database unreachable (%s): NOT_SERVING until it returns", exc)
            if ok and not self.database_ok:
                log.info("database reachable again: SERVING")
                if self.worker is not None:
                    self.worker.wake()
                    self.worker.wake_promoter()
            if ok != self.database_ok and self.server is not None:
                await self.server.set_serving(ok)
            self.database_ok = ok

    async def _cancel_loops(self) -> None:
        """Cancel every background loop and wait for each to end, logging what
        ended with an error. A loop that outlives its cancellation (it lost it,
        which it must not) is logged with its stack and cancelled again, so a
        stop never hangs on it; one that survives that too is left behind."""
        pending = set(self._tasks)
        for attempt in range(1, CANCEL_ROUNDS + 1):
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
            if not pending:
                break
            for task in pending:
                stack = io.StringIO()
                task.print_stack(file=stack)
                log.error(
                    "background loop %s did not end when cancelled (round %d of %d):\n%s",
                    task.get_name(),
                    attempt,
                    CANCEL_ROUNDS,
                    stack.getvalue(),
                )
        for task in self._tasks - pending:
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                log.error("background loop %s ended with %r", task.get_name(), exc)

    def _tasks_changed(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """LISTEN callback: `payload` names the tasks whose state changed."""
        if self.watchers is not None:
            self.watchers.notify(payload)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"treadle-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop_requested.is_set():
            return
        exc = task.exception()
        log.error(
            "background loop %s died (%r); stopping the replica", task.get_name(), exc, exc_info=exc
        )
        self._stop_requested.set()

    def request_stop(self) -> None:
        """Ask `serve()` to stop (from a signal handler); a second call forces a fast drain."""
        if self._stop_requested.is_set() and self.worker is not None:
            log.warning("second stop request: cutting the drain short")
            self.worker.force()
        self._stop_requested.set()

    async def serve(self) -> None:
        """Run until `request_stop()` or a loop dies, then stop."""
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop everything in order; safe to call twice, and concurrently."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        self._stop_requested.set()
        try:
            await self._stop()
        finally:
            self._stopped.set_result(None)

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.set_serving(False)
        if self.worker is not None:
            await self.worker.drain(self.settings.drain_timeout)
        if self.watchers is not None:
            self.watchers.close()  # open watches end now, not after the grace period
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        names = sorted(t.get_name() for t in self._tasks)
        await self._cancel_loops()
        if names:
            log.info(
                "cancelled and awaited %d background task(s): %s", len(names), ", ".join(names)
            )
        self._tasks.clear()
        if self._store is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._store.stop_replica(self.settings.replica_id)
            except (errors.TreadleError, TimeoutError) as exc:
                log.warning("could not mark the replica stopped: %s", exc)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._listener.close()
        if self._pool is not None:
            try:
                async with asyncio.timeout(5.0):
                    await self._pool.close()
            except (TimeoutError, Exception):
                self._pool.terminate()
        log.info("replica %s stopped", self.settings.replica_id)
