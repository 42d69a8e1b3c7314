"""`python -m treadle.scheduler`: run one scheduler replica (`treadle scheduler`
runs the same). It also holds what `treadle up` reuses to run a replica beside
a gateway: the flags, `replica()`, the banner's figures and `exit_status()`.

Exit statuses: 0 when the replica stopped as asked (SIGTERM, SIGINT), even
with tasks handed back or left to their lease; 1 when it could not start
(settings, database); 70 (EX_SOFTWARE) when a background loop died and
stopped it: a supervisor should restart it and alert.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from treadle.common import access, config, extras, process
from treadle.common.access import AccessSettings
from treadle.common.errors import InvalidArgument
from treadle.common.logs import LogSettings
from treadle.scheduler.settings import Settings

if TYPE_CHECKING:
    from treadle.scheduler.supervisor import Replica

log = logging.getLogger("treadle.scheduler")

#: The exit status of a replica stopped by a background loop that died
#: (sysexits' EX_SOFTWARE): a supervisor restarts it, and should alert.
EXIT_LOOP_DIED = 70

DESCRIPTION = (
    "Run one scheduler replica: claims and runs the tasks your --app module registers, serves gRPC."
)
BANNER = """
Treadle scheduler is up. Press Ctrl-C to stop.
  gRPC       {grpc}
  metrics    http://{metrics}/metrics
  database   {database}
  tasks      {tasks}
  auth       {auth}
"""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The database, scheduler, TLS and authentication flags, in their --help sections."""
    config.add_flags(parser.add_argument_group("database"), Settings, "database")
    config.add_flags(parser.add_argument_group("scheduler"), Settings, "scheduler")
    config.add_flags(parser.add_argument_group("TLS (gRPC)"), Settings, "tls")
    config.add_flags(parser.add_argument_group("authentication"), AccessSettings, "auth")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="treadle scheduler", description=DESCRIPTION)
    add_flags(parser)
    config.add_flags(parser, LogSettings, "logging")
    return parser


def database_label(settings: Settings) -> str:
    if settings.database_url:
        return "TREADLE_DATABASE_URL"
    return f"embedded PostgreSQL, data in {settings.data_dir}/pgdata"


@contextlib.asynccontextmanager
async def replica(
    settings: Settings, app: str, url: str, auth: AccessSettings | None = None
) -> AsyncIterator[Replica]:
    """A started replica running `app`'s handlers, asked to stop by SIGINT or
    SIGTERM, and stopped when the block ends."""
    from treadle.scheduler.registry import load_app
    from treadle.scheduler.supervisor import Replica

    running = Replica(settings, load_app(app), url, access=auth)
    process.on_signals(running.request_stop)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def transport(settings: Settings) -> str:
    """How the replica serves gRPC, in words."""
    if settings.tls_client_ca:
        return "TLS, client certificates required"
    return "TLS" if settings.tls_cert else "plaintext"


def claimed_queues(settings: Settings) -> str:
    """The queues a replica claims from, as the banner shows them after its tasks."""
    queues = settings.claimed_queues
    return "" if queues is None else f"  (queues: {', '.join(queues)})"


def figures(running: Replica) -> dict[str, str]:
    """What the banners show of a running replica."""
    metrics = running.metrics_server
    return {
        "grpc": f"{running.address} ({transport(running.settings)})",
        "tasks": ", ".join(running.registry.names) + claimed_queues(running.settings),
        "metrics": metrics.address if metrics else "",
        "auth": access.describe(running.access),
    }


def load_access(
    args: argparse.Namespace, env: Mapping[str, str], listens: Mapping[str, str]
) -> AccessSettings:
    """The authentication settings, once checked against where the process
    listens (`access.check_exposure`: no open port beyond loopback unless asked)."""
    settings = config.load(AccessSettings, env, vars(args))
    access.check_exposure(settings, listens)
    return settings


def exit_status(running: Replica) -> int:
    """The exit status of a replica that has stopped (see the module's docstring)."""
    if running.died:
        log.error(
            "exiting with status %d: background loop %s died, and the replica cannot go on",
            EXIT_LOOP_DIED,
            ", ".join(running.died),
        )
        return EXIT_LOOP_DIED
    return 0


def leave(running: Replica, status: int) -> int:
    """`status`, once everything else has stopped. A sync handler that still
    runs in its thread (past the drain timeout) cannot be stopped, and the
    interpreter would wait for it at exit: then the process exits here, now,
    and the task's lease (kept, not handed back) expires for another replica."""
    stranded = running.stranded
    if stranded:
        log.warning(
            "exiting now with status %d, not waiting for %d sync handler(s) still running",
            status,
            len(stranded),
        )
        process.exit_now(status)
    return status


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    extras.require_server("treadle scheduler")
    from treadle.scheduler.embedded import database

    settings = config.load(Settings, env, vars(args))
    auth = load_access(
        args,
        env,
        {
            "--grpc-host": settings.grpc_host,
            **({"--metrics-host": settings.metrics_host} if settings.metrics_host else {}),
        },
    )
    app = settings.app
    if not app:
        raise InvalidArgument("no app: pass --app MODULE or set TREADLE_APP")
    process.observe(args, env, "treadle-scheduler")

    async def serve(url: str) -> Replica:
        async with replica(settings, app, url, auth) as running:
            label = database_label(settings)
            print(BANNER.format(database=label, **figures(running)), flush=True)
            await running.serve()
        return running

    with database(settings.database_url, settings.data_dir) as url:
        stopped = process.run_async(serve(url))
        status = exit_status(stopped)
    return leave(stopped, status)


def main(argv: Sequence[str] | None = None) -> int:
    return process.main(build_parser(), run, [Settings, AccessSettings, LogSettings], argv)


if __name__ == "__main__":
    sys.exit(main())
