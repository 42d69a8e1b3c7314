"""Declaring tasks and schedules, without a replica: what the decorator and
the registry accept, and the errors that name what is wrong."""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import pytest

from treadle import scheduler
from treadle.common.errors import InvalidArgument
from treadle.scheduler.registry import Handler, Registry
from treadle.tasks import TaskContext, schedule, task, task_ref


@dataclasses.dataclass
class Order:
    id: int
    note: str = ""


def module(**names: Any) -> types.ModuleType:
    made = types.ModuleType("declared")
    vars(made).update(names)
    return made


def test_one_decorator_for_old_and_new_apps() -> None:
    assert scheduler.task is task

    @scheduler.task("legacy")
    def legacy(payload):  # type: ignore[no-untyped-def]  # an old, untyped handler
        return payload

    registry = Registry.from_module(module(legacy=legacy, alias=legacy))  # one task, two names
    assert registry.names == ["legacy"]
    handler = registry.get("legacy")
    assert handler is not None and (handler.queue, handler.is_async) == ("default", False)
    assert legacy({"x": 1}) == {"x": 1}
    # A Handler made from a bare function (as older code does) still works.
    bare = Handler("bare", "q", lambda payload: payload)
    assert bare.definition.payload_type is Any and bare.definition.context_parameter is None


def test_the_handler_signature_is_read_from_its_annotations() -> None:
    @task("typed", queue="orders", max_attempts=2)
    async def typed(payload: Order, context: TaskContext, flag: bool = False) -> int:
        return payload.id

    assert (typed.payload_type, typed.result_type, typed.context_parameter) == (
        Order,
        int,
        "context",
    )
    assert typed.options.queue == "orders"

    @task("needs_more")
    def needs_more(payload: Order, other: int) -> None: ...

    with pytest.raises(InvalidArgument, match=r"'needs_more'.*TaskContext or have defaults: other"):
        Registry.from_module(module(needs_more=needs_more))


def test_declarations_are_checked_when_made() -> None:
    ref = task_ref("orders.ship", Order, bool)
    with pytest.raises(InvalidArgument, match=r"not a valid Order: .*\$\.id"):
        schedule("ship.daily", cron="0 9 * * *", task=ref, payload={"id": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differs from its reference"):
        task("other.name", ref=ref)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="may hold only letters"):
        task("has space", cron="* * * * *")
    with pytest.raises(ValueError, match="timeout must be positive"):
        task("t", timeout=0)

    @task("twice")
    async def one(payload: Any) -> None: ...

    daily = schedule("daily", cron="0 0 * * *", task=one, payload=None)
    with pytest.raises(InvalidArgument, match="schedule 'daily' is declared twice"):
        Registry.from_module(module(one=one, a=daily, b=dataclasses.replace(daily)))


def test_a_cron_task_is_a_schedule_named_after_it() -> None:
    @task("orders.sweep", cron="*/5 * * * *", timezone="Europe/Paris", priority=3)
    def sweep(payload: Order) -> None: ...

    with pytest.raises(InvalidArgument, match=r"missing required field `id`"):
        Registry.from_module(module(sweep=sweep))  # Order() cannot be built from no fields

    @task("orders.tidy", cron="*/5 * * * *", timezone="Europe/Paris", priority=3)
    def tidy(payload: Any) -> None: ...

    (declared,) = Registry.from_module(module(tidy=tidy)).schedules
    assert (declared.name, declared.cron, declared.timezone) == (
        "orders.tidy",
        "*/5 * * * *",
        "Europe/Paris",
    )
    assert (declared.task.payload_json, declared.task.priority) == ("null", 3)


def test_a_concurrency_key_is_computed_from_the_payload_on_the_producer_side() -> None:
    @task("keyed.order", concurrency_key=lambda p: f"customer:{p.id}", max_concurrent=2)
    def handle(payload: Order) -> None: ...

    spec = handle.spec(Order(id=7))
    assert (spec.concurrency_key, spec.max_concurrent) == ("customer:7", 2)
    # The call wins over the task, for the key and for the limit.
    spec = handle.spec(Order(id=7), concurrency_key="vip", max_concurrent=5)
    assert (spec.concurrency_key, spec.max_concurrent) == ("vip", 5)
    assert handle.spec(Order(id=7), max_concurrent=1).max_concurrent == 1
    # A task declaring none: none, unless the call gives both.
    ref = task_ref("plain.order", Order, type(None))
    assert (ref.spec(Order(id=1)).concurrency_key, ref.spec(Order(id=1)).max_concurrent) == (
        None,
        None,
    )
    given = ref.spec(Order(id=1), concurrency_key="k", max_concurrent=3)
    assert (given.concurrency_key, given.max_concurrent) == ("k", 3)

    @task("keyed.bad", concurrency_key=lambda p: p.id, max_concurrent=1)  # type: ignore[arg-type,return-value]
    def bad(payload: Order) -> None: ...

    with pytest.raises(
        InvalidArgument, match=r"concurrency_key of task 'keyed\.bad' must be a str"
    ):
        bad.spec(Order(id=1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_key": lambda p: "k"}, "give concurrency_key .* and max_concurrent together"),
        ({"max_concurrent": 2}, "give concurrency_key .* and max_concurrent together"),
        (
            {"concurrency_key": lambda p: "k", "max_concurrent": 0},
            "max_concurrent must be at least 1",
        ),
    ],
)
def test_concurrency_options_are_checked_when_declared(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        task("keyed.wrong", **options)
