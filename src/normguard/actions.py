"""What normguard does with the detector's verdicts. Opt-in; the default only warns.

Every action is an :class:`Action`: called with the verdict and an :class:`ActionContext`.
A *trigger* action (``every_decision = False``) is called at each decision where the
signature is active (``verdict.active``; ``verdict.fired`` marks the onset). A *controller*
(``every_decision = True``) is called at every decision, signature or not.

=================  ==========================  =============================================
name               class                       what it does
=================  ==========================  =============================================
``"warn"``         :class:`Warn`               one ``NormGuardWarning`` per firing
``"weight_decay"`` :class:`RaiseWeightDecay`   multiply ``weight_decay`` while the signature
                                               lasts (bounded, with a cooldown)
``"hold_floor"``   :class:`HoldNoiseFloor`     controller: a decoupled weight decay that keeps
                                               the training loss at the noise floor
``"stop"``         :class:`StopTraining`       stop, restoring the best-validation weights
``"stop_no_restore"`` ``StopTraining(False)``  stop, keep the last weights
a list             :class:`Escalation`         stages: the next when the signature persists
a callable         :class:`CallableAction`     ``fn(verdict, context)`` at active decisions
=================  ==========================  =============================================

``describe()`` of a named action is its name. Subclass :class:`Action` for your own: the
base has no-op ``bind``, ``reset``, ``state_dict``, ``load_state_dict`` and ``on_train_end``.

Example:
    >>> resolve_action(["weight_decay", "stop"]).describe()
    'escalation(weight_decay -> stop)'
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from normguard.detector import Verdict
from normguard.events import Event, EventKind
from normguard.validation import check_bool, check_int, check_number

log = logging.getLogger("normguard")

__all__ = [
    "Action",
    "ActionContext",
    "CallableAction",
    "Escalation",
    "HoldNoiseFloor",
    "NormGuardWarning",
    "RaiseWeightDecay",
    "StopTraining",
    "Warn",
    "resolve_action",
]


class NormGuardWarning(UserWarning):
    """The near-interpolation signature was detected."""


@dataclass
class ActionContext:
    """What an action may touch. Built by the core at each decision."""

    step: int
    optimizers: Sequence[torch.optim.Optimizer]
    emit: Callable[[Event], None]
    request_stop: Callable[[str], None]
    restore_best: Callable[[], bool]
    extra: dict[str, Any] = field(default_factory=dict)


class Action:
    """Base class of actions. Override :meth:`__call__`; the rest has working defaults."""

    #: called at every decision (a controller), not only while the signature is active
    every_decision: bool = False
    #: the core keeps a copy of the best-validation weights for this action
    needs_best_weights: bool = False
    #: the name ``resolve_action`` knows it by
    name: str = ""
    #: the action may change the optimizers' weight decay (the core then logs it)
    changes_weight_decay: bool = False

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        raise NotImplementedError

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Check the action against the optimizers (raise a clear error if it cannot work) and hook in."""

    def unbind(self) -> None:
        """Remove any hook :meth:`bind` installed."""

    def reset(self) -> None:
        """Forget run state: a new fit starts here."""

    def on_train_end(self, context: ActionContext) -> None:
        """Training ended (not stopped by normguard)."""

    def scalars(self) -> dict[str, float]:
        """Values to log at each check, by tag suffix under ``normguard/weight_decay/``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return self.name or type(self).__name__


class CallableAction(Action):
    """A plain ``fn(verdict, context)`` called at active decisions."""

    def __init__(self, fn: Callable[[Verdict, ActionContext], Any]) -> None:
        self.fn = fn

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        self.fn(verdict, context)

    def describe(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


class Warn(Action):
    """Emit a ``NormGuardWarning`` once per firing (the core logs the event itself)."""

    name = "warn"

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if verdict.fired:
            warnings.warn(
                f"normguard: near-interpolation signature at step {verdict.step}", NormGuardWarning, stacklevel=2
            )


def _group_indices(optimizer: torch.optim.Optimizer, wanted: Sequence[int] | None) -> list[int]:
    n = len(optimizer.param_groups)
    indices = list(range(n)) if wanted is None else list(wanted)
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"Expected argument `param_groups` to index the optimizer's {n} groups but got {bad}.")
    return [i % n for i in indices]


def _check_param_groups(param_groups: Any) -> list[int] | None:
    if param_groups is None:
        return None
    if isinstance(param_groups, (str, bytes)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in param_groups
    ):
        raise ValueError(f"Expected argument `param_groups` to be a sequence of ints or None but got {param_groups!r}.")
    return list(param_groups)


def _decaying_groups(optimizer: torch.optim.Optimizer, wanted: list[int] | None, include_zero: bool) -> list[int]:
    """The groups a regulariser acts on: those given, else those whose weight decay is > 0
    (the user's no-decay groups — biases, norm layers — stay untouched), else, when every
    group is at 0 (no per-group choice made), all groups."""
    indices = _group_indices(optimizer, wanted)
    if wanted is not None or include_zero:
        return indices
    positive = [i for i in indices if float(optimizer.param_groups[i].get("weight_decay", 0.0)) > 0]
    return positive or indices


class RaiseWeightDecay(Action):
    """Multiply the weight decay of chosen param groups while the signature lasts.

    Args:
        factor: multiplier (> 1) applied at each change.
        max_weight_decay: upper bound of any group's weight decay.
        cooldown: decisions to wait after a change before the next one.
        param_groups: indices of the groups to change (default: groups whose weight decay
            is > 0; all groups when every group is at 0).
        initial: value used for a group whose weight decay is 0 (0 × factor stays 0).
    """

    name = "weight_decay"
    changes_weight_decay = True

    def __init__(
        self,
        factor: float = 2.0,
        max_weight_decay: float = 0.1,
        cooldown: int = 2,
        param_groups: Sequence[int] | None = None,
        initial: float = 1e-4,
    ) -> None:
        self.factor = check_number("factor", factor, low=1.0, low_open=True)
        self.max_weight_decay = check_number("max_weight_decay", max_weight_decay, low=0.0, low_open=True)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.initial = check_number("initial", initial, low=0.0, low_open=True)
        self.param_groups = _check_param_groups(param_groups)
        self._since_change: int | None = None
        self._targets: list[list[int]] = []

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("Expected an optimizer for `RaiseWeightDecay` but the guard has none.")
        self._targets = []
        for k, opt in enumerate(optimizers):
            indices = _decaying_groups(opt, self.param_groups, include_zero=False)
            for i in indices:
                if "weight_decay" not in opt.param_groups[i]:
                    raise ValueError(
                        f"Expected param group {i} of optimizer {k} ({type(opt).__name__}) to have a "
                        f"`weight_decay` entry for `RaiseWeightDecay`, but its keys are "
                        f"{sorted(opt.param_groups[i])}."
                    )
            self._targets.append(indices)

    def reset(self) -> None:
        self._since_change = None

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if self._since_change is not None and self._since_change < self.cooldown:
            self._since_change += 1
            return
        changed = False
        for k, opt in enumerate(context.optimizers):
            targets = self._targets[k] if k < len(self._targets) else _group_indices(opt, self.param_groups)
            for i in targets:
                group = opt.param_groups[i]
                old = float(group["weight_decay"])
                new = min(old * self.factor if old > 0 else self.initial, self.max_weight_decay)
                if new <= old:
                    continue
                group["weight_decay"] = new
                changed = True
                context.emit(
                    Event(
                        context.step,
                        EventKind.WEIGHT_DECAY_CHANGED,
                        f"optimizer {k} group {i}: weight_decay {old:.3g} -> {new:.3g}",
                        {"optimizer": k, "group": i, "old": old, "new": new, "by": self.name},
                    )
                )
        if changed:
            self._since_change = 0

    def state_dict(self) -> dict[str, Any]:
        return {"since_change": self._since_change}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._since_change = state.get("since_change")


def _is_decoupled(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's own ``weight_decay`` is decoupled (p ← p − lr·λ·p)."""
    if isinstance(optimizer, torch.optim.AdamW):
        return True
    return any(bool(g.get("decoupled_weight_decay", False)) for g in optimizer.param_groups)


class HoldNoiseFloor(Action):
    """Keep the training loss at the noise floor with a decoupled weight decay, for the rest of training.

    A controller on log λ, called at every decision once the noise floor is known. It
    engages the first time the training loss goes under the floor; from then on, at each
    decision, with e = log(floor / train loss):

    * |e| ≤ ``deadband``: λ is left alone (no hunting around the floor);
    * otherwise λ ← λ · exp(clip(``gain`` · e, ±log ``max_factor``)): raised while the model
      fits below the floor, lowered when it is above, by at most ``max_factor`` per decision;
    * bounded: never below the group's own starting weight decay (the user's choice) and
      never above ``max_shrink`` / lr (at most that fraction of each weight removed per step).

    How the decay is applied (decoupled, ``p ← p · (1 − lr · λ)`` at each step):
    optimizers whose ``weight_decay`` is already decoupled (``AdamW``, or
    ``decoupled_weight_decay=True``) get their group's ``weight_decay`` set to λ; for all
    others (``Adam``, ``SGD``, ...) the group's own value is left as it is and the shrink by
    the controller's λ is applied at each ``optimizer.step()`` by a step pre-hook, before
    the update, exactly as ``AdamW`` orders it (one fused multiply per group; no host sync).
    Groups whose weight decay is 0 while others' is not (biases, norm layers) are left
    alone unless ``param_groups`` names them; when every group is at 0, all are regularised.

    Args:
        gain: proportional gain on the log error.
        max_factor: largest change of λ per decision (×/÷).
        deadband: relative error of the training loss to the floor tolerated without change.
        initial: λ to start from in a group that had none.
        max_shrink: upper bound of lr · λ (fraction of each weight removed per step).
        param_groups: indices of the groups to act on (see above for the default).
        restore_best_at_end: put the best-validation weights back when training ends:
            ``"engaged"`` (default) if the controller engaged during the run, ``True`` always,
            ``False`` never. By measurement (``benchmarks/suite``): on noisy labels the restore's
            median was at least that of no restore in 8 of 8 cells (+0.1…+3.0 points); on clean
            labels, where the controller never engages, restoring anyway cost a median 0.2
            points (worst 1.6), so a run the controller never touched is left as trained.
        cooldown: decisions to wait after a change before the next one.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> hold = HoldNoiseFloor()
        >>> hold.bind([torch.optim.Adam(model.parameters(), lr=1e-3)])
        >>> hold.engaged, hold.scalars()
        (False, {'hold_floor/opt_0_group_0': 0.0})
    """

    name = "hold_floor"
    every_decision = True
    changes_weight_decay = True

    def __init__(
        self,
        gain: float = 1.0,
        max_factor: float = 1.5,
        deadband: float = 0.05,
        initial: float = 1e-3,
        max_shrink: float = 0.1,
        param_groups: Sequence[int] | None = None,
        restore_best_at_end: bool | Literal["engaged"] = "engaged",
        cooldown: int = 0,
    ) -> None:
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.gain = check_number("gain", gain, low=0.0, low_open=True)
        self.max_factor = check_number("max_factor", max_factor, low=1.0, low_open=True)
        self.deadband = check_number("deadband", deadband, low=0.0, high=1.0)
        self.initial = check_number("initial", initial, low=0.0, low_open=True)
        self.max_shrink = check_number("max_shrink", max_shrink, low=0.0, low_open=True, high=1.0)
        self.param_groups = _check_param_groups(param_groups)
        restore: bool | Literal["engaged"]
        if isinstance(restore_best_at_end, str):
            if restore_best_at_end != "engaged":
                raise ValueError(
                    "Expected argument `restore_best_at_end` to be True, False or 'engaged' "
                    f"but got {restore_best_at_end!r}."
                )
            restore = "engaged"
        else:
            restore = check_bool("restore_best_at_end", restore_best_at_end)
        self.restore_best_at_end = restore
        self.needs_best_weights = restore is not False  # "best" is tracked before engaging
        self._optimizers: list[torch.optim.Optimizer] = []
        self._hooks: list[Any] = []
        self._floor_decay: list[list[float]] = []  # per optimizer, per acted-on group: the lower bound of λ
        self._decay: list[list[float]] = []  # the controller's λ
        self._groups: list[list[int]] = []  # indices of the acted-on groups
        self._decoupled: list[bool] = []  # whether the optimizer applies weight_decay decoupled itself
        self.reset()

    # ----------------------------------------------------------------- setup
    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("Expected an optimizer for `HoldNoiseFloor` but the guard has none.")
        self.unbind()
        self._optimizers = list(optimizers)
        self._groups = [_decaying_groups(opt, self.param_groups, include_zero=False) for opt in optimizers]
        self._decoupled = [_is_decoupled(opt) for opt in optimizers]
        if not self._floor_decay:
            self._floor_decay = [
                [float(opt.param_groups[i].get("weight_decay", 0.0)) if dec else 0.0 for i in groups]
                for opt, groups, dec in zip(optimizers, self._groups, self._decoupled)
            ]
            self._decay = [list(row) for row in self._floor_decay]
        for k, opt in enumerate(optimizers):
            if not self._decoupled[k]:
                self._hooks.append(opt.register_step_pre_hook(self._make_shrink(k)))

    def unbind(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def reset(self) -> None:
        self.engaged = False
        self._since_change = self.cooldown
        self._floor_decay = []
        self._decay = []
        self._groups = []
        self._decoupled = []

    def _make_shrink(self, k: int) -> Callable[..., None]:
        def shrink(optimizer: torch.optim.Optimizer, *_: Any) -> None:
            for j, i in enumerate(self._groups[k]):
                decay = self._decay[k][j]
                if decay <= 0:
                    continue
                group = optimizer.param_groups[i]
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                with torch.no_grad():
                    torch._foreach_mul_(params, 1.0 - group["lr"] * decay)

        return shrink

    # ----------------------------------------------------------------- control
    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        floor, loss = verdict.noise_floor, verdict.train_loss
        if floor is None or loss is None or not (floor > 0 and loss >= 0 and math.isfinite(loss)):
            return
        if not self.engaged:
            if loss >= floor:
                return
            self.engaged = True
            context.emit(
                Event(
                    context.step,
                    EventKind.WEIGHT_DECAY_CHANGED,
                    f"hold_floor engaged: training loss {loss:.4g} under the noise floor {floor:.4g}",
                    {"engaged": True, "train_loss": loss, "noise_floor": floor, "by": self.name},
                )
            )
        error = math.log(floor / max(loss, 1e-12 * floor))
        if abs(error) <= math.log1p(self.deadband):
            return
        if self._since_change < self.cooldown:
            self._since_change += 1
            return
        step = max(-math.log(self.max_factor), min(math.log(self.max_factor), self.gain * error))
        changed = False
        for k, opt in enumerate(context.optimizers[: len(self._groups)]):
            for j, i in enumerate(self._groups[k]):
                changed |= self._change(k, j, i, opt, step, context)
        if changed:
            self._since_change = 0

    def _change(self, k: int, j: int, i: int, opt: torch.optim.Optimizer, step: float, ctx: ActionContext) -> bool:
        old = self._decay[k][j]
        lr = opt.param_groups[i]["lr"]
        lr = float(lr) if not isinstance(lr, torch.Tensor) else float(lr.detach().cpu())
        ceiling = self.max_shrink / lr if lr > 0 else math.inf
        base = old if old > 0 else (self.initial if step > 0 else 0.0)
        new = min(max(base * math.exp(step), self._floor_decay[k][j]), ceiling)
        if new < 0.1 * self.initial and self._floor_decay[k][j] == 0:
            new = 0.0  # relaxed back to nothing: stop shrinking at all
        if math.isclose(new, old, rel_tol=1e-9):
            return False
        self._decay[k][j] = new
        if self._decoupled[k]:
            opt.param_groups[i]["weight_decay"] = new
        ctx.emit(
            Event(
                ctx.step,
                EventKind.WEIGHT_DECAY_CHANGED,
                f"optimizer {k} group {i}: decoupled weight_decay {old:.3g} -> {new:.3g} (hold_floor)",
                {"optimizer": k, "group": i, "old": old, "new": new, "by": self.name},
            )
        )
        return True

    def scalars(self) -> dict[str, float]:
        """The controller's λ per ``hold_floor/opt_k_group_i``."""
        return {
            f"hold_floor/opt_{k}_group_{i}": self._decay[k][j]
            for k, groups in enumerate(self._groups)
            for j, i in enumerate(groups)
        }

    def on_train_end(self, context: ActionContext) -> None:
        if self.restore_best_at_end is True or (self.restore_best_at_end == "engaged" and self.engaged):
            context.restore_best()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "engaged": self.engaged,
            "since_change": self._since_change,
            "floor_decay": self._floor_decay,
            "decay": self._decay,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engaged = bool(state.get("engaged", False))
        self._since_change = int(state.get("since_change", self.cooldown))
        floor, decay = state.get("floor_decay"), state.get("decay")
        if floor and decay:
            self._floor_decay = [[float(v) for v in row] for row in floor]
            self._decay = [[float(v) for v in row] for row in decay]


class StopTraining(Action):
    """Stop training; with ``restore_best`` restore the best-validation weights first."""

    def __init__(self, restore_best: bool = True) -> None:
        self.restore_best = check_bool("restore_best", restore_best)
        self.needs_best_weights = self.restore_best
        self.name = "stop" if self.restore_best else "stop_no_restore"

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if self.restore_best:
            context.restore_best()
        when = "the detector fired now" if verdict.fired else f"active for {verdict.streak} decisions"
        context.request_stop(f"near-interpolation signature ({when})")


class Escalation(Action):
    """Stages of actions: the next stage starts when the signature persists
    ``checks_between`` decisions after the current stage began. A controller stage
    (e.g. :class:`HoldNoiseFloor`), once reached, is called at every decision."""

    def __init__(self, actions: Sequence[Any], checks_between: int = 2) -> None:
        if isinstance(actions, (str, bytes)) or not isinstance(actions, Sequence) or not actions:
            raise ValueError(f"Expected argument `action` to be a non-empty list of actions but got {actions!r}.")
        self.checks_between = check_int("checks_between", checks_between, 1)
        self.actions = [resolve_action(a) for a in actions]
        self.needs_best_weights = any(a.needs_best_weights for a in self.actions)
        self.every_decision = any(a.every_decision for a in self.actions)
        self.changes_weight_decay = any(a.changes_weight_decay for a in self.actions)
        self.reset()

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        for action in self.actions:
            action.bind(optimizers)

    def unbind(self) -> None:
        for action in self.actions:
            action.unbind()

    def reset(self) -> None:
        self._stage = 0
        self._in_stage = 0
        for action in self.actions:
            action.reset()

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        current = self.actions[self._stage]
        if not verdict.active:  # called only because some stage is a controller
            if current.every_decision:
                current(verdict, context)
            return
        if verdict.fired:
            self._in_stage = 0
        elif self._in_stage >= self.checks_between and self._stage < len(self.actions) - 1:
            self._stage += 1
            self._in_stage = 0
            context.emit(
                Event(
                    context.step,
                    EventKind.ACTION_ESCALATED,
                    f"signature persists: escalating to {self.actions[self._stage].describe()}",
                    {"stage": self._stage},
                )
            )
        self._in_stage += 1
        self.actions[self._stage](verdict, context)

    def on_train_end(self, context: ActionContext) -> None:
        self.actions[self._stage].on_train_end(context)

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for action in self.actions:
            out.update(action.scalars())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self._stage, "in_stage": self._in_stage, "actions": [a.state_dict() for a in self.actions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stage = int(state.get("stage", 0))
        self._in_stage = int(state.get("in_stage", 0))
        for action, sub in zip(self.actions, state.get("actions", [])):
            action.load_state_dict(sub)

    def describe(self) -> str:
        return "escalation(" + " -> ".join(a.describe() for a in self.actions) + ")"


_NAMED: dict[str, Callable[[], Action]] = {
    "warn": Warn,
    "weight_decay": RaiseWeightDecay,
    "hold_floor": HoldNoiseFloor,
    "stop": StopTraining,
    "stop_no_restore": lambda: StopTraining(restore_best=False),
}


def resolve_action(action: Any) -> Action:
    """Turn a name, an :class:`Action`, a callable or a list of them into one action.

    ``None`` means ``"warn"``; a list becomes an :class:`Escalation`.
    """
    if action is None:
        return Warn()
    if isinstance(action, Action):
        return action
    if isinstance(action, str):
        if action not in _NAMED:
            raise ValueError(
                f"Expected argument `action` to be one of {sorted(_NAMED)}, an action, a callable or a list of them "
                f"but got {action!r}."
            )
        return _NAMED[action]()
    if isinstance(action, (list, tuple)):
        return Escalation(action)
    if callable(action):
        return CallableAction(action)
    raise ValueError(
        f"Expected argument `action` to be a name, an action, a callable or a list of them but got {action!r}."
    )
