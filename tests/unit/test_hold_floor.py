"""HoldNoiseFloor: the controller on a scripted plant, its per-step bounds on real optimizers, and its state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import normguard as ng
from normguard.actions import ActionContext
from normguard.detector import Reason, Verdict
from normguard.events import Event, EventKind
from normguard.hold_floor import HoldNoiseFloor
from normguard.science.datasets import power_law_regression

FLOOR = 1.0


def verdict(step: int) -> Verdict:
    return Verdict(step=step, reason=Reason.NOT_MET)


def context(
    step: int, opts: list[torch.optim.Optimizer], events: list[Event], loss: float | None, floor: float | None = FLOOR
) -> ActionContext:
    return ActionContext(
        step, opts, events.append, lambda reason: None, lambda: False, train_loss=loss, noise_floor=floor
    )


def decide(
    hold: HoldNoiseFloor,
    step: int,
    opt: torch.optim.Optimizer,
    loss: float | None,
    events: list[Event] | None = None,
    floor: float | None = FLOOR,
) -> None:
    hold(verdict(step), context(step, [opt], [] if events is None else events, loss, floor))


def optimizer_steps(hold: HoldNoiseFloor, opt: torch.optim.Optimizer, n: int = 10) -> None:
    """What the step pre-hook does at ``n`` optimizer steps (the weights themselves are not needed)."""
    for _ in range(n):
        if hold.engaged:
            hold._apply(0, opt)


def adamw(weight_decay: float = 0.01, lr: float = 1e-3) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    return torch.optim.AdamW(nn.Linear(4, 2).parameters(), lr=lr, weight_decay=weight_decay)


class Plant:
    """A training loss driven by a log-norm state w: fitting pushes w up at ``push`` per step, the
    decoupled decay pulls it down at lr·λ per step, and the loss is F·exp(−(w − 1)): it starts
    above the floor, crosses it when w reaches 1 and memorises below it unless λ holds it."""

    def __init__(self, push: float = 0.004) -> None:
        self.w, self.push = 0.0, push

    def step(self, shrink: float) -> float:
        self.w += self.push - 2.0 * shrink
        return FLOOR * math.exp(-(self.w - 1.0))


def run_plant(every: int, steps: int = 3000, lr_at=lambda s: 1e-3, push: float = 0.004) -> dict[str, list[float]]:
    """A real AdamW group whose lr follows ``lr_at``; the controller decides every ``every`` steps on the
    mean loss since its previous decision (as a guard's check does)."""
    opt = adamw(0.0, lr=lr_at(0))
    hold = HoldNoiseFloor()
    hold.bind([opt])
    plant, window = Plant(push), []
    out: dict[str, list[float]] = {"loss": [], "lam": [], "shrink": [], "lr": []}
    for step in range(1, steps + 1):
        lr = lr_at(step)
        opt.param_groups[0]["lr"] = lr
        hold._apply(0, opt) if hold.engaged else None  # what the step pre-hook does before opt.step()
        decay = opt.param_groups[0]["weight_decay"]
        loss = plant.step(lr * decay)
        window.append(loss)
        if step % every == 0:
            decide(hold, step, opt, sum(window) / len(window))
            window = []
        out["loss"].append(loss)
        out["lam"].append(hold._groups[0].decay)
        out["shrink"].append(lr * decay)
        out["lr"].append(lr)
    return out


def tracking(losses: list[float]) -> tuple[float, float, float]:
    ratio = np.convolve(np.asarray(losses) / FLOOR, np.ones(10) / 10, mode="valid")
    first = int(np.argmax(ratio < 1.0))
    after = ratio[first:]
    return float((after < 0.9).mean()), float(after.min()), float(after.max())


@pytest.mark.parametrize("every", [1, 10])
def test_holds_the_floor_without_overshoot_at_any_check_interval(every: int) -> None:
    out = run_plant(every)
    share_under, lowest, highest = tracking(out["loss"])
    assert share_under <= 0.10 and lowest >= 0.8 and highest <= 1.3, (share_under, lowest, highest)
    assert abs(out["loss"][-1] / FLOOR - 1) <= 0.1  # settled at the floor


def test_same_behaviour_at_check_intervals_1_and_10() -> None:
    every_step, every_ten = run_plant(1), run_plant(10)
    assert np.mean(every_step["lam"][-500:]) == pytest.approx(np.mean(every_ten["lam"][-500:]), rel=0.3)
    assert np.mean(every_step["loss"][-500:]) == pytest.approx(np.mean(every_ten["loss"][-500:]), rel=0.05)


def test_rate_limit_is_per_optimizer_step() -> None:
    for every in (1, 10):
        out = run_plant(every)
        lam = np.asarray(out["lam"])
        engaged = int(np.argmax(lam > 0))
        moves = np.abs(np.diff(np.log(lam[engaged:])))
        assert moves.max() <= 0.03 * every + 1e-9  # max_rate per step since the previous decision


def test_follows_a_cosine_schedule_with_warm_restarts_and_caps_every_step() -> None:
    def lr_at(step: int) -> float:  # restarts every 700 steps, from 1e-3 down to 1e-5
        phase = (step % 700) / 700
        return 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * phase))

    out = run_plant(10, steps=3500, lr_at=lr_at, push=0.002)
    assert max(out["shrink"]) <= 0.1 + 1e-12  # lr·λ ≤ max_shrink at every step, restarts included
    assert all(math.isfinite(v) for v in out["lam"])


