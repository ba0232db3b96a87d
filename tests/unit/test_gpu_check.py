"""benchmarks/gpu_check.py: skips cleanly without CUDA; its helpers work on CPU tensors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_script_skips_cleanly_without_cuda() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CUDA not available: skipped" in done.stdout


def test_main_skips_for_a_non_cuda_device(gpu_check: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--device", "cpu"]) == 0
    assert gpu_check.SKIP_MESSAGE in capsys.readouterr().out


def test_correctness_passes_on_cpu(gpu_check: ModuleType) -> None:
    rows = gpu_check.correctness("cpu", sizes=((256, 256), (33,), (1,)))
    assert {(r["dtype"], r["magnitude"]) for r in rows} == {
        (d, m) for d in ("float32", "bfloat16", "float16") for m in (1.0, 1e4)
    }
    assert all(r["ok"] for r in rows), rows


def test_correctness_flags_a_wrong_engine(gpu_check: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    real = gpu_check.NormEngine

    class Off(real):  # type: ignore[misc, valid-type]
        def compute(self):  # type: ignore[no-untyped-def]
            snap = super().compute()
            snap.layer_sq = snap.layer_sq * 1.01
            return snap

    monkeypatch.setattr(gpu_check, "NormEngine", Off)
    rows = gpu_check.correctness("cpu", dtypes=(torch.float32,), magnitudes=(1.0,), sizes=((8, 8),))
    assert not rows[0]["ok"]


def test_guarded_loop_runs_on_cpu(gpu_check: ModuleType) -> None:
    result = gpu_check.guarded_loop_sync_free("cpu", steps=12, every=5)
    assert result["error"] is None
    assert result["checks"] == 4 and result["non_check_steps"] == 10  # 2 checks, 2 validations
    assert result["drifts"][0] is None and result["drifts"][1] is not None  # measured from the second on
    assert result["enforced"] is False


def test_launches_per_pass_counts_one_foreach_per_pass(gpu_check: ModuleType) -> None:
    rows = gpu_check.launches_per_pass("cpu", counts=(4, 16))
    assert [r["tensors"] for r in rows] == [4, 16]
    assert all(r["foreach_norm_calls"] == 1 and r["kernels"] == 0 for r in rows)


def test_bandwidth_and_peer_ratio_on_cpu(gpu_check: ModuleType) -> None:
    bw = gpu_check.bandwidth("cpu", total_bytes=2**16, tensors=4, repeats=1, inner=1)
    assert bw["bytes"] == 2**16 and bw["pass_GBps"] > 0 and bw["copy_GBps"] > 0 and bw["speedup_vs_peers"] > 0
    pm = gpu_check.peers_many("cpu", tensors=8, numel=16, repeats=1)
    assert pm["tensors"] == 8 and pm["normguard_ms"] > 0


def test_report_on_cpu_has_every_table(gpu_check: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    small_bw = gpu_check.bandwidth
    monkeypatch.setattr(gpu_check, "bandwidth", lambda device, total_bytes: small_bw(device, 2**16, 4, 1, 1))
    monkeypatch.setattr(
        gpu_check,
        "peers_many",
        lambda device: {"tensors": 4, "normguard_ms": 1.0, "peers_ms": 1.0, "speedup_vs_peers": 1.0},
    )
    small_launches = gpu_check.launches_per_pass
    monkeypatch.setattr(gpu_check, "launches_per_pass", lambda device, counts: small_launches(device, (4,)))
    ran = {"front door": "stub", "engaged": True, "max_decay": 1.0, "restored": True, "device": "cuda:0"}
    monkeypatch.setattr(gpu_check, "hold_floor_lightning", lambda device: ran)
    monkeypatch.setattr(gpu_check, "hold_floor_transformers", lambda device: ran)
    text, _ = gpu_check.report("cpu", quick=True)
    for heading in (
        "max rel. error vs float64",
        "Sync debug mode",
        "CUDA kernels per check",
        "pass / copy",
        "| plain loop, Adam | no sync raised | yes",
        "| plain loop, AdamW | no sync raised | yes",
    ):
        assert heading in text


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_hold_floor_loop_engages_and_restores_on_cpu(gpu_check: ModuleType, optimizer: str) -> None:
    result = gpu_check.hold_floor_loop("cpu", optimizer)
    assert result["error"] is None and result["engaged"] and result["restored"]
    assert result["max_decay"] > 1e-3  # raised above hold_floor's starting λ


@pytest.mark.slow
@pytest.mark.parametrize("front_door", ["hold_floor_lightning", "hold_floor_transformers"])
def test_hold_floor_front_doors_engage_and_restore_on_cpu(gpu_check: ModuleType, front_door: str) -> None:
    pytest.importorskip("transformers")
    result = getattr(gpu_check, front_door)("cpu")
    assert result["engaged"] and result["restored"] and result["max_decay"] > 1e-3
