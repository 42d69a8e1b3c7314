"""What each `treadle` subcommand does. Service packages are imported lazily."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

from treadle.client import Client
from treadle.client._async import DEFAULT_ADDRESS
from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.common.tasks import Task, TaskSpec
from treadle.common.wire import encode_json

log = logging.getLogger("treadle.cli")
T = TypeVar("T")
EXAMPLE_APP = "treadle.scheduler.example"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop where it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _overrides(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _settings_classes() -> list[type[Any]]:
    from treadle.common.logs import LogSettings
    from treadle.gateway.settings import Settings as GatewaySettings
    from treadle.scheduler.settings import Settings as SchedulerSettings

    return [SchedulerSettings, GatewaySettings, LogSettings]


def _observe(args: argparse.Namespace, env: Mapping[str, str], service: str) -> None:
    """For commands that run a service: logs as `TREADLE_LOG_FORMAT` asks (with
    trace ids), and tracing as the `OTEL_*` variables ask (nothing when off)."""
    from treadle.common import logs, telemetry

    settings = config.load(logs.LogSettings, env, _overrides(args, logs.LogSettings))
    logs.setup_logging(settings.json)
    telemetry.setup_tracing(service, env)


def task_json(task: Task) -> str:
    def encode(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    data = dataclasses.asdict(task)
    data.pop("trace_context", None)  # scheduler-internal, and never on the wire
    return json.dumps(data, default=encode, indent=2)


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


# -- services -----------------------------------------------------------------


async def _serve(
    scheduler_settings: Any, app: str, url: str, gateway_settings: Any | None, banner: str
) -> None:
    from treadle.scheduler.registry import load_app
    from treadle.scheduler.supervisor import Replica

    replica = Replica(scheduler_settings, load_app(app), url)
    _on_signals(replica.request_stop)
    await replica.start()
    gateway = None
    try:
        if gateway_settings is not None:
            from treadle.gateway.server import Gateway

            gateway_settings = dataclasses.replace(
                gateway_settings, scheduler_address=replica.address
            )
            gateway = Gateway(gateway_settings)
            await gateway.start()
        print(
            banner.format(
                grpc=replica.address,
                http=gateway.url if gateway else "",
                tasks=", ".join(replica.registry.names),
                metrics=replica.metrics_server.address if replica.metrics_server else "",
            ),
            flush=True,
        )
        await replica.serve()
    finally:
        if gateway is not None:
            await gateway.stop()
        await replica.stop()


UP_BANNER = """
Treadle is up. Press Ctrl-C to stop.
  GraphQL    {http}/graphql  (POST; GraphiQL when opened in a browser)
  health     {http}/health, {http}/health/detailed
  metrics    {http}/metrics (gateway), http://{metrics}/metrics (scheduler)
  gRPC       {grpc}  (treadle.api.v1.SchedulerService, grpc.health.v1, reflection)
  database   {database}
  tasks      {tasks}
  auth       OFF: anyone who can reach these ports can submit tasks (local use only)
"""

SCHEDULER_BANNER = """
Treadle scheduler is up. Press Ctrl-C to stop.
  gRPC       {grpc}
  metrics    http://{metrics}/metrics
  database   {database}
  tasks      {tasks}
