"""A small typed app and its producer, checked with `mypy --strict` by
test_static_types.py: the types must flow from `defer` to `wait`."""

from __future__ import annotations

import dataclasses
from typing import TypedDict, reveal_type

import msgspec

from treadle.client import Client
from treadle.tasks import TaskContext, task, task_ref


@dataclasses.dataclass
class Email:
    to: str


class Receipt(msgspec.Struct):
    sent: bool


class Pair(TypedDict):
    a: int
    b: int


@task("example.send", queue="email", max_attempts=3, idempotency_key=lambda p: p.to)
async def send(payload: Email, ctx: TaskContext) -> Receipt:
    ctx.logger.info("to %s", payload.to)
    await ctx.heartbeat(progress=1.0)
    return Receipt(sent=True)


@task("example.add")
def add(payload: Pair) -> int:
    return payload["a"] + payload["b"]


#: Declared for producers; bound to its handler below.
render = task_ref("example.render", Email, str)


@render.handler
def render_it(payload: Email, ctx: TaskContext) -> str:
    return payload.to


async def produce(client: Client) -> None:
    handle = await send.defer(Email(to="a@example.com"), delay=5, client=client)
    reveal_type(handle)
    receipt = await handle.wait()
    reveal_type(receipt)
    total = await (await add.defer({"a": 1, "b": 2}, priority=3)).wait(timeout=5)
    reveal_type(total)
    reveal_type(add.defer_sync({"a": 1, "b": 2}).wait())
    reveal_type(await (await render.defer(Email(to="b"))).wait())
    reveal_type(add({"a": 1, "b": 2}))
    reveal_type(render_it)
