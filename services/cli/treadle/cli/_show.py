"""How the `treadle` command shows tasks, queues and replicas to people (rich
tables and panels) and to scripts (`--json`: plain JSON values)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from treadle.common.stats import Overview, QueueStats
from treadle.common.tasks import ReplicaInfo, Task, TaskState

#: Columns a table gets when the output is not a terminal (a pipe, a file):
#: wide enough that ids and errors are not folded.
PIPE_WIDTH = 200

STATE_STYLES = {
    TaskState.QUEUED: "cyan",
    TaskState.SCHEDULED: "blue",
    TaskState.RUNNING: "yellow",
    TaskState.SUCCEEDED: "green",
    TaskState.RETRYING: "magenta",
    TaskState.DEAD: "bold red",
    TaskState.CANCELLED: "dim",
}


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), `PIPE_WIDTH` wide when not a terminal."""
    made = Console(stderr=stderr, highlight=False)
    return made if made.is_terminal else Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)


# -- JSON -----------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(value, default=_encode, indent=indent)


def task_dict(task: Task) -> dict[str, Any]:
    """A task as a JSON object: its fields, the payload and result as JSON values."""
    data = {k.removesuffix("_json"): v for k, v in dataclasses.asdict(task).items()}
    data["payload"], data["result"] = task.payload, task.result
    return data


def plain(value: Any) -> dict[str, Any]:
    """A dataclass as a JSON object (times as ISO 8601 text when dumped)."""
    data: dict[str, Any] = dataclasses.asdict(value)
    return data


# -- times ------------------------------------------------------------------------------


