"""The scheduler's settings: one frozen object, read once in `__main__`.

Each field carries its own checks and, where the command line has one, its
flag (`config.setting`); `validate` holds the rules that join two fields.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid

from treadle.common import config, grpc_limits, tls
from treadle.common.config import at_most, not_empty, not_negative, port, positive, setting
from treadle.common.errors import InvalidArgument
from treadle.common.submission import check_name

_SCHEMA = config.matches(r"^[a-z_][a-z0-9_]{0,40}$", "a lower-case identifier")
#: Durations in seconds: at most 100 years, so that no time they are added to
#: (or taken from) overflows Python's datetime or PostgreSQL's interval.
_SECONDS = at_most(100 * 365 * 24 * 3600)


def _queue_list(name: str, value: str) -> None:
    """A comma-separated list of queue names, none blank."""
    for queue in value.split(","):
        try:
            check_name(queue.strip(), "queue")
        except InvalidArgument as exc:
            raise InvalidArgument(f"{name}={value!r}: {exc.message}") from None


def _replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass(frozen=True)
class Settings:
    #: PostgreSQL URL; empty means an embedded server (for `treadle up`).
    database_url: str | None = setting(
        None, flags="database", help="PostgreSQL URL ({env}); omit for an embedded PostgreSQL"
    )
    #: The schema holding Treadle's tables; several installations can share a database.
    database_schema: str = setting(
        "treadle",
        checks=(_SCHEMA,),
        flags="database",
        help="schema for Treadle's tables ({env}, default {default})",
    )
    database_pool_size: int = setting(10, checks=(positive,))
    #: Where an embedded PostgreSQL keeps its data.
    data_dir: str = setting(
        ".treadle",
        flags="database",
        help="embedded PostgreSQL data folder ({env}, default {default})",
    )
    #: Delete, at start, the schedules an earlier version of the app declared in
    #: code and this one no longer does (without it they are only reported).
    prune_schedules: bool = setting(
        False,
        flags="scheduler",
        help="at start, delete schedules declared in code that the app no longer declares; "
        "without it they are only reported ({env})",
    )
    #: The module whose `@task` handlers this replica runs: `module` or
    #: `module:attribute`, imported from the current folder first.
    app: str | None = setting(
        None,
        flags="scheduler",
        help="your @task handlers: MODULE or MODULE:ATTRIBUTE, "
        "imported from the current folder first ({env})",
    )
    #: The queues this replica claims from, comma-separated; None: every queue.
    queues: str | None = setting(
        None,
        checks=(_queue_list,),
        flags="scheduler",
        help="claim tasks only from these queues, comma-separated, such as email,reports "
        "({env}; default: every queue). Either way only tasks your --app registers are claimed",
    )
    grpc_host: str = setting(
        "127.0.0.1", flags="scheduler", help="gRPC listen host ({env}, default {default})"
    )
    grpc_port: int = setting(
        50051, checks=(port,), flags="scheduler", help="gRPC listen port ({env}, default {default})"
    )
    #: TLS on gRPC: this replica's certificate chain and private key (PEM files);
    #: with a client CA bundle, clients must present a certificate it signed.
    #: Unset: plaintext. The files are read again when they change (docs/security.md).
    tls_cert: str | None = setting(
        None,
        checks=(tls.certificates,),
        flags="tls",
        help="serve gRPC over TLS with this certificate chain, PEM; needs --tls-key ({env})",
    )
    tls_key: str | None = setting(
        None,
        checks=(tls.private_key,),
        flags="tls",
        help="the private key of --tls-cert, PEM, unencrypted ({env})",
    )
    tls_client_ca: str | None = setting(
        None,
        checks=(tls.certificates,),
        flags="tls",
        help="require client certificates signed by this CA bundle, PEM: mutual TLS ({env})",
    )
    #: The largest gRPC request this replica reads and response it sends (bytes),
    #: and the calls one connection may have open at once (`grpc_limits`).
    grpc_max_request_bytes: int = setting(
        grpc_limits.MAX_REQUEST_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )
    grpc_max_response_bytes: int = setting(
        grpc_limits.MAX_RESPONSE_BYTES, checks=(positive, at_most(grpc_limits.LARGEST))
    )
    grpc_max_concurrent_streams: int = setting(
        grpc_limits.MAX_CONCURRENT_STREAMS, checks=(positive, at_most(grpc_limits.LARGEST))
    )
    #: Prometheus metrics at http://<metrics_host>:<metrics_port>/metrics; 0 picks a free port.
    metrics_port: int = setting(
        9464,
        checks=(port,),
        flags="scheduler",
        help="Prometheus /metrics port ({env}, default {default}; 0: any free port)",
    )
    #: The address /metrics listens on; None: the gRPC host. The metrics are the
    #: operator's view of every tenant and ask for no key: bind them to a
    #: private address when gRPC is public.
    metrics_host: str | None = setting(
        None,
        checks=(not_empty,),
        flags="scheduler",
        help="address /metrics listens on ({env}, default: --grpc-host's)",
    )
    #: Seconds between the periodic counts behind the queue and database gauges.
    metrics_interval: float = setting(5.0, checks=(positive, _SECONDS))
    #: Handlers running at once on this replica (coroutines and sync together).
    concurrency: int = setting(
        100,
        checks=(positive,),
        flags="scheduler",
        help="handlers running at once ({env}, default {default})",
    )
    #: Threads running plain `def` handlers.
    executor_threads: int = setting(
        8,
        checks=(positive,),
        flags="scheduler",
        help="threads for plain def handlers ({env}, default {default})",
    )
    max_payload_bytes: int = setting(1024 * 1024, checks=(positive,))
    #: How deep arrays and objects may nest in a payload or a handler's result.
    max_payload_depth: int = setting(64, checks=(positive, at_most(500)))
    #: Seconds between claims when no NOTIFY wakes the dispatcher (a safety net).
    poll_interval: float = setting(1.0, checks=(positive, _SECONDS))
    #: Seconds an outcome may wait to be written with others in one statement.
    flush_interval: float = setting(0.005, checks=(positive, _SECONDS))
    #: A claimed task's lease; the replica's heartbeat renews it.
    lease_seconds: float = setting(30.0, checks=(positive, _SECONDS))
    #: Seconds between heartbeats (and reaper rounds); well under the lease.
    heartbeat_interval: float = setting(5.0, checks=(positive, _SECONDS))
    #: A task whose replica was lost more than this many times ends DEAD.
    max_reclaims: int = setting(3, checks=(not_negative,))
    #: On SIGTERM, seconds to let running handlers finish before handing them back.
    drain_timeout: float = setting(
        30.0,
        checks=(not_negative, _SECONDS),
        flags="scheduler",
        help="seconds to let running tasks finish on stop ({env}, default {default})",
    )
    #: Finished tasks are deleted this many seconds after they finish (7 days).
    retention_seconds: float = setting(7 * 24 * 3600.0, checks=(positive, _SECONDS))
    #: An idempotency key returns the existing task for this long (24 h).
    idempotency_retention_seconds: float = setting(24 * 3600.0, checks=(positive, _SECONDS))
    #: Seconds between pruning rounds, and rows deleted per statement.
    prune_interval: float = setting(60.0, checks=(positive, _SECONDS))
    prune_batch: int = setting(500, checks=(positive,))
    #: Seconds between flushes of this replica's statistics counters.
    stats_flush_interval: float = setting(2.0, checks=(positive, _SECONDS))
    #: Error patterns are kept this long (30 days); hourly totals are kept for good.
    stats_error_retention_seconds: float = setting(30 * 24 * 3600.0, checks=(positive, _SECONDS))
    #: systemHealth thresholds: ready tasks in a queue; failed / finished attempts
    #: of a queue over the alert window (once it has at least alert_min_attempts);
    #: p95 processing seconds over the window; seconds the oldest ready task waited.
    alert_backlog: int = setting(10_000, checks=(positive,))
    alert_error_rate: float = setting(0.1, checks=(positive,))
    alert_min_attempts: int = setting(10, checks=(positive,))
    alert_slow_seconds: float = setting(60.0, checks=(positive, _SECONDS))
    alert_oldest_seconds: float = setting(300.0, checks=(positive, _SECONDS))
    #: The sliding window of the error-rate and slow-processing alerts (at most 3600).
    alert_window_seconds: float = setting(300.0, checks=(positive, at_most(3600)))
    #: Submit rate limits and quotas: each tenant's default (0: no limit);
    #: `treadle tenants limits set` overrides them per tenant. Submits per
    #: second, and the largest burst (0: a second's worth, at least 1)...
    tenant_submit_rate: float = setting(0.0, checks=(not_negative,))
    tenant_submit_burst: int = setting(0, checks=(not_negative, at_most(2**31 - 1)))
    #: ...the same for each API key, within its tenant's...
    key_submit_rate: float = setting(0.0, checks=(not_negative,))
    key_submit_burst: int = setting(0, checks=(not_negative, at_most(2**31 - 1)))
    #: ...and the most QUEUED + SCHEDULED + RETRYING tasks a tenant may have.
    tenant_max_queued: int = setting(0, checks=(not_negative,))
    replica_id: str = dataclasses.field(default_factory=_replica_id)

    @property
    def claimed_queues(self) -> tuple[str, ...] | None:
        """The queues of `queues` (None: every queue)."""
        if self.queues is None:
            return None
        return tuple(dict.fromkeys(q.strip() for q in self.queues.split(",")))

    def validate(self) -> None:
        """The rules that join two fields (each field's own are on the field)."""
        tls.key_pair("TREADLE_TLS_CERT", self.tls_cert, "TREADLE_TLS_KEY", self.tls_key)
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise InvalidArgument(
                "TREADLE_TLS_CLIENT_CA needs TREADLE_TLS_CERT and TREADLE_TLS_KEY: "
                "client certificates are checked over TLS only"
            )
        if self.heartbeat_interval >= self.lease_seconds:
            raise InvalidArgument(
                f"TREADLE_HEARTBEAT_INTERVAL ({self.heartbeat_interval}) must be shorter than "
                f"TREADLE_LEASE_SECONDS ({self.lease_seconds})"
            )
