"""`treadle bench`: submit N tasks in batches to a running scheduler and measure
submit rate, drain rate and submit-to-start latency; with `delay`, the tasks
are scheduled that many seconds ahead and the report adds their lateness
(start minus run time), which says how promptly scheduled tasks are promoted.

Times come from the tasks' own timestamps (created, started, finished), written
by the database clock, so the figures do not depend on the polling here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

from treadle.client import Client, TLSConfig
from treadle.common.errors import DeadlineExceeded
from treadle.common.tasks import TaskSpec, TaskState

DRAIN_TIMEOUT = 600.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _wait_drained(client: Client, queue: str, deadline: float) -> None:
    while True:
        pending = False
        # No task leaves RUNNING for an earlier state, so "none waiting" then
        # "none running" means every task has finished.
        for state in (TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RETRYING, TaskState.RUNNING):
            if (await client.list(queue=queue, state=state, page_size=1)).tasks:
                pending = True
                break
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"bench tasks in queue {queue} not finished in time")
        await asyncio.sleep(0.05)


async def run(
    address: str,
    count: int,
    batch: int,
    name: str,
    delay: float | None = None,
    tls: TLSConfig | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    spec = TaskSpec(name=name, queue=queue, delay_seconds=delay)
    async with Client(address, timeout=120.0, tls=tls, api_key=api_key) as client:
        started = time.perf_counter()
        submitted = 0
        while submitted < count:
            size = min(batch, count - submitted)
            await client.submit_many([spec] * size)
            submitted += size
        submit_seconds = time.perf_counter() - started
        await _wait_drained(client, queue, time.monotonic() + DRAIN_TIMEOUT)
        tasks = [t async for t in client.iter_tasks(queue=queue, page_size=1000)]
    states = Counter(t.state.value for t in tasks)
    first_created = min(t.created_at for t in tasks)
    last_finished = max(t.finished_at for t in tasks if t.finished_at)
    drain_seconds = (last_finished - first_created).total_seconds()
    latency_ms = sorted(
        (t.started_at - t.created_at).total_seconds() * 1000 for t in tasks if t.started_at
    )
    report: dict[str, Any] = {
        "tasks": count,
        "batch": batch,
        "task_name": name,
        "queue": queue,
        "states": dict(states),
        "submit_seconds": round(submit_seconds, 3),
        "submit_rate": round(count / submit_seconds, 1),
        "drain_seconds": round(drain_seconds, 3),
        "drain_rate": round(count / drain_seconds, 1) if drain_seconds > 0 else None,
        "latency_ms": percentiles(latency_ms),
    }
    if delay is not None:
        report["delay_seconds"] = delay
        report["lateness_ms"] = percentiles(
            sorted((t.started_at - t.run_at).total_seconds() * 1000 for t in tasks if t.started_at)
        )
    return report


def percentiles(sorted_values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(sorted_values, q), 2) for q in (50, 90, 95, 99, 100)}


def _spread(p: dict[str, float]) -> str:
    return (
        f"p50 {p['p50']} ms, p90 {p['p90']} ms, p95 {p['p95']} ms, "
        f"p99 {p['p99']} ms, max {p['p100']} ms"
    )


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"tasks          {r['tasks']} x {r['task_name']} in batches of {r['batch']} "
        f"(queue {r['queue']})",
        f"final states   {r['states']}",
        f"submit         {r['submit_rate']:,.0f} tasks/s ({r['submit_seconds']} s)",
        f"drain          {r['drain_rate']:,.0f} tasks/s, first submit to last completion "
        f"({r['drain_seconds']} s)",
        f"submit->start  {_spread(r['latency_ms'])}",
    ]
    if "lateness_ms" in r:
        lines.append(
            f"lateness       {_spread(r['lateness_ms'])} (start - run time, "
            f"delay {r['delay_seconds']:g} s)"
        )
    return "\n".join(lines)
