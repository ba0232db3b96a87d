"""The detector and its actions in real training on CPU (issue 3's evidence (a)-(d))."""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import normguard as ng
from normguard import tags
from normguard.science.datasets import noisy_digits, power_law_regression


@pytest.fixture(autouse=True)
def quiet() -> None:
    logging.getLogger("normguard").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=ng.actions.NormGuardWarning)


def linear_gd(seed: int, action: object = "warn", log_dir: str | None = None, steps: int = 1000):
    """The paper's setting (σ² = 1, α = 1.5) trained by full-batch gradient descent."""
    data = power_law_regression(300, 1.5, seed=seed)
    model = nn.Linear(data["x_train"].shape[1], 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.0)
    guard = ng.NormGuard(model, opt, log_dir=log_dir, every_n_steps=10, noise_floor=1.0, action=action)

    def mse(split: str) -> torch.Tensor:
        return (model(data[f"x_{split}"]).squeeze(-1) - data[f"y_{split}"]).pow(2).mean()

    train_curve = {}
    for step in range(1, steps + 1):
        loss = mse("train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.step(loss)
        train_curve[step] = loss.item()
        if step % 10 == 0:
            with torch.no_grad():
                guard.validation_end(mse("val"))
        if guard.should_stop:
            break
    guard.close()
    return guard, opt, train_curve


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fires_between_the_floor_and_half_of_it(seed: int) -> None:
    guard, _, train = linear_gd(seed, steps=2000)
    fired = [e.step for e in guard.events if e.kind is ng.EventKind.DETECTOR_FIRED]
    assert fired, "the signature was not detected"
    first = fired[0]
    below_floor = min(s for s, v in train.items() if v < 1.0)
    below_half = min((s for s, v in train.items() if v < 0.5), default=None)
    assert below_half is not None, "training should reach half the floor within the run"
    assert below_floor <= first < below_half, (below_floor, first, below_half)


def train_digits(seed: int, noise: float, action: object, epochs: int, noise_floor: object):
    data = noisy_digits(noise, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = ng.NormGuard(model, opt, every_n_steps=8, noise_floor=noise_floor, action=action)
    ce = nn.functional.cross_entropy
    g = torch.Generator().manual_seed(seed)
    accuracies, val_losses, fired_epochs = [], [], []
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(data["y_train"]), generator=g).split(64):
            loss = ce(model(data["x_train"][batch]), data["y_train"][batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
        with torch.no_grad():
            val = ce(model(data["x_val"]), data["y_val"])
            accuracies.append((model(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item())
        val_losses.append(val.item())
        if guard.validation_end(val).fired:
            fired_epochs.append(epoch)
        if guard.should_stop:
            break
    with torch.no_grad():
        final = (model(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
    return final, accuracies, val_losses, fired_epochs


@pytest.mark.study
def test_b_stop_and_restore_keeps_the_best_accuracy_under_label_noise() -> None:
    floor = ng.label_noise_floor(0.3, 10)
    restored, best, to_the_end = [], [], []
    for seed in range(3):
        acc_restored, _, _, fired = train_digits(seed, 0.3, "stop", 100, floor)
        assert fired, f"seed {seed}: no firing"
        acc_end, curve, _, _ = train_digits(seed, 0.3, lambda v, c: None, 100, floor)
        restored.append(acc_restored)
        best.append(max(curve))
        to_the_end.append(acc_end)
    mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    print(f"restored {mean(restored):.1f}  best epoch {mean(best):.1f}  to the end {mean(to_the_end):.1f}")
    assert mean(restored) >= mean(best) - 2.0
    assert mean(restored) >= mean(to_the_end) + 5.0


@pytest.mark.study
def test_c_no_false_alarm_while_validation_improves_on_clean_labels() -> None:
    for seed in range(2):
        _, _, val_losses, fired = train_digits(seed, 0.0, "warn", 60, "auto")
        best = min(val_losses)
        settled = min(i for i, v in enumerate(val_losses, start=1) if v <= 1.05 * best)
        assert all(epoch > settled for epoch in fired), (seed, fired, settled)


def test_d_raise_weight_decay_changes_the_groups_and_shows_in_tensorboard(tmp_path: Path) -> None:
    action = ng.RaiseWeightDecay(factor=2.0, max_weight_decay=0.01, cooldown=1, initial=1e-3)
    guard, opt, _ = linear_gd(0, action=action, log_dir=str(tmp_path), steps=300)
    changes = [e for e in guard.events if e.kind is ng.EventKind.WEIGHT_DECAY_CHANGED]
    assert len(changes) >= 2
    assert [c.data["new"] for c in changes[:3]] == pytest.approx([1e-3, 2e-3, 4e-3][: len(changes[:3])])
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(changes[-1].data["new"])
    assert opt.param_groups[0]["weight_decay"] <= 0.01
    steps = [c.step for c in changes]
    assert all(b - a >= 20 for a, b in itertools.pairwise(steps))  # cooldown: one decision (10 steps) skipped
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars(f"{tags.WEIGHT_DECAY}/group_0")}
    assert logged[steps[0]] == pytest.approx(1e-3) and logged[steps[0] - 10] == 0.0
    assert [e.step for e in acc.Scalars(tags.event_tag("weight_decay_changed"))][: len(steps)] == steps
