"""What the three front doors promise alike: public contracts only, one meaning per option name,
clear errors for bad inputs, and the estimated noise floor wired through each door."""

from __future__ import annotations

import ast
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import normguard as ng
from normguard import tags

SRC = Path(__file__).parents[2] / "src" / "normguard"
DOORS = {
    "guard.py": "normguard.guard",
    "lightning.py": "normguard.lightning",
    "transformers.py": "normguard.transformers",
}


def floor_of(detector: Any) -> Any:
    """The floor in effect (``current_floor``: a property or a method, as the detector has it)."""
    floor = detector.current_floor
    return floor() if callable(floor) else floor


class Sink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(step, row[tag]) for step, row in self.rows if tag in row]


# ---------------------------------------------------------------------------- public contracts only
def test_no_private_framework_reads_and_no_door_imports_another() -> None:
    pattern = re.compile(r"_getframe|__dict__ =|getsource|trainer\._")
    hits = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
    for name, module in DOORS.items():
        tree = ast.parse((SRC / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not (imported & (set(DOORS.values()) - {module})), f"{name} imports another front door"


def test_every_door_is_smaller_than_the_core() -> None:
    core = len((SRC / "monitor.py").read_text().splitlines())
    sizes = {name: len((SRC / name).read_text().splitlines()) for name in DOORS}
    assert all(size < core for size in sizes.values()), (sizes, core)


# ---------------------------------------------------------------------------- one meaning per option name
def test_every_n_steps_means_optimizer_steps_between_checks_in_every_door() -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from normguard.lightning import NormGuardCallback
    from normguard.transformers import NormGuardTrainerCallback

    model = nn.Linear(2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doors = [
            ng.NormGuard(model, every_n_steps=np.int64(5)),
            NormGuardCallback(every_n_steps=np.int64(5)),
            NormGuardTrainerCallback(every_n_steps=np.int64(5)),
        ]
    assert [(d.every_n_steps, type(d.every_n_steps)) for d in doors] == [(5, int)] * 3
    for door in (ng.NormGuard, NormGuardCallback, NormGuardTrainerCallback):
        with pytest.raises(ValueError, match="every_n_steps"):
            door(model, every_n_steps=0) if door is ng.NormGuard else door(every_n_steps=0)


def test_old_option_names_still_work_with_a_future_warning() -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from normguard.lightning import NormGuardCallback
    from normguard.transformers import NormGuardTrainerCallback

    with pytest.warns(FutureWarning, match="every_n_train_steps.*renamed `every_n_steps`"):
        old = NormGuardCallback(every_n_train_steps=7)
    assert old.every_n_steps == old.every_n_train_steps == 7
    assert old.state_key == NormGuardCallback(every_n_steps=7).state_key  # checkpoints keep matching
    with pytest.warns(FutureWarning, match="inflated_loss"):
        NormGuardTrainerCallback(inflated_loss="correct")
    model = nn.Linear(2, 1)
    guard = ng.NormGuard(model, every_n_steps=1, monitor="val_acc", mode="max")
    with pytest.warns(FutureWarning, match="renamed `val_metric`"):
        guard.validation_end(0.5, metric=0.9)
    assert len(guard.verdicts) == 1


def test_state_key_takes_numpy_integers_as_python_ones() -> None:
    pytest.importorskip("lightning")
    from normguard.lightning import NormGuardCallback

    key = NormGuardCallback(every_n_steps=np.int64(5)).state_key
    assert key == NormGuardCallback(every_n_steps=5).state_key and "np." not in key and "int64" not in key


# ---------------------------------------------------------------------------- plain door inputs
def test_non_scalar_validation_values_name_the_argument() -> None:
    guard = ng.NormGuard(nn.Linear(2, 1), every_n_steps=1, monitor="val_acc", mode="max")
    with pytest.raises(ValueError, match=r"`val_metric` to be a scalar but got shape \(3,\)"):
        guard.validation_end(0.5, torch.tensor([0.5, 0.7, 0.9]))
    with pytest.raises(ValueError, match=r"`val_loss` to be a scalar but got shape \(2,\)"):
        guard.validation_end(np.array([0.5, 0.6]), 0.9)
    assert guard.verdicts == []  # refused before any check


def test_numpy_arrays_are_losses_like_numpy_scalars() -> None:
    results = []
    for value in (np.array(0.5), np.float32(0.5), 0.5, torch.tensor(0.5)):
        guard = ng.NormGuard(nn.Linear(2, 1), every_n_steps=1)
        guard.step(value)
        guard.validation_end(np.array([0.25]))
        results.append([v.train_loss for v in guard.verdicts])
    assert results == [[0.5, 0.5]] * 4
    with pytest.raises(TypeError, match="`loss`"):
        ng.NormGuard(nn.Linear(2, 1)).step(np.array(["a"]))


# ---------------------------------------------------------------------------- Lightning: fresh values only
def test_lightning_counts_only_fresh_validation_values() -> None:
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from normguard.lightning import NormGuardCallback

    class EveryThird(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return (self.net(batch[0]).squeeze(-1) - batch[1]).pow(2).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            if self.current_epoch % 3 == 2:  # a metric computed every 3rd epoch only
                self.log("val_loss", (self.net(batch[0]).squeeze(-1) - batch[1]).pow(2).mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8)), batch_size=8)
    sink = Sink()
    guard = NormGuardCallback(every_n_steps=100, sinks=[sink])
    trainer = L.Trainer(
        max_epochs=9,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[guard],
        accelerator="cpu",
        devices=1,
    )
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    trainer.fit(EveryThird(), data, data)
    assert [step for step, _ in sink.series(tags.VAL_LOSS)] == [3, 6, 9]  # 3 validations counted, not 9


# ---------------------------------------------------------------------------- the estimated floor
def test_plain_door_takes_an_estimator_or_an_estimate() -> None:
    noise_floor = pytest.importorskip("normguard.noise_floor")
    guard = ng.NormGuard(nn.Linear(2, 1), every_n_steps=1, noise_floor="estimate")
    estimator = noise_floor.NoiseFloorEstimator()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]).repeat(16, 1)
    estimator.update(logits, torch.tensor([0, 1, 1, 0]).repeat(16))
    expected = noise_floor.estimate_noise_floor(logits, torch.tensor([0, 1, 1, 0]).repeat(16))
    guard.step(1.0)
    guard.validation_end(0.9, noise_estimate=estimator)
    assert floor_of(guard.detector) == pytest.approx(expected.value)
    fixed = noise_floor.FloorEstimate(value=0.4, low=0.3, high=0.5, n=100, kind="classification")
    guard.validation_end(0.9, noise_estimate=fixed)
    assert floor_of(guard.detector) == pytest.approx(0.4)
    with pytest.raises(TypeError, match="noise_estimate"):
        guard.validation_end(0.9, noise_estimate=0.4)


