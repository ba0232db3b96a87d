"""HoldNoiseFloor: the controller on scripted losses, and the decoupled shrink on real optimizers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import normguard as ng
from normguard.actions import ActionContext, HoldNoiseFloor
from normguard.detector import Reason, Verdict
from normguard.events import Event, EventKind
from normguard.science.datasets import power_law_regression

FLOOR = 1.0


def verdict(step: int, train_loss: float, floor: float | None = FLOOR) -> Verdict:
    return Verdict(step=step, reason=Reason.NOT_MET, train_loss=train_loss, noise_floor=floor)


def context(step: int, optimizers: list[torch.optim.Optimizer], events: list[Event]) -> ActionContext:
    return ActionContext(step, optimizers, events.append, lambda reason: None, lambda: False)


def adamw(weight_decay: float = 0.01, lr: float = 1e-3) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    return torch.optim.AdamW(nn.Linear(4, 2).parameters(), lr=lr, weight_decay=weight_decay)


class Plant:
    """A training loss that rises with log λ: fitting below the floor at the user's decay,
    at the floor around λ* = 0.3, with one decision of lag."""

    def __init__(self) -> None:
        self.previous = 0.0

    def loss(self, decay: float) -> float:
        current = FLOOR * (1.0 + 0.25 * math.log10(max(decay, 1e-6) / 0.3))
        lagged, self.previous = self.previous, current
        return lagged if lagged > 0 else current


def run_plant(hold: HoldNoiseFloor, opt: torch.optim.Optimizer, decisions: int) -> tuple[list[float], list[float]]:
    hold.bind([opt])
    plant, events = Plant(), []
    decays, losses = [], []
    for step in range(1, decisions + 1):
        loss = plant.loss(opt.param_groups[0]["weight_decay"])
        hold(verdict(step, loss), context(step, [opt], events))
        decays.append(opt.param_groups[0]["weight_decay"])
        losses.append(loss)
    return decays, losses


def test_converges_to_the_floor_without_oscillating() -> None:
    opt = adamw(0.01)
    decays, losses = run_plant(HoldNoiseFloor(), opt, 60)
    assert losses[0] < FLOOR  # starts fitting below the floor
    assert abs(losses[-1] / FLOOR - 1) <= 0.1
    changes = [b / a for a, b in itertools.pairwise(decays) if b != a]
    assert changes and max(changes) <= 1.5 + 1e-9 and min(changes) >= 1 / 1.5 - 1e-9  # rate-limited
    direction_flips = sum(1 for x, y in itertools.pairwise(changes) if (x > 1) != (y > 1))
    assert direction_flips <= 2  # settles; no hunting around the floor


def test_bounds_user_decay_below_and_max_shrink_above() -> None:
    opt = adamw(0.01, lr=1e-2)
    hold = HoldNoiseFloor(max_shrink=0.01)
    hold.bind([opt])
    events: list[Event] = []
    for step in range(1, 40):  # far below the floor all the time: λ climbs to its ceiling
        hold(verdict(step, 0.01), context(step, [opt], events))
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.01 / 1e-2)  # lr·λ = max_shrink
    for step in range(40, 120):  # far above: back down to the user's own 0.01, never below
        hold(verdict(step, 5.0), context(step, [opt], events))
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.01)
    assert all(e.kind is EventKind.WEIGHT_DECAY_CHANGED for e in events)


def test_waits_for_the_first_crossing_and_needs_a_floor() -> None:
    opt = adamw(0.01)
    hold = HoldNoiseFloor()
    hold.bind([opt])
    events: list[Event] = []
    hold(verdict(1, 2.0), context(1, [opt], events))
    hold(verdict(2, 0.5, floor=None), context(2, [opt], events))
    assert not hold.engaged and opt.param_groups[0]["weight_decay"] == 0.01 and not events
    hold(verdict(3, 0.5), context(3, [opt], events))
    assert hold.engaged and opt.param_groups[0]["weight_decay"] == pytest.approx(0.015)


def test_cooldown_spaces_the_changes() -> None:
    opt = adamw(0.01)
    hold = HoldNoiseFloor(cooldown=2)
    hold.bind([opt])
    changed_at = []
    for step in range(1, 11):
        before = opt.param_groups[0]["weight_decay"]
        hold(verdict(step, 0.5), context(step, [opt], []))
        if opt.param_groups[0]["weight_decay"] != before:
            changed_at.append(step)
    assert changed_at == [1, 4, 7, 10]


def test_deadband_leaves_lambda_alone_near_the_floor() -> None:
    opt = adamw(0.01)
    hold = HoldNoiseFloor(deadband=0.05)
    hold.bind([opt])
    hold(verdict(1, 0.5), context(1, [opt], []))
    after_engage = opt.param_groups[0]["weight_decay"]
    for step, loss in enumerate((0.97, 1.03, 0.98, 1.04), start=2):
        hold(verdict(step, loss), context(step, [opt], []))
    assert opt.param_groups[0]["weight_decay"] == after_engage


def test_resume_mid_run_is_identical() -> None:
    full_opt = adamw(0.01)
    full, _ = run_plant(HoldNoiseFloor(cooldown=1), full_opt, 30)
    first_opt = adamw(0.01)
    first = HoldNoiseFloor(cooldown=1)
    decays, _ = run_plant(first, first_opt, 12)
    state, group_decay = first.state_dict(), first_opt.param_groups[0]["weight_decay"]
    resumed_opt = adamw(0.01)
    resumed_opt.param_groups[0]["weight_decay"] = group_decay  # restored with the optimizer's state
    resumed = HoldNoiseFloor(cooldown=1)
    resumed.bind([resumed_opt])
    resumed.load_state_dict(state)
    plant = Plant()
    for step in range(1, 13):  # replay the plant's lag to the same point
        plant.loss(decays[step - 1])
    rest = []
    for step in range(13, 31):
        loss = plant.loss(resumed_opt.param_groups[0]["weight_decay"])
        resumed(verdict(step, loss), context(step, [resumed_opt], []))
        rest.append(resumed_opt.param_groups[0]["weight_decay"])
    assert decays + rest == pytest.approx(full)


def test_groups_at_zero_decay_are_left_alone_when_others_decay() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(
        [{"params": [model.weight], "weight_decay": 0.01}, {"params": [model.bias], "weight_decay": 0.0}], lr=1e-3
    )
    hold = HoldNoiseFloor()
    hold.bind([opt])
    for step in range(1, 6):
        hold(verdict(step, 0.3), context(step, [opt], []))
    assert opt.param_groups[0]["weight_decay"] > 0.01 and opt.param_groups[1]["weight_decay"] == 0.0


def shrink_run(make_opt, hold_decay: float | None, steps: int = 20) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    opt = make_opt(model.parameters())
    hold = None
    if hold_decay is not None:
        hold = HoldNoiseFloor(initial=hold_decay, max_factor=1.0001, gain=1e-9, max_shrink=0.5)
        hold.bind([opt])
        hold(verdict(0, 0.1), context(0, [opt], []))  # engage: λ = initial (a change of 1e-9 is nothing)
    for _ in range(steps):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if hold is not None:
        hold.unbind()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_decoupled_shrink_on_adam_equals_adamw() -> None:
    lam = 0.5
    with_hold = shrink_run(lambda p: torch.optim.Adam(p, lr=1e-2), lam)
    reference = shrink_run(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=lam), None)
    plain = shrink_run(lambda p: torch.optim.Adam(p, lr=1e-2), None)
    assert torch.allclose(with_hold, reference, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(with_hold, plain, rtol=1e-4, atol=1e-6)


def test_decoupled_shrink_is_applied_on_sgd() -> None:
    lam, lr = 0.5, 0.05
    with_hold = shrink_run(lambda p: torch.optim.SGD(p, lr=lr), lam, steps=1)
    torch.manual_seed(0)
    ref = nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    (ref(x) - y).pow(2).mean().backward()
    with torch.no_grad():
        expected = torch.cat([(p * (1 - lr * lam) - lr * p.grad).flatten() for p in ref.parameters()])
    assert torch.allclose(with_hold, expected, rtol=1e-5, atol=1e-7)


def test_hold_floor_in_a_plain_loop_keeps_training_near_the_floor() -> None:
    data = power_law_regression(200, 1.5, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(data["x_train"].shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def mse(split: str) -> torch.Tensor:
        return (model(data[f"x_{split}"]).squeeze(-1) - data[f"y_{split}"]).pow(2).mean()

    with ng.NormGuard(model, opt, every_n_steps=10, noise_floor=1.0, action="hold_floor") as guard:
        for step in range(1, 601):
            loss = mse("train")
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
            if step % 10 == 0:
                with torch.no_grad():
                    guard.validation_end(mse("val"))
    changes = [e for e in guard.events if e.kind is EventKind.WEIGHT_DECAY_CHANGED]
    assert changes and changes[0].data.get("engaged")
    assert opt.param_groups[0]["weight_decay"] > 0.01  # raised from AdamW's default
    late = [v.train_loss for v in guard.verdicts[-10:] if v.train_loss is not None]
    assert min(late) > 0.5  # held near the floor instead of memorising towards 0
    assert not guard.should_stop


@pytest.mark.parametrize(
    ("setting", "engaged", "restored"),
    [
        ("engaged", True, True),
        ("engaged", False, False),  # the controller never acted: the run is left as trained
        (True, False, True),
        (True, True, True),
        (False, True, False),
    ],
)
def test_restore_at_the_end_follows_the_setting(setting: bool | str, engaged: bool, restored: bool) -> None:
    opt = adamw()
    hold = HoldNoiseFloor(restore_best_at_end=setting)  # type: ignore[arg-type]
    hold.bind([opt])
    assert hold.needs_best_weights is (setting is not False)
    events: list[Event] = []
    hold(verdict(10, 0.5 if engaged else 1.5), context(10, [opt], events))
    assert hold.engaged is engaged
    calls: list[int] = []
    hold.on_train_end(ActionContext(20, [opt], events.append, lambda reason: None, lambda: calls.append(20) or True))
    assert bool(calls) is restored


def test_restore_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="`restore_best_at_end` to be True, False or 'engaged'"):
        HoldNoiseFloor(restore_best_at_end="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`restore_best_at_end` to be a bool"):
        HoldNoiseFloor(restore_best_at_end=1)  # type: ignore[arg-type]
    assert HoldNoiseFloor(restore_best_at_end=np.True_).restore_best_at_end is True  # type: ignore[arg-type]
    assert not HoldNoiseFloor(restore_best_at_end=np.False_).needs_best_weights  # type: ignore[arg-type]
