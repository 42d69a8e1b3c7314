"""Handler registration: the `@task` decorator and the registry a replica runs.

The decorator only marks a function; `load_app` imports a module and collects
the marked functions into a `Registry`, so no global state is shared between
apps (or tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, TypeVar

from treadle.common.errors import InvalidArgument
from treadle.common.tasks import DEFAULT_QUEUE

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__treadle_task__"


class Permanent(Exception):
    """Raise from a handler to fail the task without further attempts."""


@dataclasses.dataclass(frozen=True)
class Handler:
    """One registered handler: its task name, default queue and callable."""

    name: str
    queue: str
    fn: Callable[[Any], Any]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def task(name: str, *, queue: str = DEFAULT_QUEUE) -> Callable[[F], F]:
    """Register the decorated function as the handler of task `name`.

    The handler takes one argument, the task's payload (decoded JSON), and
    returns a JSON-serialisable result. `async def` handlers run on the event
    loop; plain `def` handlers run in the replica's thread pool.
    """
    if not name:
        raise ValueError("a task needs a name")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, Handler(name=name, queue=queue, fn=fn))
        return fn

    return mark


class Registry:
    """The handlers one replica can run, by task name."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._handlers: dict[str, Handler] = {}
        for handler in handlers:
            if handler.name in self._handlers:
                raise InvalidArgument(f"task {handler.name!r} is registered twice")
            self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def handlers(self) -> list[Handler]:
        return list(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)

    @classmethod
    def from_module(cls, module: ModuleType) -> Registry:
        found = (getattr(value, _MARK) for value in vars(module).values() if hasattr(value, _MARK))
        return cls(found)


def load_app(module_name: str) -> Registry:
    """Import `module_name` and collect its `@task` handlers."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(f"cannot import app module {module_name!r}: {exc}") from exc
    registry = Registry.from_module(module)
    if not registry:
        raise InvalidArgument(f"app module {module_name!r} registers no @task handlers")
    return registry
