"""`treadle schedule ...`: create, list, pause, resume and delete cron schedules."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from treadle.cli import _actions
from treadle.client import Client
from treadle.common import wire
from treadle.common.tasks import Schedule, TaskSpec


def add_parser(sub: Any, add_address: _actions.AddAddress) -> None:
    """Add `schedule` and its subcommands to the `treadle` parser."""
    actions = _actions.add_noun(
        sub,
        "schedule",
        help="create, list, pause, resume or delete cron schedules",
        description="Manage cron schedules: each submits a task on every tick of a cron "
        "expression (five fields, or six with seconds first, or @hourly/@daily/...), "
        "read in an IANA time zone. Schedules are printed as JSON.",
    )

    create = actions.add_parser(
        "create",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="create a schedule",
        description="Create a schedule that submits --task on every tick of --cron.",
        epilog="example:\n  treadle schedule create nightly --cron '0 3 * * *' "
        '--timezone Europe/Paris \\\n      --task report --payload \'{"kind": "daily"}\'',
    )
    create.add_argument("name", help="unique name: letters, digits, '.', '_', '-'")
    create.add_argument(
        "--cron", required=True, help="cron expression, e.g. '*/5 * * * *' or '@daily'"
    )
    create.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    create.add_argument("--task", required=True, help="registered task name to submit")
    create.add_argument("--payload", default="null", help="payload as JSON (default null)")
    create.add_argument("--queue", help="queue (default: the handler's queue)")
    create.add_argument("--priority", type=int, default=0, help="-100..100, higher runs first")
    create.add_argument("--max-attempts", type=int, help="attempts (default: the queue's)")
    add_address(create)

    _actions.add_simple(
        actions,
        add_address,
        "schedule",
        (
            ("pause", "stop a schedule firing until it is resumed"),
            ("resume", "resume a paused schedule from the next tick after now"),
            ("delete", "delete a schedule (the tasks it submitted stay)"),
        ),
    )


def schedule_dict(schedule: Schedule) -> dict[str, Any]:
    task = schedule.task
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "next_fire_at": _time(schedule.next_fire_at),
        "last_fired_at": _time(schedule.last_fired_at),
        "created_at": _time(schedule.created_at),
        "task": {
            "name": task.name,
            "payload": json.loads(task.payload_json),
            "queue": task.queue,
            "priority": task.priority,
            "max_attempts": task.max_attempts,
            "timeout_seconds": task.timeout_seconds,
            "retry": None if task.retry is None else dataclasses.asdict(task.retry),
        },
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _spec(args: argparse.Namespace) -> TaskSpec:
    return TaskSpec(
        name=args.task,
        payload_json=wire.encode_json(
            wire.decode_json(args.payload, "--payload", None), max_depth=None
        ),
        queue=args.queue,
        priority=args.priority,
        max_attempts=args.max_attempts,
    )


async def run(client: Client, args: argparse.Namespace) -> str:
    """Carry out one `treadle schedule` action; returns what to print."""
    action: str = args.schedule_command
    if action == "create":
        created = await client.create_schedule(args.name, args.cron, _spec(args), args.timezone)
        return json.dumps(schedule_dict(created), indent=2)
    if action == "list":
        found = await client.list_schedules()
        return json.dumps([schedule_dict(s) for s in found], indent=2)
    if action == "delete":
        await client.delete_schedule(args.name)
        return f"deleted schedule {args.name}"
    calls: dict[str, Callable[[str], Awaitable[Schedule]]] = {
        "pause": client.pause_schedule,
        "resume": client.resume_schedule,
    }
    return json.dumps(schedule_dict(await calls[action](args.name)), indent=2)
