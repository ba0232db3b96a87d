"""Core defects of the reliability issue, through the plain door (NormGuard): shared objects,
NaN monitor values, compiled-model state, meta tensors, events while hold_floor acts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normguard as ng
from normguard.detector import NearInterpolationDetector
from normguard.events import EventKind
from normguard.hold_floor import HoldNoiseFloor


def model_and_opt(seed: int = 0, cls=torch.optim.AdamW) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    return model, cls(model.parameters(), lr=1e-2)


def train(
    guard: ng.NormGuard, model: nn.Module, opt: torch.optim.Optimizer, steps: int, val_every: int = 5, metric=None
) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for step in range(1, steps + 1):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.step(loss)
        if step % val_every == 0:
            with torch.no_grad():
                val = (model(x) - y).pow(2).mean()
            guard.validation_end(val, None if metric is None else metric(step))


def test_one_action_object_given_to_two_guards_is_copied_not_shared() -> None:  # D9
    template = HoldNoiseFloor()
    (m1, o1), (m2, o2) = model_and_opt(0, torch.optim.Adam), model_and_opt(1, torch.optim.Adam)
    g1 = ng.NormGuard(m1, o1, every_n_steps=1, noise_floor=10.0, action=template)
    g2 = ng.NormGuard(m2, o2, every_n_steps=1, noise_floor=1e-9, action=template)
    train(g1, m1, o1, 10)
    train(g2, m2, o2, 10)
    assert g1.monitor.action is not g2.monitor.action and g1.monitor.action is not template
    assert g1.monitor.action.engaged and not g2.monitor.action.engaged  # each drives its own λ
    assert len(o1._optimizer_step_pre_hooks) == 1 and len(o2._optimizer_step_pre_hooks) == 1
    assert not template.engaged and not template._groups  # the user's object is never bound nor mutated
    g1.close()
    g2.close()


def test_one_detector_object_given_to_two_guards_counts_separately() -> None:  # D16
    template = NearInterpolationDetector(noise_floor=1.0)
    (m1, o1), (m2, o2) = model_and_opt(0), model_and_opt(1)
    g1 = ng.NormGuard(m1, o1, every_n_steps=5, detector=template)
    g2 = ng.NormGuard(m2, o2, every_n_steps=5, detector=template)
    train(g1, m1, o1, 15)
    train(g2, m2, o2, 15)
    assert g1.detector._validations == 3 and g2.detector._validations == 3
    assert template._validations == 0


def test_a_rerun_notebook_cell_does_not_double_the_shrink() -> None:  # D15
    model, opt = model_and_opt(0, torch.optim.Adam)
    ng.NormGuard(model, opt, every_n_steps=1, noise_floor=1.0, action="hold_floor")  # never closed
    with pytest.warns(UserWarning, match="detached"):  # a NormGuardWarning
        ng.NormGuard(model, opt, every_n_steps=1, noise_floor=1.0, action="hold_floor")
    assert len(opt._optimizer_step_pre_hooks) == 1


def test_a_nan_monitor_value_is_not_scored_by_the_loss() -> None:  # D2
    model, opt = model_and_opt()
    values = iter([0.5, float("nan"), 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.04, 0.03])
    guard = ng.NormGuard(model, opt, every_n_steps=5, noise_floor=1.0, action="stop", monitor="val_mae", patience=3)
    train(guard, model, opt, 60, metric=lambda step: next(values))
    assert not guard.should_stop  # val_mae improved at every finite validation
    assert guard.monitor.best is not None and guard.monitor.best.value == pytest.approx(0.03)


def test_state_of_a_compiled_model_loads_into_the_plain_model_and_back() -> None:  # D10
    model, opt = model_and_opt()
    compiled = torch.compile(model, backend="eager")
    guard = ng.NormGuard(compiled, opt, every_n_steps=5, noise_floor=1.0, action="stop")
    train(guard, compiled, opt, 10)
    state = guard.state_dict()
    assert any(k.startswith("_orig_mod.") for k in state["best"]["state"])
    plain, plain_opt = model_and_opt()
    resumed = ng.NormGuard(plain, plain_opt, every_n_steps=5, noise_floor=1.0, action="stop")
    resumed.load_state_dict(state)
    assert resumed.monitor.best.restore(plain)
    back = torch.compile(model_and_opt()[0], backend="eager")
    again = ng.NormGuard(back, torch.optim.AdamW(back.parameters()), every_n_steps=5, noise_floor=1.0, action="stop")
    again.load_state_dict(resumed.state_dict())
    assert again.monitor.best.restore(back)


def test_meta_tensors_are_refused_when_given() -> None:  # D17
    model, opt = model_and_opt()
    guard = ng.NormGuard(model, opt, every_n_steps=2)
    with pytest.raises(ValueError, match="meta"):
        guard.step(torch.empty((), device="meta"))
    with pytest.raises(ValueError, match="meta"):
        guard.validation_end(torch.empty((), device="meta"))
    train(guard, model, opt, 4)  # the guard still works afterwards
    assert guard.last_norms()


def test_hold_floor_raising_the_loss_is_not_divergence_and_a_firing_is_reported_once() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = x[:, :1] + torch.randn(64, 1)  # noise variance 1
    model = nn.Sequential(nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    guard = ng.NormGuard(model, opt, every_n_steps=2, noise_floor=1.0, action="hold_floor")
    xv = torch.randn(64, 8)
    yv = xv[:, :1] + torch.randn(64, 1)
    for step in range(1, 601):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.step(loss)
        if step % 10 == 0:
            with torch.no_grad():
                guard.validation_end((model(xv) - yv).pow(2).mean())
    kinds = [e.kind for e in guard.events]
    assert guard.monitor.action.engaged
    assert EventKind.DIVERGING_LOSS not in kinds
    assert kinds.count(EventKind.DETECTOR_FIRED) <= 1
    late = [v.train_loss for v in guard.verdicts[-20:] if v.train_loss is not None and not math.isnan(v.train_loss)]
    assert min(late) > 0.2  # pulled back up from memorising (about 0.0 at step 100), at the max_shrink cap


def test_last_norms_after_a_restore_are_those_of_the_restored_weights() -> None:
    model, opt = model_and_opt()
    guard = ng.NormGuard(model, opt, every_n_steps=5, noise_floor=1.0, action="stop")
    train(guard, model, opt, 10)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # the weights move on after the best validation
    guard.step((model(torch.randn(4, 4)) ** 2).mean())
    assert guard.monitor.restore_best(guard.global_step)
    expected = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters())))
    assert guard.last_norms()["total"] == pytest.approx(expected, rel=1e-5)


def test_the_guard_holds_the_lowest_estimate_engages_once_settled_and_reads_tiny_ones_as_clean() -> None:
    from normguard.noise_floor import FloorEstimate

    model, opt = model_and_opt()
    guard = ng.NormGuard(model, opt, every_n_steps=1, noise_floor="estimate", action="hold_floor")
    x = torch.randn(8, 4)
    script = [(2.0, 1.9), (1.8, 1.3), (1.9, 1.5), (2.1, 1.25), (2.2, 1.22), (2.3, 1.28)]  # (val loss, estimate)
    settled = []
    for val, est in script:
        guard.step((model(x) ** 2).mean())
        guard.validation_end(val, noise_estimate=FloorEstimate(est, est - 0.1, est + 0.1, 100, "classification"))
        settled.append(guard.monitor.estimate_settled)
    assert guard.detector.current_floor() == pytest.approx(1.22)  # the lowest estimate so far
    # settled once three estimates in a row lie within 15 % of each other: 1.25, 1.22, 1.28
    assert settled == [False, False, False, False, False, True]
    clean = ng.NormGuard(*model_and_opt(1), every_n_steps=1, noise_floor="estimate", action="hold_floor")
    clean.step(torch.tensor(0.5))
    clean.validation_end(0.3, noise_estimate=FloorEstimate(0.02, 0.01, 0.03, 100, "classification"))
    assert clean.detector.current_floor() == 0.0  # clean labels: nothing to hold


@pytest.mark.parametrize(("last_val", "restored"), [(0.95, True), (0.81, False)])
def test_hold_floor_restores_a_run_that_ended_worse_even_if_it_never_engaged(last_val: float, restored: bool) -> None:
    model, opt = model_and_opt()
    guard = ng.NormGuard(model, opt, every_n_steps=1, noise_floor=1e-6, action="hold_floor")  # never reached
    x = torch.randn(8, 4)
    with guard:
        for step, val in enumerate([1.0, 0.8, 0.9, last_val], start=1):
            loss = model(x).pow(2).mean() + 1.0
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
            guard.validation_end(val)
            if step == 2:
                at_best = [p.detach().clone() for p in model.parameters()]
    assert not guard.monitor.action.engaged
    kinds = [e.kind for e in guard.events]
    # 0.95 is more than ENDED_WORSE_BY (2 %) above the best 0.8: the best weights come back; 0.81 is not
    assert (EventKind.RESTORE in kinds) is restored
    same = all(torch.equal(a, b) for a, b in zip(at_best, model.parameters()))
    assert same is restored