def age(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """`when` relative to now ("3m ago", "in 2h"); "-" for None."""
    if when is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    return f"{age(delta)} ago" if delta >= 0 else f"in {age(-delta)}"


def stamp(when: datetime | None) -> str:
    """`when` absolute (UTC, to the second) and relative; "-" for None."""
    if when is None:
        return "-"
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z ({ago(when)})"


def state(value: TaskState) -> Text:
    return Text(value.value, style=STATE_STYLES.get(value, ""))


# -- tasks --------------------------------------------------------------------------------


def _last_error(task: Task) -> str:
    if task.error is None:
        return ""
    return f"{task.error.type}: {task.error.message}".splitlines()[0][:80]


def tasks_table(found: Sequence[Task]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("NAME")
    table.add_column("QUEUE")
    table.add_column("STATE")
    table.add_column("ATTEMPTS", justify="right")
    table.add_column("CREATED", justify="right")
    table.add_column("LAST ERROR", overflow="ellipsis")
    now = datetime.now(UTC)
    for task in found:
        table.add_row(
            task.id,
            task.name,
            task.queue,
            state(task.state),
            f"{task.attempts}/{task.max_attempts}",
            ago(task.created_at, now),
            _last_error(task),
        )
    return table


def task_detail(task: Task) -> RenderableType:
    """Every field of a task, then each failed attempt with its traceback."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("id", task.id),
        ("name", task.name),
        ("queue", task.queue),
        ("state", state(task.state)),
        ("attempts", f"{task.attempts} of {task.max_attempts}"),
        ("priority", str(task.priority)),
        ("created", stamp(task.created_at)),
        ("run at", stamp(task.run_at)),
        ("started", stamp(task.started_at)),
        ("finished", stamp(task.finished_at)),
        ("idempotency key", task.idempotency_key or "-"),
        (
            "concurrency key",
            f"{task.concurrency_key} (at most {task.max_concurrent} running)"
            if task.concurrency_key
            else "-",
        ),
        ("timeout", f"{task.timeout_seconds:g}s" if task.timeout_seconds else "none"),
        (
            "retry",
            f"{task.retry.base_seconds:g}s x {task.retry.factor:g}, at most "
            f"{task.retry.max_seconds:g}s",
        ),
        ("trace id", task.trace_id or "-"),
        ("payload", _json_text(task, "payload")),
        ("result", _json_text(task, "result") if task.result_json is not None else "-"),
    ]
    if task.cancel_requested:
        rows.append(("cancel", "requested"))
    for name, value in rows:
        fields.add_row(name, value)
    parts: list[RenderableType] = [fields]
    for error in task.errors or ((task.error,) if task.error else ()):
        heading = Text(
            f"\nattempt {error.attempt}: {error.type}: {error.message}", style="bold red"
        )
        if error.failed_at is not None:
            heading.append(f"  ({stamp(error.failed_at)})", style="dim")
        parts.append(heading)
        if error.traceback:
            parts.append(Text(error.traceback.rstrip(), style="dim"))
    return Group(*parts)


def _json_text(task: Task, field: str) -> str:
    try:
        return json.dumps(getattr(task, field))
    except ValueError:
        return getattr(task, f"{field}_json") or ""


# -- queues, replicas, overview -------------------------------------------------------------


def stats_table(found: Iterable[QueueStats], now: datetime | None = None) -> Table:
    """Per queue: what waits, runs and retries now, its limit, and lifetime totals."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, title=None)
    for name in ("QUEUE", "READY", "SCHEDULED", "RUNNING", "RETRYING", "MAX", "PAUSED"):
        table.add_column(name, justify="left" if name == "QUEUE" else "right")
    table.add_column("OLDEST WAIT", justify="right")
    for name in ("ENQUEUED", "COMPLETED", "FAILED", "DEAD", "CANCELLED"):
        table.add_column(name, justify="right")
    now = now or datetime.now(UTC)
    for q in found:
        oldest = age((now - q.oldest_enqueued_at).total_seconds()) if q.oldest_enqueued_at else "-"
        table.add_row(
            q.queue,
            f"{q.length:,}",
            f"{q.scheduled:,}",
            f"{q.running:,}",
            f"{q.retrying:,}",
            str(q.max_concurrent) if q.max_concurrent else "-",
            Text("paused", style="bold yellow") if q.paused else Text("no", style="dim"),
            oldest,
            f"{q.total_enqueued:,}",
            f"{q.total_completed:,}",
            f"{q.total_failed:,}",
            Text(f"{q.total_dead:,}", style="red" if q.total_dead else ""),
            f"{q.total_cancelled:,}",
        )
    return table


def replicas_table(found: Iterable[ReplicaInfo], now: datetime | None = None) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for name in ("REPLICA", "HOST", "PID", "VERSION", "ALIVE", "RUNNING", "HEARTBEAT", "UP"):
        table.add_column(name, justify="right" if name in ("PID", "RUNNING") else "left")
    now = now or datetime.now(UTC)
    for r in found:
        table.add_row(
            r.id,
            r.host,
            str(r.pid),
            r.version,
            Text("yes", style="green") if r.alive else Text("no", style="red"),
            str(r.running),
            ago(r.last_heartbeat_at, now),
            age((now - r.started_at).total_seconds()) if r.alive else "-",
        )
    return table


def overview_line(overview: Overview) -> Text:
    """The installation in one line: tasks by state, throughput, errors, latency."""
    text = Text()
    for value, count in overview.tasks_by_state.items():
        text.append(f"{value.value.lower()} ", style="dim")
        text.append(f"{count:,}", style=STATE_STYLES.get(value, ""))
        text.append("  ")
    text.append("\n")
    text.append(f"throughput {overview.throughput_last_minute:,.1f}/s (1m) ")
    text.append(f"{overview.throughput_last_hour:,.2f}/s (1h)  ")
    rate = overview.error_rate * 100
    text.append(f"errors {rate:.1f}%", style="red" if rate >= 5 else "")
    if overview.p95_processing_seconds is not None:
        avg = overview.avg_processing_seconds or 0.0
        text.append(f"  processing avg {avg:.3f}s p95 {overview.p95_processing_seconds:.3f}s")
    text.append(
        f"  replicas {overview.active_replicas}  queues {overview.total_queues}"
        f"  up {age(overview.uptime_seconds)}"
    )
    return text
