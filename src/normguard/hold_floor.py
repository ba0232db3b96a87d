"""``hold_floor``: a controller that keeps the training loss at the noise floor with a decoupled weight decay.

See :class:`HoldNoiseFloor`. It is an :class:`~normguard.actions.Action` (``action="hold_floor"``);
its step pre-hook applies λ at every optimizer step, its decisions happen at the guard's checks.

Example:
    >>> import torch
    >>> hold = HoldNoiseFloor(max_rate=0.02)
    >>> hold.bind([torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)])
    >>> hold.describe(), hold.engaged
    ('hold_floor', False)
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from normguard.actions import Action, ActionContext, NormGuardWarning, _check_param_groups, _decaying_groups
from normguard.detector import Verdict
from normguard.events import Event, EventKind
from normguard.validation import check_bool, check_int, check_number

__all__ = ["HoldNoiseFloor"]


def _is_decoupled(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's own ``weight_decay`` is decoupled (p ← p − lr·λ·p)."""
    if isinstance(optimizer, torch.optim.AdamW):
        return True
    return any(bool(g.get("decoupled_weight_decay", False)) for g in optimizer.param_groups)


def _host_lr(group: dict[str, Any]) -> float:
    """The group's learning rate as a host float; NaN for a tensor lr on an accelerator (reading it would sync)."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        return float(lr.detach()) if lr.device.type == "cpu" else math.nan
    return float(lr)


#: the controller that shrinks each optimizer's weights: a second one bound to the same
#: optimizer takes over and the first is detached from it (never a double shrink)
_SHRINK_OWNERS: weakref.WeakKeyDictionary[torch.optim.Optimizer, HoldNoiseFloor] = weakref.WeakKeyDictionary()

_REMOVED_ARGS = {
    "gain": "the controller's speed is `max_rate` (per optimizer step) and `full_error`",
    "max_factor": "the rate limit is per optimizer step now: `max_rate`",
    "cooldown": "the rate limit is per optimizer step now: `max_rate`",
    "initial": "a group without decay starts at `initial_shrink` (lr·λ, the fraction removed per step)",
}


@dataclass
class _Group:
    """One parameter group the controller acts on."""

    optimizer: int
    index: int
    user_decay: float  # the group's own decoupled weight decay: λ never goes below it (0 for coupled optimizers)
    decay: float  # λ, the controller's decoupled weight decay
    lr: float = math.nan  # host lr at the last decision (used for a tensor lr on an accelerator)
    reported: float = 0.0  # λ at the last weight_decay_changed event


class HoldNoiseFloor(Action):
    """Keep the training loss at the noise floor with a decoupled weight decay λ, for the rest of training.

    A controller on log λ, decided at every check (the training loss is known there; holding
    the floor needs no validation) and applied at every optimizer step. At a check, with a
    least-squares line fitted to log L (the training loss of the checks in the last
    ``trend_steps`` steps, or of the last three checks) and F the floor:

    * error e = log F − (the line's level now) − (its slope per step) · ``horizon``, the
      look-ahead bounded below by −``full_error`` and above by log(1 + ``approach``):
      positive while the model fits below the floor or is heading there from within
      ``approach`` above it, negative when further above it or rising through it (the
      look-ahead is what keeps λ from overshooting: it stops raising λ once the loss has
      turned up; its upper bound is what keeps the controller out of a run that is still
      learning far above the floor, where slowing the fit only costs accuracy);
    * it engages at the first check where L < F or the trend, from within ``approach`` above
      the floor, predicts the crossing within ``horizon`` steps, starting each group at
      lr · λ = ``initial_shrink`` (on an estimated floor, not while the validation score still
      improves: the guard passes ``ActionContext.may_engage``);
    * |e| ≤ log(1 + ``deadband``): λ is left alone;
    * otherwise log λ moves by ``max_rate`` · clip(e / ``full_error``, ±1) at each of the next
      ``move_steps`` optimizer steps. The rate is per step, so how often validation runs does
      not change the controller; checks every 1–20 steps hold the floor alike
      (``benchmarks/controller_tracking.py``), sparser checks react later;
    * bounds, applied at every optimizer step: λ never below the group's own decoupled
      weight decay (the user's choice) and lr · λ never above ``max_shrink`` (the cap follows
      any lr schedule, warm restarts included; a group at lr 0 is not shrunk and its λ is
      frozen).

    How the decay is applied, p ← p · (1 − lr · λ) at each step: optimizers whose
    ``weight_decay`` is already decoupled (``AdamW``, ``decoupled_weight_decay=True``) get their
    group's ``weight_decay`` set to λ (capped) just before each step; for the others (``Adam``,
    ``SGD``, ...) a step pre-hook multiplies the weights before the update, as ``AdamW`` orders it
    (one fused multiply per group, no host sync; a step a ``GradScaler`` skips for inf/NaN
    gradients is not shrunk, fused optimizers included). Groups at weight decay 0 while others
    are not (biases, norm layers) are left alone unless ``param_groups`` names them; when every
    group is at 0, all are regularised, and a group added later by ``add_param_group`` follows
    the same rule (an event says so).

    Args:
        max_rate: largest change of log λ per optimizer step (0.03: ×2 in about 23 steps).
        full_error: the (log) error at which λ moves at ``max_rate``; proportionally below it.
        deadband: relative error of the training loss to the floor tolerated without change.
        horizon: optimizer steps the loss trend is projected ahead.
        approach: how far above the floor (a fraction of it) a falling loss starts to count as
            heading under it.
        trend_steps: optimizer steps of history the trend is fitted on (at least 3 checks).
        move_steps: optimizer steps λ keeps moving after a check; with sparser checks it then
            waits for the next one (it never acts far beyond what it has seen).
        initial_shrink: lr · λ at engagement in a group without decay of its own.
        max_shrink: upper bound of lr · λ (fraction of each weight removed per step).
        param_groups: indices of the groups to act on (see above for the default).
        restore_best_at_end: put the best-validation weights back when training ends:
            ``"engaged_or_worse"`` (default) if the controller engaged during the run or the last
            validation score is worse than the best by more than
            :data:`~normguard.monitor.ENDED_WORSE_BY` (2 %; a run that overfits while its
            training loss is still above the floor), ``"engaged"`` only if it engaged, ``True``
            always, ``False`` never.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> hold = HoldNoiseFloor()
        >>> hold.bind([torch.optim.Adam(model.parameters(), lr=1e-3)])
        >>> hold.engaged, hold.decays()
        (False, {'group_0': 0.0})
    """

    name = "hold_floor"
    every_decision = True
    changes_weight_decay = True

    def __init__(
        self,
        *,
        max_rate: float = 0.03,
        full_error: float = 0.2,
        deadband: float = 0.03,
        horizon: int = 200,
        approach: float = 0.1,
        trend_steps: int = 50,
        move_steps: int = 25,
        initial_shrink: float = 1e-3,
        max_shrink: float = 0.1,
        param_groups: Sequence[int] | None = None,
        restore_best_at_end: bool | Literal["engaged", "engaged_or_worse"] = "engaged_or_worse",
        **removed: Any,
    ) -> None:
        for key in removed:
            why = _REMOVED_ARGS.get(key)
            if why is None:
                raise TypeError(f"HoldNoiseFloor() got an unexpected keyword argument {key!r}")
            raise TypeError(f"HoldNoiseFloor() no longer takes `{key}` (removed in 0.2): {why}.")
        self.max_rate = check_number("max_rate", max_rate, low=0.0, low_open=True, high=1.0)
        self.full_error = check_number("full_error", full_error, low=0.0, low_open=True)
        self.deadband = check_number("deadband", deadband, low=0.0, high=1.0)
        self.horizon = check_int("horizon", horizon, 0)
        self.approach = check_number("approach", approach, low=0.0)
        self.trend_steps = check_int("trend_steps", trend_steps, 1)
        self.move_steps = check_int("move_steps", move_steps, 1)
        self.initial_shrink = check_number("initial_shrink", initial_shrink, low=0.0, low_open=True, high=1.0)
        self.max_shrink = check_number("max_shrink", max_shrink, low=0.0, low_open=True, high=1.0)
        if self.initial_shrink > self.max_shrink:
            raise ValueError(
                f"Expected argument `initial_shrink` ({self.initial_shrink}) to be at most `max_shrink` "
                f"({self.max_shrink})."
            )
        self.param_groups = _check_param_groups(param_groups)
        restore: bool | Literal["engaged", "engaged_or_worse"]
        if isinstance(restore_best_at_end, str):
            if restore_best_at_end not in ("engaged", "engaged_or_worse"):
                raise ValueError(
                    "Expected argument `restore_best_at_end` to be True, False, 'engaged' or 'engaged_or_worse' "
                    f"but got {restore_best_at_end!r}."
                )
            restore = "engaged" if restore_best_at_end == "engaged" else "engaged_or_worse"
        else:
            restore = check_bool("restore_best_at_end", restore_best_at_end)
        self.restore_best_at_end = restore
        self.needs_best_weights = restore is not False  # "best" is tracked before engaging
        self._optimizers: list[torch.optim.Optimizer] = []
        self._hooks: list[Any] = []
        self._decoupled: list[bool] = []
        self._groups: list[_Group] = []
        self._user_decays: dict[tuple[int, int], float] = {}
        self.reset()

    def fresh(self) -> HoldNoiseFloor:
        """An unbound copy with the same settings (the guard acts on its own copy)."""
        return HoldNoiseFloor(
            max_rate=self.max_rate,
            full_error=self.full_error,
            deadband=self.deadband,
            horizon=self.horizon,
            approach=self.approach,
            trend_steps=self.trend_steps,
            move_steps=self.move_steps,
            initial_shrink=self.initial_shrink,
            max_shrink=self.max_shrink,
            param_groups=self.param_groups,
            restore_best_at_end=self.restore_best_at_end,
        )

    # ----------------------------------------------------------------- setup
    def bind(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("Expected an optimizer for `HoldNoiseFloor` but the guard has none.")
        self.unbind()
        self._optimizers = list(optimizers)
        self._decoupled = [_is_decoupled(opt) for opt in optimizers]
        self._groups = []
        self._known_groups = [0] * len(optimizers)
        for k, opt in enumerate(optimizers):
            self._add_groups(k, _decaying_groups(opt, self.param_groups, include_zero=False))
            self._known_groups[k] = len(opt.param_groups)
            previous = _SHRINK_OWNERS.get(opt)
            if previous is not None and previous is not self and previous._hooks:
                warnings.warn(
                    "normguard: another hold_floor (a guard that was not closed) was acting on this optimizer; "
                    "it is detached so the weights are not shrunk twice. Close guards you no longer use.",
                    NormGuardWarning,
                    stacklevel=2,
                )
                previous.unbind()
            _SHRINK_OWNERS[opt] = self
            self._hooks.append(opt.register_step_pre_hook(self._make_step_hook(k)))

    def _add_groups(self, k: int, indices: Sequence[int]) -> None:
        opt = self._optimizers[k]
        for i in indices:
            # the user's own decoupled decay, recorded once per group: a new fit starts from it again
            user = self._user_decays.setdefault(
                (k, i), float(opt.param_groups[i].get("weight_decay", 0.0)) if self._decoupled[k] else 0.0
            )
            self._groups.append(_Group(k, i, user, user, reported=user))

    def unbind(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for opt in self._optimizers:
            if _SHRINK_OWNERS.get(opt) is self:
                del _SHRINK_OWNERS[opt]

    def reset(self) -> None:
        """A new fit: λ back to each group's own decay, not engaged, no trend."""
        self.engaged = False
        self._rate = 0.0
        self._moves_left = 0
        self._last_step: int | None = None
        self._trend: deque[tuple[int, float]] = deque(maxlen=512)
        for group in self._groups:
            group.decay = group.reported = group.user_decay
            if self._decoupled[group.optimizer]:
                self._optimizers[group.optimizer].param_groups[group.index]["weight_decay"] = group.user_decay

    # ----------------------------------------------------------------- per optimizer step
    def _make_step_hook(self, k: int) -> Callable[..., None]:
        def apply_decay(optimizer: torch.optim.Optimizer, *_: Any) -> None:
            if self.engaged:
                self._apply(k, optimizer)

        return apply_decay

    def _effective(self, group: _Group, lr: float) -> float:
        """λ as applied at a step with learning rate ``lr``: capped so that lr · λ ≤ ``max_shrink``,
        never below the group's own decay."""
        if not lr > 0:  # lr 0 (or unknown): nothing to shrink
            return group.user_decay
        return max(group.user_decay, min(group.decay, self.max_shrink / lr))

    def _apply(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        try:
            self._apply_groups(k, optimizer)
        finally:
            if k == 0:
                self._moves_left -= 1

    def _apply_groups(self, k: int, optimizer: torch.optim.Optimizer) -> None:
        # set by a GradScaler on optimizers that skip an inf/NaN step themselves (fused, capturable)
        found_inf = getattr(optimizer, "found_inf", None)
        for group in self._groups:
            if group.optimizer != k:
                continue
            params_group = optimizer.param_groups[group.index]
            lr = _host_lr(params_group)
            if math.isnan(lr):
                lr = group.lr
            if self._rate != 0.0 and self._moves_left > 0:
                self._advance(group, lr)
            decay = self._effective(group, lr)
            if self._decoupled[k]:
                params_group["weight_decay"] = decay  # the optimizer applies it (and skips it with the step)
                continue
            shrink = lr * decay
            if not shrink > 0:
                continue
            # every trainable parameter: under `optimizer.step(closure)` the gradients do not exist yet here
            params = [p for p in params_group["params"] if p.requires_grad]
            if not params:
                continue
            with torch.no_grad():
                if isinstance(found_inf, torch.Tensor):  # no shrink on a step the optimizer will skip; no sync
                    factor = 1.0 - shrink * (1.0 - found_inf.detach().reshape(()).to(torch.float32))
                    torch._foreach_mul_(params, factor.to(params[0].device))
                else:
                    torch._foreach_mul_(params, 1.0 - shrink)

    # ----------------------------------------------------------------- per check
    def __call__(self, verdict: Verdict, context: ActionContext) -> None:
        floor = context.noise_floor if context.noise_floor is not None else verdict.noise_floor
        loss = context.train_loss if context.train_loss is not None else verdict.train_loss
        self._take_new_groups(context)
        if floor is None or loss is None or not (floor > 0 and loss >= 0 and math.isfinite(loss)):
            return
        step = int(context.step)
        self._last_step = step
        log_loss = math.log(max(loss, 1e-12 * floor))
        if self._trend and self._trend[-1][0] == step:
            self._trend.pop()  # a second check at the same step (a validation after a training check)
        self._trend.append((step, log_loss))
        slope, level = self._trend_line(step, log_loss)
        now = math.log(floor) - level  # the trend line's level: one noisy check does not move λ alone
        # the look-ahead raises λ only within `approach` above the floor: far above it, a falling
        # loss is still learning, and slowing it there is what cost the CNNs under AdamW
        error = now + max(-self.full_error, min(math.log1p(self.approach), -slope * self.horizon))
        deadband = math.log1p(self.deadband)
        if not self.engaged:
            if (loss >= floor and error <= deadband) or not context.may_engage:
                return
            self._engage(context, loss, floor, predicted=loss >= floor)
        # the rate of log λ per optimizer step until the next check (applied step by step by the hook)
        self._rate = 0.0 if abs(error) <= deadband else self.max_rate * max(-1.0, min(1.0, error / self.full_error))
        self._moves_left = self.move_steps  # without a new check, λ stops moving after this many steps
        for group in self._groups:
            self._report(group, context)

    def _trend_line(self, step: int, latest: float) -> tuple[float, float]:
        """Least-squares line of log L against the step over the last ``trend_steps`` steps, or the
        last three checks where they span more: (slope per step, level at ``step``); (0, ``latest``)
        before the third check."""
        recent = [(s, v) for s, v in self._trend if s >= step - self.trend_steps]
        points = recent if len(recent) >= 3 else list(self._trend)[-3:]  # sparse checks: the last three
        if len(points) < 3:
            return 0.0, latest
        mean_s = sum(s for s, _ in points) / len(points)
        mean_v = sum(v for _, v in points) / len(points)
        var = sum((s - mean_s) ** 2 for s, _ in points)
        slope = 0.0 if var <= 0 else sum((s - mean_s) * (v - mean_v) for s, v in points) / var
        return slope, mean_v + slope * (step - mean_s)

    def _engage(self, ctx: ActionContext, loss: float, floor: float, predicted: bool) -> None:
        self.engaged = True
        for group in self._groups:
            lr = self._lr(group)
            if lr > 0 and group.decay * lr < self.initial_shrink:
                group.decay = min(self.initial_shrink / lr, self.max_shrink / lr)
            group.reported = group.decay
        why = "heading under" if predicted else "under"
        ctx.emit(
            Event(
                ctx.step,
                EventKind.WEIGHT_DECAY_CHANGED,
                f"hold_floor engaged: training loss {loss:.4g} {why} the noise floor {floor:.4g}",
                {"engaged": True, "train_loss": loss, "noise_floor": floor, "predicted": predicted, "by": self.name},
            )
        )

    def _lr(self, group: _Group) -> float:
        lr = _host_lr(self._optimizers[group.optimizer].param_groups[group.index])
        if math.isnan(lr):
            lr = float(self._optimizers[group.optimizer].param_groups[group.index]["lr"])  # a check may sync
        group.lr = lr
        return lr

    def _advance(self, group: _Group, lr: float) -> None:
        """One optimizer step of λ's change, within its bounds at this step's lr."""
        if not lr > 0:
            return  # a group at lr 0 is frozen: its λ would only wind up
        base = group.decay if group.decay > 0 else (self.initial_shrink / lr if self._rate > 0 else 0.0)
        new = min(max(base * math.exp(self._rate), group.user_decay), max(self.max_shrink / lr, group.user_decay))
        if group.user_decay == 0 and new * lr < 0.1 * self.initial_shrink:
            new = 0.0  # relaxed back to nothing: stop shrinking at all
        group.decay = new

    def _report(self, group: _Group, ctx: ActionContext) -> None:
        """A ``weight_decay_changed`` event when λ has moved ×2 (or back to its floor) since the last one."""
        new = group.decay
        lr = self._lr(group)
        moved = new / group.reported if group.reported > 0 and new > 0 else math.inf
        if new != group.reported and (moved >= 2.0 or moved <= 0.5 or new in (0.0, group.user_decay)):
            k, i = group.optimizer, group.index
            ctx.emit(
                Event(
                    ctx.step,
                    EventKind.WEIGHT_DECAY_CHANGED,
                    f"optimizer {k} group {i}: hold_floor weight_decay {group.reported:.3g} -> {new:.3g} "
                    f"(lr·λ {lr * new:.3g} per step)",
                    {"optimizer": k, "group": i, "old": group.reported, "new": new, "by": self.name},
                )
            )
            group.reported = new

    def _take_new_groups(self, ctx: ActionContext) -> None:
        """Param groups added by ``add_param_group`` since the last check follow the default rule."""
        for k, opt in enumerate(self._optimizers):
            known, now = self._known_groups[k], len(opt.param_groups)
            if now <= known:
                continue
            added = list(range(known, now))
            taken = (
                []
                if self.param_groups is not None
                else [
                    i
                    for i in added
                    if float(opt.param_groups[i].get("weight_decay", 0.0)) > 0
                    or not any(float(g.get("weight_decay", 0.0)) > 0 for g in opt.param_groups[:known])
                ]
            )
            self._add_groups(k, taken)
            self._known_groups[k] = now
            left = [i for i in added if i not in taken]
            ctx.emit(
                Event(
                    ctx.step,
                    EventKind.WEIGHT_DECAY_CHANGED,
                    f"optimizer {k}: param group(s) {added} added during training; hold_floor regularises "
                    f"{taken or 'none of them'}" + (f", leaves {left} alone (weight decay 0)" if left else ""),
                    {"optimizer": k, "added_groups": added, "regularised": taken, "by": self.name},
                )
            )

    # ----------------------------------------------------------------- reading
    def decays(self) -> dict[str, float]:
        """λ in effect per group (capped at the current lr), by ``group_i`` (``opt_k_group_i`` with
        several optimizers)."""
        several = len(self._optimizers) > 1
        return {
            (f"opt_{g.optimizer}_group_{g.index}" if several else f"group_{g.index}"): (
                self._effective(g, self._lr(g)) if self.engaged else g.user_decay
            )
            for g in self._groups
        }

    def scalars(self) -> dict[str, float]:
        """The per-step shrink lr · λ in effect per group, under ``hold_floor/shrink_per_step/``."""
        several = len(self._optimizers) > 1
        out = {}
        for g in self._groups:
            lr = self._lr(g)
            decay = self._effective(g, lr) if self.engaged else g.user_decay
            key = f"opt_{g.optimizer}_group_{g.index}" if several else f"group_{g.index}"
            out[f"hold_floor/shrink_per_step/{key}"] = lr * decay if lr > 0 else 0.0
        return out

    def on_train_end(self, context: ActionContext) -> None:
        when = self.restore_best_at_end
        if (
            when is True
            or (when in ("engaged", "engaged_or_worse") and self.engaged)
            or (when == "engaged_or_worse" and context.ended_worse)
        ):
            context.restore_best()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "engaged": self.engaged,
            "rate": self._rate,
            "moves_left": self._moves_left,
            "last_step": self._last_step,
            "trend": [list(p) for p in self._trend],
            "groups": [[g.optimizer, g.index, g.user_decay, g.decay, g.reported] for g in self._groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved run into this (bound) controller; a group layout that differs raises."""
        self.engaged = bool(state.get("engaged", False))
        self._rate = float(state.get("rate", 0.0))
        self._moves_left = int(state.get("moves_left", 0))
        last = state.get("last_step")
        self._last_step = None if last is None else int(last)
        self._trend = deque(((int(s), float(v)) for s, v in state.get("trend", [])), maxlen=512)
        saved = state.get("groups")
        if saved is None:  # a state from 0.1: per optimizer, per acted-on group lists
            saved = [
                [k, g.index, floor_v, decay_v, decay_v]
                for k, (floors, decays) in enumerate(zip(state.get("floor_decay") or [], state.get("decay") or []))
                for g, floor_v, decay_v in zip([g for g in self._groups if g.optimizer == k], floors, decays)
            ]
        mine = {(g.optimizer, g.index): g for g in self._groups}
        for k, i, user, decay, reported in saved:
            group = mine.get((int(k), int(i)))
            if group is None:
                raise ValueError(
                    f"This hold_floor state acts on optimizer {k} group {i}, which this guard's optimizers do not "
                    "have: resume with the optimizer (and param groups) the state was saved with."
                )
            group.user_decay, group.decay, group.reported = float(user), float(decay), float(reported)
