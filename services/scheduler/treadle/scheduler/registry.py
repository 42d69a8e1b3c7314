"""Handler registration: the registry a replica runs.

`task` is `treadle.tasks.task` (one decorator for apps old and new): it
returns a `TaskFunction`, and `load_app` imports a module and collects the
task functions and schedule declarations (`treadle.tasks.schedule`) it holds
at module level into a `Registry`, so no global state is shared between apps
(or tests).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from treadle.common.errors import InvalidArgument
from treadle.common.tasks import DEFAULT_QUEUE
from treadle.tasks import Permanent, ScheduleDecl, TaskFunction, TaskOptions, task

__all__ = ["Handler", "Permanent", "Registry", "load_app", "task"]


@dataclasses.dataclass(frozen=True)
class Handler:
    """One registered handler: its task name, default queue and callable, and
    its declaration (payload and result types, options, context parameter);
    made from the bare callable when not given."""

    name: str
    queue: str
    fn: Callable[..., Any]
    declared: TaskFunction[Any, Any, Any, Any] | None = None

    def __post_init__(self) -> None:
        if self.declared is None:
            made: TaskFunction[Any, Any, Any, Any] = TaskFunction(
                self.fn, self.name, TaskOptions(queue=self.queue)
            )
            object.__setattr__(self, "declared", made)

    @property
    def definition(self) -> TaskFunction[Any, Any, Any, Any]:
        assert self.declared is not None, "set in __post_init__"
        return self.declared

    @classmethod
    def of(cls, definition: TaskFunction[Any, Any, Any, Any]) -> Handler:
        queue = definition.options.queue or DEFAULT_QUEUE
        return cls(definition.name, queue, definition.fn, definition)

    @property
    def is_async(self) -> bool:
        return self.definition.is_async

    @property
    def options(self) -> TaskOptions:
        return self.definition.options


class Registry:
    """The handlers one replica can run, by task name, and the schedules its
    app declares."""

    def __init__(
        self, handlers: Iterable[Handler] = (), schedules: Iterable[ScheduleDecl] = ()
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        for handler in handlers:
            if handler.name in self._handlers:
                raise InvalidArgument(f"task {handler.name!r} is registered twice")
            self._handlers[handler.name] = handler
        self.schedules: list[ScheduleDecl] = []
        for declared in schedules:
            if any(s.name == declared.name for s in self.schedules):
                raise InvalidArgument(f"schedule {declared.name!r} is declared twice")
            self.schedules.append(declared)

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
        # Each object once, under whichever names the module holds it.
        values = list({id(v): v for v in vars(module).values()}.values())
        functions = [v for v in values if isinstance(v, TaskFunction)]
        schedules = [v for v in values if isinstance(v, ScheduleDecl)]
        for function in functions:
            try:
                function.context_parameter  # noqa: B018 - a handler that cannot be read fails here
            except TypeError as exc:
                raise InvalidArgument(str(exc)) from None
            declared = ScheduleDecl.from_task(function)
            if declared is not None:
                schedules.append(declared)
        return cls([Handler.of(f) for f in functions], schedules)


def load_app(module_name: str) -> Registry:
    """Import `module_name` and collect its `@task` handlers and schedules."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(f"cannot import app module {module_name!r}: {exc}") from exc
    registry = Registry.from_module(module)
    if not registry:
        raise InvalidArgument(f"app module {module_name!r} registers no @task handlers")
    return registry
