"""`treadle stats` (a per-queue table) and `treadle top` (a live view of the
installation, its queues and its replicas, refreshed like htop)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from treadle.cli import _actions, _show
from treadle.client import Client
from treadle.common.errors import InvalidArgument

EPILOG = """\
examples:
  treadle stats                       # every queue: ready, scheduled, running, ... totals
  treadle stats --json | jq '.[] | select(.paused)'
  treadle top                         # live, until Ctrl-C
  treadle top --interval 5
  treadle top --once                  # one snapshot (also what it prints into a pipe)
"""


def add_parsers(sub: Any, add_address: _actions.AddAddress) -> None:
    stats = sub.add_parser(
        "stats",
        help="a table of every queue: waiting, running, limits, totals",
        description="Show every queue: ready, scheduled, running and retrying tasks, "
        "its concurrency limit, whether it is paused, how long its oldest ready task "
        "has waited, and its lifetime totals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stats.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_address(stats)

    top = sub.add_parser(
        "top",
        help="a live view of queues and replicas, refreshed like htop",
        description="Show the installation live: tasks by state, throughput, error rate "
        "and latency, every queue and every replica, refreshed every --interval seconds "
        "until Ctrl-C. When stdout is not a terminal, prints one snapshot (as --once).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    add_address(top)


async def run_stats(client: Client, args: argparse.Namespace) -> int:
    found = await client.list_queue_stats()
    if args.json:
        print(_show.dumps([_show.plain(q) for q in found]))
    elif not found:
        _show.console().print("no queues yet")
    else:
        _show.console().print(_show.stats_table(found))
    return 0


async def snapshot(client: Client, address: str) -> RenderableType:
    """Everything `top` shows, read now (three calls at once)."""
    overview, queues, replicas = await asyncio.gather(
        client.overview(), client.list_queue_stats(), client.list_replicas()
    )
    now = datetime.now(UTC)
    title = Text(f"treadle top — {address} — {now:%H:%M:%S} UTC", style="bold")
    return Group(
        title,
        _show.overview_line(overview),
        Text("\nqueues", style="bold"),
        _show.stats_table(queues, now) if queues else Text("no queues yet", style="dim"),
        Text("replicas", style="bold"),
        _show.replicas_table(replicas, now),
    )


async def run_top(client: Client, args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise InvalidArgument(f"--interval must be more than 0 seconds, got {args.interval}")
    out = _show.console()
    if args.once or not out.is_terminal:
        out.print(await snapshot(client, client.address))
        return 0
    with (
        contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError),
        Live(console=out, screen=True, auto_refresh=False) as live,
    ):
        while True:
            live.update(await snapshot(client, client.address), refresh=True)
            await asyncio.sleep(args.interval)
    return 0
