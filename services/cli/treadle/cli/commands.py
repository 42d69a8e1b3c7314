"""What each `treadle` subcommand does. `treadle scheduler` and `treadle gateway`
are the services' own entry points (their `__main__`); `treadle up` runs both
in one process. The heavy parts of the services are imported lazily."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from treadle.cli import _show, keys, monitor, queues, schedules, tasks, tenants
from treadle.client import Client
from treadle.common import config, extras, process, wire
from treadle.common.access import AccessSettings
from treadle.common.errors import InvalidArgument
from treadle.common.process import Command
from treadle.common.tasks import Task, TaskSpec
from treadle.gateway import __main__ as gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler import __main__ as scheduler
from treadle.scheduler.settings import Settings as SchedulerSettings

if TYPE_CHECKING:
    from treadle.scheduler.supervisor import Replica

EXAMPLE_APP = "treadle.scheduler.example"


def task_json(task: Task) -> str:
    """The task as JSON text: the payload and result as JSON values."""
    return _show.dumps(_show.task_dict(task))


# -- services -----------------------------------------------------------------

UP_BANNER = """
Treadle is up. Press Ctrl-C to stop.
  console    {http}/  (the web console, in a browser)
  GraphQL    {http}/graphql  (POST; GraphiQL when opened in a browser)
  health     {http}/health, {http}/health/detailed
  metrics    {http}/metrics (gateway), http://{metrics}/metrics (scheduler)
  gRPC       {grpc}  (treadle.api.v1.SchedulerService, grpc.health.v1, reflection)
  database   {database}
  tasks      {tasks}
  auth       {auth}
