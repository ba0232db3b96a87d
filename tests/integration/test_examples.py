"""The examples run end to end (subprocesses) and print sane numbers, and only their summaries."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(300)
def test_paper_linear_quick(tmp_path: Path) -> None:
    out = tmp_path / "linear"
    proc = _run("paper_linear.py", "--quick", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fitted exponent" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick"
    for name in ("norm_growth.png", "tradeoff.png"):
        assert (out / name).stat().st_size > 1000
    growth = {g["alpha"]: g for g in results["growth"]}
    assert set(growth) == {1.5, 2.5}
    for alpha, g in growth.items():
        assert abs(g["exponent"] - alpha) < 0.3, (alpha, g["exponent"])
        assert g["r2"] > 0.95
        # the median norm sits near the theory's σ² n^α 𝓝(κ) (single sizes scatter by tens of %)
        ratios = [m / t for m, t in zip(g["median_norm_sq"], g["theory_norm_sq"])]
        assert all(0.5 < r < 2.0 for r in ratios), ratios
    assert growth[2.5]["median_norm_sq"][-1] > growth[1.5]["median_norm_sq"][-1]
    trade = {t["alpha"]: t for t in results["tradeoff"]}
    for t in trade.values():
        emp, th = t["test_error_mean"], t["theory_test_error"]
        assert all(e > 1.0 for e in emp)  # above the noise floor σ² = 1
        assert all(abs(e - x) / x < 0.1 for e, x in zip(emp, th)), (emp, th)
        assert emp[0] > emp[-1]  # smaller τ, larger test error
    assert all(b > a for a, b in zip(trade[1.5]["test_error_mean"], trade[2.5]["test_error_mean"]))


@pytest.mark.timeout(300)
def test_paper_mlp_tiny(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    proc = _run("paper_mlp.py", "--tiny", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exponent" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert (out / "mlp_norms.png").stat().st_size > 1000
    rows = results["rows"]
    assert {(r["alpha"], r["depth"]) for r in rows} == {(1.5, 1), (1.5, 5), (2.5, 1), (2.5, 5)}
    for r in rows:
        assert math.isfinite(r["exponent"])
        assert -1.0 < r["exponent"] < 4.0
        assert all(v > 0 and math.isfinite(v) for v in r["median_norm_sq"])
        assert r["mean_test_error"] is not None and r["mean_test_error"] > 1.0  # σ² = 1 is the floor
        assert all(any(row) for row in r["reached_tau"])  # every size reached τ in some seed
    assert set(results["findings"]) >= {"exponent_larger_for_larger_alpha_depth1", "deeper_smaller_exponent_2.5"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hf_example_prints_its_summary_not_the_trainer_logs() -> None:
    pytest.importorskip("transformers")
    proc = _run("hf_trainer.py", "--epochs", "2", timeout=540)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("noise floor (entropy of 20% label noise over 2 classes): 0.500")
    assert [line.split()[0] for line in lines[2:4]] == ["unguarded", "guarded"]
    assert lines[-1].startswith("(test: 1024 sequences with clean labels")
    # no dict of the Trainer's (it printed one per logging step and evaluation: {'loss': ..., 'epoch': ...})
    assert "{'" not in proc.stdout + proc.stderr and "'epoch'" not in proc.stdout + proc.stderr
    assert len(lines) < 20
