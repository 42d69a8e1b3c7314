"""Cron schedules declared in code: `schedule(...)` and `@task(cron=...)`.

A replica syncs the schedules its app declares when it starts (create or
update; see docs/python-api.md#cron-in-code): those it made are marked as
the code's, and schedules made through the API are never touched.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from treadle.common.tasks import TaskSpec
from treadle.tasks import _payload
from treadle.tasks._ref import TaskRef

P = TypeVar("P")


@dataclasses.dataclass(frozen=True)
class ScheduleDecl:
    """A schedule the code declares: submit `task` on every tick of `cron`."""

    name: str
    cron: str
    timezone: str
    #: The task each tick submits (its payload checked and encoded).
    task: TaskSpec

    @classmethod
    def from_task(cls, ref: TaskRef[Any, Any]) -> ScheduleDecl | None:
        """The schedule `@task(cron=...)` declares (named after the task), or
        None. Its payload is the payload type built from no fields (None when
        untyped)."""
        cron = ref.options.cron
        if cron is None:
            return None
        kind = ref.payload_type
        payload = None if _payload.untyped(kind) else _payload.convert({}, kind, "cron payload")
        return cls(name=ref.name, cron=cron, timezone=ref.options.timezone, task=ref.spec(payload))


def schedule(
    name: str,
    *,
    cron: str,
    task: TaskRef[P, Any],
    payload: P,
    timezone: str = "UTC",
    priority: int | None = None,
    queue: str | None = None,
) -> ScheduleDecl:
    """Declare a schedule (assign it to a module-level name of the app module):

        nightly = schedule("reports.nightly", cron="0 3 * * *", task=render,
                           payload=Report(kind="daily"), timezone="Europe/Paris")

    The payload is checked against the task's payload type now."""
    spec = task.spec(payload, priority=priority, queue=queue)
    return ScheduleDecl(name=name, cron=cron, timezone=timezone, task=spec)
