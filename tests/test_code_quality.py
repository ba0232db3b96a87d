"""What reviewers check, checked on every test run (and so in CI): ruff lint and format, mypy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


HAS_RUFF = importlib.util.find_spec("ruff") is not None
CHECKED = ("src", "tests", "examples", "benchmarks", "tools", ".ci")


@pytest.mark.skipif(not HAS_RUFF, reason="ruff is in the dev extra")
def test_ruff_lint_is_clean() -> None:
    proc = run(sys.executable, "-m", "ruff", "check", *CHECKED)
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.mark.skipif(not HAS_RUFF, reason="ruff is in the dev extra")
def test_ruff_format_is_clean() -> None:
    proc = run(sys.executable, "-m", "ruff", "format", "--check", *CHECKED)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_passes_on_the_package() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout[-4000:]
