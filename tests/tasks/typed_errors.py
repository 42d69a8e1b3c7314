"""Mistakes `mypy --strict` must catch in code using treadle.tasks (each line
marked `# error` must be reported; test_static_types.py checks)."""

from __future__ import annotations

import dataclasses
from typing import Any

from treadle.client import enqueue
from treadle.tasks import task, task_ref


@dataclasses.dataclass
class Email:
    to: str


@task("example.send")
async def send(payload: Email) -> bool:
    return True


render = task_ref("example.render", Email, str)


async def produce() -> None:
    await send.defer({"to": "a@example.com"})  # error
    flag: str = await (await send.defer(Email(to="a"))).wait()  # error
    assert flag
    await send.defer(Email(to="a"), priority="high")  # error


async def produce_in_a_transaction(conn: Any) -> None:
    await enqueue(conn, send, Email(to="a"))
    await enqueue(conn, "example.send", {"to": "a"})  # by name: any JSON payload
    await enqueue(conn, send, {"to": "a@example.com"})  # error
    flag: str = await (await send.attach("some-id")).wait()  # error
    assert flag


@render.handler  # error
def render_wrong(payload: int) -> str:
    return str(payload)
