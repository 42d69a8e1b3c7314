"""`treadle tasks`, `task`, `watch`, `dead`, and the bulk actions `retry`,
`cancel` and `purge`: tasks for people (tables) and scripts (`--json`).

A bulk action counts the tasks it would change first (CountTasks), asks for
confirmation unless `--yes` (and refuses, rather than wait, when stdin is not
a terminal), then calls the batch RPC until the scheduler says nothing is
left, with a progress bar on stderr, and prints the total.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from treadle.cli import _actions, _show
from treadle.cli._duration import ago
from treadle.client import Client
from treadle.common import wire
from treadle.common.errors import InvalidArgument, Unavailable
from treadle.common.tasks import BulkResult, TaskState

#: The states each bulk action acts on (what its one-task call allows).
ACTS_ON = {
    "retry": (TaskState.DEAD, TaskState.CANCELLED),
    "cancel": (TaskState.QUEUED, TaskState.SCHEDULED, TaskState.RETRYING, TaskState.RUNNING),
    "purge": (TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED),
}
PAST = {"retry": "retried", "cancel": "cancelled", "purge": "purged"}
#: Batches in a row that change nothing while tasks remain (rows another
#: statement holds) before a bulk action gives up.
MAX_IDLE_BATCHES = 50

TASKS_EPILOG = """\
examples:
  treadle tasks                                  # the newest 50 tasks
  treadle tasks --queue emails --state DEAD --since 1h
  treadle tasks --state QUEUED,SCHEDULED --name report --limit 200
  treadle tasks --json | jq -r '.tasks[].id'
  treadle task 4f6c0a52-...                      # one task, every attempt's error
  treadle watch 4f6c0a52-...                     # its states live, until it ends
  treadle dead --queue emails                    # the dead letters
"""

BULK_EPILOG = """\
examples:
  treadle retry 4f6c0a52-...                     # one DEAD or CANCELLED task
  treadle retry --dead --queue emails --since 1h # every dead letter of the last hour
  treadle cancel 4f6c0a52-...
  treadle cancel --queue emails --state QUEUED --yes
  treadle purge --queue emails --state SUCCEEDED --older-than 1d

