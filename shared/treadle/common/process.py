"""What every Treadle command does around its work, whichever program runs it
(`treadle`, `python -m treadle.scheduler`, `python -m treadle.gateway`).

`main` parses the arguments, sets up plain logging, refuses unknown `TREADLE_*`
variables, runs the command and turns our errors into one line on stderr and
exit code 1 (Ctrl-C: 130). A command that runs a service uses `observe` (logs
and tracing as the settings ask), `on_signals` and `run_async` (uvloop);
`exit_now` ends a process that threads it cannot stop would keep alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from treadle.common import config
from treadle.common.errors import TreadleError

T = TypeVar("T")
#: A command: parsed arguments and the environment in, exit code out.
Command = Callable[[argparse.Namespace, Mapping[str, str]], int]


def main(
    parser: argparse.ArgumentParser,
    command: Command,
    settings: Iterable[type[Any]],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` with `parser` and run `command`; `settings` are the settings
    classes the program reads (the installed ones count as known too)."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The embedded PostgreSQL is started with fork+exec; gRPC's fork handlers
    # only log noise about it.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        config.check_unknown(os.environ, settings)
        return command(args, os.environ)
    except TreadleError as exc:
        print(f"treadle: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop where it is installed."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # a client-only install (uvloop comes with treadle[server])
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def settle() -> None:
    """Call once a service has started, before it serves: every object made so
    far (modules, the GraphQL schema, pools) moves to the garbage collector's
    permanent generation (`gc.freeze`), so that a full collection no longer
    walks them. Under load such a walk stopped the process for tens of
    milliseconds at a time."""
    gc.freeze()


def observe(args: argparse.Namespace, env: Mapping[str, str], service: str) -> None:
    """For commands that run a service: logs as `TREADLE_LOG_FORMAT` asks (with
    trace ids), and tracing as the `OTEL_*` variables ask (nothing when off)."""
    from treadle.common import logs, telemetry

    settings = config.load(logs.LogSettings, env, vars(args))
    logs.setup_logging(settings.json)
    telemetry.setup_tracing(service, env)


def exit_now(status: int) -> None:
    """Flush the logs and the standard streams, and end the process with
    `status` at once: no atexit handlers, no waiting for threads (a thread
    running user code that cannot be stopped would otherwise hold the exit)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def on_signals(callback: Callable[[], None]) -> None:
    """Call `callback` on SIGINT and SIGTERM (from inside the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)
