"""Actions on their own: weight decay changes, stop and restore, escalation, custom callables."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import normguard as ng
from normguard.actions import ActionContext, Escalation, RaiseWeightDecay, StopTraining, Warn, resolve_action
from normguard.detector import Reason, Verdict


def verdict(step: int, fired: bool = False) -> Verdict:
    return Verdict(step=step, reason=Reason.SIGNATURE, fired=fired, active=True, streak=3)


class Recorder:
    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.events: list[ng.Event] = []
        self.stops: list[str] = []
        self.restores = 0

    def context(self, step: int) -> ActionContext:
        def restore() -> bool:
            self.restores += 1
            return True

        return ActionContext(step, self.optimizers, self.events.append, self.stops.append, restore)


def two_group_adamw() -> torch.optim.Optimizer:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    return torch.optim.AdamW([{"params": a.parameters(), "weight_decay": 0.01}, {"params": b.parameters()}], lr=1e-3)


def test_raise_weight_decay_is_bounded_with_cooldown() -> None:
    opt = two_group_adamw()
    rec = Recorder([opt])
    action = RaiseWeightDecay(factor=3.0, max_weight_decay=0.2, cooldown=1, param_groups=[0])
    action.bind([opt])
    history = []
    for step in range(1, 9):
        action(verdict(step), rec.context(step))
        history.append(opt.param_groups[0]["weight_decay"])
    assert history == pytest.approx([0.03, 0.03, 0.09, 0.09, 0.2, 0.2, 0.2, 0.2])
    assert opt.param_groups[1]["weight_decay"] == 0.01  # AdamW's default, untouched (not chosen)
    changes = [(e.step, e.data["old"], e.data["new"]) for e in rec.events]
    assert changes == [
        (1, 0.01, pytest.approx(0.03)),
        (3, pytest.approx(0.03), pytest.approx(0.09)),
        (5, pytest.approx(0.09), 0.2),
    ]
    assert all(e.kind is ng.EventKind.WEIGHT_DECAY_CHANGED and "->" in e.message for e in rec.events)


def test_zero_weight_decay_starts_from_initial_and_lives_in_optimizer_state() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    action = RaiseWeightDecay(initial=1e-3, cooldown=0)
    action(verdict(1), Recorder([opt]).context(1))
    assert opt.param_groups[0]["weight_decay"] == 1e-3
    fresh = torch.optim.SGD(model.parameters(), lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["weight_decay"] == 1e-3


def test_optimizer_without_weight_decay_is_a_clear_error() -> None:
    class Plain(torch.optim.Optimizer):
        def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
            super().__init__(params, {"lr": 0.1})

        def step(self, closure=None):  # type: ignore[no-untyped-def]
            return None

    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="to have a `weight_decay` entry"):
        ng.NormGuard(model, Plain(model.parameters()), action="weight_decay")
    with pytest.raises(ValueError, match="index the optimizer's 1 groups"):
        ng.NormGuard(model, torch.optim.SGD(model.parameters(), lr=0.1), action=RaiseWeightDecay(param_groups=[3]))
    with pytest.raises(ValueError, match="`factor`"):
        RaiseWeightDecay(factor=1.0)


def test_stop_training_restores_then_stops() -> None:
    rec = Recorder([])
    StopTraining(restore_best=True)(verdict(5), rec.context(5))
    StopTraining(restore_best=False)(verdict(6), rec.context(6))
    assert rec.restores == 1 and len(rec.stops) == 2


def test_warn_once_per_firing() -> None:
    rec = Recorder([])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fired in (True, False, False, True):
            Warn()(verdict(1, fired=fired), rec.context(1))
    assert [w.category for w in caught] == [ng.actions.NormGuardWarning] * 2


def test_escalation_moves_to_the_next_stage_when_the_signature_persists() -> None:
    opt = two_group_adamw()
    rec = Recorder([opt])
    action = resolve_action(["weight_decay", "stop"])
    assert isinstance(action, Escalation)
    action(verdict(1, fired=True), rec.context(1))
    action(verdict(2), rec.context(2))
    assert not rec.stops and rec.events[0].kind is ng.EventKind.WEIGHT_DECAY_CHANGED
    action(verdict(3), rec.context(3))
    assert rec.stops and rec.restores == 1
    assert [e.kind for e in rec.events].count(ng.EventKind.ACTION_ESCALATED) == 1
    state = action.state_dict()
    again = resolve_action(["weight_decay", "stop"])
    again.load_state_dict(state)
    assert again.state_dict() == state


def test_custom_callable_is_called_with_verdict_and_context() -> None:
    seen = []
    model = nn.Linear(3, 1)
    guard = ng.NormGuard(
        model, every_n_steps=1, noise_floor=1.0, patience=1, action=lambda v, c: seen.append((v.step, c.step))
    )
    for _i in range(1, 8):
        with torch.no_grad():
            model.weight.mul_(1.5)
        guard.step(0.1)
    assert seen and all(a == b for a, b in seen) and seen[0][0] == guard.events[0].step


def test_restore_best_recovers_best_validation_weights() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    guard = ng.NormGuard(model, every_n_steps=1000, noise_floor=1.0, patience=1, action="stop")
    snapshots = {}
    for step, val in enumerate([0.9, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7], start=1):
        with torch.no_grad():
            model.weight.mul_(1.5)
        snapshots[step] = model.weight.detach().clone()
        guard.step(0.1)
        guard.validation_end(val)
        if guard.should_stop:
            break
    assert guard.should_stop
    torch.testing.assert_close(model.weight.detach(), snapshots[2])
    restore = [e for e in guard.events if e.kind is ng.EventKind.RESTORE]
    assert restore and restore[0].data["best_step"] == 2


def test_restore_without_validation_is_an_event_not_a_crash() -> None:
    model = nn.Linear(3, 1)
    guard = ng.NormGuard(model, every_n_steps=1, noise_floor=1.0, patience=1, action="stop")
    for _ in range(6):
        with torch.no_grad():
            model.weight.mul_(1.5)
        guard.step(0.1)
    kinds = [e.kind for e in guard.events]
    assert ng.EventKind.RESTORE_SKIPPED in kinds and ng.EventKind.STOP in kinds and guard.should_stop
