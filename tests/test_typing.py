"""The package type-checks: plain ``mypy`` on all of ``src/ncd`` (the pyproject configuration) and ``--strict`` on ``ncd.ir``.

``scripts/test.sh`` runs the same two commands before pytest; this test makes the suite itself fail on a
type error, so a change that breaks the types is caught by the landing run (mypy's cache makes the second
run cheap; the strict run keeps its own cache, as in ``scripts/test.sh``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("args", [(), ("--strict", "-p", "ncd.ir", "--cache-dir", ".mypy_cache/strict")],
                         ids=["package", "ir-strict"])
def test_mypy_is_clean(args: tuple[str, ...]) -> None:
    result = _mypy(*args)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
