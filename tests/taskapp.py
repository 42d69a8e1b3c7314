"""Handlers the tests run (loaded by module name, like a user's app)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from treadle.scheduler import task


@task("echo")
async def echo(payload: Any) -> Any:
    return payload


@task("square", queue="math")
def square(payload: Any) -> dict[str, Any]:
    """Sync: runs in the thread pool; reports which thread ran it."""
    return {"value": payload["x"] * payload["x"], "thread": threading.current_thread().name}


@task("boom")
async def boom(payload: Any) -> None:
    raise ValueError(f"boom: {payload}")


@task("sync_boom")
def sync_boom(payload: Any) -> None:
    raise KeyError("missing")


@task("sleep")
async def sleep(payload: Any) -> str:
    await asyncio.sleep(float(payload["seconds"]))
    return "slept"


@task("own_timeout")
async def own_timeout(payload: Any) -> None:
    """Raises the TimeoutError a library call of its own gave up with
    (what `asyncio.wait_for` raises: no message)."""
    raise TimeoutError


@task("not_json")
async def not_json(payload: Any) -> object:
    return object()


@task("noop")
async def noop(payload: Any) -> None:
    return None


#: How many times `flaky` has run per key (tests run the replica in-process).
FLAKY_RUNS: dict[str, int] = {}
#: Payloads of `record` in the order their handlers started.
STARTED: list[Any] = []
#: Set by `cancellable` when it saw its cancellation.
CLEANED_UP: set[str] = set()


@task("flaky")
async def flaky(payload: Any) -> str:
    """Fails `payload["fail"]` times per `payload["key"]`, then succeeds."""
    key = payload["key"]
    FLAKY_RUNS[key] = FLAKY_RUNS.get(key, 0) + 1
    if FLAKY_RUNS[key] <= payload["fail"]:
        raise RuntimeError(f"flaky failure {FLAKY_RUNS[key]}")
    return "finally"


@task("permanent")
async def permanent(payload: Any) -> None:
    from treadle.scheduler import Permanent

    raise Permanent("do not retry me")


@task("record")
async def record(payload: Any) -> None:
    STARTED.append(payload)


@task("cancellable")
async def cancellable(payload: Any) -> str:
    try:
        await asyncio.sleep(float(payload["seconds"]))
    except asyncio.CancelledError:
        CLEANED_UP.add(payload["key"])
        raise
    return "not cancelled"


@task("sync_sleep")
def sync_sleep(payload: Any) -> str:
    import time

    time.sleep(float(payload["seconds"]))
    return "slept"


@task("raises_nul")
async def raises_nul(payload: Any) -> None:
    """Fails with a message jsonb cannot store as it is (a NUL character)."""
    raise ValueError("bad\x00byte")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


@task("unprintable")
async def unprintable(payload: Any) -> None:
    """Fails with an exception whose message cannot even be read."""
    raise Unprintable


@task("hostile_result")
async def hostile_result(payload: Any) -> Any:
    """Returns what jsonb or the depth limit refuses, as `payload["kind"]` says."""
    kind = payload["kind"]
    if kind == "nul":
        return {"text": "a\x00b"}
    if kind == "surrogate":
        return ["\ud800"]
    if kind == "deep":
        value: Any = []
        for _ in range(int(payload["depth"])):
            value = [value]
        return value
    raise ValueError(f"unknown kind {kind}")


@task("hostile_error")
async def hostile_error(payload: Any) -> None:
    """Fails with NUL and a lone surrogate in its message (jsonb refuses both)."""
    raise ValueError("bad\x00message\ud800")


#: Per concurrency key: "overlap" tasks running now, and the most seen at once
#: (every replica of a test runs in this process, so these see them all).
OVERLAP_RUNNING: dict[str, int] = {}
OVERLAP_PEAK: dict[str, int] = {}


@task("overlap")
async def overlap(payload: Any) -> None:
    """Records how many tasks of `payload["key"]` run at once, then sleeps."""
    key = payload["key"]
    OVERLAP_RUNNING[key] = OVERLAP_RUNNING.get(key, 0) + 1
    OVERLAP_PEAK[key] = max(OVERLAP_PEAK.get(key, 0), OVERLAP_RUNNING[key])
    try:
        await asyncio.sleep(float(payload["seconds"]))
    finally:
        OVERLAP_RUNNING[key] -= 1
