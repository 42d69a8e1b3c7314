"""`treadle scheduler --app myapp` run from the folder holding `myapp.py`, as
a newcomer runs it: the installed `treadle` command, no PYTHONPATH."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from treadle.client import Client
from treadle.common.tasks import TaskState

MYAPP = """
from treadle.scheduler import task

@task("greet")
async def greet(payload):
    return f"hello {payload['name']}"
"""


#: The console script, not `python -m` (which puts the current folder on sys.path itself).
COMMAND = str(Path(sys.executable).parent / "treadle")


def newcomer_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH or TREADLE_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "PYTHONPATH"))}
    return env | extra


async def test_scheduler_imports_the_app_from_the_current_folder(
    tmp_path: Path, database_url: str, schema: str
) -> None:
    (tmp_path / "myapp.py").write_text(MYAPP)
    env = newcomer_env(TREADLE_DATABASE_URL=database_url, TREADLE_DATABASE_SCHEMA=schema)
    proc = await asyncio.create_subprocess_exec(
        COMMAND,
        "scheduler",
        "--app",
        "myapp",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--queues",
        "default",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        address = tasks = None
        async with asyncio.timeout(30):
            while tasks is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "treadle scheduler exited early:\n" + "".join(output)
                output.append(line)
                if found := re.match(r"\s+gRPC\s+(\S+:\d+)", line):
                    address = found[1]
                if found := re.match(r"\s+tasks\s+(.+)$", line):
                    tasks = found[1]
        assert tasks == "greet  (queues: default)", "the banner says what it claims"
        assert address is not None
        async with Client(address) as client:
            task = await client.submit("greet", {"name": "newcomer"})
            done = await client.wait(task.id, timeout=10)
        assert done.state is TaskState.SUCCEEDED and done.result == "hello newcomer"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest = (await proc.stdout.read()).decode()
            assert await proc.wait() == 0, "".join(output) + rest


async def test_a_missing_app_says_where_it_looked(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        COMMAND,
        "scheduler",
        "--app",
        "myapp",
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/none",
        cwd=tmp_path,
        env=newcomer_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 1, text
    assert "cannot find app module 'myapp'" in text and f"\n  {tmp_path}\n" in text
    assert "Traceback" not in text
