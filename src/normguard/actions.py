"""What normguard does when the detector's signature is active. Opt-in; the default warns.

An action is called with the verdict and an :class:`ActionContext` at every decision
where the signature is active (``verdict.active``); ``verdict.fired`` marks the onset.

* :class:`Warn` — one logged event and one Python warning per firing (onset).
* :class:`RaiseWeightDecay` — multiply ``weight_decay`` of chosen param groups by
  ``factor``, bounded by ``max_weight_decay``, at most once every ``cooldown`` decisions.
  The value lives in the optimizer's param groups, so it is saved and restored with
  ``optimizer.state_dict()``. Note on torch's ``AdamW``: its decoupled decay shrinks
  weights by ``lr * weight_decay`` per step, so the effective decay follows the learning
  rate (a scheduler that lowers lr also weakens the raised decay); with ``Adam``/``SGD``
  weight decay is an L2 term added to the gradient instead.
* :class:`StopTraining` — ask the loop to stop and, with ``restore_best=True``, restore the
  weights of the check with the best validation loss (a copy kept on the CPU by default:
  one copy of the model's parameters and buffers in host memory).
* :class:`Escalation` — run actions in stages: the first at onset, the next when the
  signature persists ``checks_between`` more decisions, and so on.

Custom callables ``fn(verdict, context)`` are accepted wherever an action is.

Example:
    >>> resolve_action(["weight_decay", "stop"]).describe()
    'escalation(raise_weight_decay -> stop_training)'
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from normguard.events import Event, EventKind
from normguard.detector import Verdict, _check_int, _check_number

log = logging.getLogger("normguard")

__all__ = [
    "Action",
    "ActionContext",
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
    """What an action may touch. Built by the front door at each decision."""

    step: int
    optimizers: Sequence[torch.optim.Optimizer]
    emit: Callable[[Event], None]
    request_stop: Callable[[str], None]
    restore_best: Callable[[], bool]
    extra: dict[str, Any] = field(default_factory=dict)


class Action(Protocol):
    def __call__(self, verdict: Verdict, context: ActionContext) -> None: ...


class _Stateful:
    """Default no-op state handling and validation for the built-in actions."""

    needs_best_weights = False

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Check the action against the optimizers; raise a clear error if it cannot work."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return type(self).__name__


class Warn(_Stateful):
    """Emit a ``NormGuardWarning`` once per firing (the monitor logs the event itself)."""

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if verdict.fired:
            warnings.warn(
                f"normguard: near-interpolation signature at {verdict.describe()}", NormGuardWarning, stacklevel=2
            )

    def describe(self) -> str:
        return "warn"


class RaiseWeightDecay(_Stateful):
    """Multiply the weight decay of chosen param groups, bounded, with a cooldown.

    Args:
        factor: multiplier (> 1) applied at each change.
        max_weight_decay: upper bound of any group's weight decay.
        cooldown: decisions to wait after a change before the next one.
        param_groups: indices of the groups to change (default: all groups).
        initial: value used for a group whose weight decay is 0 (0 × factor stays 0).
    """

    def __init__(
        self,
        factor: float = 2.0,
        max_weight_decay: float = 0.1,
        cooldown: int = 2,
        param_groups: Sequence[int] | None = None,
        initial: float = 1e-4,
    ) -> None:
        _check_number("factor", factor, low=1.0, low_open=True)
        _check_number("max_weight_decay", max_weight_decay, low=0.0, low_open=True)
        _check_int("cooldown", cooldown, 0)
        _check_number("initial", initial, low=0.0, low_open=True)
        if param_groups is not None and (
            isinstance(param_groups, (str, bytes)) or not all(isinstance(i, int) for i in param_groups)
        ):
            raise ValueError(
                f"Expected argument `param_groups` to be a sequence of ints or None but got {param_groups!r}."
            )
        self.factor = float(factor)
        self.max_weight_decay = float(max_weight_decay)
        self.cooldown = cooldown
        self.param_groups = None if param_groups is None else list(param_groups)
        self.initial = float(initial)
        self._since_change: int | None = None

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("Expected an optimizer for `RaiseWeightDecay` but the guard has none.")
        for k, opt in enumerate(optimizers):
            for i in self._indices(opt):
                if "weight_decay" not in opt.param_groups[i]:
                    raise ValueError(
                        f"Expected param group {i} of optimizer {k} ({type(opt).__name__}) to have a "
                        f"`weight_decay` entry for `RaiseWeightDecay`, but its keys are "
                        f"{sorted(opt.param_groups[i])}."
                    )

    def _indices(self, optimizer: torch.optim.Optimizer) -> list[int]:
        n = len(optimizer.param_groups)
        indices = list(range(n)) if self.param_groups is None else self.param_groups
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ValueError(f"Expected argument `param_groups` to index the optimizer's {n} groups but got {bad}.")
        return indices

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if self._since_change is not None and self._since_change < self.cooldown:
            self._since_change += 1
            return
        changed = False
        for k, opt in enumerate(context.optimizers):
            for i in self._indices(opt):
                group = opt.param_groups[i]
                old = float(group["weight_decay"])
                new = min(old * self.factor if old > 0 else self.initial, self.max_weight_decay)
                if new <= old:
                    continue
                group["weight_decay"] = new
                changed = True
                message = f"optimizer {k} group {i}: weight_decay {old:.3g} -> {new:.3g}"
                context.emit(
                    Event(
                        context.step,
                        EventKind.WEIGHT_DECAY_CHANGED,
                        message,
                        {"optimizer": k, "group": i, "old": old, "new": new},
                    )
                )
        if changed:
            self._since_change = 0

    def state_dict(self) -> dict[str, Any]:
        return {"since_change": self._since_change}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._since_change = state.get("since_change")

    def describe(self) -> str:
        return "raise_weight_decay"


class StopTraining(_Stateful):
    """Stop training; with ``restore_best`` restore the best-validation weights first."""

    def __init__(self, restore_best: bool = True) -> None:
        self.restore_best = bool(restore_best)
        self.needs_best_weights = self.restore_best

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if self.restore_best:
            context.restore_best()
        context.request_stop(f"near-interpolation signature ({verdict.describe()})")

    def describe(self) -> str:
        return "stop_training"


class Escalation(_Stateful):
    """Stages of actions: the next stage starts when the signature persists
    ``checks_between`` decisions after the current stage began."""

    def __init__(self, actions: Sequence[Action], checks_between: int = 2) -> None:
        if not actions:
            raise ValueError("Expected argument `actions` to be a non-empty sequence of actions but got [].")
        _check_int("checks_between", checks_between, 1)
        self.actions = list(actions)
        self.checks_between = checks_between
        self.needs_best_weights = any(getattr(a, "needs_best_weights", False) for a in self.actions)
        self._stage = 0
        self._in_stage = 0

    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        for action in self.actions:
            bind = getattr(action, "bind", None)
            if bind is not None:
                bind(optimizers)

    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        if verdict.fired:
            self._in_stage = 0
        elif self._in_stage >= self.checks_between and self._stage < len(self.actions) - 1:
            self._stage += 1
            self._in_stage = 0
            context.emit(
                Event(
                    context.step,
                    EventKind.ACTION_ESCALATED,
                    f"signature persists: escalating to {_name(self.actions[self._stage])}",
                    {"stage": self._stage},
                )
            )
        self._in_stage += 1
        self.actions[self._stage](verdict, context)

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self._stage,
            "in_stage": self._in_stage,
            "actions": [getattr(a, "state_dict", dict)() for a in self.actions],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stage = int(state.get("stage", 0))
        self._in_stage = int(state.get("in_stage", 0))
        for action, sub in zip(self.actions, state.get("actions", [])):
            load = getattr(action, "load_state_dict", None)
            if load is not None:
                load(sub)

    def describe(self) -> str:
        return "escalation(" + " -> ".join(_name(a) for a in self.actions) + ")"


def _name(action: Any) -> str:
    describe = getattr(action, "describe", None)
    return describe() if describe else getattr(action, "__name__", type(action).__name__)


_NAMED: dict[str, Callable[[], Action]] = {
    "warn": Warn,
    "weight_decay": RaiseWeightDecay,
    "stop": StopTraining,
    "stop_no_restore": lambda: StopTraining(restore_best=False),
}


def resolve_action(action: Any) -> Action:
    """Turn a name, an action, a callable or a list of them into one action.

    Names: ``"warn"``, ``"weight_decay"``, ``"stop"`` (restores the best weights),
    ``"stop_no_restore"``. A list becomes an :class:`Escalation`; ``None`` means ``"warn"``.
    """
    if action is None:
        return Warn()
    if isinstance(action, str):
        if action not in _NAMED:
            raise ValueError(
                f"Expected argument `action` to be one of {sorted(_NAMED)} or a callable but got {action!r}."
            )
        return _NAMED[action]()
    if isinstance(action, (list, tuple)):
        return Escalation([resolve_action(a) for a in action])
    if callable(action):
        return action
    raise ValueError(f"Expected argument `action` to be a name, a callable or a list of them but got {action!r}.")
