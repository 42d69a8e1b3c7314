"""The scheduler's settings: one frozen object, read once in `__main__`."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import uuid

from treadle.common import config
from treadle.common.errors import InvalidArgument

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass(frozen=True)
class Settings:
    #: PostgreSQL URL; empty means an embedded server (for `treadle up`).
    database_url: str | None = None
    #: The schema holding Treadle's tables; several installations can share a database.
    database_schema: str = "treadle"
    database_pool_size: int = 10
    #: Where an embedded PostgreSQL keeps its data.
    data_dir: str = ".treadle"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    #: Prometheus metrics at http://<grpc_host>:<metrics_port>/metrics; 0 picks a free port.
    metrics_port: int = 9464
    #: Seconds between the periodic counts behind the queue and database gauges.
    metrics_interval: float = 5.0
    #: The module whose `@task` handlers this replica runs.
    app: str | None = None
    #: Handlers running at once on this replica (coroutines and sync together).
    concurrency: int = 100
    #: Threads running plain `def` handlers.
    executor_threads: int = 8
    max_payload_bytes: int = 1024 * 1024
    #: Seconds between claims when no NOTIFY wakes the dispatcher (a safety net).
    poll_interval: float = 1.0
    #: Seconds an outcome may wait to be written with others in one statement.
    flush_interval: float = 0.005
    #: A claimed task's lease; the replica's heartbeat renews it.
    lease_seconds: float = 30.0
    #: Seconds between heartbeats (and reaper rounds); well under the lease.
    heartbeat_interval: float = 5.0
    #: A task whose replica was lost more than this many times ends DEAD.
    max_reclaims: int = 3
    #: On SIGTERM, seconds to let running handlers finish before handing them back.
    drain_timeout: float = 30.0
    #: Finished tasks are deleted this many seconds after they finish (7 days).
    retention_seconds: float = 7 * 24 * 3600.0
    #: An idempotency key returns the existing task for this long (24 h).
    idempotency_retention_seconds: float = 24 * 3600.0
    #: Seconds between pruning rounds, and rows deleted per statement.
    prune_interval: float = 60.0
    prune_batch: int = 500
    #: Seconds between flushes of this replica's statistics counters.
    stats_flush_interval: float = 2.0
    #: Error patterns are kept this long (30 days); hourly totals are kept for good.
    stats_error_retention_seconds: float = 30 * 24 * 3600.0
    #: systemHealth thresholds: ready tasks in a queue; failed / finished attempts
    #: of a queue over the alert window (once it has at least alert_min_attempts);
    #: p95 processing seconds over the window; seconds the oldest ready task waited.
    alert_backlog: int = 10_000
    alert_error_rate: float = 0.1
    alert_min_attempts: int = 10
    alert_slow_seconds: float = 60.0
    alert_oldest_seconds: float = 300.0
    #: The sliding window of the error-rate and slow-processing alerts (at most 3600).
    alert_window_seconds: float = 300.0
    replica_id: str = dataclasses.field(default_factory=_replica_id)

    def validate(self) -> None:
        if not _SCHEMA.match(self.database_schema):
            raise InvalidArgument(
                "TREADLE_DATABASE_SCHEMA must be a lower-case identifier, "
                f"got {self.database_schema!r}"
            )
        positives = (
            "database_pool_size", "concurrency", "executor_threads", "max_payload_bytes",
            "poll_interval", "flush_interval", "lease_seconds", "retention_seconds",
            "idempotency_retention_seconds", "prune_interval", "prune_batch",
            "heartbeat_interval",
        )  # fmt: skip
        for name in positives:
            config.positive(name, getattr(self, name))
        if self.heartbeat_interval >= self.lease_seconds:
            raise InvalidArgument(
                f"TREADLE_HEARTBEAT_INTERVAL ({self.heartbeat_interval}) must be shorter than "
                f"TREADLE_LEASE_SECONDS ({self.lease_seconds})"
            )
        if self.max_reclaims < 0:
            raise InvalidArgument("TREADLE_MAX_RECLAIMS must not be negative")
        if self.drain_timeout < 0:
            raise InvalidArgument("TREADLE_DRAIN_TIMEOUT must not be negative")
        if not 0 <= self.grpc_port < 65536:
            raise InvalidArgument(f"TREADLE_GRPC_PORT out of range: {self.grpc_port}")
        if not 0 <= self.metrics_port < 65536:
            raise InvalidArgument(f"TREADLE_METRICS_PORT out of range: {self.metrics_port}")
        config.positive("metrics_interval", self.metrics_interval)
        stats_positives = (
            "stats_flush_interval", "stats_error_retention_seconds", "alert_backlog",
            "alert_error_rate", "alert_min_attempts", "alert_slow_seconds",
            "alert_oldest_seconds", "alert_window_seconds",
        )  # fmt: skip
        for name in stats_positives:
            config.positive(name, getattr(self, name))
        if self.alert_window_seconds > 3600:
            raise InvalidArgument("TREADLE_ALERT_WINDOW_SECONDS must be at most 3600")
