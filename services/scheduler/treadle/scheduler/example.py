"""The example app `treadle up` runs when no `--app` is given."""

from __future__ import annotations

import asyncio
from typing import Any

from treadle.scheduler import task


@task("echo")
async def echo(payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


@task("noop")
async def noop(payload: Any) -> None:
    """Do nothing (used by `treadle bench`)."""


@task("sleep")
async def sleep(payload: Any) -> dict[str, float]:
    """Sleep for `payload["seconds"]` (default 1) without blocking the loop."""
    seconds = float((payload or {}).get("seconds", 1.0))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


@task("fib")
def fib(payload: Any) -> dict[str, int]:
    """CPU-bound and synchronous: runs in the thread pool. Payload `{"n": 20}`."""
    n = int((payload or {}).get("n", 20))
    if not 0 <= n <= 32:
        raise ValueError("n must be between 0 and 32")
    return {"n": n, "fib": _fib(n)}


@task("fail")
async def fail(payload: Any) -> None:
    """Always raise, to show how failures are recorded."""
    message = (payload or {}).get("message", "this task always fails")
    raise RuntimeError(message)
