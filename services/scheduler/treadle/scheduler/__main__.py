"""`python -m treadle.scheduler`: run one scheduler replica (`treadle scheduler`
runs the same). It also holds what `treadle up` reuses to run a replica beside
a gateway: the flags, `replica()` and the banner's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from treadle.common import config, process
from treadle.common.errors import InvalidArgument
from treadle.common.logs import LogSettings
from treadle.scheduler.settings import Settings

if TYPE_CHECKING:
    from treadle.scheduler.supervisor import Replica

DESCRIPTION = (
    "Run one scheduler replica: claims and runs the tasks your --app module registers, serves gRPC."
)
BANNER = """
Treadle scheduler is up. Press Ctrl-C to stop.
  gRPC       {grpc}
  metrics    http://{metrics}/metrics
  database   {database}
  tasks      {tasks}
"""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The database and scheduler flags, in their --help sections."""
    config.add_flags(parser.add_argument_group("database"), Settings, "database")
    config.add_flags(parser.add_argument_group("scheduler"), Settings, "scheduler")


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
async def replica(settings: Settings, app: str, url: str) -> AsyncIterator[Replica]:
    """A started replica running `app`'s handlers, asked to stop by SIGINT or
    SIGTERM, and stopped when the block ends."""
    from treadle.scheduler.registry import load_app
    from treadle.scheduler.supervisor import Replica

    running = Replica(settings, load_app(app), url)
    process.on_signals(running.request_stop)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def figures(running: Replica) -> dict[str, str]:
    """What the banners show of a running replica."""
    metrics = running.metrics_server
    return {
        "grpc": running.address,
        "tasks": ", ".join(running.registry.names),
        "metrics": metrics.address if metrics else "",
    }


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from treadle.scheduler.embedded import database

    settings = config.load(Settings, env, vars(args))
    app = settings.app
    if not app:
        raise InvalidArgument("no app: pass --app MODULE or set TREADLE_APP")
    process.observe(args, env, "treadle-scheduler")

    async def serve(url: str) -> None:
        async with replica(settings, app, url) as running:
            label = database_label(settings)
            print(BANNER.format(database=label, **figures(running)), flush=True)
            await running.serve()

    with database(settings.database_url, settings.data_dir) as url:
        process.run_async(serve(url))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return process.main(build_parser(), run, [Settings, LogSettings], argv)


if __name__ == "__main__":
    sys.exit(main())