"""


def cmd_up(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """A replica and a gateway in one process; the gateway calls that replica."""
    from treadle.gateway.server import Gateway
    from treadle.scheduler.embedded import database

    sched = config.load(SchedulerSettings, env, vars(args))
    gateway = config.load(GatewaySettings, env, vars(args))
    if gateway.tls_ca is not None and sched.tls_cert is None:
        raise InvalidArgument(
            "TREADLE_TLS_CA makes the gateway call the scheduler over TLS, but the scheduler "
            "has no certificate to serve: set TREADLE_TLS_CERT and TREADLE_TLS_KEY too"
        )
    listens = {
        "--grpc-host": sched.grpc_host,
        **({"--metrics-host": sched.metrics_host} if sched.metrics_host else {}),
        "--http-host": gateway.http_host,
    }
    auth = scheduler.load_access(args, env, listens)
    process.observe(args, env, "treadle")

    async def serve(url: str) -> Replica:
        async with scheduler.replica(sched, sched.app or EXAMPLE_APP, url, auth) as replica:
            server = Gateway(dataclasses.replace(gateway, scheduler_address=replica.address))
            await server.start()
            process.settle()
            try:
                label = scheduler.database_label(sched)
                figures = scheduler.figures(replica)
                print(UP_BANNER.format(http=server.url, database=label, **figures), flush=True)
                await replica.serve()
            finally:
                await server.stop()
        return replica

    with database(sched.database_url, sched.data_dir) as url:
        stopped = process.run_async(serve(url))
        status = scheduler.exit_status(stopped)
    return scheduler.leave(stopped, status)


def cmd_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.scheduler import postgres
    from treadle.scheduler.embedded import database

    sched = config.load(SchedulerSettings, env, vars(args))

    async def migrate(url: str) -> list[int]:
        conn = await postgres.connect(url, sched.database_schema, "treadle-migrate")
        try:
            if args.check:
                await postgres.check_schema(conn)  # Unavailable, naming the versions
                return []
            return await postgres.migrate(conn, sched.database_schema)
        finally:
            await conn.close()

    with database(sched.database_url, sched.data_dir) as url:
        applied = process.run_async(migrate(url))
    if applied:
        print(
            f"applied migrations {', '.join(f'{v:04d}' for v in applied)} "
            f"to schema {sched.database_schema}"
        )
    else:
        print(f"schema {sched.database_schema} is up to date")
    return 0


# -- client commands ------------------------------------------------------------


def _connection(args: argparse.Namespace, env: Mapping[str, str]) -> GatewaySettings:
    """How to reach the scheduler: --address and the TLS flags (or their variables)."""
    return config.load(GatewaySettings, env, vars(args))


def _client(args: argparse.Namespace, env: Mapping[str, str]) -> Client:
    """A client of the scheduler the command's flags and variables name,
    sending --api-key (TREADLE_API_KEY) if given."""
    settings = _connection(args, env)
    return Client(
        settings.scheduler_address, tls=settings.scheduler_tls, api_key=_api_key(args, env)
    )


def _api_key(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """--api-key, else TREADLE_API_KEY (`AccessSettings.api_key`); None: none.
    Only --api-key is read from `args` (`bench --auth` is not TREADLE_AUTH)."""
    given = {"api_key": args.api_key}
    return config.load(AccessSettings, env, given).api_key or None


def cmd_submit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            raise InvalidArgument(f"--run-at {args.run_at!r} is not an ISO 8601 time") from None
    spec = TaskSpec(
        name=args.name,
        payload_json=wire.encode_json(
            wire.decode_json(args.payload, "--payload", None), max_depth=None
        ),
        queue=args.queue,
        priority=args.priority,
        run_at=run_at,
        max_attempts=args.max_attempts,
        idempotency_key=args.idempotency_key,
        delay_seconds=args.delay,
        timeout_seconds=args.attempt_timeout,
        concurrency_key=args.concurrency_key,
        max_concurrent=args.max_concurrent,
    )

    async def submit() -> Task:
        async with _client(args, env) as client:
            submitted = await client.submit_spec(spec)
            task = submitted.task
            if submitted.existing:
                print(
                    f"treadle: idempotency key {spec.idempotency_key!r} matched task {task.id}, "
                    "submitted before: nothing new was submitted",
                    file=sys.stderr,
                )
            if args.wait:
                task = await client.wait(task.id, timeout=args.timeout)
            return task

    task = process.run_async(submit())
    print(task_json(task))
    return 0 if not args.wait or task.state.value == "SUCCEEDED" else 1


def _with_client(act: Callable[[Client, argparse.Namespace], Awaitable[str]]) -> Command:
    """A command that does `act` with a client of the scheduler and prints what it returns."""

    def command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        async def call() -> str:
            async with _client(args, env) as client:
                return await act(client, args)

        print(process.run_async(call()))
        return 0

    return command


async def _get(client: Client, args: argparse.Namespace) -> str:
    return task_json(await client.get(args.id))


def _client_command(act: Callable[[Client, argparse.Namespace], Awaitable[int]]) -> Command:
    """A command that does `act` with a client of the scheduler; its exit status."""

    def command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
        async def call() -> int:
            async with _client(args, env) as client:
                return await act(client, args)

        return process.run_async(call())

    return command


def cmd_bench(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.cli import bench, benchmodes

    for flag in ("tasks", "in_flight", "replicas", "runs", "connections", "rounds"):
        if getattr(args, flag) < 1:
            raise InvalidArgument(f"--{flag.replace('_', '-')} must be at least 1")
    if args.finished_rows < 0 or args.rate <= 0 or args.seconds <= 0:
        raise InvalidArgument("--finished-rows must be >= 0, --rate and --seconds > 0")
    against = args.scheduler_address or env.get("TREADLE_SCHEDULER_ADDRESS")
    if (args.submit_rate is not None or args.max_queued is not None) and args.mode != "submit":
        raise InvalidArgument("--submit-rate and --max-queued go with --mode submit")
    if against and args.mode != "drain":
        raise InvalidArgument(f"--mode {args.mode} starts its own Treadle; drop --address")
    run: Awaitable[dict[str, Any]]
    if against:
        to = _connection(args, env)
        run = bench.run(
            to.scheduler_address,
            args.tasks,
            args.batch,
            args.name,
            args.delay,
            to.scheduler_tls,
            _api_key(args, env),
        )
    elif args.mode == "drain":
        run = benchmodes.drain(args.tasks, args.replicas, args.finished_rows)
    elif args.mode == "submit":
        limits: dict[str, float] = {}
        if args.submit_rate is not None:
            limits["submit_rate"] = args.submit_rate
        if args.max_queued is not None:
            limits["max_queued"] = args.max_queued
        run = benchmodes.submit(
            args.tasks, args.in_flight, args.rounds, limits=limits, auth=args.auth
        )
    elif args.mode == "latency":
        run = benchmodes.latency(args.rate, args.seconds)
    elif args.mode == "startup":
        run = benchmodes.startup(args.runs)
    else:
        run = benchmodes.graphql(args.connections, args.query, args.seconds, args.rounds)
    report = process.run_async(run)
    if args.json:
        print(json.dumps(report, indent=2))
    elif against:
        print(bench.format_report(report))
    elif args.mode == "startup":
        from treadle.cli import benchstartup

        print(benchstartup.format_report(report))
    else:
        print(benchmodes.format_report(report))
    return 0


COMMANDS: dict[str, Command] = {
    "up": cmd_up,
    "scheduler": scheduler.run,
    "gateway": gateway.run,
    "migrate": cmd_migrate,
    "submit": cmd_submit,
    "get": _with_client(_get),
    "tasks": _client_command(tasks.run_tasks),
    "dead": _client_command(tasks.run_tasks),
    "task": _client_command(tasks.run_task),
    "watch": _client_command(tasks.run_watch),
    "cancel": _client_command(tasks.run_bulk),
    "retry": _client_command(tasks.run_bulk),
    "purge": _client_command(tasks.run_bulk),
    "stats": _client_command(monitor.run_stats),
    "top": _client_command(monitor.run_top),
    "queue": _with_client(queues.run),
    "schedule": _with_client(schedules.run),
    "keys": keys.run_keys,
    "audit": keys.run_audit,
    "tenants": tenants.run,
    "bench": cmd_bench,
}


#: The commands that run a server or open the database: they need the server
#: extra (`scheduler` and `gateway` check for it themselves, as `python -m` runs
#: them too).
SERVER_COMMANDS = frozenset({"up", "migrate", "keys", "audit", "tenants", "bench"})


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.command in SERVER_COMMANDS:
        extras.require_server(f"treadle {args.command}")
    return COMMANDS[args.command](args, env)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `treadle` or `python -m treadle.cli`")