def test_hf_door_reads_the_estimate_from_the_evaluation_metrics() -> None:
    pytest.importorskip("normguard.noise_floor")
    transformers = pytest.importorskip("transformers")
    from normguard.transformers import NormGuardTrainerCallback

    model = nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.01)
    guard = NormGuardTrainerCallback(noise_floor="estimate")
    args = transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    state, control = transformers.TrainerState(global_step=0), transformers.TrainerControl()
    guard.on_train_begin(args, state, control, model=model, optimizer=opt)
    state.global_step = 4
    metrics = {"eval_loss": 0.8, "eval_noise_floor": 0.6, "eval_noise_floor_low": 0.5, "eval_noise_floor_high": 0.7}
    guard.on_evaluate(args, state, control, metrics=metrics)
    assert floor_of(guard.detector) == pytest.approx(0.6)
    with pytest.raises(RuntimeError, match="eval_noise_floor"):
        guard.on_evaluate(args, state, control, metrics={"eval_loss": 0.8})


def test_lightning_door_finds_the_noise_floor_metric() -> None:
    L = pytest.importorskip("lightning")
    noise_metric = pytest.importorskip("normguard.noise_metric")
    from torch.utils.data import DataLoader, TensorDataset

    from normguard.lightning import NormGuardCallback

    class Classifier(L.LightningModule):
        def __init__(self, with_metric: bool) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2)
            if with_metric:
                self.floor_metric = noise_metric.NoiseFloorMetric()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            logits = self.net(batch[0])
            self.log("val_loss", nn.functional.cross_entropy(logits, batch[1]))
            self.floor_metric.update(logits, batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,))), batch_size=16)
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        "devices": 1,
    }
    guard = NormGuardCallback(every_n_steps=4, noise_floor="estimate")
    L.Trainer(max_epochs=2, callbacks=[guard], **quiet).fit(Classifier(True), data, data)
    assert floor_of(guard.detector) is not None and floor_of(guard.detector) >= 0
    with pytest.raises(ValueError, match="NoiseFloorMetric"):
        L.Trainer(max_epochs=1, callbacks=[NormGuardCallback(noise_floor="estimate")], **quiet).fit(
            Classifier(False), data, data
        )
