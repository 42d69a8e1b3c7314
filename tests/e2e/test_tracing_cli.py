"""`treadle scheduler` with TREADLE_LOG_FORMAT=json and OTEL_TRACES_EXPORTER=console,
run as a real process: JSON log lines on stderr, the task's execution span
(continuing the submitter's trace) printed when it exits."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from treadle.client import Client, TaskState
from treadle.common import telemetry

TESTS = Path(__file__).resolve().parent.parent


async def test_scheduler_logs_json_and_exports_spans(database_url: str, schema: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "TREADLE_DATABASE_URL": database_url,
        "TREADLE_DATABASE_SCHEMA": schema,
        "TREADLE_GRPC_PORT": "0",
        "TREADLE_METRICS_PORT": "0",
        "TREADLE_LOG_FORMAT": "json",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "scheduler-under-test",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "treadle.cli",
        "scheduler",
        "--app",
        "taskapp",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        address = None
        async with asyncio.timeout(20):
            while address is None:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    _, err = await proc.communicate()
                    raise AssertionError(f"the scheduler exited before serving: {err.decode()}")
                if line.strip().startswith("gRPC"):
                    address = line.split()[1]
        provider = TracerProvider()
        with provider.get_tracer("test").start_as_current_span("submitter") as root:
            async with Client(
                address, interceptors=telemetry.client_interceptors(provider)
            ) as client:
                task = await client.submit("echo", {"traced": True})
                done = await client.wait(task.id, timeout=10)
        assert done.state is TaskState.SUCCEEDED
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()

    records = [json.loads(line) for line in err.decode().splitlines()]
    assert any("serving gRPC" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    # ConsoleSpanExporter prints each span as indented JSON when the process exits.
    trace_hex = "0x" + trace.format_trace_id(root.get_span_context().trace_id)
    spans = [json.loads(m) for m in re.findall(r"^\{\n.*?^\}$", out.decode(), re.M | re.S)]
    execution = [s for s in spans if s["name"] == "treadle.task echo"]
    assert len(execution) == 1, [s["name"] for s in spans]
    assert execution[0]["context"]["trace_id"] == trace_hex
    assert execution[0]["resource"]["attributes"]["service.name"] == "scheduler-under-test"
    assert execution[0]["attributes"]["treadle.task.id"] == task.id
