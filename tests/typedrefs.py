"""Task declarations shared by producers and the worker (`typedapp`): no
handler code, nothing of the server imported."""

from __future__ import annotations

import dataclasses
from typing import TypedDict

import msgspec

from treadle.common.tasks import RetryPolicy
from treadle.tasks import task_ref


@dataclasses.dataclass
class Email:
    to: str
    subject: str = "hello"


class Sent(msgspec.Struct):
    to: str
    attempt: int


class Sum(TypedDict):
    a: int
    b: int


#: Declared without its handler; `typedapp` binds it.
send_email = task_ref(
    "typed.email",
    Email,
    Sent,
    queue="email",
    max_attempts=3,
    retry=RetryPolicy(base_seconds=0, factor=1, max_seconds=0),
    idempotency_key=lambda p: f"email:{p.to}",
)
add = task_ref("typed.add", Sum, int)
