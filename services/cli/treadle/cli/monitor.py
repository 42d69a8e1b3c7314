"""`treadle stats` (a per-queue table) and `treadle top` (a live view of the
installation, its queues and its replicas, refreshed like htop).

`top` redraws with plain ANSI codes rather than curses: it only writes (no
keys to read but Ctrl-C), and curses would add a terminfo lookup that fails
where TERM is unset or unknown, and an error at the bottom-right cell to guard.
On the alternate screen, with line wrap off (long lines are cut at the edge),
each frame goes home, writes its lines, clears the rest of each line and
everything below, so nothing flickers; lines past the window's height are left
out, and the window's size is read at every frame."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
from datetime import UTC, datetime
from typing import Any

from treadle.cli import _actions, _show
from treadle.client import Client
from treadle.common.errors import InvalidArgument

#: Alternate screen on, cursor hidden, line wrap off; and back.
ENTER = "\x1b[?1049h\x1b[?25l\x1b[?7l"
LEAVE = "\x1b[?7h\x1b[?25h\x1b[?1049l"

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
        _show.echo("no queues yet")
    else:
        _show.echo(_show.stats_table(found))
    return 0


async def snapshot(client: Client, address: str) -> str:
    """Everything `top` shows, read now (three calls at once)."""
    overview, queues, replicas = await asyncio.gather(
        client.overview(), client.list_queue_stats(), client.list_replicas()
    )
    now = datetime.now(UTC)
    return "\n".join(
        (
            _show.paint(f"treadle top — {address} — {now:%H:%M:%S} UTC", "bold"),
            _show.overview_line(overview),
            "\n" + _show.paint("queues", "bold"),
            _show.stats_table(queues, now) if queues else _show.paint("no queues yet", "dim"),
            "\n" + _show.paint("replicas", "bold"),
            _show.replicas_table(replicas, now),
        )
    )


def frame(text: str, lines: int) -> str:
    """`text` drawn over the previous frame, from the top-left corner, in at most
    `lines` lines."""
    return "\x1b[H" + "\x1b[K\n".join(text.splitlines()[:lines]) + "\x1b[K\x1b[J"


async def run_top(client: Client, args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise InvalidArgument(f"--interval must be more than 0 seconds, got {args.interval}")
    out = sys.stdout
    if args.once or not out.isatty():
        _show.echo(await snapshot(client, client.address))
        return 0
    colour = _show.colours(out)
    out.write(ENTER)
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            while True:
                text = await snapshot(client, client.address)
                lines = shutil.get_terminal_size().lines
                out.write(frame(text if colour else _show.plain_text(text), lines))
                out.flush()
                await asyncio.sleep(args.interval)
    finally:
        out.write(LEAVE)
        out.flush()
    return 0
