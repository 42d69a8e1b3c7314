"""A typed app (treadle.tasks) the tests run: refs declared in `typedrefs`
bound here, payloads of each supported kind, a TaskContext, cron in code."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import msgspec
import pydantic
from typedrefs import Email, Sent, Sum, add, send_email

from treadle.tasks import TaskContext, schedule, task

#: TaskContexts the handlers saw, by task id (the replica runs in the test's process).
SEEN: dict[str, TaskContext] = {}
#: Set by `sync_steps` when it saw `ctx.cancelled` and stopped.
STOPPED: set[str] = set()
#: What `steps` was told when it called heartbeat_sync on the event loop.
SYNC_REFUSED: list[str] = []
#: Lets `sync_steps` go on (a test sets it).
GO = threading.Event()


@send_email.handler
async def deliver(payload: Email, ctx: TaskContext) -> Sent:
    SEEN[ctx.id] = ctx
    if payload.subject == "fail once" and ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return Sent(to=payload.to, attempt=ctx.attempt)


@task(ref=add)
def adder(payload: Sum) -> int:
    return payload["a"] + payload["b"]


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


@task("typed.pydantic", priority=5, timeout=20)
async def norm(payload: Point) -> Point:
    return Point(x=payload.x * 2, y=payload.y * 2)


class Job(msgspec.Struct):
    steps: int = 3
    key: str = ""


@task("typed.steps", queue="steps", cron="0 0 1 1 *")
async def steps(payload: Job, ctx: TaskContext) -> dict[str, Any]:
    try:
        ctx.heartbeat_sync(progress=0.0)
    except RuntimeError as exc:  # it would block the loop: refused
        SYNC_REFUSED.append(str(exc))
    for i in range(payload.steps):
        await ctx.heartbeat(progress=(i + 1) / payload.steps, message=f"step {i + 1}")
    return {"done": payload.steps}


@task("typed.sync_steps", timeout=30)
def sync_steps(payload: Job, ctx: TaskContext) -> str:
    """A long sync handler: reports progress, then waits until told to go on
    or cancelled (and says so in STOPPED)."""
    SEEN[ctx.id] = ctx
    ctx.heartbeat_sync(progress=0.5, message="half way")
    while not GO.is_set():
        if ctx.cancelled.wait(0.02):
            STOPPED.add(payload.key)
            return "stopped"
    return "went on"


@task("typed.plain", max_attempts=4)
async def plain(payload: Any) -> Any:
    await asyncio.sleep(0)
    return payload


@task("typed.slow_sync", timeout=0.2)
def slow_sync(payload: Job, ctx: TaskContext) -> str:
    """Runs past its time limit; sees `cancelled` when the deadline passes."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if ctx.cancelled.wait(0.01):
            STOPPED.add(payload.key)
            return "late"
    return "never"


nightly = schedule(
    "typed.nightly", cron="0 3 * * *", task=add, payload={"a": 1, "b": 2}, timezone="Europe/Paris"
)


class Upload(msgspec.Struct):
    user: str
    seconds: float = 0.02


#: Per user: `per_user` tasks running now, and the most seen at once.
UPLOADS_RUNNING: dict[str, int] = {}
UPLOADS_PEAK: dict[str, int] = {}


@task("typed.per_user", concurrency_key=lambda p: f"user:{p.user}", max_concurrent=1)
async def per_user(payload: Upload) -> str:
    """At most one at a time per user: records how many ran at once."""
    UPLOADS_RUNNING[payload.user] = UPLOADS_RUNNING.get(payload.user, 0) + 1
    UPLOADS_PEAK[payload.user] = max(
        UPLOADS_PEAK.get(payload.user, 0), UPLOADS_RUNNING[payload.user]
    )
    try:
        await asyncio.sleep(payload.seconds)
    finally:
        UPLOADS_RUNNING[payload.user] -= 1
    return payload.user
