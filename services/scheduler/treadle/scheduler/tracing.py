"""The scheduler's own spans: the insert of a submission, and each attempt.

How one trace spans a task's life: the gRPC server interceptor continues the
caller's trace (from the call's metadata) in a server span; `submitted()`
captures that span's context in W3C form, and the store keeps it with the
task (its `trace_context` column, handed over with each claim in
`ClaimedTask`). Whichever replica claims the task, however much later,
starts the attempt's span as a child of that context *and* with a link
to it (a back end that cuts long traces apart still finds the submission).
Every attempt is a span of its own in the same trace, so retries show as
siblings under the submission.

Each helper takes the tracer (None when tracing is off) and then does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from treadle.common import telemetry
from treadle.common.tasks import TaskState
from treadle.scheduler.model import ClaimedTask, Outcome

#: Semantic-convention names (database spans) and Treadle's own attributes.
DB_SYSTEM = "db.system.name"
DB_OPERATION = "db.operation.name"
DB_COLLECTION = "db.collection.name"
DB_NAMESPACE = "db.namespace"
DB_BATCH_SIZE = "db.operation.batch.size"
TASK_ID = "treadle.task.id"
TASK_NAME = "treadle.task.name"
TASK_ATTEMPT = "treadle.task.attempt"
TASK_MAX_ATTEMPTS = "treadle.task.max_attempts"
TASK_QUEUE = "treadle.task.queue"
TASK_OUTCOME = "treadle.task.outcome"
TASK_INTERRUPTED = "treadle.task.interrupted"


def submitted() -> telemetry.Carrier | None:
    """The context to store with tasks submitted now: the current span's, or None."""
    return telemetry.current_carrier()


@contextlib.contextmanager
def inserting(tracer: trace.Tracer | None, schema: str, count: int) -> Iterator[trace.Span | None]:
    """A client span around the statement that stores a submission (None:
    tracing is off). A single submission stored in a group's statement says
    the group's size with `stored_together`."""
    if tracer is None:
        yield None
        return
    attributes: dict[str, str | int] = {
        DB_SYSTEM: "postgresql",
        DB_OPERATION: "INSERT",
        DB_COLLECTION: "tasks",
        DB_NAMESPACE: schema,
    }
    if count > 1:
        attributes[DB_BATCH_SIZE] = count
    with tracer.start_as_current_span(
        "INSERT tasks", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def stored_together(span: trace.Span | None, count: int) -> None:
    """The statement that stored a single submission stored `count` tasks."""
    if span is not None and count > 1:
        span.set_attribute(DB_BATCH_SIZE, count)


@contextlib.contextmanager
def attempt(tracer: trace.Tracer, task: ClaimedTask) -> Iterator[trace.Span]:
    """The span of one attempt: `treadle.task <name>`, current while the handler
    runs (so its logs and its own spans join the trace), child of and linked
    to the submitter's stored context. A new trace when there is none."""
    parent = telemetry.context_from(task.trace_context)
    submitter = trace.get_current_span(parent).get_span_context()
    links = [Link(submitter)] if submitter.is_valid else []
    with tracer.start_as_current_span(
        f"treadle.task {task.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            TASK_ID: task.id,
            TASK_NAME: task.name,
            TASK_ATTEMPT: task.attempts,
            TASK_MAX_ATTEMPTS: task.max_attempts,
            TASK_QUEUE: task.queue,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except asyncio.CancelledError:
            # Cancelled by a user, or handed back on shutdown: not a failure of the handler.
            span.set_attribute(TASK_INTERRUPTED, True)
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def ended(span: trace.Span, outcome: Outcome) -> None:
    """Record how the attempt ended; a failed one carries the handler's exception."""
    span.set_attribute(TASK_OUTCOME, outcome.state.value)
    error = outcome.error
    if outcome.state is TaskState.SUCCEEDED or error is None:
        return
    span.add_event(
        "exception",
        {
            "exception.type": error.type,
            "exception.message": error.message,
            "exception.stacktrace": error.traceback,
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
