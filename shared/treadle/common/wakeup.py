"""Waiting for an event with a time limit, without losing a cancellation.

Every loop of ours sleeps the same way: until something wakes it or a time
limit passes. `asyncio.wait_for(event.wait(), seconds)` is the obvious
spelling, and on Python 3.11 it is wrong: when the waiting task is cancelled
in the same turn of the event loop as the event is set (or the awaited call
completes), `wait_for` returns normally and the cancellation is lost. A loop
that then goes round again never ends, and whoever cancelled it (a replica's
`stop()`) waits for it forever. `asyncio.timeout` does not lose it, so we wait
with that; ruff bans `asyncio.wait_for` outside the tests (TID251).

    if await wait_event(self._wake, poll_interval):
        ...  # woken early
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True when it was set."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True
