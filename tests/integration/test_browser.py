"""The browser check (tools/browser_check.py): a guarded run in a real TensorBoard, the HTML
report and the documentation site, loaded in headless Chromium, every check passing.

Needs ``chromium``, ``chromium-driver`` and ``selenium``. Skipped where they are missing,
except in CI (``CI`` set), where ``.ci/run`` installs them and a missing browser is a failure.
Screenshots go to pytest's temporary directory (printed on failure).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "browser_check.py"


@pytest.mark.timeout(600)
def test_browser_check_passes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "screens"), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    if proc.returncode == 2 and "missing" in proc.stderr:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have a browser (.ci/run installs chromium and chromium-driver): {proc.stderr}")
        pytest.skip(proc.stderr.strip())
    assert proc.stdout, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    failed = [c for c in result["checks"] if not c["ok"]]
    assert not failed and proc.returncode == 0, (failed, result["out_dir"], proc.stderr[-2000:])
    pages = {c["page"] for c in result["checks"]}
    assert {"custom scalars", "time series", "scalars", "text", "report"} <= pages
    if all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "material", "mkdocstrings")):
        assert {"site", "site guide", "site api"} <= pages, pages  # the built site, opened and checked
    assert len(result["checks"]) >= 30
    for shot in result["screenshots"]:
        assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