"""


def _database_label(url: str | None, data_dir: str) -> str:
    return "TREADLE_DATABASE_URL" if url else f"embedded PostgreSQL, data in {data_dir}/pgdata"


def cmd_up(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.gateway.settings import Settings as GatewaySettings
    from treadle.scheduler.embedded import database
    from treadle.scheduler.settings import Settings as SchedulerSettings

    sched = config.load(SchedulerSettings, env, _overrides(args, SchedulerSettings))
    gateway = config.load(GatewaySettings, env, _overrides(args, GatewaySettings))
    _observe(args, env, "treadle")
    app = sched.app or EXAMPLE_APP
    banner = UP_BANNER.replace("{database}", _database_label(sched.database_url, sched.data_dir))
    with database(sched.database_url, sched.data_dir) as url:
        run_async(_serve(sched, app, url, gateway, banner))
    return 0


def cmd_scheduler(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.scheduler.embedded import database
    from treadle.scheduler.settings import Settings as SchedulerSettings

    sched = config.load(SchedulerSettings, env, _overrides(args, SchedulerSettings))
    if not sched.app:
        raise InvalidArgument("no app: pass --app MODULE or set TREADLE_APP")
    _observe(args, env, "treadle-scheduler")
    banner = SCHEDULER_BANNER.replace(
        "{database}", _database_label(sched.database_url, sched.data_dir)
    )
    with database(sched.database_url, sched.data_dir) as url:
        run_async(_serve(sched, sched.app, url, None, banner))
    return 0


def cmd_gateway(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.gateway.server import Gateway
    from treadle.gateway.settings import Settings as GatewaySettings

    settings = config.load(GatewaySettings, env, _overrides(args, GatewaySettings))
    _observe(args, env, "treadle-gateway")

    async def serve() -> None:
        server = Gateway(settings)
        stop = asyncio.Event()
        _on_signals(stop.set)
        await server.start()
        print(
            f"Treadle gateway on {server.url}/graphql, scheduler at "
            f"{settings.scheduler_address}. Press Ctrl-C to stop.",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await server.stop()
        log.info("gateway stopped")

    run_async(serve())
    return 0


def cmd_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.scheduler import postgres
    from treadle.scheduler.embedded import database
    from treadle.scheduler.settings import Settings as SchedulerSettings

    sched = config.load(SchedulerSettings, env, _overrides(args, SchedulerSettings))

    async def migrate(url: str) -> list[int]:
        conn = await postgres.connect(url, sched.database_schema, "treadle-migrate")
        try:
            return await postgres.migrate(conn, sched.database_schema)
        finally:
            await conn.close()

    with database(sched.database_url, sched.data_dir) as url:
        applied = run_async(migrate(url))
    if applied:
        print(
            f"applied migrations {', '.join(f'{v:04d}' for v in applied)} "
            f"to schema {sched.database_schema}"
        )
    else:
        print(f"schema {sched.database_schema} is up to date")
    return 0


# -- client commands ------------------------------------------------------------


def _address(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    return str(args.scheduler_address or env.get("TREADLE_SCHEDULER_ADDRESS") or DEFAULT_ADDRESS)


def cmd_submit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise InvalidArgument(f"--payload is not valid JSON: {exc}") from None
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            raise InvalidArgument(f"--run-at {args.run_at!r} is not an ISO 8601 time") from None
    spec = TaskSpec(
        name=args.name,
        payload_json=encode_json(payload),
        queue=args.queue,
        priority=args.priority,
        run_at=run_at,
        max_attempts=args.max_attempts,
        idempotency_key=args.idempotency_key,
        delay_seconds=args.delay,
        timeout_seconds=args.attempt_timeout,
    )

    async def submit() -> Task:
        async with Client(_address(args, env)) as client:
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

    task = run_async(submit())
    print(task_json(task))
    return 0 if not args.wait or task.state.value == "SUCCEEDED" else 1


def cmd_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def get() -> Task:
        async with Client(_address(args, env)) as client:
            return await client.get(args.id)

    print(task_json(run_async(get())))
    return 0


def cmd_schedule(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.cli import schedules

    print(run_async(schedules.run(args, _address(args, env))))
    return 0


def cmd_cancel(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def cancel() -> Task:
        async with Client(_address(args, env)) as client:
            return await client.cancel(args.id)

    print(task_json(run_async(cancel())))
    return 0


def cmd_retry(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def retry() -> Task:
        async with Client(_address(args, env)) as client:
            return await client.retry(args.id)

    print(task_json(run_async(retry())))
    return 0


def cmd_queue(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.cli import queues

    print(run_async(queues.run(args, _address(args, env))))
    return 0


def cmd_bench(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.cli import bench

    report = run_async(
        bench.run(_address(args, env), args.tasks, args.batch, args.name, args.delay)
    )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "up": cmd_up,
    "scheduler": cmd_scheduler,
    "gateway": cmd_gateway,
    "migrate": cmd_migrate,
    "submit": cmd_submit,
    "get": cmd_get,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "queue": cmd_queue,
    "schedule": cmd_schedule,
    "bench": cmd_bench,
}


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config.check_unknown(env, _settings_classes())
    return COMMANDS[args.command](args, env)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `treadle` or `python -m treadle.cli`")
