"""NormGuardTrainerCallback in real Hugging Face Trainers, and NormGuard in accelerate loops.

A tiny BERT built from a config (2 layers, hidden 32, vocab 100, sequences of 16; no hub)
memorises 128 sequences with 30 % flipped labels: the training loss falls under the noise
floor while the evaluation loss rises, the near-interpolation signature.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import normguard as ng  # noqa: E402
from normguard import tags  # noqa: E402
from normguard.detector import label_noise_floor  # noqa: E402
from normguard.events import EventKind  # noqa: E402
from normguard.monitor import StateError  # noqa: E402
from normguard.transformers import BEST_WEIGHTS_FILE, NormGuardTrainerCallback  # noqa: E402

HERE = Path(__file__).parent
FLOOR = label_noise_floor(0.3, 2)  # cross-entropy of 30 % symmetric label noise over 2 classes


@pytest.fixture(autouse=True)
def _quiet() -> None:
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("normguard").setLevel(logging.INFO)


# ---------------------------------------------------------------------------- small fixtures
class Sequences(torch.utils.data.Dataset):
    """Random token sequences; label = first token < 50, flipped with probability ``noise``."""

    def __init__(self, n: int, seed: int, noise: float = 0.3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 100, (n, 16), generator=g)
        clean = (self.x[:, 0] < 50).long()
        flip = torch.rand(n, generator=g) < noise
        self.y = torch.where(flip, 1 - clean, clean)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def training_args(out: Path, ga: int = 1, **kwargs: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 32 // ga,
        "per_device_eval_batch_size": 64,
        "gradient_accumulation_steps": ga,
        "learning_rate": 3e-3,
        "weight_decay": 0.01,
        "num_train_epochs": 25,
        "logging_steps": 4,
        "eval_strategy": "steps",
        "eval_steps": 8,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "data_seed": 0,
    }
    base.update(kwargs)
    return TrainingArguments(**base)


def make_trainer(
    out: Path, callbacks: list[Any], ga: int = 1, model: Any = None, compute_metrics: Any = None, **kwargs: Any
) -> Trainer:
    return Trainer(
        model=model if model is not None else tiny_bert(),
        args=training_args(out, ga, **kwargs),
        train_dataset=Sequences(128, 0),
        eval_dataset=Sequences(128, 1),
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


class TrueLoss(TrainerCallback):
    """Records the model's own loss at each training forward (the test's reference)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.losses: list[float] = []
        model.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training and getattr(output, "loss", None) is not None:
            self.losses.append(float(output.loss.detach()))


class RecordingSink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(step, row[tag]) for step, row in self.rows if tag in row]


def kinds(guard: NormGuardTrainerCallback) -> list[str]:
    return [e.kind.value for e in guard.events]


def weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---------------------------------------------------------------------------- stop, restore, true loss
@pytest.mark.parametrize("ga", [1, 2])
def test_stops_restores_at_train_end_and_sees_the_true_mean_loss(tmp_path: Path, ga: int) -> None:
    model = tiny_bert()
    truth = TrueLoss(model)
    sink = RecordingSink()
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop", sinks=[sink])
    trainer = make_trainer(tmp_path, [guard, truth], ga=ga, model=model)
    with pytest.warns(UserWarning, match="accepts_loss_kwargs = False") if ga > 1 else _no_warning():
        trainer.train()

    assert kinds(guard) == ["detector_fired", "stop", "restore"]
    fired, stop, restore = guard.events
    assert fired.step == stop.step == trainer.state.global_step < trainer.state.max_steps  # stopped early
    assert restore.step == stop.step and restore.data["best_step"] < stop.step
    best = guard.monitor.best
    assert best is not None and weights_equal(model.state_dict(), best.state)

    # the loss normguard sees is the mean of the model's own losses, whatever the accumulation
    per_step = torch.tensor(truth.losses).reshape(-1, ga).mean(1)  # one value per optimizer step
    train = sink.series(tags.TRAIN_LOSS)
    assert len(train) >= 3
    last = 0
    for step, seen in train:
        assert seen == pytest.approx(per_step[last:step].mean().item(), rel=1e-5)
        last = step
    # ... and the logged value HF shows is inflated by GA (the pitfall being corrected)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[0] == pytest.approx(ga * per_step[:4].mean().item(), rel=1e-4)


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
