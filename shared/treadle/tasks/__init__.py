"""Treadle's typed task API: declare tasks, defer them, run them.

    from dataclasses import dataclass
    from treadle.tasks import TaskContext, task

    @dataclass
    class Email:
        to: str
        subject: str

    @task("email.send", queue="email", max_attempts=5, timeout=30)
    async def send_email(payload: Email, ctx: TaskContext) -> bool:
        ctx.logger.info("sending to %s", payload.to)
        return True

    handle = await send_email.defer(Email(to="a@example.com", subject="hi"))
    sent: bool = await handle.wait()

A producer that must not import the handler's code declares the task alone
(`task_ref("email.send", Email, bool, queue="email")`) in a module both sides
share; the worker binds the handler to it (`@send_email.handler`). This
package needs only the client: a producer installs no server.
See docs/python-api.md.
"""

from treadle.tasks._client import configure
from treadle.tasks._context import TaskContext, TaskLogger
from treadle.tasks._failures import InvalidPayload, Permanent
from treadle.tasks._ref import (
    SyncTaskHandle,
    TaskFailed,
    TaskFunction,
    TaskHandle,
    TaskOptions,
    TaskRef,
    task,
    task_ref,
)
from treadle.tasks._schedule import ScheduleDecl, schedule

__all__ = [
    "InvalidPayload",
    "Permanent",
    "ScheduleDecl",
    "SyncTaskHandle",
    "TaskContext",
    "TaskFailed",
    "TaskFunction",
    "TaskHandle",
    "TaskLogger",
    "TaskOptions",
    "TaskRef",
    "configure",
    "schedule",
    "task",
    "task_ref",
]
