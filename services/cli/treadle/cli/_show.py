"""How the `treadle` command shows tasks, queues and replicas to people
(tables by tabulate, in colour on a terminal) and to scripts (`--json`: plain
JSON values).

Everything for people is built as text with ANSI colour codes (tabulate sizes
columns by what shows); `echo` drops the codes where colour does not belong: a
pipe, a file, `NO_COLOR`, `TERM=dumb`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from tabulate import tabulate

from treadle.cli import _table
from treadle.common.stats import Overview, QueueStats
from treadle.common.tasks import ReplicaInfo, Task, TaskState

STATE_STYLES = {
    TaskState.QUEUED: "cyan",
    TaskState.SCHEDULED: "blue",
    TaskState.RUNNING: "yellow",
    TaskState.SUCCEEDED: "green",
    TaskState.RETRYING: "magenta",
    TaskState.DEAD: "bold red",
    TaskState.CANCELLED: "dim",
}
#: SGR parameters of the styles used here.
_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
_CODES = re.compile(r"\x1b\[[0-9;]*m")
#: Control characters in what tasks report (error messages, tracebacks) are
#: shown escaped (\x1b), never sent to the terminal; newlines and tabs stay.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09, 0x0A)}


def paint(text: str, style: str) -> str:
    """`text` in `style` (words of `_SGR`, e.g. "bold red"); "" leaves it plain."""
    codes = ";".join(_SGR[word] for word in style.split())
    return f"\x1b[{codes}m{text}\x1b[0m" if codes and text else text


def safe(text: str) -> str:
    """Text from a task, its control characters escaped."""
    return text.translate(_CONTROLS)


def colours(stream: TextIO) -> bool:
    """Whether `stream` shows colour: a terminal, without NO_COLOR or TERM=dumb."""
    return (
        stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") != "dumb"
    )


def plain_text(text: str) -> str:
    """`text` without its colour codes."""
    return _CODES.sub("", text)


def echo(text: str, *, stderr: bool = False) -> None:
    """Print `text` on stdout (or stderr), in colour only where it shows."""
    stream = sys.stderr if stderr else sys.stdout
    print(text if colours(stream) else plain_text(text), file=stream, flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[str] = ()) -> str:
    """Columns under bold headers and a rule; those named in `right` aligned right
    (numbers, ages)."""
    right = set(right)
    return _table.table(
        [paint(h, "bold") for h in headers],
        rows,
        right={i for i, h in enumerate(headers) if h in right},
        rule=True,
    )


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


def state(value: TaskState) -> str:
    return paint(value.value, STATE_STYLES.get(value, ""))


# -- tasks --------------------------------------------------------------------------------


def _last_error(task: Task) -> str:
    if task.error is None:
        return ""
    return safe(f"{task.error.type}: {task.error.message}".splitlines()[0][:80])


def tasks_table(found: Sequence[Task], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    headers = ("ID", "NAME", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "LAST ERROR")
    rows = (
        (
            task.id,
            safe(task.name),
            safe(task.queue),
            state(task.state),
            f"{task.attempts}/{task.max_attempts}",
            ago(task.created_at, now),
            _last_error(task),
        )
        for task in found
    )
    return table(headers, rows, right=("ATTEMPTS", "CREATED"))


def task_detail(task: Task) -> str:
    """Every field of a task, then each failed attempt with its traceback."""
    rows: list[tuple[str, str]] = [
        ("id", task.id),
        ("name", safe(task.name)),
        ("queue", safe(task.queue)),
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
        ("payload", safe(_json_text(task, "payload"))),
        ("result", safe(_json_text(task, "result")) if task.result_json is not None else "-"),
    ]
    if task.cancel_requested:
        rows.append(("cancel", "requested"))
    parts = [
        tabulate(
            [(paint(name, "bold"), value) for name, value in rows],
            tablefmt="plain",
            disable_numparse=True,
        )
    ]
    for error in task.errors or ((task.error,) if task.error else ()):
        heading = paint(
            f"\nattempt {error.attempt}: {safe(error.type)}: {safe(error.message)}", "bold red"
        )
        if error.failed_at is not None:
            heading += paint(f"  ({stamp(error.failed_at)})", "dim")
        parts.append(heading)
        if error.traceback:
            parts.append(paint(safe(error.traceback.rstrip()), "dim"))
    return "\n".join(parts)


def _json_text(task: Task, field: str) -> str:
    try:
        return json.dumps(getattr(task, field))
    except ValueError:
        return getattr(task, f"{field}_json") or ""


# -- queues, replicas, overview -------------------------------------------------------------


def stats_table(found: Iterable[QueueStats], now: datetime | None = None) -> str:
    """Per queue: what waits, runs and retries now, its limit, and lifetime totals."""
    now = now or datetime.now(UTC)
    headers = (
        *("QUEUE", "READY", "SCHEDULED", "RUNNING", "RETRYING", "MAX", "PAUSED"),
        *("OLDEST WAIT", "ENQUEUED", "COMPLETED", "FAILED", "DEAD", "CANCELLED"),
    )
    rows = []
    for q in found:
        oldest = age((now - q.oldest_enqueued_at).total_seconds()) if q.oldest_enqueued_at else "-"
        rows.append(
            (
                q.queue,
                f"{q.length:,}",
                f"{q.scheduled:,}",
                f"{q.running:,}",
                f"{q.retrying:,}",
                str(q.max_concurrent) if q.max_concurrent else "-",
                paint("paused", "bold yellow") if q.paused else paint("no", "dim"),
                oldest,
                f"{q.total_enqueued:,}",
                f"{q.total_completed:,}",
                f"{q.total_failed:,}",
                paint(f"{q.total_dead:,}", "red" if q.total_dead else ""),
                f"{q.total_cancelled:,}",
            )
        )
    return table(headers, rows, right=headers[1:])


def replicas_table(found: Iterable[ReplicaInfo], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    headers = ("REPLICA", "HOST", "PID", "VERSION", "ALIVE", "RUNNING", "HEARTBEAT", "UP")
    rows = (
        (
            r.id,
            r.host,
            str(r.pid),
            r.version,
            paint("yes", "green") if r.alive else paint("no", "red"),
            str(r.running),
            ago(r.last_heartbeat_at, now),
            age((now - r.started_at).total_seconds()) if r.alive else "-",
        )
        for r in found
    )
    return table(headers, rows, right=("PID", "RUNNING"))


def overview_line(overview: Overview) -> str:
    """The installation in two lines: tasks by state; throughput, errors, latency."""
    states = "  ".join(
        f"{paint(value.value.lower(), 'dim')} {paint(f'{count:,}', STATE_STYLES.get(value, ''))}"
        for value, count in overview.tasks_by_state.items()
    )
    rate = overview.error_rate * 100
    line = (
        f"throughput {overview.throughput_last_minute:,.1f}/s (1m) "
        f"{overview.throughput_last_hour:,.2f}/s (1h)  "
        + paint(f"errors {rate:.1f}%", "red" if rate >= 5 else "")
    )
    if overview.p95_processing_seconds is not None:
        avg = overview.avg_processing_seconds or 0.0
        line += f"  processing avg {avg:.3f}s p95 {overview.p95_processing_seconds:.3f}s"
    line += (
        f"  replicas {overview.active_replicas}  queues {overview.total_queues}"
        f"  up {age(overview.uptime_seconds)}"
    )
    return f"{states}\n{line}"
