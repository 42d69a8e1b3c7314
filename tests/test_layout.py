"""Repository-wide rules: the namespace package and the generated stubs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_no_treadle_init_anywhere(repo_root: Path) -> None:
    roots = [
        repo_root / "shared",
        repo_root / "services" / "scheduler",
        repo_root / "services" / "gateway",
    ]
    offenders = [
        str(root / "treadle" / "__init__.py")
        for root in roots
        if (root / "treadle" / "__init__.py").exists()
    ]
    assert offenders == [], "treadle is a PEP 420 namespace split across three roots"


def test_namespace_spans_all_three_roots() -> None:
    import treadle

    paths = {Path(p).parent.name for p in treadle.__path__}
    assert {"shared", "scheduler", "gateway"} <= paths


def test_checked_in_stubs_match_protos(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
