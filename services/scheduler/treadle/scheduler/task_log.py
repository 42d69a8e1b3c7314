"""The log lines of a task's life on the replica: failed attempts, dead tasks,
cancels and reclaimed leases, each told once, where its outcome is decided.

Logger `treadle.scheduler.tasks`. Each line reads whole as text, and carries
the same facts as `extra=` fields, so JSON lines have them as keys
(docs/observability.md lists them with examples):

- WARNING: an attempt failed and the task retries (error, next run time);
- ERROR: a task is DEAD (its error, and the short traceback of the attempt
  that ended it: the last frames the executor kept);
- INFO: a task was cancelled (while waiting, before it started, or while
  running), or taken back from a replica whose lease expired.

Every line carries the task's trace: the span of the attempt that failed
when tracing is on, else the context stored with the task (its submitter's).
A task's payload and result are never logged; an error message is the
handler's own (cut at `MAX_MESSAGE` characters). A succeeded attempt logs
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from treadle.common import logs, telemetry
from treadle.common.tasks import Task, TaskError, TaskState
from treadle.scheduler.model import ClaimedTask, Outcome

if TYPE_CHECKING:
    from treadle.scheduler.store import Reclaimed

log = logging.getLogger("treadle.scheduler.tasks")

#: The most characters of an error message a line shows.
MAX_MESSAGE = 500


def _iso(at: datetime) -> str:
    """UTC, to the millisecond, as the log lines' own times are written."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    """`0.25s`, `2.5s`, `4m05s`, `3h02m`, `2d04h`."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


def _one_line(text: str) -> str:
    """`text` on one line: line breaks shown as `\\n`."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _trace(ids: tuple[str, str] | None, carrier: object) -> dict[str, str]:
    """The `extra=` fields naming the task's trace: the attempt's span
    (`ids`), else the span its stored context names; none without either."""
    found = ids or telemetry.carrier_ids(carrier)
    return {} if found is None else {"trace_id": found[0], "span_id": found[1]}


def _task(task_id: str, name: str, queue: str, tenant: str) -> dict[str, Any]:
    return {"task_id": task_id, "task_name": name, "queue": queue, "tenant": tenant}


def _error(error: TaskError) -> tuple[str, dict[str, Any]]:
    """`Type: message` for the line, and the error's fields."""
    message = _cut(error.message)
    shown = f"{error.type}: {_one_line(message)}" if message else error.type
    return shown, {"error_type": error.type, "error_message": message}


def _who(task_id: str, name: str, queue: str) -> str:
    return f"task {task_id} ({name}, queue {queue})"


def attempt_ended(task: ClaimedTask, outcome: Outcome, ran: bool = True) -> None:
    """Log how an attempt of `task` ended, unless it succeeded: a retry
    (WARNING), DEAD (ERROR, with the short traceback) or a cancel (INFO;
    `ran` False: the cancel came before its handler started)."""
    state = outcome.state
    if state is TaskState.SUCCEEDED:
        return
    fields = _task(task.id, task.name, task.queue, task.tenant)
    fields |= {
        "state": state.value,
        "attempt": outcome.attempt,
        "max_attempts": task.max_attempts,
        **_trace(outcome.trace, task.trace_context),
    }
    who = _who(task.id, task.name, task.queue)
    attempt = f"attempt {outcome.attempt}/{task.max_attempts}"
    error = outcome.error
    if state is TaskState.CANCELLED or error is None:
        how = f"during {attempt}" if ran else "before it started"
        if state is TaskState.CANCELLED:
            log.info("%s cancelled %s", who, how, extra={"event": "task_cancelled", **fields})
        return
    shown, about = _error(error)
    fields |= about
    if state is TaskState.RETRYING and outcome.run_at is not None:
        wait = max(0.0, (outcome.run_at - outcome.finished_at).total_seconds())
        fields |= {"retry_at": _iso(outcome.run_at), "retry_in_seconds": round(wait, 3)}
        log.warning(
            "%s %s failed: %s; retrying at %s (in %s)",
            who,
            attempt,
            shown,
            fields["retry_at"],
            _duration(wait),
            extra={"event": "task_failed", **fields},
        )
    elif state is TaskState.DEAD:
        log.error(
            "%s is DEAD after %s: %s",
            who,
            attempt,
            shown,
            extra={"event": "task_dead", **fields, logs.TRACEBACK: error.traceback},
        )


def poisoned(
    task_id: str,
    stage: str,
    reason: str,
    task: ClaimedTask | None = None,
    queue: str | None = None,
    tenant: str | None = None,
) -> None:
    """Log (ERROR) that a task whose stored row could not be handled at `stage`
    ends DEAD; `task`, or `queue` and `tenant`, say what is known of it."""
    fields: dict[str, Any] = {"event": "task_dead", "task_id": task_id}
    if task is not None:
        fields |= _task(task.id, task.name, task.queue, task.tenant)
        fields |= _trace(None, task.trace_context)
    elif queue is not None:
        fields |= {"queue": queue, "tenant": tenant}
    fields["state"] = "DEAD"
    fields |= {"error_type": "PoisonTask", "error_message": _cut(reason), "stage": stage}
    log.error(
        "task %s cannot be handled (%s): %s; it ends DEAD",
        task_id,
        stage,
        _one_line(_cut(reason)),
        extra=fields,
    )


def cancelled_waiting(task: Task, tenant: str, trace_context: Mapping[str, str] | None) -> None:
    """Log (INFO) that a task waiting to run (queued, scheduled or retrying) was cancelled."""
    log.info(
        "%s cancelled while waiting for attempt %d/%d",
        _who(task.id, task.name, task.queue),
        task.attempts + 1,
        task.max_attempts,
        extra={
            "event": "task_cancelled",
            **_task(task.id, task.name, task.queue, tenant),
            "state": task.state.value,
            "attempt": task.attempts + 1,  # the one it waited for
            "max_attempts": task.max_attempts,
            **_trace(None, trace_context),
        },
    )


def reclaimed(rows: Sequence[Reclaimed]) -> None:
    """Log each task taken back from a replica whose lease expired: INFO when
    it is queued again, ERROR when it lost its replica too often and is DEAD."""
    for row in rows:
        who = _who(row.task_id, row.name, row.queue)
        shown, about = _error(row.error)
        fields = {
            "event": "task_reclaimed" if row.state is not TaskState.DEAD else "task_dead",
            **_task(row.task_id, row.name, row.queue, row.tenant),
            "state": row.state.value,
            "attempt": row.error.attempt,
            "max_attempts": row.max_attempts,
            "replica": row.owner,
            **about,
            **_trace(None, row.trace_context),
        }
        if row.state is TaskState.DEAD:
            log.error("%s is DEAD: it lost its replica too often (%s)", who, shown, extra=fields)
        else:
            log.info(
                "%s taken back from replica %s, whose lease expired; queued again "
                "(attempt %d/%d not charged)",
                who,
                row.owner,
                row.error.attempt,
                row.max_attempts,
                extra=fields,
            )
