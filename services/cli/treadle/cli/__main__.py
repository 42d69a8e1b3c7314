"""`treadle` — run and use the Treadle task scheduler.

Every flag also has a `TREADLE_*` environment variable (the flag wins).

`treadle scheduler` parses with a parser that holds that command alone, and
runs it without `commands`: a replica imports neither the gateway nor the
client (start-up time). Every other command builds the whole parser, which
imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from treadle.common import config, process
from treadle.common.access import AccessSettings
from treadle.common.logs import LogSettings
from treadle.scheduler import __main__ as scheduler
from treadle.scheduler.settings import Settings as SchedulerSettings

EPILOG = """\
examples:
  treadle up                                  # embedded PostgreSQL + scheduler + gateway
  treadle submit echo --payload '{"hi": 1}' --wait
  treadle get 4f6c0a52-...
  treadle tasks --queue emails --state DEAD --since 1h   # a table; --json for scripts
  treadle task 4f6c0a52-...                   # every attempt's error and traceback
  treadle stats                               # every queue at a glance; treadle top: live
  treadle retry --dead --queue emails         # counts, asks, then retries in batches
  treadle purge --state SUCCEEDED --older-than 1d --yes
  treadle schedule create nightly --cron '0 3 * * *' --task echo
  treadle schedule list
  treadle keys create --tenant acme --scope submit,read --name ci-deploy
  treadle audit --tenant acme
  treadle tenants limits set acme --submit-rate 100 --max-queued 100000
  treadle bench -n 10000                      # against a running scheduler

environment: TREADLE_DATABASE_URL (empty: embedded PostgreSQL in TREADLE_DATA_DIR),
TREADLE_DATABASE_SCHEMA, TREADLE_APP, TREADLE_GRPC_HOST/PORT, TREADLE_HTTP_HOST/PORT,
TREADLE_SCHEDULER_ADDRESS, TREADLE_CONCURRENCY, TREADLE_EXECUTOR_THREADS,
TREADLE_MAX_PAYLOAD_BYTES, TREADLE_DRAIN_TIMEOUT, TREADLE_AUTH, TREADLE_API_KEY,
TREADLE_TLS_CERT/KEY/CA/CLIENT_CA, ... (see docs/configuration.md and docs/security.md)

