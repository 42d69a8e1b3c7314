"""`python -m treadle.gateway`: serve GraphQL over HTTP, calling a scheduler
(`treadle gateway` runs the same)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence

from treadle.common import access, config, extras, process
from treadle.common.access import AccessSettings
from treadle.common.logs import LogSettings
from treadle.gateway.settings import Settings

log = logging.getLogger("treadle.gateway")
DESCRIPTION = (
    "Serve GraphQL (POST /graphql), GraphiQL (GET /graphql) "
    "and /health, calling a scheduler over gRPC."
)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The gateway flags (in their --help section), --address, the TLS flags of
    the link to the scheduler and the authentication flags."""
    config.add_flags(parser.add_argument_group("gateway"), Settings, "gateway")
    add_scheduler_flags(parser)
    config.add_flags(parser.add_argument_group("authentication"), AccessSettings, "auth")


def add_scheduler_flags(parser: argparse.ArgumentParser) -> None:
    """--address, and the TLS flags of calls to the scheduler in their --help
    section; every client command takes them too."""
    config.add_flags(parser, Settings, "address")
    group = parser.add_argument_group("TLS to the scheduler")
    config.add_flags(group, Settings, "tls-trust")
    config.add_flags(group, Settings, "tls-identity")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="treadle gateway", description=DESCRIPTION)
    add_flags(parser)
    config.add_flags(parser, LogSettings, "logging")
    return parser


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    extras.require_server("treadle gateway")
    from treadle.gateway.server import Gateway

    settings = config.load(Settings, env, vars(args))
    auth = config.load(AccessSettings, env, vars(args))
    access.check_exposure(auth, {"--http-host": settings.http_host})
    process.observe(args, env, "treadle-gateway")

    async def serve() -> None:
        server = Gateway(settings)
        stop = asyncio.Event()
        process.on_signals(stop.set)
        await server.start()
        process.settle()
        print(
            f"Treadle gateway on {server.url}/graphql, scheduler at "
            f"{settings.scheduler_address}{' over TLS' if settings.scheduler_tls else ''}. "
            "Press Ctrl-C to stop.",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await server.stop()
        log.info("gateway stopped")

    process.run_async(serve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return process.main(build_parser(), run, [Settings, AccessSettings, LogSettings], argv)


if __name__ == "__main__":
    sys.exit(main())
