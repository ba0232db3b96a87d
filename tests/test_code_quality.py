"""What reviewers check, checked on every test run (and so in CI): ruff lint and format, mypy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the dev extra")
def test_ruff_lint_is_clean() -> None:
    proc = run("ruff", "check", "src", "tests", "examples", "benchmarks")
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the dev extra")
def test_ruff_format_is_clean() -> None:
    proc = run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks")
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_passes_on_the_package() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout[-4000:]
