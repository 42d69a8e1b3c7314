"""The log lines of a task's life (`treadle.scheduler.tasks`), from a real
replica with tracing on: failed attempts (WARNING), dead tasks (ERROR, with the
short traceback), cancels (INFO), each once, with the task's trace ids, as text
and as JSON. Reclaimed leases are logged in test_leases."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import make_settings, until

from treadle.client import Client, RetryPolicy, TaskState
from treadle.common import logs, telemetry
from treadle.scheduler import task_log
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

SECRET = "s3cr3t-payload-value"


class Lines:
    """What the task logger wrote, through Treadle's own text and JSON handlers."""

    def __init__(self) -> None:
        self.text = io.StringIO()
        self.json = io.StringIO()

    def records(self, task_id: str) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.json.getvalue().splitlines()]
        return [r for r in found if r.get("task_id") == task_id]

    def text_of(self, task_id: str) -> list[str]:
        """Each text record about `task_id`, with what follows it (a traceback)."""
        records = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", self.text.getvalue().strip())
        return [r for r in records if f"task {task_id} " in r]


@pytest.fixture
def lines() -> Iterator[Lines]:
    seen = Lines()
    handlers = [
        logs.handler(json_lines=False, stream=seen.text),
        logs.handler(json_lines=True, stream=seen.json),
    ]
    level = task_log.log.level
    task_log.log.setLevel(logging.INFO)
    for handler in handlers:
        task_log.log.addHandler(handler)
    yield seen
    for handler in handlers:
        task_log.log.removeHandler(handler)
    task_log.log.setLevel(level)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    database_url: str, schema: str, exporter: InMemorySpanExporter
) -> AsyncIterator[Replica]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    replica = Replica(
        make_settings(schema), load_app("taskapp"), database_url, tracer_provider=provider
    )
    await replica.start()
    yield replica
    await replica.stop()
    provider.shutdown()


@pytest.fixture
def caller() -> TracerProvider:
    """The submitting application's tracing: tasks submitted in its spans carry its trace."""
    return TracerProvider()


def trace_of(span: trace.Span) -> str:
    return trace.format_trace_id(span.get_span_context().trace_id)


async def test_failed_attempts_warn_and_a_dead_task_errs_once_with_its_trace(
    traced: Replica, lines: Lines, exporter: InMemorySpanExporter, caller: TracerProvider
) -> None:
    retry = RetryPolicy(base_seconds=0.05, factor=1, max_seconds=0.05)
    interceptors = telemetry.client_interceptors(caller)
    async with Client(traced.address, interceptors=interceptors) as client:
        with caller.get_tracer("app").start_as_current_span("submitter") as submitter:
            key = uuid.uuid4().hex
            task = await client.submit(
                "flaky", {"key": key, "fail": 5, "secret": SECRET}, max_attempts=2, retry=retry
            )
            fine = await client.submit("echo", {"secret": SECRET})
        assert (await client.wait(task.id)).state is TaskState.DEAD
        assert (await client.wait(fine.id)).state is TaskState.SUCCEEDED

    attempts = {
        s.attributes["treadle.task.attempt"]: trace.format_span_id(s.context.span_id)
        for s in exporter.get_finished_spans()
        if s.name == "treadle.task flaky" and s.attributes and s.context
    }
    failed, dead = lines.records(task.id)
    base = {
        "logger": "treadle.scheduler.tasks",
        "task_id": task.id,
        "task_name": "flaky",
        "queue": "default",
        "tenant": "default",
        "max_attempts": 2,
        "error_type": "RuntimeError",
        "trace_id": trace_of(submitter),
    }
    assert failed == {
        **base,
        "time": failed["time"],
        "level": "WARNING",
        "event": "task_failed",
        "message": failed["message"],
        "state": "RETRYING",
        "attempt": 1,
        "error_message": "flaky failure 1",
        "retry_at": failed["retry_at"],
        "retry_in_seconds": failed["retry_in_seconds"],
        "span_id": attempts[1],
    }
    retry_at = datetime.fromisoformat(failed["retry_at"])
    assert failed["retry_at"].endswith("Z") and retry_at.utcoffset() is not None
    assert 0.025 <= failed["retry_in_seconds"] <= 0.05  # the backoff, with its jitter
    assert dead == {
        **base,
        "time": dead["time"],
        "level": "ERROR",
        "event": "task_dead",
        "message": dead["message"],
        "state": "DEAD",
        "attempt": 2,
        "error_message": "flaky failure 2",
        "traceback": dead["traceback"],
        "span_id": attempts[2],
    }
    assert dead["traceback"].startswith("Traceback (most recent call last):")
    assert dead["traceback"].rstrip().endswith("RuntimeError: flaky failure 2")
    assert len(dead["traceback"]) <= 4000

    warning, error = lines.text_of(task.id)
    ids = f"trace_id={trace_of(submitter)}"
    assert re.search(
        rf" WARNING treadle\.scheduler\.tasks: task {task.id} \(flaky, queue default\) "
        r"attempt 1/2 failed: RuntimeError: flaky failure 1; "
        rf"retrying at {re.escape(failed['retry_at'])} \(in 0\.0[2-5]s\) "
        rf"{ids} span_id={attempts[1]}$",
        warning,
    ), warning
    first, *below = error.splitlines()
    assert first.endswith(
        f" ERROR treadle.scheduler.tasks: task {task.id} (flaky, queue default) is DEAD "
        f"after attempt 2/2: RuntimeError: flaky failure 2 {ids} span_id={attempts[2]}"
    ), first
    assert "\n".join(below) == dead["traceback"].rstrip()

    # A success logs nothing; nothing logs a payload.
    assert lines.records(fine.id) == []
    assert SECRET not in lines.text.getvalue() + lines.json.getvalue()