up, scheduler, gateway, migrate, keys, audit, tenants and bench need the server
extra: pip install 'treadle[server]' (pip install treadle: the client commands).
"""


def _add_address(p: argparse.ArgumentParser) -> None:
    """The flags of a command that calls the scheduler: --address, the TLS
    flags and --api-key."""
    from treadle.gateway import __main__ as gateway

    gateway.add_scheduler_flags(p)
    config.add_flags(p, AccessSettings, "api_key")


def _add_database(p: argparse.ArgumentParser) -> None:
    config.add_flags(p.add_argument_group("database"), SchedulerSettings, "database")


def _add_scheduler(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sched = sub.add_parser(
        "scheduler", help="run a scheduler replica (gRPC)", description=scheduler.DESCRIPTION
    )
    scheduler.add_flags(sched)
    config.add_flags(sched, LogSettings, "logging")


def build_parser(only_scheduler: bool = False) -> argparse.ArgumentParser:
    """The `treadle` parser; with `only_scheduler`, holding `scheduler` alone."""
    parser = argparse.ArgumentParser(
        prog="treadle",
        description="Treadle: a PostgreSQL-backed task scheduler with gRPC and GraphQL APIs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only_scheduler:
        _add_scheduler(sub)
        return parser

    from treadle.cli import keys, monitor, queues, schedules, tasks, tenants
    from treadle.gateway import __main__ as gateway
    from treadle.gateway.settings import Settings as GatewaySettings

    up = sub.add_parser(
        "up",
        help="run scheduler and gateway together (embedded PostgreSQL "
        "unless TREADLE_DATABASE_URL is set)",
        description="Run a scheduler and a GraphQL gateway in one process. "
        "Without a database URL, start an embedded PostgreSQL whose data "
        "lives in --data-dir. Loads the bundled example app (echo, sleep, "
        "fib, fail, noop) unless --app is given. With --tls-cert and --tls-key the "
        "scheduler serves gRPC over TLS, and the gateway calls it trusting --tls-ca "
        "(presenting that same certificate when --tls-client-ca asks for one). "
        "Ctrl-C stops everything.",
    )
    scheduler.add_flags(up)
    config.add_flags(up.add_argument_group("gateway"), GatewaySettings, "gateway")
    # The gateway calls the replica with --tls-cert/--tls-key as its own (client)
    # certificate: only what it trusts is its own flag.
    trust = up.add_argument_group("TLS from the gateway to the scheduler")
    config.add_flags(trust, GatewaySettings, "tls-trust")
    config.add_flags(up, LogSettings, "logging")

    _add_scheduler(sub)

    gw = sub.add_parser(
        "gateway", help="run the GraphQL gateway (HTTP)", description=gateway.DESCRIPTION
    )
    gateway.add_flags(gw)
    config.add_flags(gw, LogSettings, "logging")

    mig = sub.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply the schema migrations the database lacks. "
        "Safe to run while replicas start.",
    )
    mig.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 1 when the schema lacks a migration (for deploy checks)",
    )
    _add_database(mig)

    submit = sub.add_parser(
        "submit",
        help="submit a task",
        description="Submit a task and print it as JSON.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""payloads (--payload is one JSON value; the handler gets it decoded, or
as its declared type: a dataclass, TypedDict, Struct or Pydantic model, whose
fields are the JSON object's keys). The example app's tasks:
  treadle submit echo  --payload '{"hello": "world"}' --wait   # any JSON, returned as is
  treadle submit sleep --payload '{"seconds": 0.5}'            # number of seconds (default 1)
  treadle submit fib   --payload '{"n": 25}' --wait            # 0..32, runs in the thread pool
  treadle submit fail  --payload '{"message": "boom"}'         # always raises: retries, then DEAD
  treadle submit noop                                          # payload null
and with options:
  treadle submit echo --payload '[1, 2]' --delay 60 --priority 10 --max-attempts 5
  treadle submit echo --payload '"x"' --idempotency-key order-42  # again: the same task
""",
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
    submit.add_argument(
        "--concurrency-key",
        help="at most --max-concurrent tasks with this key run at once (give both)",
    )
    submit.add_argument(
        "--max-concurrent", type=int, help="the --concurrency-key's limit, at least 1"
    )
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

    tasks.add_parsers(sub, _add_address)
    monitor.add_parsers(sub, _add_address)

    queues.add_parser(sub, _add_address)
    schedules.add_parser(sub, _add_address)
    keys.add_parsers(sub, _add_database)
    tenants.add_parser(sub)

    bench = sub.add_parser(
        "bench",
        help="measure submit, latency, drain, start-up and GraphQL speed",
        description="Measure Treadle. Every mode but drain-against---address starts "
        "its own Treadle (replica processes running the example app, a gateway for "
        "graphql) on a fresh schema of TREADLE_DATABASE_URL, or on an embedded "
        "PostgreSQL in a temporary folder when that is unset, and compares with "
        "baselines measured in the same run (docs/benchmarks.md).",
        epilog="""examples:
  treadle bench --mode submit --in-flight 1      # vs bare INSERT+commit, same database
  treadle bench --mode submit --in-flight 64
  treadle bench --mode submit --in-flight 1 --auth  # what API keys cost a submit
  treadle bench --mode submit --submit-rate 10000 --max-queued 1000000   # what limits cost
  treadle bench --mode latency --rate 100
  treadle bench --mode drain -n 10000 --replicas 2 --finished-rows 1000000
  treadle bench --mode startup --runs 5
  treadle bench --mode graphql --connections 64 --query task
  treadle bench -n 10000 --address 127.0.0.1:50051   # drain against a running scheduler""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--mode",
        choices=["drain", "submit", "latency", "startup", "graphql"],
        default="drain",
        help="what to measure (default drain)",
    )
    bench.add_argument(
        "-n", "--tasks", type=int, default=10_000, help="tasks, or calls per round (default 10000)"
    )
    bench.add_argument(
        "--batch",
        type=int,
        default=500,
        help="drain against --address: tasks per SubmitTasks call (default 500)",
    )
    bench.add_argument("--name", default="noop", help="drain against --address: task name")
    bench.add_argument(
        "--delay",
        type=float,
        help="drain against --address: schedule the tasks this many seconds ahead and "
        "report their lateness (start minus run time); default: run at once",
    )
    bench.add_argument(
        "--in-flight", type=int, default=1, help="submit: calls in flight (default 1)"
    )
    bench.add_argument(
        "--rate", type=float, default=100.0, help="latency: submits per second (default 100)"
    )
    bench.add_argument(
        "--submit-rate",
        type=float,
        help="submit: also submit with this submit rate limit in force for the tenant "
        "(switched on and off between rounds on the same replica) and report what it costs",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="submit, graphql: alternations of the measured and the compared, medians reported "
        "(default 3)",
    )
    bench.add_argument(
        "--max-queued",
        type=int,
        help="submit: with it, the tenant's quota of waiting tasks (as --submit-rate)",
    )
    bench.add_argument(
        "--seconds", type=float, default=10.0, help="latency, graphql: duration (default 10)"
    )
    bench.add_argument(
        "--replicas", type=int, default=2, help="drain: replica processes (default 2)"
    )
    bench.add_argument(
        "--finished-rows",
        type=int,
        default=0,
        help="drain: finished tasks stored beforehand (default 0)",
    )
    bench.add_argument("--runs", type=int, default=5, help="startup: replicas started (default 5)")
    bench.add_argument(
        "--connections", type=int, default=64, help="graphql: connections (default 64)"
    )
    bench.add_argument(
        "--query",
        choices=["task", "submit"],
        default="task",
        help="graphql: task(id) query or submitTask mutation (default task); each round "
        "also loads GET /health and query { __typename }, the gateway's floor",
    )
    bench.add_argument(
        "--auth",
        action="store_true",
        help="submit: also submit with an API key to a replica requiring keys, alternating",
    )
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_address(bench)
    return parser


def _runs_scheduler(args: Sequence[str]) -> bool:
    """Whether `args` run `treadle scheduler` (with at most -v before it)."""
    for arg in args:
        if arg not in ("-v", "--verbose"):
            return arg == "scheduler"
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if _runs_scheduler(args):
        settings: list[type] = [SchedulerSettings, AccessSettings, LogSettings]
        return process.main(build_parser(only_scheduler=True), scheduler.run, settings, args)

    from treadle.cli import commands
    from treadle.gateway.settings import Settings as GatewaySettings

    settings = [SchedulerSettings, GatewaySettings, AccessSettings, LogSettings]
    return process.main(build_parser(), commands.run, settings, args)


if __name__ == "__main__":
    sys.exit(main())
