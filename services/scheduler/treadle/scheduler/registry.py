"""Handler registration: the registry a replica runs.

`task` is `treadle.tasks.task` (one decorator for apps old and new): it
returns a `TaskFunction`, and `load_app` imports a module (from the current
folder first, like uvicorn and Celery) and collects the task functions and
schedule declarations (`treadle.tasks.schedule`) it holds at module level into
a `Registry`, so no global state is shared between apps (or tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
import os
import sys
import traceback
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
        return cls.of(list({id(v): v for v in vars(module).values()}.values()))

    @classmethod
    def of(cls, values: Iterable[object]) -> Registry:
        """The task functions and schedule declarations among `values` (the
        rest ignored), with the schedules the functions declare (`cron=`)."""
        values = list(values)
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

    @classmethod
    def from_object(cls, value: object, where: str) -> Registry:
        """The handlers of `value` (`where` names it in errors): a `Registry`,
        a module, one `@task` function or schedule, or an iterable of those."""
        if isinstance(value, Registry):
            return value
        if isinstance(value, ModuleType):
            return cls.from_module(value)
        if isinstance(value, TaskFunction | ScheduleDecl):
            return cls.of([value])
        if isinstance(value, Iterable) and not isinstance(value, str | bytes):
            items = list(value)
            unmarked = [repr(i) for i in items if not isinstance(i, TaskFunction | ScheduleDecl)]
            if not unmarked:
                return cls.of(items)
            raise InvalidArgument(f"{where} holds what is not a @task handler: {unmarked[0]}")
        raise InvalidArgument(
            f"{where} is a {type(value).__name__}: expected a Registry, a module, "
            "a @task handler or a list of them"
        )


def load_app(spec: str, cwd: str | None = None) -> Registry:
    """Import the app `spec` names and collect its `@task` handlers and schedules.

    `spec` is `module` (every handler defined in it) or `module:attribute`
    (a `Registry`, a module, one handler, or an iterable of handlers), as
    uvicorn and Celery take it. The current folder (`cwd`) is searched first,
    as `python -m` would, so `treadle scheduler --app myapp` finds `myapp.py`
    where it runs. A module that is not found is an `InvalidArgument` listing
    where it was looked for; one that is found but fails to import is one
    saying why, where (the underlying error is its `__cause__`)."""
    module_name, colon, attribute = spec.partition(":")
    if not module_name or (colon and not attribute):
        raise InvalidArgument(f"--app {spec!r} must be MODULE or MODULE:ATTRIBUTE")
    here = os.path.abspath(cwd or os.getcwd())
    if here not in (os.path.abspath(p or ".") for p in sys.path):
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_part_of(module_name, exc.name):
            raise _failed(module_name, exc) from exc
        looked = "\n  ".join(os.path.abspath(p or ".") for p in sys.path)
        raise InvalidArgument(
            f"cannot find app module {module_name!r} (no module named {exc.name!r}); "
            f"looked in the current folder and sys.path:\n  {looked}"
        ) from exc
    except Exception as exc:  # the user's module raised while it was imported
        raise _failed(module_name, exc) from exc
    if not attribute:
        registry = Registry.from_module(module)
    else:
        try:
            value = operator.attrgetter(attribute)(module)
        except AttributeError:
            raise InvalidArgument(
                f"app module {module_name!r} has no attribute {attribute!r}"
            ) from None
        registry = Registry.from_object(value, f"{module_name}:{attribute}")
    if not registry:
        raise InvalidArgument(f"app {spec!r} registers no @task handlers")
    return registry


def _is_part_of(module_name: str, missing: str) -> bool:
    """Whether `missing` is `module_name` or one of its parent packages."""
    return module_name == missing or module_name.startswith(f"{missing}.")


def _failed(module_name: str, exc: BaseException) -> InvalidArgument:
    """The error for an app module that was found but raised while imported:
    what it raised, and where (the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    return InvalidArgument(
        f"app module {module_name!r} was found but failed to import{where}: "
        f"{type(exc).__name__}: {exc}"
    )
