"""`treadle` — run and use the Treadle task scheduler.

Every flag also has a `TREADLE_*` environment variable (the flag wins).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from treadle.common.errors import TreadleError

EPILOG = """\
examples:
  treadle up                                  # embedded PostgreSQL + scheduler + gateway
  treadle submit echo --payload '{"hi": 1}' --wait
  treadle get 4f6c0a52-...
  treadle schedule create nightly --cron '0 3 * * *' --task echo
  treadle schedule list
  treadle bench -n 10000                      # against a running scheduler

environment: TREADLE_DATABASE_URL (empty: embedded PostgreSQL in TREADLE_DATA_DIR),
TREADLE_DATABASE_SCHEMA, TREADLE_APP, TREADLE_GRPC_HOST/PORT, TREADLE_HTTP_HOST/PORT,
TREADLE_SCHEDULER_ADDRESS, TREADLE_CONCURRENCY, TREADLE_EXECUTOR_THREADS,
TREADLE_MAX_PAYLOAD_BYTES, TREADLE_DRAIN_TIMEOUT, ... (see docs/configuration.md)
"""


def _add_database(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("database")
    g.add_argument(
        "--database-url",
        help="PostgreSQL URL (TREADLE_DATABASE_URL); omit for an embedded PostgreSQL",
    )
    g.add_argument(
        "--database-schema",
        help="schema for Treadle's tables (TREADLE_DATABASE_SCHEMA, default treadle)",
    )
    g.add_argument(
        "--data-dir", help="embedded PostgreSQL data folder (TREADLE_DATA_DIR, default .treadle)"
    )


def _add_scheduler(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler")
    g.add_argument("--app", help="module with your @task handlers (TREADLE_APP)")
    g.add_argument("--grpc-host", help="gRPC listen host (TREADLE_GRPC_HOST, default 127.0.0.1)")
    g.add_argument(
        "--grpc-port", type=int, help="gRPC listen port (TREADLE_GRPC_PORT, default 50051)"
    )
    g.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (TREADLE_METRICS_PORT, default 9464; 0: any free port)",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        help="handlers running at once (TREADLE_CONCURRENCY, default 100)",
    )
    g.add_argument(
        "--executor-threads",
        type=int,
        help="threads for plain def handlers (TREADLE_EXECUTOR_THREADS, default 8)",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds to let running tasks finish on stop (TREADLE_DRAIN_TIMEOUT, default 30)",
    )


def _add_gateway(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gateway")
    g.add_argument("--http-host", help="HTTP listen host (TREADLE_HTTP_HOST, default 127.0.0.1)")
    g.add_argument(
        "--http-port", type=int, help="HTTP listen port (TREADLE_HTTP_PORT, default 8000)"
    )


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or JSON, with trace ids inside spans (TREADLE_LOG_FORMAT)",
    )


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        dest="scheduler_address",
        help="scheduler gRPC address (TREADLE_SCHEDULER_ADDRESS, default 127.0.0.1:50051)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="Treadle: a PostgreSQL-backed task scheduler with gRPC and GraphQL APIs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run scheduler and gateway together (embedded PostgreSQL "
        "unless TREADLE_DATABASE_URL is set)",
        description="Run a scheduler and a GraphQL gateway in one process. "
        "Without a database URL, start an embedded PostgreSQL whose data "
        "lives in --data-dir. Loads the bundled example app (echo, sleep, "
        "fib, fail, noop) unless --app is given. Ctrl-C stops everything.",
    )
    _add_database(up)
    _add_scheduler(up)
    _add_gateway(up)
    _add_logging(up)

    sched = sub.add_parser(
        "scheduler",
        help="run a scheduler replica (gRPC)",
        description="Run one scheduler replica: claims and runs the "
        "tasks your --app module registers, serves gRPC.",
    )
    _add_database(sched)
    _add_scheduler(sched)
    _add_logging(sched)

    gw = sub.add_parser(
        "gateway",
        help="run the GraphQL gateway (HTTP)",
        description="Serve GraphQL (POST /graphql), GraphiQL (GET /graphql) "
        "and /health, calling a scheduler over gRPC.",
    )
    _add_gateway(gw)
    _add_address(gw)
    _add_logging(gw)

    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply the schema migrations the database lacks. "
        "Safe to run while replicas start.",
    )
    _add_database(mig)

    submit = sub.add_parser(
        "submit", help="submit a task", description="Submit a task and print it as JSON."
    )
    submit.add_argument("name", help="registered task name, e.g. echo")
    submit.add_argument("--payload", default="null", help="payload as JSON (default null)")
    submit.add_argument("--queue", help="queue (default: the handler's queue)")
    submit.add_argument("--priority", type=int, default=0, help="-100..100, higher runs first")
    submit.add_argument("--run-at", help="ISO 8601 time with zone; run no earlier than this")
    submit.add_argument(
        "--max-attempts", type=int, help="attempts before DEAD (default: the queue's, 1)"
    )
    submit.add_argument("--idempotency-key", help="submit at most once per key and queue")
    submit.add_argument("--delay", type=float, help="seconds from now to run (not with --run-at)")
    submit.add_argument(
        "--attempt-timeout", type=float, help="seconds each attempt may run (default: the queue's)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the task to finish")
    submit.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds --wait waits for the task (default 60); "
        "not a limit on the handler: see --attempt-timeout",
    )
    _add_address(submit)

    get = sub.add_parser("get", help="print a task as JSON", description="Print a task as JSON.")
    get.add_argument("id", help="task id")
    _add_address(get)

    cancel = sub.add_parser(
        "cancel",
        help="cancel a task",
        description="Cancel a waiting task at once; a running one is cancelled on the replica "
        "running it. Prints the task as JSON.",
    )
    cancel.add_argument("id", help="task id")
    _add_address(cancel)

    retry = sub.add_parser(
        "retry",
        help="requeue a DEAD or CANCELLED task",
        description="Requeue a DEAD or CANCELLED task with fresh attempts. Prints it as JSON.",
    )
    retry.add_argument("id", help="task id")
    _add_address(retry)

    from treadle.cli import queues

    queues.add_parser(sub, _add_address)

    from treadle.cli import schedules

    schedules.add_parser(sub, _add_address)

    bench = sub.add_parser(
        "bench",
        help="measure submit rate, drain rate and latency",
        description="Submit N no-op tasks in batches to a running "
        "scheduler (one whose app registers `noop`, like `treadle up`'s "
        "example app) and report submit rate, drain rate and "
        "submit-to-start latency percentiles.",
    )
    bench.add_argument("-n", "--tasks", type=int, default=10_000, help="tasks (default 10000)")
    bench.add_argument(
        "--batch", type=int, default=500, help="tasks per SubmitTasks call (default 500)"
    )
    bench.add_argument("--name", default="noop", help="task name to submit (default noop)")
    bench.add_argument(
        "--delay",
        type=float,
        help="schedule the tasks this many seconds ahead and report their lateness "
        "(start minus run time); default: run at once",
    )
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_address(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The embedded PostgreSQL is started with fork+exec; gRPC's fork handlers
    # only log noise about it.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from treadle.cli import commands

    try:
        return commands.run(args, os.environ)
    except TreadleError as exc:
        print(f"treadle: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
