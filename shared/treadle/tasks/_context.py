"""What a handler may know about the attempt it runs: `TaskContext`.

A handler asks for it with a parameter annotated `TaskContext`:

    @task("report.render")
    def render(payload: Report, ctx: TaskContext) -> str:
        for i, page in enumerate(payload.pages):
            if ctx.cancelled.is_set():
                raise Permanent("cancelled")
            ctx.heartbeat_sync(progress=i / len(payload.pages))
        ...

The replica makes one per attempt; `heartbeat` writes the progress on the
task's row (visible as `Task.progress` in the client and GraphQL) while the
attempt still holds its lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from treadle.common.errors import InvalidArgument

#: Stores an attempt's progress; False when the attempt no longer holds its lease.
Reporter = Callable[[float | None, str | None], Awaitable[bool]]
#: The longest progress message kept (longer ones are cut).
MAX_MESSAGE_LENGTH = 1000
#: Seconds `heartbeat_sync` waits for the replica to store the progress.
SYNC_TIMEOUT = 30.0


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the task's id, name and attempt (as
    attributes `task_id`, `task_name`, `attempt`) and start with `[task <id>]`."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[task {extra.get('task_id')}] {msg}", kwargs


@dataclasses.dataclass(eq=False)
class TaskContext:
    """One attempt of one task, as its handler sees it."""

    id: str
    name: str
    queue: str
    #: This attempt's number, from 1.
    attempt: int
    max_attempts: int
    #: When the attempt times out (None: no time limit).
    deadline: datetime | None
    #: The W3C trace id the attempt runs in (32 hex digits); None without tracing.
    trace_id: str | None
    #: Set when the task is cancelled or this replica lost its lease or is
    #: stopping: a long `def` handler should check it and stop early
    #: (a coroutine handler is cancelled as well).
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    _reporter: Reporter | None = dataclasses.field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = dataclasses.field(default=None, repr=False)

    @property
    def logger(self) -> TaskLogger:
        """A logger bound to the task (`treadle.task.<name>`)."""
        return TaskLogger(
            logging.getLogger(f"treadle.task.{self.name}"),
            {"task_id": self.id, "task_name": self.name, "attempt": self.attempt},
        )

    async def heartbeat(self, progress: float | None = None, message: str | None = None) -> bool:
        """Store the attempt's progress (0..1) and a short message on the task,
        for readers to see. Returns False, and sets `cancelled`, when the
        attempt no longer holds its lease (the work goes on elsewhere)."""
        if progress is not None and not (math.isfinite(progress) and 0 <= progress <= 1):
            raise InvalidArgument(f"progress must be a number in 0..1, got {progress!r}")
        if message is not None:
            message = message.replace("\x00", "")[:MAX_MESSAGE_LENGTH]
        if self._reporter is None:  # called outside a replica (a unit test): nothing to store
            return not self.cancelled.is_set()
        held = await self._reporter(progress, message)
        if not held:
            self.cancelled.set()
        return held and not self.cancelled.is_set()

    def heartbeat_sync(self, progress: float | None = None, message: str | None = None) -> bool:
        """`heartbeat` from a plain `def` handler (its thread blocks until stored)."""
        if self._loop is None:
            return asyncio.run(self.heartbeat(progress, message))
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop in this thread: a sync handler's, as it should be
            on_loop = False
        if on_loop:
            raise RuntimeError(
                "heartbeat_sync would block the event loop it needs: "
                "in a coroutine handler, use `await ctx.heartbeat(...)`"
            )
        done = asyncio.run_coroutine_threadsafe(self.heartbeat(progress, message), self._loop)
        return done.result(SYNC_TIMEOUT)
