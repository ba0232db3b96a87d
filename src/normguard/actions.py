"""What normguard does with the detector's verdicts. Opt-in; the default only warns.

Every action is an :class:`Action`: called with the verdict and an :class:`ActionContext`.
A *trigger* action (``every_decision = False``) is called at each decision where the
signature is active (``verdict.active``; ``verdict.fired`` marks the onset). A *controller*
(``every_decision = True``) is called at every check, signature or not.

The named actions:

- ``"warn"`` (:class:`Warn`): one ``NormGuardWarning`` per firing;
- ``"weight_decay"`` (:class:`RaiseWeightDecay`): multiply ``weight_decay`` while the signature
  lasts (bounded, with a cooldown);
- ``"hold_floor"`` (:class:`~normguard.hold_floor.HoldNoiseFloor`): a controller, a decoupled
  weight decay that keeps the training loss at the noise floor;
- ``"stop"`` (:class:`StopTraining`): stop, restoring the best-validation weights;
- ``"stop_no_restore"`` (``StopTraining(False)``): stop, keep the last weights;
- a list (:class:`Escalation`): stages, the next when the signature persists;
- a callable (:class:`CallableAction`): ``fn(verdict, context)`` at active decisions.

``describe()`` of a named action is its name. Subclass :class:`Action` for your own: the
base has no-op ``bind``, ``reset``, ``state_dict``, ``load_state_dict`` and ``on_train_end``.

Example:
    >>> resolve_action(["weight_decay", "stop"]).describe()
    'escalation(weight_decay -> stop)'
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    #: mean training loss since the previous check (a controller's input; None when unknown)
    train_loss: float | None = None
    #: the noise floor in effect at this check (known, or the latest estimate; None when unknown)
    noise_floor: float | None = None
    #: whether a controller may engage now (False on an estimated floor while validation still improves)
    may_engage: bool = True
    #: whether the latest validation score is worse than the best by more than
    #: :data:`~normguard.monitor.ENDED_WORSE_BY` (read at the end of training)
    ended_worse: bool = False


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
        """Extra values to log at each check, by tag suffix under ``normguard/``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return self.name or type(self).__name__

    def fresh(self) -> Action:
        """An unbound copy with the same settings: each guard acts on its own copy, so one
        action object given to two guards (or two fits) never shares run state."""
        return copy.deepcopy(self)

    def decays(self) -> dict[str, float]:
        """The decoupled weight decay this action applies itself, per group (``group_i``); empty
        when the optimizers' own ``weight_decay`` is what is in effect."""
        return {}


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
    (e.g. :class:`~normguard.hold_floor.HoldNoiseFloor`), once reached, is called at every decision."""

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
        if not (verdict.active and verdict.decided):  # called only because some stage is a controller
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

    def decays(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for action in self.actions:
            out.update(action.decays())
        return out

    def fresh(self) -> Escalation:
        return Escalation([a.fresh() for a in self.actions], checks_between=self.checks_between)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self._stage, "in_stage": self._in_stage, "actions": [a.state_dict() for a in self.actions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stage = int(state.get("stage", 0))
        self._in_stage = int(state.get("in_stage", 0))
        for action, sub in zip(self.actions, state.get("actions", [])):
            action.load_state_dict(sub)

    def describe(self) -> str:
        return "escalation(" + " -> ".join(a.describe() for a in self.actions) + ")"


def _hold_floor() -> Action:
    from normguard.hold_floor import HoldNoiseFloor

    return HoldNoiseFloor()


def __getattr__(name: str) -> Any:
    """``normguard.actions.HoldNoiseFloor`` lives in :mod:`normguard.hold_floor` (imported on first use)."""
    if name == "HoldNoiseFloor":
        from normguard.hold_floor import HoldNoiseFloor

        return HoldNoiseFloor
    raise AttributeError(f"module 'normguard.actions' has no attribute {name!r}")


_NAMED: dict[str, Callable[[], Action]] = {
    "warn": Warn,
    "weight_decay": RaiseWeightDecay,
    "hold_floor": _hold_floor,
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
