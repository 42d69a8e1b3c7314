"""`treadle queue ...`: list, show, update, pause and resume queues."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from treadle.cli import _actions
from treadle.client import Client
from treadle.common.tasks import Queue, RetryPolicy


def add_parser(sub: Any, add_address: _actions.AddAddress) -> None:
    """Add `queue` and its subcommands to the `treadle` parser."""
    actions = _actions.add_noun(
        sub,
        "queue",
        help="list, show, update, pause or resume queues",
        description="Manage queues: a limit on tasks running at once across all replicas, "
        "a limit on task starts per time window (per payload value, optionally), "
        "pause/resume, and the default retry policy and timeout of their tasks. "
        "Queues are printed as JSON.",
    )
    _actions.add_simple(
        actions,
        add_address,
        "queue",
        (
            ("show", "print one queue"),
            ("pause", "accept the queue's tasks but start none of them"),
            ("resume", "start the queue's tasks again"),
        ),
    )
    update = actions.add_parser(
        "update",
        help="change a queue's settings",
        description="Change the settings given; the others stay as they are.",
    )
    update.add_argument("name", help="queue name")
    update.add_argument(
        "--max-concurrent", type=int, help="tasks running at once across replicas (0: no limit)"
    )
    update.add_argument("--max-attempts", type=int, help="default attempts per task")
    update.add_argument("--timeout", type=float, help="default seconds per attempt (0: none)")
    update.add_argument("--backoff-base", type=float, help="seconds before the 2nd attempt")
    update.add_argument("--backoff-factor", type=float, help="growth per attempt (>= 1)")
    update.add_argument("--backoff-max", type=float, help="longest wait between attempts")
    update.add_argument(
        "--start-limit",
        type=int,
        help="task starts per window across replicas; over it tasks wait (0: no limit)",
    )
    update.add_argument(
        "--start-window", type=float, help="the start limit's window in seconds (default 1)"
    )
    update.add_argument(
        "--start-limit-key",
        help="count starts per value of this top-level payload field ('': one count)",
    )
    add_address(update)


def queue_dict(queue: Queue) -> dict[str, Any]:
    data = dataclasses.asdict(queue)
    for key in ("created_at", "updated_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


async def run(client: Client, args: argparse.Namespace) -> str:
    """Carry out one `treadle queue` action; returns what to print."""
    action: str = args.queue_command
    if action == "list":
        return json.dumps([queue_dict(q) for q in await client.list_queues()], indent=2)
    if action == "show":
        queue = await client.get_queue(args.name)
    elif action == "pause":
        queue = await client.pause_queue(args.name)
    elif action == "resume":
        queue = await client.resume_queue(args.name)
    else:
        retry = None
        backoff = (args.backoff_base, args.backoff_factor, args.backoff_max)
        if any(v is not None for v in backoff):
            current = (await client.get_queue(args.name)).retry
            retry = RetryPolicy(
                current.base_seconds if args.backoff_base is None else args.backoff_base,
                current.factor if args.backoff_factor is None else args.backoff_factor,
                current.max_seconds if args.backoff_max is None else args.backoff_max,
            )
        queue = await client.update_queue(
            args.name,
            max_concurrent=args.max_concurrent,
            max_attempts=args.max_attempts,
            timeout_seconds=args.timeout,
            retry=retry,
            start_limit=args.start_limit,
            start_window_seconds=args.start_window,
            start_limit_key=args.start_limit_key,
        )
    return json.dumps(queue_dict(queue), indent=2)
