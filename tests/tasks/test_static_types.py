"""`mypy --strict` on a small app using treadle.tasks: the payload and result
types flow from `defer` to `wait` (typed_example.py, whose reveal_type lines
are read back), and the mistakes in typed_errors.py are reported, each on
its line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def mypy(repo_root: Path, *files: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, files)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=50,
    )
    return done.stdout + done.stderr


def test_types_flow_from_defer_to_wait(repo_root: Path) -> None:
    out = mypy(repo_root, HERE / "typed_example.py")
    assert ": error:" not in out, out
    revealed = re.findall(r'Revealed type is "(.*)"', out)
    assert revealed == [
        "treadle.tasks._ref.TaskHandle[tests.tasks.typed_example.Receipt]",
        "tests.tasks.typed_example.Receipt",
        "int",  # a TypedDict payload, an int result
        "int",  # defer_sync(...).wait()
        "str",  # a declared reference (task_ref), bound below
        "int",  # calling the task function calls the handler
        "treadle.tasks._ref.TaskFunction[tests.tasks.typed_example.Email, str, "
        "[ctx: treadle.tasks._context.TaskContext], str]",
    ], out


def test_mistakes_are_reported(repo_root: Path) -> None:
    path = HERE / "typed_errors.py"
    out = mypy(repo_root, path)
    marked = {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.rstrip().endswith("# error")
    }
    reported = {int(n) for n in re.findall(r"typed_errors\.py:(\d+): error:", out)}
    assert reported == marked, out
