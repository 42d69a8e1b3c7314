"""`load_app`: an app module found from the current folder like uvicorn and
Celery find it, `module:attribute`, and errors that say where it looked or
why the module itself failed to import."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from treadle.common.errors import InvalidArgument
from treadle.scheduler.registry import load_app

HANDLERS = """
from treadle.scheduler import task

@task("hello")
async def hello(payload):
    return payload

@task("other", queue="q")
def other(payload):
    return None

just_hello = [hello]
HANDLERS = "hello"
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder the test writes app modules into; sys.path and sys.modules
    are restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    return tmp_path


def write(folder: Path, source: str) -> str:
    """A module of `source` in `folder` under a name no other test uses."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source)
    return name


def test_a_module_in_the_current_folder_is_found(folder: Path) -> None:
    name = write(folder, HANDLERS)
    assert str(folder) not in sys.path
    registry = load_app(name, cwd=str(folder))
    assert registry.names == ["hello", "other"]


def test_module_colon_attribute(folder: Path) -> None:
    name = write(folder, HANDLERS)
    assert load_app(f"{name}:just_hello", cwd=str(folder)).names == ["hello"]
    assert load_app(f"{name}:other", cwd=str(folder)).names == ["other"]
    with pytest.raises(InvalidArgument, match=f"app module '{name}' has no attribute 'nope'"):
        load_app(f"{name}:nope", cwd=str(folder))
    with pytest.raises(InvalidArgument, match=f"{name}:HANDLERS is a str: expected a Registry"):
        load_app(f"{name}:HANDLERS", cwd=str(folder))
    with pytest.raises(InvalidArgument, match="must be MODULE or MODULE:ATTRIBUTE"):
        load_app(f"{name}:", cwd=str(folder))


def test_a_missing_module_lists_where_it_looked(folder: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_app("no_such_app_module.tasks", cwd=str(folder))
    message = caught.value.message
    assert "cannot find app module 'no_such_app_module.tasks'" in message
    assert "no module named 'no_such_app_module'" in message
    assert f"\n  {folder}\n" in message, "the current folder is listed"
    assert all(str(Path(p or ".").absolute()) in message for p in sys.path)


def test_a_broken_import_inside_the_module_is_not_called_missing(folder: Path) -> None:
    name = write(folder, "import no_such_dependency_of_the_app\n")
    with pytest.raises(InvalidArgument) as caught:
        load_app(name, cwd=str(folder))
    message = caught.value.message
    assert f"app module '{name}' was found but failed to import" in message
    assert f"{folder / name}.py:1" in message
    assert "ModuleNotFoundError: No module named 'no_such_dependency_of_the_app'" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_an_error_raised_while_importing_says_where(folder: Path) -> None:
    name = write(folder, "x = 1\nraise RuntimeError('bad config')\n")
    with pytest.raises(InvalidArgument, match=rf"{name}\.py:2: RuntimeError: bad config"):
        load_app(name, cwd=str(folder))
    broken = write(folder, "def f(:\n")
    with pytest.raises(InvalidArgument, match=rf"{broken}\.py:1: SyntaxError"):
        load_app(broken, cwd=str(folder))


def test_a_module_without_handlers_is_refused(folder: Path) -> None:
    name = write(folder, "x = 1\n")
    with pytest.raises(InvalidArgument, match=f"app '{name}' registers no @task handlers"):
        load_app(name, cwd=str(folder))
