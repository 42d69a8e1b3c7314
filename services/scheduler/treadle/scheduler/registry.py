"""Handler registration: the `@task` decorator and the registry a replica runs.

The decorator only marks a function; `load_app` imports a module (from the
current folder first, like uvicorn and Celery) and collects the marked
functions into a `Registry`, so no global state is shared between apps (or
tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import operator
import os
import sys
import traceback
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

    @classmethod
    def from_object(cls, value: object, where: str) -> Registry:
        """The handlers of `value` (`where` names it in errors): a `Registry`,
        a module, one `@task` function, or an iterable of those functions."""
        if isinstance(value, Registry):
            return value
        if isinstance(value, ModuleType):
            return cls.from_module(value)
        if hasattr(value, _MARK):
            return cls([getattr(value, _MARK)])
        if isinstance(value, Iterable) and not isinstance(value, str | bytes):
            items = list(value)
            unmarked = [repr(item) for item in items if not hasattr(item, _MARK)]
            if not unmarked:
                return cls(getattr(item, _MARK) for item in items)
            raise InvalidArgument(f"{where} holds what is not a @task handler: {unmarked[0]}")
        raise InvalidArgument(
            f"{where} is a {type(value).__name__}: expected a Registry, a module, "
            "a @task handler or a list of them"
        )


def load_app(spec: str, cwd: str | None = None) -> Registry:
    """Import the app `spec` names and collect its `@task` handlers.

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
