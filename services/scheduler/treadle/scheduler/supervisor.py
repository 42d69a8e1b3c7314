"""One scheduler replica: builds its parts, runs their loops, starts and stops them in order.

Start: pool, migrations (safe with many replicas), the parts (`Parts`), the
NOTIFY listener, the replica's registration, every part's loops (`loops`),
the metrics server, the gRPC server. Stop (SIGTERM/SIGINT, `stop()`, or any
loop dying): report NOT_SERVING, stop claiming and drain running handlers up
to the drain timeout, hand the rest back, end open watches, then close what
start opened, last opened first: the gRPC server, the metrics server, every
background loop (cancelled and awaited), the registration, the listener, the
pool. `stop()` is idempotent, and safe to call concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from importlib import metadata

from opentelemetry import trace

from treadle.common import errors, grpc_limits, telemetry, tls
from treadle.common.access import AccessSettings
from treadle.common.exposition import MetricsServer
from treadle.common.health import ExecutorHealth, PoolHealth
from treadle.scheduler import auth, postgres
from treadle.scheduler.audit import AuditLog
from treadle.scheduler.backlog import Backlog
from treadle.scheduler.core import Scheduler
from treadle.scheduler.events import Fanout
from treadle.scheduler.health import HealthReporter
from treadle.scheduler.keys import Authenticator, KeyStore
from treadle.scheduler.limits import Admission
from treadle.scheduler.limits_store import LimitsStore
from treadle.scheduler.listener import Listener
from treadle.scheduler.loops import Loop, Loops
from treadle.scheduler.metrics import SchedulerMetrics
from treadle.scheduler.principal import DEFAULT_TENANT
from treadle.scheduler.registry import Registry
from treadle.scheduler.rpc import Server
from treadle.scheduler.schedule_store import ScheduleStore
from treadle.scheduler.schedules import Schedules
from treadle.scheduler.settings import Settings
from treadle.scheduler.state import ReplicaState
from treadle.scheduler.stats import Stats, StatsRecorder
from treadle.scheduler.stats_store import StatsStore
from treadle.scheduler.store import Store
from treadle.scheduler.watch import Watchers
from treadle.scheduler.worker import Worker

log = logging.getLogger("treadle.scheduler")

#: Seconds the replica's registration may take to be marked stopped.
MARK_STOPPED_TIMEOUT = 2.0
#: Seconds the gRPC server gives open calls when it stops.
SERVER_GRACE = 1.0

try:
    VERSION = metadata.version("treadle")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "unknown"


class DatabaseWatch:
    """The `treadle-health` loop: ping the database every second; while it
    does not answer, report NOT_SERVING on grpc.health.v1 (the loops back off
    and retry on their own); when it answers again, report SERVING and call
    `back` (notifications may have been missed)."""

    def __init__(
        self,
        store: Store,
        poll_interval: float,
        serving: Callable[[bool], Awaitable[None]],
        back: Callable[[], None],
    ) -> None:
        self.store = store
        self.interval = min(1.0, poll_interval)
        self.serving = serving
        self.back = back
        #: As of the last ping.
        self.ok = True

    def loops(self) -> dict[str, Loop]:
        return {"health": self.run}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                async with asyncio.timeout(max(2.0, self.interval)):
                    await self.store.ping()
                ok = True
            except (errors.TreadleError, TimeoutError) as exc:
                ok = False
                if self.ok:
                    log.error("database unreachable (%s): NOT_SERVING until it returns", exc)
            if ok and not self.ok:
                log.info("database reachable again: SERVING")
                self.back()
            if ok != self.ok:
                await self.serving(ok)
            self.ok = ok


@dataclasses.dataclass(frozen=True)
class Parts:
    """What `start()` builds once the schema is migrated; it stays after `stop()`."""

    store: Store
    scheduler: Scheduler
    worker: Worker
    watchers: Watchers
    schedules: Schedules
    #: This replica's statistics counters (`flush()` them to read exact figures).
    recorder: StatsRecorder
    stats: Stats
    backlog: Backlog
    listener: Listener
    database: DatabaseWatch
    #: Submit rate limits and quotas (its loop counts quotas, reads limits).
    admission: Admission
    #: Serves `metrics` on TREADLE_METRICS_PORT once started.
    metrics_server: MetricsServer
    #: Checks each call's API key; None when authentication is off.
    authenticator: Authenticator | None
    audit_log: AuditLog


class Replica:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        database_url: str,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        access: AccessSettings | None = None,
    ) -> None:
        self.settings = settings
        #: Authentication (TREADLE_AUTH); None: off.
        self.access = access or AccessSettings()
        self.registry = registry
        #: None: the global provider if one is set up, else tracing is off.
        self.tracer_provider = telemetry.active_provider(tracer_provider)
        self.database_url = database_url
        self._stop_requested = asyncio.Event()
        self._stopped: asyncio.Future[None] | None = None
        #: The background loops; one that dies stops the replica.
        self.background = Loops(self._stop_requested)
        #: Closes what `start()` opened, last opened first.
        self._opened = contextlib.AsyncExitStack()
        self._parts: Parts | None = None
        self._server: Server | None = None
        #: This replica's Prometheus metrics, served on TREADLE_METRICS_PORT once started.
        self.metrics = SchedulerMetrics(registry, self.state)

    @property
    def parts(self) -> Parts:
        assert self._parts is not None, "not started"
        return self._parts

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        return self._server.address

    @property
    def metrics_server(self) -> MetricsServer | None:
        return self._parts.metrics_server if self._parts is not None else None

    @property
    def loops(self) -> dict[str, bool]:
        """Each background loop by name, and whether it still runs."""
        return self.background.alive

    def state(self) -> ReplicaState:
        """A snapshot of the replica's live figures (for /metrics and GetHealth)."""
        s = self.settings
        parts = self._parts
        if parts is None:
            return ReplicaState(
                replica_id=s.replica_id,
                started=False,
                serving=True,
                pool=PoolHealth(),
                executor=ExecutorHealth(),
                running=0,
                capacity=s.concurrency,
                loops=self.loops,
            )
        worker = parts.worker
        return ReplicaState(
            replica_id=s.replica_id,
            started=True,
            serving=parts.database.ok,
            pool=postgres.pool_health(parts.store.pool),
            executor=worker.executor.health(),
            running=worker.running,
            capacity=s.concurrency,
            loops=self.loops,
            claimed_total=worker.claimed_total,
            completed_total=worker.completed_total,
            stale_total=worker.stale_total,
            leases_extended_total=worker.leases_extended_total,
            leases_lost_total=worker.leases_lost_total,
            reclaimed_total=worker.reclaimed_total,
            fired_total=parts.schedules.fired_total,
            duplicates_total=parts.schedules.duplicates_total,
            backlog=parts.backlog.latest,
            loop_lag=parts.backlog.loop_lag,
        )

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "replica %s serving gRPC on %s; tasks: %s",
            self.settings.replica_id,
            self.address,
            ", ".join(self.registry.names),
        )

    async def _start(self) -> None:
        s = self.settings
        identity = self.tls_identity()  # before anything opens: a bad file stops the start
        pool = await postgres.create_pool(
            self.database_url,
            s.database_schema,
            s.database_pool_size,
            "treadle-scheduler",
            connect=postgres.ConnectHook(self.metrics).connect,
        )
        self._opened.push_async_callback(postgres.close_pool, pool)
        async with postgres.acquired(pool) as conn:
            await postgres.migrate(conn, s.database_schema)
        parts = self._parts = self._build(pool)
        await parts.admission.load()
        await parts.listener.connect()
        self._opened.push_async_callback(parts.listener.close)
        await parts.store.ensure_queues(
            DEFAULT_TENANT, sorted({h.queue for h in self.registry.handlers})
        )
        await parts.schedules.sync_code(self.registry.schedules, s.prune_schedules)
        await parts.store.register_replica(s.replica_id, socket.gethostname(), os.getpid(), VERSION)
        self._opened.push_async_callback(self._mark_stopped, parts.store)
        self._opened.push_async_callback(self.background.cancel)
        self.background.start(
            parts.listener,
            parts.database,
            parts.worker,
            parts.schedules,
            parts.recorder,
            parts.backlog,
            *([parts.authenticator] if parts.authenticator is not None else []),
            parts.admission,
        )
        await parts.metrics_server.start()
        self._opened.push_async_callback(parts.metrics_server.stop)
        self._server = Server(
            parts.scheduler,
            s.grpc_host,
            s.grpc_port,
            parts.schedules,
            parts.watchers,
            stats=parts.stats,
            interceptors=[
                *telemetry.server_interceptors(self.tracer_provider),
                self.metrics.grpc.interceptor(),
                auth.Interceptor(parts.authenticator, parts.audit_log),
            ],
            health_report=HealthReporter(parts.store, self.state, s.lease_seconds).report,
            credentials=identity.credentials() if identity is not None else None,
            options=grpc_limits.server_options(
                s.grpc_max_request_bytes, s.grpc_max_response_bytes, s.grpc_max_concurrent_streams
            ),
            audit_log=parts.audit_log,
            keys=KeyStore(parts.store.pool),
        )
        self._opened.push_async_callback(self._server.stop, SERVER_GRACE)
        await self._server.start()

    def tls_identity(self) -> tls.ServerIdentity | None:
        """The gRPC server's TLS files (None: plaintext), read now: a file that
        cannot be used stops the start, naming its setting."""
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return None
        return tls.ServerIdentity(s.tls_cert, s.tls_key, s.tls_client_ca)

    def _build(self, pool: postgres.Pool) -> Parts:
        """Every part, wired; nothing runs yet."""
        s = self.settings
        store = Store(pool, s.database_schema)
        stats_store = StatsStore(pool, s.database_schema)
        recorder = StatsRecorder(stats_store, s)
        events = Fanout(recorder, self.metrics)
        tracer = telemetry.get_tracer("treadle.scheduler", self.tracer_provider)
        admission = Admission(LimitsStore(pool), s)
        scheduler = Scheduler(
            store, self.registry, s, tracer=tracer, events=events, admission=admission
        )
        worker = Worker(store, self.registry, s, tracer=tracer, events=events)
        watchers = Watchers(scheduler.get, s.poll_interval)
        return Parts(
            store=store,
            scheduler=scheduler,
            worker=worker,
            watchers=watchers,
            schedules=Schedules(ScheduleStore(pool), scheduler),
            recorder=recorder,
            stats=Stats(stats_store, s),
            backlog=Backlog(store, s.metrics_interval, s.lease_seconds, self.metrics),
            listener=Listener(
                self.database_url,
                s.database_schema,
                on_ready=worker.on_ready,
                on_cancel=worker.cancel,
                on_changes=watchers.notify,
                on_reconnect=worker.catch_up,
            ),
            database=DatabaseWatch(store, s.poll_interval, self._set_serving, worker.catch_up),
            admission=admission,
            metrics_server=MetricsServer(
                self.metrics.registry,
                s.metrics_host or s.grpc_host,
                s.metrics_port,
                "TREADLE_METRICS_PORT",
            ),
            authenticator=Authenticator(KeyStore(pool)) if self.access.keys else None,
            audit_log=AuditLog(pool),
        )

    async def _set_serving(self, serving: bool) -> None:
        if self._server is not None:
            await self._server.set_serving(serving)

    async def _mark_stopped(self, store: Store) -> None:
        try:
            async with asyncio.timeout(MARK_STOPPED_TIMEOUT):
                await store.stop_replica(self.settings.replica_id)
        except (errors.TreadleError, TimeoutError) as exc:
            log.warning("could not mark the replica stopped: %s", exc)

    def request_stop(self) -> None:
        """Ask `serve()` to stop (from a signal handler); a second call forces a fast drain."""
        if self._stop_requested.is_set() and self._parts is not None:
            log.warning("second stop request: cutting the drain short")
            self._parts.worker.force()
        self._stop_requested.set()

    async def serve(self) -> None:
        """Run until `request_stop()` or a loop dies, then stop."""
        await self._stop_requested.wait()
        await self.stop()

    @property
    def stranded(self) -> list[str]:
        """After the stop: tasks whose sync handler still runs in its thread
        (not handed back; the process must exit for them to run elsewhere)."""
        return list(self._parts.worker.stranded) if self._parts is not None else []

    @property
    def died(self) -> list[str]:
        """The background loops that died (the replica stopped because of them)."""
        return list(self.background.died)

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
        await self._set_serving(False)
        if self._parts is not None:
            await self._parts.worker.drain(self.settings.drain_timeout)
            self._parts.watchers.close()  # open watches end now, not after the grace period
        await self._opened.aclose()
        log.info("replica %s stopped", self.settings.replica_id)
