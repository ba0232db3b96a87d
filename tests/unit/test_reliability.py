"""Bad input and faults (issue 14): each gets a clear error, an event, or a finite number."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import normguard as ng
from normguard.events import EventKind


def small() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("loss", "error", "match"),
    [
        (torch.tensor([1, 2]), TypeError, "`loss` to be a real floating-point tensor but got dtype torch.int64"),
        (torch.tensor(True), TypeError, "dtype torch.bool"),
        (torch.tensor(1.0 + 2.0j), TypeError, "dtype torch.complex64"),
        (torch.tensor([]), ValueError, "empty tensor"),
        ("0.5", TypeError, "`loss` to be a tensor or a real number but got str"),
        (1 + 2j, TypeError, "got complex"),
    ],
)
def test_bad_losses_are_refused_at_the_call(loss: object, error: type, match: str) -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, every_n_steps=5)
    with pytest.raises(error, match=match):
        guard.step(loss)  # type: ignore[arg-type]


def test_numpy_scalars_are_accepted() -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, every_n_steps=2, noise_floor=np.float32(1.0))
    assert guard.detector.noise_floor == 1.0 and isinstance(guard.detector.noise_floor, float)
    guard.step(np.float32(0.5))
    verdict = guard.step(np.int64(1))
    assert verdict is not None and verdict.train_loss == pytest.approx(0.75)


def test_step_after_close_is_an_error_not_a_second_event_file(tmp_path: Path) -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, log_dir=str(tmp_path), every_n_steps=1)
    guard.step(torch.tensor(1.0))
    guard.close()
    with pytest.raises(RuntimeError, match="closed"):
        guard.step(torch.tensor(1.0))
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_pickling_a_guard_says_what_to_do_instead(tmp_path: Path) -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, log_dir=str(tmp_path))
    with pytest.raises(TypeError, match=r"save `guard.state_dict\(\)`"):
        pickle.dumps(guard)
    guard.close()


def test_label_noise_floor_of_clean_labels_is_plus_zero() -> None:
    assert math.copysign(1.0, ng.label_noise_floor(0.0, 10)) == 1.0


def test_meta_device_model_is_refused_at_construction() -> None:
    with torch.device("meta"):
        model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match="meta"):
        ng.NormGuard(model)


def test_nonfinite_validation_loss_is_an_event() -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, every_n_steps=1)
    guard.step(torch.tensor(1.0))
    guard.validation_end(torch.tensor(float("nan")))
    [event] = [e for e in guard.events if e.kind is EventKind.NONFINITE_VAL_LOSS]
    assert event.step == 1 and math.isnan(event.data["value"])


def test_nonfinite_weights_are_reported_at_onset_then_counted() -> None:
    model, opt = small()
    guard = ng.NormGuard(model, opt, every_n_steps=1)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    for _ in range(4):
        guard.step(torch.tensor(1.0))
        guard.validation_end(torch.tensor(1.0))  # a second check at the same step
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0
    guard.step(torch.tensor(1.0))
    weights = [e for e in guard.events if e.kind is EventKind.NONFINITE_WEIGHTS]
    assert [e.step for e in weights] == [1, 5]  # the onset, then the recovery with the count
    assert weights[1].data["recovered"] and weights[1].data["checks"] == 8


@pytest.mark.parametrize(("dtype", "value"), [(torch.float32, 1e20), (torch.float64, 1e25)])
def test_large_finite_weights_give_a_finite_norm_and_no_fault(dtype: torch.dtype, value: float) -> None:
    model = nn.Linear(2, 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.fill_(value)
    guard = ng.NormGuard(model, every_n_steps=1)
    guard.step(torch.tensor(1.0))
    total = guard.last_norms()["total"]
    assert math.isfinite(total) and total == pytest.approx(value * math.sqrt(2), rel=1e-5)
    assert not [e for e in guard.events if e.kind is EventKind.NONFINITE_WEIGHTS]


def test_import_normguard_loads_neither_scipy_nor_matplotlib() -> None:
    code = (
        "import sys, normguard, normguard.guard, normguard.monitor, normguard.report\n"
        "print(sorted(m for m in ('scipy', 'matplotlib', 'lightning', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_normguard_lightning_adds_no_heavy_import_of_its_own() -> None:
    # Lightning itself imports torchmetrics, which loads scipy and matplotlib; normguard adds nothing to that
    code = (
        "import sys, lightning.pytorch\n"
        "before = set(sys.modules)\n"
        "import normguard.lightning\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('scipy', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_science_loads_on_first_use() -> None:
    code = "import sys, normguard as ng\nng.estimate_alpha\nprint('scipy' in sys.modules, ng.spectrum.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "normguard.science.spectrum"]