def test_waits_for_the_crossing_and_needs_a_floor() -> None:
    opt = adamw(0.01)
    hold = HoldNoiseFloor()
    hold.bind([opt])
    events: list[Event] = []
    decide(hold, 10, opt, 2.0, events)
    decide(hold, 20, opt, 0.5, events, floor=None)
    assert not hold.engaged and opt.param_groups[0]["weight_decay"] == 0.01 and not events
    decide(hold, 30, opt, 0.5, events)
    assert hold.engaged and events[0].data["engaged"] and not events[0].data["predicted"]


def test_engages_on_a_predicted_crossing() -> None:
    opt = adamw(0.0)
    hold = HoldNoiseFloor(horizon=100)
    hold.bind([opt])
    events: list[Event] = []
    for step, loss in zip(range(10, 50, 10), (1.5, 1.4, 1.3, 1.2)):  # falling ~0.7 % per step
        decide(hold, step, opt, loss, events)
    assert not hold.engaged  # still learning 20 % above the floor: slowing it would only cost accuracy
    for step, loss in zip(range(50, 80, 10), (1.12, 1.06, 1.03)):  # within `approach` (10 %) and heading under
        decide(hold, step, opt, loss, events)
    assert hold.engaged and events[-1].data["predicted"] and events[-1].data["train_loss"] > FLOOR


def test_bounds_user_decay_below_and_max_shrink_above() -> None:
    opt = adamw(0.01, lr=1e-2)
    hold = HoldNoiseFloor(max_shrink=0.01)
    hold.bind([opt])
    for step in range(10, 4000, 10):  # far below the floor: λ climbs to its ceiling
        decide(hold, step, opt, 0.01)
        optimizer_steps(hold, opt)
    assert hold.decays()["group_0"] == pytest.approx(0.01 / 1e-2)  # lr·λ = max_shrink
    for step in range(4000, 8000, 10):  # far above: back down to the user's own 0.01, never below
        decide(hold, step, opt, 5.0)
        optimizer_steps(hold, opt)
    assert hold.decays()["group_0"] == pytest.approx(0.01)


def test_the_users_decay_stands_above_the_cap() -> None:  # D13
    opt = adamw(0.5, lr=0.5)
    hold = HoldNoiseFloor()  # max_shrink / lr = 0.2 < the user's 0.5
    hold.bind([opt])
    for step in range(10, 500, 10):
        decide(hold, step, opt, 0.2)
        optimizer_steps(hold, opt)
    assert opt.param_groups[0]["weight_decay"] == 0.5


def test_a_group_at_lr_zero_is_neither_shrunk_nor_wound_up() -> None:  # D4
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    hold = HoldNoiseFloor()
    hold.bind([opt])
    for step in range(10, 3000, 10):
        decide(hold, step, opt, 0.1)
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
    assert torch.isfinite(model.weight).all() and hold._groups[0].decay < 1e3


def test_deadband_leaves_lambda_alone_near_the_floor() -> None:
    opt = adamw(0.01)
    hold = HoldNoiseFloor(deadband=0.05)
    hold.bind([opt])
    decide(hold, 10, opt, 0.5)
    after_engage = hold._groups[0].decay
    for step, loss in zip(range(20, 60, 10), (0.97, 1.03, 0.98, 1.04)):
        decide(hold, step, opt, loss)
    assert hold._groups[0].decay == after_engage


def test_groups_at_zero_decay_are_left_alone_when_others_decay() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(
        [{"params": [model.weight], "weight_decay": 0.01}, {"params": [model.bias], "weight_decay": 0.0}], lr=1e-3
    )
    hold = HoldNoiseFloor()
    hold.bind([opt])
    for step in range(10, 200, 10):
        decide(hold, step, opt, 0.3)
        optimizer_steps(hold, opt)
    assert opt.param_groups[0]["weight_decay"] > 0.01 and opt.param_groups[1]["weight_decay"] == 0.0