async def test_cancels_log_once_waiting_or_running_with_the_tasks_trace(
    traced: Replica, lines: Lines, caller: TracerProvider
) -> None:
    interceptors = telemetry.client_interceptors(caller)
    async with Client(traced.address, interceptors=interceptors) as client:
        with caller.get_tracer("app").start_as_current_span("submitter") as submitter:
            waiting = await client.submit("echo", {"secret": SECRET}, delay_seconds=3600)
            running = await client.submit("sleep", {"seconds": 30}, max_attempts=3)
        await until(lambda: _state_is(client, running.id, TaskState.RUNNING))
        await client.cancel(waiting.id)
        await client.cancel(running.id)
        assert (await client.wait(running.id)).state is TaskState.CANCELLED

    ((before,), (during,)) = (lines.records(waiting.id), lines.records(running.id))
    assert {k: before[k] for k in ("level", "event", "state", "task_name", "attempt")} == {
        "level": "INFO",
        "event": "task_cancelled",
        "state": "CANCELLED",
        "task_name": "echo",
        "attempt": 1,
    }
    assert {k: during[k] for k in ("level", "event", "state", "attempt", "max_attempts")} == {
        "level": "INFO",
        "event": "task_cancelled",
        "state": "CANCELLED",
        "attempt": 1,
        "max_attempts": 3,
    }
    # Both carry the trace their submission stored.
    assert before["trace_id"] == during["trace_id"] == trace_of(submitter)
    (waiting_line,) = lines.text_of(waiting.id)
    assert (
        f" INFO treadle.scheduler.tasks: task {waiting.id} (echo, queue default) "
        "cancelled while waiting for attempt 1/1 "
        f"trace_id={trace_of(submitter)} span_id={before['span_id']}"
    ) in waiting_line
    (running_line,) = lines.text_of(running.id)
    assert (
        f" INFO treadle.scheduler.tasks: task {running.id} (sleep, queue default) "
        f"cancelled during attempt 1/3 trace_id={trace_of(submitter)}"
    ) in running_line
    assert SECRET not in lines.text.getvalue() + lines.json.getvalue()


async def _state_is(client: Client, task_id: str, state: TaskState) -> bool:
    return (await client.get(task_id)).state is state
