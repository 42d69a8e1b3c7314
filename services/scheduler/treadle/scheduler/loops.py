"""Background loops: the clock they read, how they back off, and the set that runs them.

- `Clock` and `utcnow`: every part takes the clock as a parameter, `utcnow`
  by default, so time is testable without sleeping.
- `Backoff`: a loop whose database call failed logs it and sleeps, doubling
  from 0.1 s up to 5 s (by default) until a call succeeds.
- `Part`: anything that runs background loops says which, by name
  (`loops()`); the supervisor starts each as the task `treadle-<name>`.
- `Loops`: the named tasks of one replica. A task that ends while nobody
  asked to stop (it died) stops the replica, and is named in `died` (the
  process then exits with status 70); `cancel()` cancels and awaits
  them all, cancelling again (up to three rounds, with the stack logged) a
  loop that swallows its cancellation, so a stop never hangs on one.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("treadle.scheduler.loops")

Clock = Callable[[], datetime]
#: A loop: called once, it runs until cancelled.
Loop = Callable[[], Coroutine[Any, Any, None]]

#: Seconds to wait after a failed database call before a loop tries again:
#: the first wait, and the most it doubles to.
ERROR_BACKOFF = (0.1, 5.0)
#: How long `Loops.cancel` waits for the cancelled loops, and how many times it
#: cancels one that is still running.
CANCEL_WAIT = 5.0
CANCEL_ROUNDS = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


class Backoff:
    """The growing wait of a loop whose calls fail; `ok()` after one succeeds."""

    def __init__(self, logger: logging.Logger, bounds: tuple[float, float] = ERROR_BACKOFF) -> None:
        #: The loop owner's logger, which says what failed.
        self.log = logger
        self.bounds = bounds
        self.delay = 0.0

    async def failed(self, what: str, exc: Exception) -> None:
        """Log that `what` failed with `exc`, and sleep before the next try."""
        low, high = self.bounds
        self.delay = min(high, max(low, self.delay * 2))
        self.log.warning("%s failed (%s); retrying in %.1fs", what, exc, self.delay)
        await asyncio.sleep(self.delay)

    def ok(self) -> None:
        self.delay = 0.0


class Part(Protocol):
    """A part of a replica that runs background loops."""

    def loops(self) -> Mapping[str, Loop]:
        """Each loop this part runs, by name."""
        ...


class Loops:
    """The background tasks of one replica, each named `treadle-<name>`.

    `stopping` is the replica's stop request: a task that ends while it is
    clear died, which is logged and sets it."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self._tasks: set[asyncio.Task[None]] = set()
        #: The loops that died (ended while nobody asked to stop), by task name.
        self.died: list[str] = []

    @property
    def alive(self) -> dict[str, bool]:
        """Each loop by name, and whether it still runs."""
        return {task.get_name(): not task.done() for task in self._tasks}

    def start(self, *parts: Part) -> None:
        """Start every loop of `parts`, in order."""
        for part in parts:
            for name, loop in part.loops().items():
                self.spawn(name, loop())

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"treadle-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping.is_set():
            return
        # A loop ends only when the stop cancels it: cancelled from anywhere
        # else (a handler that reached for it), it is as dead as one that raised.
        exc = None if task.cancelled() else task.exception()
        how = "cancelled" if task.cancelled() else "returned" if exc is None else repr(exc)
        log.error(
            "background loop %s died (%s); stopping the replica", task.get_name(), how, exc_info=exc
        )
        self.died.append(task.get_name())
        self.stopping.set()

    async def cancel(self) -> None:
        """Cancel every loop and wait for each to end, logging what ended with
        an error. A loop that outlives its cancellation (it lost it, which it
        must not) is logged with its stack and cancelled again, so a stop never
        hangs on it; one that survives that too is left behind."""
        names = sorted(t.get_name() for t in self._tasks)
        pending = set(self._tasks)
        for attempt in range(1, CANCEL_ROUNDS + 1):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
            for task in pending:
                stack = io.StringIO()
                task.print_stack(file=stack)
                log.error(
                    "background loop %s did not end when cancelled (round %d of %d):\n%s",
                    task.get_name(),
                    attempt,
                    CANCEL_ROUNDS,
                    stack.getvalue(),
                )
        for task in self._tasks - pending:
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                log.error("background loop %s ended with %r", task.get_name(), exc)
        self._tasks.clear()
        if names:
            log.info(
                "cancelled and awaited %d background task(s): %s", len(names), ", ".join(names)
            )
