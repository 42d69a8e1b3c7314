"""Repository-wide rules: the namespace package and the generated stubs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_no_treadle_init_anywhere(repo_root: Path) -> None:
    roots = [
        repo_root / "shared",
        repo_root / "services" / "scheduler",
        repo_root / "services" / "gateway",
        repo_root / "services" / "cli",
    ]
    offenders = [
        str(root / "treadle" / "__init__.py")
        for root in roots
        if (root / "treadle" / "__init__.py").exists()
    ]
    assert offenders == [], "treadle is a PEP 420 namespace split across four roots"


def test_namespace_spans_all_four_roots() -> None:
    import treadle

    paths = {Path(p).parent.name for p in treadle.__path__}
    assert {"shared", "scheduler", "gateway", "cli"} <= paths


def test_shared_and_services_do_not_import_the_cli(repo_root: Path) -> None:
    """The CLI depends on the services and shared/, never the other way round."""
    roots = [repo_root / "shared", repo_root / "services" / "scheduler"]
    roots.append(repo_root / "services" / "gateway")
    offenders = [
        str(path)
        for root in roots
        for path in root.rglob("*.py")
        if re.search(r"\btreadle\.cli\b|from treadle import cli\b", path.read_text())
    ]
    assert offenders == []


def test_checked_in_stubs_match_protos(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_package_is_marked_typed(repo_root: Path) -> None:
    """PEP 561 in a PEP 420 namespace: no `treadle/py.typed` can exist (nor an
    `__init__.py`), so each package under `treadle/` carries its own marker, or
    mypy treats an installed copy of it as untyped."""
    packages = [
        path
        for root in (repo_root / "shared", *(repo_root / "services").iterdir())
        if (root / "treadle").is_dir()
        for path in (root / "treadle").iterdir()
        if path.is_dir() and path.name != "__pycache__"
    ]
    assert len(packages) >= 6
    unmarked = [str(p.relative_to(repo_root)) for p in packages if not (p / "py.typed").is_file()]
    assert unmarked == [], "add an empty py.typed to each"
