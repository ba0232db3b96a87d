"""README's custom-loop snippet, run exactly as written, shows normguard acting on a held-out split."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## In a custom PyTorch loop", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, "README has no python block under 'In a custom PyTorch loop'"
    return match.group(1)


@pytest.mark.timeout(300)
def test_custom_loop_snippet_runs_as_written(tmp_path: Path) -> None:
    code = readme_snippet()
    assert "x_val" in code and "validation_end(mse(x_val, y_val))" in code  # validated on held-out rows
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for kind in ("detector_fired", "weight_decay_changed", "restore", "stop"):
        assert f"[{kind}]" in out, (kind, out)
    summary = re.search(r"stopped at step (\d+): train MSE ([\d.]+), held-out MSE ([\d.]+)", out)
    assert summary is not None, out
    assert int(summary.group(1)) < 1000  # normguard stopped it
    assert float(summary.group(3)) > 1.0  # no model beats the noise floor on new rows
    assert list((tmp_path / "runs" / "example").glob("events.out.tfevents.*"))
    # README shows the output it prints
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_event = out.splitlines()[0]
    assert first_event.split(";")[0] in readme