def test_a_group_added_later_follows_the_rule_and_is_reported() -> None:  # D14
    torch.manual_seed(0)
    first, second = nn.Linear(4, 4), nn.Linear(4, 2)
    opt = torch.optim.AdamW(first.parameters(), lr=1e-3, weight_decay=0.01)
    hold = HoldNoiseFloor()
    hold.bind([opt])
    events: list[Event] = []
    decide(hold, 10, opt, 0.3, events)
    opt.add_param_group({"params": list(second.parameters()), "weight_decay": 0.05})
    decide(hold, 20, opt, 0.3, events)
    added = [e for e in events if "added_groups" in e.data]
    assert added and added[0].data["regularised"] == [1] and {g.index for g in hold._groups} == {0, 1}


def shrink_run(make_opt, hold_decay: float | None, steps: int = 20, scaler: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    opt = make_opt(model.parameters())
    hold = None
    if hold_decay is not None:
        hold = HoldNoiseFloor(max_shrink=0.5)
        hold.bind([opt])
        hold.engaged = True
        hold._groups[0].decay = hold_decay
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


@pytest.mark.parametrize("fused", [False, True])
def test_a_step_the_grad_scaler_skips_is_not_shrunk(fused: bool) -> None:  # D5
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=fused)
    scaler = torch.amp.GradScaler("cpu")
    hold = HoldNoiseFloor()
    hold.bind([opt])
    hold.engaged, hold._groups[0].decay = True, 1.0
    before = model.weight.detach().clone()
    loss = model(torch.full((2, 4), float("inf"))).sum()  # inf gradients: the scaler skips this step
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(model.weight.detach(), before)
    opt.zero_grad()
    scaler.scale(model(torch.randn(2, 4)).sum()).backward()
    scaler.step(opt)  # a finite step: shrunk and updated
    assert not torch.equal(model.weight.detach(), before)


def test_a_second_controller_on_the_same_optimizer_takes_over() -> None:  # D15
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, second = HoldNoiseFloor(), HoldNoiseFloor()
    first.bind([opt])
    with pytest.warns(UserWarning, match="detached"):  # a NormGuardWarning
        second.bind([opt])
    assert not first._hooks and len(opt._optimizer_step_pre_hooks) == 1


def test_old_arguments_name_their_replacement() -> None:
    with pytest.raises(TypeError, match=r"max_factor.*max_rate"):
        HoldNoiseFloor(max_factor=1.5)
    with pytest.raises(ValueError, match="`initial_shrink`"):
        HoldNoiseFloor(initial_shrink=0.5, max_shrink=0.1)


def test_state_round_trip_continues_identically() -> None:
    def drive(hold: HoldNoiseFloor, opt: torch.optim.Optimizer, steps: range, plant: Plant) -> list[float]:
        out = []
        for step in steps:
            hold._apply(0, opt) if hold.engaged else None
            loss = plant.step(opt.param_groups[0]["lr"] * opt.param_groups[0]["weight_decay"])
            if step % 10 == 0:
                decide(hold, step, opt, loss)
            out.append(hold._groups[0].decay)
        return out

    full_opt, full = adamw(0.0), HoldNoiseFloor()
    full.bind([full_opt])
    whole = drive(full, full_opt, range(1, 1501), Plant())
    first_opt, first, plant = adamw(0.0), HoldNoiseFloor(), Plant()
    first.bind([first_opt])
    head = drive(first, first_opt, range(1, 751), plant)
    resumed_opt, resumed = adamw(0.0), HoldNoiseFloor()
    resumed.bind([resumed_opt])
    resumed.load_state_dict(first.state_dict())
    tail = drive(resumed, resumed_opt, range(751, 1501), plant)
    assert head + tail == pytest.approx(whole)


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
    assert not [e for e in guard.events if e.kind is EventKind.DIVERGING_LOSS]


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
    decide(hold, 10, opt, 0.5 if engaged else 1.5, events)
    assert hold.engaged is engaged
    calls: list[int] = []
    hold.on_train_end(ActionContext(20, [opt], events.append, lambda reason: None, lambda: calls.append(20) or True))
    assert bool(calls) is restored


def test_restore_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="`restore_best_at_end` to be True, False, 'engaged' or 'engaged_or_worse'"):
        HoldNoiseFloor(restore_best_at_end="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`restore_best_at_end` to be a bool"):
        HoldNoiseFloor(restore_best_at_end=1)  # type: ignore[arg-type]
    assert HoldNoiseFloor(restore_best_at_end=np.True_).restore_best_at_end is True  # type: ignore[arg-type]
    assert not HoldNoiseFloor(restore_best_at_end=np.False_).needs_best_weights  # type: ignore[arg-type]