A bulk action counts the matching tasks, asks before it acts (--yes: don't
ask; without a terminal on stdin it refuses unless --yes), then works through
them on the scheduler in batches of --batch (default 500), one transaction each.
"""


def _states(text: str) -> list[TaskState]:
    """`--state` values: names, comma-separated, any case."""
    try:
        return [wire.as_enum(TaskState, s, "state") for s in text.split(",") if s.strip()]
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _add_filters(p: argparse.ArgumentParser, since: str) -> None:
    p.add_argument("--queue", help="only this queue")
    p.add_argument(
        "--state",
        action="append",
        type=_states,
        metavar="STATE",
        help="only these states (QUEUED, SCHEDULED, RUNNING, SUCCEEDED, RETRYING, DEAD, "
        "CANCELLED; comma-separated or repeated)",
    )
    p.add_argument("--name", help="only tasks of this name")
    p.add_argument("--since", metavar="DURATION", help=since)


def add_parsers(sub: Any, add_address: _actions.AddAddress) -> None:
    """Add tasks, task, watch, dead, retry, cancel and purge to the `treadle` parser."""

    def command(name: str, text: str, description: str, epilog: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=text,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    listing = command(
        "tasks",
        "list tasks, newest first, as a table",
        "List tasks newest first, filtered; a table for people, --json for scripts.",
        TASKS_EPILOG,
    )
    _add_filters(listing, "only tasks created within this long, e.g. 1h, 30m, 2d")
    _add_page(listing)
    add_address(listing)

    dead = command(
        "dead",
        "list dead letters (DEAD tasks) with their errors",
        "List DEAD tasks, newest first, with their last error. Retry them with "
        "`treadle retry --dead`.",
        TASKS_EPILOG,
    )
    dead.add_argument("--queue", help="only this queue")
    dead.add_argument("--name", help="only tasks of this name")
    dead.add_argument("--since", metavar="DURATION", help="only tasks created within this long")
    _add_page(dead)
    add_address(dead)

    one = command(
        "task",
        "show one task: its fields and every attempt's error",
        "Show a task: its fields, payload, result, and every failed attempt's "
        "error with its traceback.",
        TASKS_EPILOG,
    )
    one.add_argument("id", help="task id")
    one.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_address(one)

    watch = command(
        "watch",
        "follow a task's states live until it ends",
        "Print a task's state now and at each change until it ends. Exits 0 when it "
        "SUCCEEDED, 1 when it ended DEAD or CANCELLED.",
        TASKS_EPILOG,
    )
    watch.add_argument("id", help="task id")
    watch.add_argument("--json", action="store_true", help="one JSON object per state")
    add_address(watch)

    for action, text, description in (
        (
            "retry",
            "requeue a DEAD or CANCELLED task, or many (--dead)",
            "Requeue a DEAD or CANCELLED task with fresh attempts (printed as JSON); or, "
            "without an id, every DEAD (--dead) or CANCELLED task matching the filters.",
        ),
        (
            "cancel",
            "cancel a task, or every unfinished task matching filters",
            "Cancel a waiting task at once; a running one is cancelled on the replica "
            "running it (printed as JSON). Without an id: every unfinished task matching "
            "the filters (at least one needed).",
        ),
        (
            "purge",
            "delete finished tasks matching filters",
            "Delete finished tasks (SUCCEEDED, DEAD, CANCELLED) matching the filters "
            "(at least one needed); unfinished tasks are never deleted.",
        ),
    ):
        p = command(action, text, description, BULK_EPILOG)
        if action != "purge":
            p.add_argument("id", nargs="?", help="one task's id (instead of filters)")
        if action == "retry":
            p.add_argument(
                "--dead", action="store_true", help="every DEAD task (the filters apply)"
            )
        _add_filters(p, "only tasks created within this long, e.g. 1h")
        p.add_argument(
            "--older-than",
            metavar="DURATION",
            help="only tasks that finished longer ago than this, e.g. 1d",
        )
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument(
            "--batch", type=int, default=500, help="tasks per call, 1..1000 (default 500)"
        )
        p.add_argument("--json", action="store_true", help="print the outcome as JSON")
        add_address(p)


def _add_page(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=50, help="tasks to show, 1..1000 (default 50)")
    p.add_argument("--after", metavar="CURSOR", help="continue after this cursor (printed)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def _chosen_states(args: argparse.Namespace) -> list[TaskState]:
    return list(dict.fromkeys(s for group in args.state or () for s in group))


# -- listing ------------------------------------------------------------------------------


async def run_tasks(client: Client, args: argparse.Namespace) -> int:
    """`treadle tasks` and `treadle dead`."""
    if not 1 <= args.limit <= 1000:
        raise InvalidArgument(f"--limit must be between 1 and 1000, got {args.limit}")
    states = [TaskState.DEAD] if args.command == "dead" else _chosen_states(args)
    page = await client.list(
        queue=args.queue,
        states=states,
        name=args.name,
        created_after=ago(args.since, "--since") if args.since else None,
        page_size=args.limit,
        cursor=args.after,
    )
    if args.json:
        found = [_show.task_dict(t) for t in page.tasks]
        print(_show.dumps({"tasks": found, "next_cursor": page.next_cursor}))
        return 0
    if not page.tasks:
        _show.echo("no tasks match")
        return 0
    _show.echo(_show.tasks_table(page.tasks))
    if page.next_cursor:
        _show.echo(
            _show.paint(f"more: add --after {page.next_cursor} for the next {args.limit}", "dim"),
            stderr=True,
        )
    return 0


async def run_task(client: Client, args: argparse.Namespace) -> int:
    task = await client.get(args.id)
    if args.json:
        print(_show.dumps(_show.task_dict(task)))
    else:
        _show.echo(_show.task_detail(task))
    return 0


async def run_watch(client: Client, args: argparse.Namespace) -> int:
    last = None
    async for task in client.watch(args.id):
        last = task
        if args.json:
            print(_show.dumps(_show.task_dict(task), indent=None), flush=True)
            continue
        line = f"{datetime.now():%H:%M:%S} {_show.state(task.state)}"
        line += _show.paint(f"  attempt {task.attempts}/{task.max_attempts}", "dim")
        if task.error is not None and task.state in (TaskState.RETRYING, TaskState.DEAD):
            error = _show.safe(f"{task.error.type}: {task.error.message}")
            line += _show.paint(f"  {error}", "red")
        _show.echo(line)
    if last is None or not last.state.terminal:
        raise Unavailable(f"the watch of task {args.id} ended before the task did: watch again")
    return 0 if last.state is TaskState.SUCCEEDED else 1


# -- bulk actions ----------------------------------------------------------------------------


def _one(client: Client, action: str) -> Callable[[str], Awaitable[Any]]:
    return client.retry if action == "retry" else client.cancel


def _bulk_states(action: str, args: argparse.Namespace) -> list[TaskState]:
    """The states the action acts on: those given (each must be one it can
    act on), else all it can."""
    given = _chosen_states(args)
    if action == "retry" and args.dead:
        given = [*given, TaskState.DEAD] if given else [TaskState.DEAD]
    can = ACTS_ON[action]
    wrong = [s.value for s in given if s not in can]
    if wrong:
        raise InvalidArgument(
            f"{action} acts on {', '.join(s.value for s in can)} tasks; "
            f"--state {','.join(wrong)} is not one of them"
        )
    return list(dict.fromkeys(given)) or list(can)


async def run_bulk(client: Client, args: argparse.Namespace) -> int:
    """`treadle retry|cancel|purge`: one task by id, or every task the filters select."""
    action: str = args.command
    filters = {
        "--queue": args.queue,
        "--state": args.state,
        "--name": args.name,
        "--since": args.since,
        "--older-than": args.older_than,
        **({"--dead": args.dead} if action == "retry" else {}),
    }
    task_id = getattr(args, "id", None)
    if task_id is not None:
        given = [flag for flag, value in filters.items() if value]
        if given:
            raise InvalidArgument(f"give a task id or filters ({', '.join(given)}), not both")
        print(_show.dumps(_show.task_dict(await _one(client, action)(task_id))))
        return 0
    if action == "retry" and not (args.dead or args.state):
        raise InvalidArgument(
            "give a task id, or --dead (or --state CANCELLED) to retry many, "
            "e.g. treadle retry --dead --queue emails"
        )
    if action != "retry" and not any(filters.values()):
        raise InvalidArgument(
            f"give a task id or at least one filter (--queue, --state, --name, --since, "
            f"--older-than) to {action} many; e.g. treadle {action} --queue emails "
            f"--state {ACTS_ON[action][0].value}"
        )
    if not 1 <= args.batch <= 1000:
        raise InvalidArgument(f"--batch must be between 1 and 1000, got {args.batch}")
    selection: dict[str, Any] = {
        "queue": args.queue,
        "states": _bulk_states(action, args),
        "name": args.name,
        "created_after": ago(args.since, "--since") if args.since else None,
        "finished_before": ago(args.older_than, "--older-than") if args.older_than else None,
    }
    matched = await client.count_tasks(**selection)
    described = _described(action, matched, selection)
    if matched == 0:
        return _report(args, action, 0, [], f"no {_states_text(selection['states'])} tasks match")
    if not args.yes:
        _confirm(action, described)
    done = await _work(client, action, selection, matched, args.batch, args.json)
    return _report(args, action, matched, done, f"{PAST[action]} {len(done):,} tasks")


def _states_text(states: Sequence[TaskState]) -> str:
    return "/".join(s.value for s in states)


def _described(action: str, matched: int, selection: dict[str, Any]) -> str:
    where = f" in queue {selection['queue']!r}" if selection["queue"] else ""
    named = f" named {selection['name']!r}" if selection["name"] else ""
    return f"{action} {matched:,} {_states_text(selection['states'])} tasks{named}{where}"


def _confirm(action: str, described: str) -> None:
    """Ask on the terminal (the question on stderr, stdout stays the outcome's);
    refuse at once when stdin is not one (never hang). Until y or n is answered
    it asks again; an end of input (Ctrl-D) is a no."""
    if not sys.stdin.isatty():
        raise InvalidArgument(
            f"not confirmed: would {described}, but stdin is not a terminal to ask on; "
            "pass --yes to go ahead"
        )
    while True:
        print(
            f"{described[0].upper()}{described[1:]}? [y/n]: ", end="", file=sys.stderr, flush=True
        )
        try:
            answer = input().strip().lower()
        except EOFError:
            print(file=sys.stderr)
            answer = "n"
        if answer in ("y", "yes"):
            return
        if answer in ("n", "no"):
            raise InvalidArgument(f"{action} not confirmed: nothing changed")
        print("please answer y or n", file=sys.stderr)


async def _work(
    client: Client,
    action: str,
    selection: dict[str, Any],
    expected: int,
    batch: int,
    quiet: bool,
) -> list[str]:
    """Call the action's batch RPC until nothing is left; the ids changed."""
    from tqdm import tqdm  # only the bulk actions draw a progress bar: not at every start

    call: Callable[..., Awaitable[BulkResult]] = {
        "retry": client.retry_tasks,
        "cancel": client.cancel_tasks,
        "purge": client.purge_tasks,
    }[action]
    done: list[str] = []
    idle = 0
    with tqdm(
        desc=PAST[action], total=expected, unit=" tasks", file=sys.stderr, disable=quiet
    ) as bar:
        while True:
            result = await call(**selection, limit=batch)
            done += result.ids
            # More may match than were counted (tasks keep coming).
            bar.total = max(expected, len(done))
            bar.update(len(result.ids))
            if not result.more:
                break
            idle = 0 if result.affected else idle + 1
            if idle >= MAX_IDLE_BATCHES:
                raise Unavailable(
                    f"{PAST[action]} {len(done):,} tasks; the rest stayed locked by other "
                    "work: run the command again"
                )
            if not result.affected:
                await asyncio.sleep(0.1)
    return done


def _report(args: argparse.Namespace, action: str, matched: int, ids: list[str], text: str) -> int:
    if args.json:
        print(_show.dumps({"action": action, "matched": matched, "affected": len(ids), "ids": ids}))
    else:
        _show.echo(text)
    return 0
