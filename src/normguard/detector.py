"""The near-interpolation detector: host floats in, verdicts out.

The detector never touches torch: it is fed plain floats once per check, so it can be
tested by scripted sequences and saved in a checkpoint as a plain dict. What it knows about
the noise floor σ̂² (the lowest loss any model reaches on fresh data) is a :class:`NoiseFloor`:
known (a number you give), estimated (from held-out predictions, with an interval), the
lowest validation loss (``"auto"``, legacy) or none.

Six conditions, evaluated at each decision (True, False, or None when unavailable):

* ``below_floor``: the mean training loss is under ``margin`` × the floor (with an estimate,
  under ``margin`` × the lower end of its interval).
* ``near_floor``: the training loss is nearer the floor than the validation loss is, with a gap
  above ``min_gap`` × the floor (needs validation and a floor above 0).
* ``val_stalled``: the validation score did not improve on its best at this validation.
* ``norm_growing``: the weight norm's growth exponent d log‖w‖ / d log(step) speeds up again
  (reported as evidence; no default rule reads it).
* ``gap_widening``: the validation − training gap rises over the last ``window`` validations.
* ``drifted``: the weights moved far since the best validation, ‖w − w_best‖ > ``drift_share``
  × ‖w − w₀‖.

The detector fires when one of its rules (conditions held at ``patience`` consecutive
decisions, plus a gate at the last one) holds; the rules depend on the floor (see
:meth:`NearInterpolationDetector.rules`): with a known or estimated floor above 0,
``below_floor`` ∧ ``val_stalled`` at ``floor_patience`` or ``val_stalled`` at ``patience``
gated by ``near_floor``; with a floor of 0 (clean labels) nothing can fire; with ``"auto"``
or no floor, ``val_stalled`` ∧ ``gap_widening`` (∧ ``below_floor`` for ``"auto"``) at
``patience`` gated by ``drifted``. The reasons for each rule and their measurements are in
the documentation (``docs/guides/detector-research.md``).

Example:
    >>> det = NearInterpolationDetector(noise_floor=1.0, floor_patience=2, window=4)
    >>> for step, (train, val) in enumerate([(1.5, 1.4), (1.1, 1.2), (0.9, 1.25), (0.7, 1.3)], start=1):
    ...     v = det.update(step * 10, total_norm=float(step), train_loss=train, val_loss=val)
    >>> v.fired, v.active, v.reason.value, v.rule
    (True, True, 'signature', 'below_floor+val_stalled')
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from normguard.noise_floor import label_noise_floor  # re-exported: it lived here before noise_floor.py
from normguard.validation import check_int as _check_int
from normguard.validation import check_number as _check_number

__all__ = [
    "Condition",
    "FloorKind",
    "NearInterpolationDetector",
    "NoiseFloor",
    "Reason",
    "Rule",
    "Verdict",
    "label_noise_floor",
    "theil_sen",
]


class Condition(str, Enum):
    BELOW_FLOOR = "below_floor"
    NEAR_FLOOR = "near_floor"
    VAL_STALLED = "val_stalled"
    NORM_GROWING = "norm_growing"
    GAP_WIDENING = "gap_widening"
    DRIFTED = "drifted"


class Reason(str, Enum):
    """Why a verdict is what it is."""

    SIGNATURE = "signature"  # a rule's conditions held for its patience
    BUILDING = "building"  # a rule's conditions hold now, not yet for its patience
    NOT_MET = "not_met"  # no rule's conditions all hold
    INSUFFICIENT = "insufficient"  # every rule has a condition that cannot be evaluated yet
    RECORDED = "recorded"  # norms recorded; decisions wait for the next validation
    NON_FINITE = "non_finite"  # a NaN/Inf input was dropped


@dataclass(frozen=True)
class Rule:
    """Fire when all of ``conditions`` have held at ``patience`` consecutive decisions and
    all of ``gate`` hold at that decision; the rule then stays active while its conditions
    keep holding (the gate need not). Named ``conditions|gate``.

    Example:
        >>> Rule(("below_floor", "val_stalled"), 6).name
        'below_floor+val_stalled'
        >>> Rule(("val_stalled",), 10, gate=("near_floor",)).name
        'val_stalled|near_floor'
    """

    conditions: tuple[str, ...]
    patience: int
    gate: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        name = "+".join(self.conditions)
        return f"{name}|{'+'.join(self.gate)}" if self.gate else name


@dataclass(frozen=True)
class Verdict:
    """The detector's answer at one call.

    ``conditions`` maps each condition to True/False, or None when unavailable.
    ``fired`` is True only at the decision where a rule's streak first reaches its patience
    (the onset) with its gate holding; ``active`` stays True while some rule's streak stays at
    or above its patience with its gate holding. ``streak`` is the longest current streak and
    ``rule`` names the rule that is active (or, while none is, the one whose streak is longest).
    ``noise_floor`` is the floor in effect; ``noise_floor_low``/``noise_floor_high`` are set
    only with an estimated floor: the interval the conditions compared with (its lower end
    capped at the lowest validation loss).
    """

    step: int
    reason: Reason
    fired: bool = False
    active: bool = False
    streak: int = 0
    rule: str | None = None
    conditions: dict[str, bool | None] = field(default_factory=dict)
    growth_exponent: float | None = None
    relative_growth: float | None = None
    gap: float | None = None
    gap_trend: float | None = None
    noise_floor: float | None = None
    train_loss: float | None = None
    top_layers: tuple[tuple[str, float], ...] = ()
    drift: float | None = None
    noise_floor_low: float | None = None
    noise_floor_high: float | None = None

    @property
    def decided(self) -> bool:
        return self.reason not in (Reason.RECORDED, Reason.NON_FINITE)

    def to_data(self) -> dict[str, Any]:
        """The verdict's numbers as plain data (an event's ``data``; the floor's interval only
        when it is an estimate)."""
        data = {
            "reason": self.reason.value,
            "streak": self.streak,
            "rule": self.rule,
            "conditions": dict(self.conditions),
            "growth_exponent": self.growth_exponent,
            "gap": self.gap,
            "gap_trend": self.gap_trend,
            "noise_floor": self.noise_floor,
            "train_loss": self.train_loss,
            "top_layers": [list(x) for x in self.top_layers],
            "drift": self.drift,
        }
        if self.noise_floor_low is not None:
            data["noise_floor_low"] = self.noise_floor_low
            data["noise_floor_high"] = self.noise_floor_high
        return data

    def describe(self) -> str:
        parts = [f"{k}={'n/a' if v is None else ('yes' if v else 'no')}" for k, v in self.conditions.items()]
        rule = f" of {self.rule}" if self.rule else ""
        text = f"{self.reason.value} (streak {self.streak}{rule}; {', '.join(parts)})"
        if self.growth_exponent is not None:
            text += f"; growth exponent {self.growth_exponent:.3g}"
        if self.gap is not None:
            text += f"; gap {self.gap:.4g}"
        if self.drift is not None:
            text += f"; drift share {self.drift:.3g}"
        if self.noise_floor is not None and self.noise_floor_low is not None:
            text += (
                f"; estimated floor {self.noise_floor:.4g} [{self.noise_floor_low:.4g}, {self.noise_floor_high:.4g}]"
            )
        if self.top_layers:
            text += "; fastest-growing layers: " + ", ".join(f"{n} ({g:.3g})" for n, g in self.top_layers)
        return text


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Median pairwise slope of ``y`` against ``x`` and the fraction of positive slopes.

    ``y`` may be 2-D (points × series); NaNs are ignored. Returns NaN with fewer than
    two usable points.

    Example:
        >>> slope, positive = theil_sen(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]))
        >>> float(slope), float(positive)
        (0.75, 0.8333333333333334)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    i, j, dx = i[keep], j[keep], dx[keep]
    if y.ndim == 1:
        slopes = (y[j] - y[i]) / dx
        slopes = slopes[np.isfinite(slopes)]
        if slopes.size == 0:
            return math.nan, math.nan
        return float(np.median(slopes)), float(np.mean(slopes > 0))
    slopes = (y[j] - y[i]) / dx[:, None]
    with np.errstate(all="ignore"):
        valid = np.isfinite(slopes)
        median = np.nanmedian(np.where(valid, slopes, np.nan), axis=0) if slopes.size else np.full(y.shape[1], np.nan)
        positive = np.sum(slopes > 0, axis=0) / np.maximum(valid.sum(axis=0), 1)
    return median, positive  # type: ignore[return-value]  # arrays for 2-D y, floats for 1-D


def _least_squares_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each column of ``y`` against ``x``, ignoring NaNs (vectorised:
    ranking thousands of layers costs microseconds, unlike pairwise medians)."""
    valid = np.isfinite(y)
    xs = np.where(valid, x[:, None], 0.0)
    n = valid.sum(axis=0)
    x_mean = xs.sum(axis=0) / np.maximum(n, 1)
    y_mean = np.where(valid, y, 0.0).sum(axis=0) / np.maximum(n, 1)
    dx = np.where(valid, x[:, None] - x_mean, 0.0)
    dy = np.where(valid, y - y_mean, 0.0)
    denominator = (dx * dx).sum(axis=0)
    return np.where(
        (n >= 2) & (denominator > 0), (dx * dy).sum(axis=0) / np.where(denominator > 0, denominator, 1), np.nan
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _is_inf(value: Any) -> bool:
    try:
        return float(value) == math.inf
    except (TypeError, ValueError, RuntimeError):
        return False


class FloorKind(str, Enum):
    """Where the detector's noise floor comes from."""

    KNOWN = "known"  # a number the user gives (``noise_floor=0.7``)
    ESTIMATED = "estimated"  # measured from held-out predictions (``noise_floor="estimate"``)
    VALIDATION_MIN = "validation_min"  # the lowest validation loss (``noise_floor="auto"``, legacy)
    NONE = "none"  # no floor (``noise_floor=None``)


_SETTINGS = {FloorKind.VALIDATION_MIN: "auto", FloorKind.ESTIMATED: "estimate", FloorKind.NONE: None}


@dataclass(frozen=True)
class NoiseFloor:
    """What the detector knows about the noise floor σ̂², and the floor in effect.

    ``value`` is the floor (known), or the latest estimate (estimated; None before the first);
    ``low`` and ``high`` bound it (an estimate's interval; both equal ``value`` for a known
    floor). Build it from what a user passes with :meth:`from_setting`; an estimate replaces
    the old one with :meth:`with_estimate` (the object itself never changes).

    Example:
        >>> floor = NoiseFloor.from_setting("estimate")
        >>> floor.kind.value, floor.setting, floor.in_effect()
        ('estimated', 'estimate', None)
        >>> floor = floor.with_estimate(0.9, low=0.8, high=1.0)
        >>> floor.in_effect(), floor.bounds(lowest_val_loss=0.85)
        (0.9, (0.8, 1.0))
        >>> NoiseFloor.from_setting(0.5).bounds(), NoiseFloor.from_setting("auto").kind.value
        ((0.5, 0.5), 'validation_min')
    """

    kind: FloorKind
    value: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_setting(cls, setting: float | str | None) -> NoiseFloor:
        """The floor for a user's ``noise_floor``: a float ≥ 0, ``"estimate"``, ``"auto"`` or None."""
        if setting is None:
            return cls(FloorKind.NONE)
        if isinstance(setting, str):
            for kind, name in _SETTINGS.items():
                if setting == name:
                    return cls(kind)
            raise ValueError(
                f"Expected argument `noise_floor` to be a float, 'estimate', 'auto' or None but got {setting!r}."
            )
        value = _check_number("noise_floor", setting, low=0.0, note="or 'estimate', 'auto' or None")
        return cls(FloorKind.KNOWN, value, value, value)

    @property
    def setting(self) -> float | str | None:
        """What the user passed: the known float, ``"estimate"``, ``"auto"`` or None."""
        return self.value if self.kind is FloorKind.KNOWN else _SETTINGS[self.kind]

    def with_estimate(self, value: float, low: float, high: float) -> NoiseFloor:
        """An estimated floor holding this estimate, whatever this floor's kind (checked: finite,
        0 ≤ low ≤ value ≤ high; high may be inf, an interval without an upper end)."""
        value = _check_number("value", value, low=0.0)
        low = _check_number("low", low, low=0.0, high=value, note="the interval's lower end, at most `value`")
        if not _is_inf(high):
            high = _check_number("high", high, low=value, note="the interval's upper end, at least `value`, or inf")
        return NoiseFloor(FloorKind.ESTIMATED, value, low, float(high))

    def without_estimate(self) -> NoiseFloor:
        """The same floor before any estimate (an estimated floor forgets its value)."""
        return NoiseFloor(self.kind) if self.kind is FloorKind.ESTIMATED else self

    def in_effect(self, validation_floor: float | None = None) -> float | None:
        """The floor in effect: the known value, the latest estimate, ``validation_floor`` (the
        lowest validation loss once validation has stopped improving, for ``"auto"``) or None."""
        if self.kind is FloorKind.VALIDATION_MIN:
            return validation_floor
        return self.value

    def bounds(
        self, validation_floor: float | None = None, lowest_val_loss: float | None = None
    ) -> tuple[float, float] | None:
        """(low, high): the floors the conditions compare with, or None while there is none.

        Known: (value, value). Estimated: the interval, its lower end capped at the lowest
        validation loss seen (no model does better than the floor on fresh data, so every
        validation loss bounds the floor from above): the conservative end of each comparison.
        ``"auto"``: (``validation_floor``, ``validation_floor``).
        """
        if self.kind is FloorKind.ESTIMATED and self.value is not None:
            assert self.low is not None and self.high is not None
            low = self.low if lowest_val_loss is None else min(self.low, lowest_val_loss)
            return low, self.high
        floor = self.in_effect(validation_floor)
        return None if floor is None else (floor, floor)

    def can_be_positive(self) -> bool:
        """Whether a floor above 0 is possible (``near_floor`` can be evaluated)."""
        return self.kind is FloorKind.ESTIMATED or (self.kind is FloorKind.KNOWN and float(self.value or 0.0) > 0.0)


class NearInterpolationDetector:
    """Recognises the near-interpolation signature from norms and losses (see module doc).

    Args:
        noise_floor: σ̂², the lowest loss any model reaches on fresh data: a float ≥ 0 (known),
            ``"estimate"`` (the latest estimate given to :meth:`set_floor_estimate`, with its
            interval; nothing fires on the floor before the first), ``"auto"`` (legacy: the
            lowest validation loss, once validation has stopped improving; not an estimate of
            the noise) or ``None`` (no floor). :attr:`noise_floor` returns it as given;
            :attr:`floor` is the :class:`NoiseFloor` in use.
        margin: the floor condition is ``train_loss < margin * noise_floor`` (with an
            estimate, ``margin`` × the lower end of its interval).
        min_gap: the gap must exceed ``min_gap * noise_floor`` (when a floor is known) for
            ``gap_widening`` to hold. A well-posed model with p parameters converges to a
            training loss of about σ²(1 − p/n), just under the floor, with a gap of about
            2σ²p/n that still creeps up, and a validation set of m samples measures the gap
            with an error of about σ²√(2/m). The default 0.1 keeps both from reading as the
            signature (p/n under about 5 %, m over about 200).
        patience: consecutive decisions a rule's conditions must hold to fire (default 10,
            EarlyStopping's usual patience; see the module doc for the rules).
        floor_patience: the shorter patience of the ``below_floor`` rule with a known or
            estimated floor (default 7; never more than ``patience``): a training loss under the floor is
            strong evidence that the model fits noise. Replayed on the suite's 30 noisy runs,
            5 / 6 / 7 / 8 left 2 / 1 / 0 / 0 runs worse than EarlyStopping by more than
            0.5 point (a stall the run later broke), each step costing about one epoch.
        window: number of recent checks (norms) and validations (gap) in the slopes.
        rebound: ``norm_growing`` needs the growth exponent above (1 + rebound) × its lowest
            value at an earlier decision.
        drift_share: ``drifted`` holds when ‖w − w_best‖ > drift_share × ‖w − w₀‖ (default 0.2).
        require: the conditions that must hold (default: by what is known, see the module doc).
        min_growth: the growth exponent d log‖w‖/d log(step) must exceed this (default 0.02: a norm
            that grows under 1.4 % per doubling of the step count is treated as settled, as at
            convergence).
        confidence: fraction of positive pairwise slopes needed for "rising".
        baseline_checks: the first norms whose median is the early-training baseline.
        min_norm_increase: relative increase of the norm over that baseline required.
        top_k: how many fastest-growing layers a verdict names.
    """

    def __init__(
        self,
        noise_floor: float | str | None = None,
        margin: float = 1.0,
        min_gap: float = 0.1,
        patience: int = 10,
        floor_patience: int = 7,
        window: int = 6,
        min_growth: float = 0.02,
        rebound: float = 0.2,
        drift_share: float = 0.2,
        require: Sequence[str] | None = None,
        confidence: float = 0.75,
        baseline_checks: int = 3,
        min_norm_increase: float = 0.01,
        top_k: int = 3,
    ) -> None:
        floor = NoiseFloor.from_setting(noise_floor)
        _check_number("margin", margin, low=0.0, low_open=True)
        _check_number("min_gap", min_gap, low=0.0)
        _check_int("patience", patience, 1)
        _check_int("floor_patience", floor_patience, 1)
        _check_int("window", window, 3)
        _check_number("min_growth", min_growth)
        _check_number("rebound", rebound, low=0.0)
        _check_number("drift_share", drift_share, low=0.0, low_open=True)
        if require is not None:
            names = {c.value for c in Condition}
            if isinstance(require, str) or not require or not set(require) <= names:
                raise ValueError(
                    f"Expected argument `require` to be a non-empty list of {sorted(names)} or None "
                    f"but got {require!r}."
                )
            if floor.kind is FloorKind.NONE:
                never = {"below_floor", "near_floor"} & set(require)
            elif not floor.can_be_positive():
                never = {"near_floor"} & set(require)
            else:
                never = set()
            if never:
                raise ValueError(
                    f"Expected argument `require` to name conditions that can be evaluated with "
                    f"noise_floor={floor.setting!r} but got {sorted(never)} (below_floor needs a floor; near_floor "
                    "a known or estimated floor above 0)."
                )
        _check_number("confidence", confidence, low=0.5, high=1.0)
        _check_int("baseline_checks", baseline_checks, 1)
        _check_number("min_norm_increase", min_norm_increase, low=0.0)
        _check_int("top_k", top_k, 0)
        self._floor = floor
        self.margin = float(margin)
        self.min_gap = float(min_gap)
        self.patience = patience
        self.floor_patience = floor_patience
        self.window = window
        self.min_growth = float(min_growth)
        self.rebound = float(rebound)
        self.drift_share = float(drift_share)
        self.require = None if require is None else tuple(require)
        self.confidence = float(confidence)
        self.baseline_checks = baseline_checks
        self.min_norm_increase = float(min_norm_increase)
        self.top_k = top_k
        self.mode = "min"  # set by GuardOptions from `mode` (the validation metric's direction)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (the configuration stays)."""
        self._norms: deque[tuple[int, float]] = deque(maxlen=self.window)
        self._layer_names: tuple[str, ...] = ()
        self._layers: deque[np.ndarray] = deque(maxlen=self.window)  # log norms, aligned to _layer_names
        self._baseline: list[float] = []
        self._gaps: deque[tuple[int, float]] = deque(maxlen=self.window)
        self._floor = self._floor.without_estimate()
        self._best_val = math.inf  # lowest validation loss (the "auto" floor)
        self._best_score = math.inf  # best validation score, as a loss (a "max" metric negated)
        self._since_best = 0
        self._validations = 0
        self._streaks: dict[str, int] = {}  # rule name -> consecutive decisions its conditions held
        self._active_rules: list[str] = []  # the rules whose streak and gate held at the last decision
        self._lowest_growth = math.inf  # the lowest growth exponent at an earlier decision
        self._drift: float | None = None  # ‖w − w_best‖ / ‖w − w₀‖ at the current decision

    # ------------------------------------------------------------------ the floor
    @property
    def noise_floor(self) -> float | str | None:
        """The ``noise_floor`` setting as given: a float, ``"estimate"``, ``"auto"`` or None."""
        return self._floor.setting

    @property
    def floor(self) -> NoiseFloor:
        """The noise floor in use, with the latest estimate (a frozen value)."""
        return self._floor

    def set_floor_estimate(self, value: float, low: float, high: float) -> None:
        """Use this estimate of the floor, with its interval, from the next :meth:`update` on.

        Only ``noise_floor="estimate"`` reads it: with any other setting the (checked) estimate
        is ignored, so a caller may pass it whatever the setting. The latest estimate replaces
        the one before; it is saved by :meth:`state_dict` and forgotten by :meth:`reset`.

        How it is used (the conservative end of its interval in each comparison):
        ``below_floor`` holds when ``train_loss < margin * low``, with ``low`` capped at the
        lowest validation loss seen; ``near_floor`` compares with that ``low`` and needs a gap
        above ``min_gap * high``. An interval that reaches 0 is a floor of 0 (clean labels):
        neither condition can hold, so the detector does not fire.

        Example:
            >>> det = NearInterpolationDetector(noise_floor="estimate")
            >>> det.current_floor() is None
            True
            >>> det.set_floor_estimate(1.2, low=1.1, high=1.3)
            >>> det.current_floor(), det.floor.low, det.noise_floor
            (1.2, 1.1, 'estimate')
        """
        estimated = self._floor.with_estimate(value, low, high)  # checked whatever the setting
        if self._floor.kind is FloorKind.ESTIMATED:
            self._floor = estimated

    # ------------------------------------------------------------------ inputs
    def update(
        self,
        step: int,
        *,
        total_norm: float,
        layer_norms: dict[str, float] | None = None,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_metric: float | None = None,
        drift: float | None = None,
    ) -> Verdict:
        """Record one check and, when it is a decision, decide.

        ``train_loss`` is the mean training loss over the stretch the call reflects (since
        the previous validation when ``val_loss`` is given). ``val_metric``, when given,
        judges whether validation still improves (higher is better with ``mode="max"``);
        otherwise the validation loss does. ``drift`` is ‖w − w_best‖ / ‖w − w₀‖ at a
        validation, w_best the weights at the best validation *before* this one (a validation
        that improves resets it to 0); without it ``drifted`` is unavailable.
        """
        step = int(step)
        if (
            not _finite(total_norm)
            or (train_loss is not None and not _finite(train_loss))
            or (val_loss is not None and not _finite(val_loss))
            or (val_metric is not None and not _finite(val_metric))
        ):
            streak, rule = self._leading(self.rules())
            return Verdict(step=step, reason=Reason.NON_FINITE, streak=streak, rule=rule)
        relative = None
        if self._norms and self._norms[-1][1] > 0 and step > self._norms[-1][0]:
            relative = total_norm / self._norms[-1][1] - 1.0
        if step > 0 and total_norm > 0 and (not self._norms or step > self._norms[-1][0]):
            self._norms.append((step, float(total_norm)))
            self._record_layers(layer_norms or {})
            if len(self._baseline) < self.baseline_checks:
                self._baseline.append(float(total_norm))
        if val_loss is not None:
            self._validations += 1
            self._best_val = min(self._best_val, float(val_loss))
            score = float(val_loss) if val_metric is None else float(val_metric) * (-1.0 if self.mode == "max" else 1.0)
            if score < self._best_score:
                self._best_score = score
                self._since_best = 0
                drift = 0.0 if drift is not None else None  # this validation is the new best point
            else:
                self._since_best += 1
            if train_loss is not None:
                self._gaps.append((step, float(val_loss) - float(train_loss)))
        elif self._validations > 0:
            return self._verdict(step, Reason.RECORDED, relative, train_loss, None, decide=False)
        self._drift = drift if val_loss is not None and drift is not None and math.isfinite(drift) else None
        return self._verdict(step, None, relative, train_loss, val_loss, decide=True)

    @property
    def needs_drift(self) -> bool:
        """Whether a rule reads ``drifted`` (the guard then tracks the distances it needs)."""
        if self.require is not None:
            return Condition.DRIFTED.value in self.require
        return self._floor.kind in (FloorKind.NONE, FloorKind.VALIDATION_MIN)

    @property
    def improved(self) -> bool:
        """Whether the last validation improved on the best score (a new best point)."""
        return self._validations > 0 and self._since_best == 0

    # ------------------------------------------------------------------ maths
    def growth(self) -> tuple[float | None, float | None]:
        """(growth exponent, fraction of positive pairwise slopes) over the window."""
        if len(self._norms) < 3:
            return None, None
        steps, norms = zip(*self._norms)
        slope, positive = theil_sen(np.log(steps), np.log(norms))
        return (None, None) if math.isnan(slope) else (slope, positive)

    def gap_trend(self) -> tuple[float | None, float | None]:
        """(slope of the gap per 1000 steps, fraction of positive pairwise slopes)."""
        if len(self._gaps) < 2:
            return None, None
        steps, gaps = zip(*self._gaps)
        slope, positive = theil_sen(np.asarray(steps) / 1000.0, np.asarray(gaps))
        return (None, None) if math.isnan(slope) else (slope, positive)

    def rules(self) -> tuple[Rule, ...]:
        """The rules, any of which fires the detector, by what is known (see the module doc).

        Example:
            >>> [r.name for r in NearInterpolationDetector(noise_floor=0.5).rules()]
            ['below_floor']
        """
        if self.require is not None:
            return (Rule(self.require, self.patience),)
        kind = self._floor.kind
        if kind is FloorKind.NONE:  # without validation this stays insufficient: the norm never fires alone
            return (Rule(("val_stalled", "gap_widening"), self.patience, gate=("drifted",)),)
        if kind is FloorKind.VALIDATION_MIN:
            return (Rule(("below_floor", "val_stalled", "gap_widening"), self.patience, gate=("drifted",)),)
        fast = min(self.floor_patience, self.patience)
        if not self._validations:
            return (Rule(("below_floor",), fast),)
        if not self._floor.can_be_positive():  # a known floor of 0
            return (Rule(("below_floor", "val_stalled"), fast),)
        return (  # a known floor above 0, or an estimate (an estimate of 0 never holds below_floor or near_floor)
            Rule(("below_floor", "val_stalled"), fast),
            Rule(("val_stalled",), self.patience, gate=("near_floor",)),
        )

    def current_floor(self) -> float | None:
        """The floor in effect: the known value, the latest estimate (None before the first),
        the lowest validation loss once validation has stopped improving (``"auto"``) or None."""
        return self._floor.in_effect(self._validation_floor())

    def held_floor(self) -> tuple[float | None, bool]:
        """(the level a controller holds the training loss at, whether it may engage now).

        The floor in effect; an estimate is capped at the lowest validation loss seen (no model
        does better than the floor on fresh data), and a controller does not engage on an
        estimate while the validation score still improves (the estimate is high early in
        training, when the model is still learning the signal).
        """
        floor = self.current_floor()
        if self._floor.kind is not FloorKind.ESTIMATED or floor is None:
            return floor, True
        if self._validations:
            floor = min(floor, self._best_val)
        return floor, not self.improved

    def _validation_floor(self) -> float | None:
        """The ``"auto"`` floor: the lowest validation loss, once validation has failed to improve."""
        return self._best_val if self._validations and self._since_best >= 1 else None

    def _floor_bounds(self) -> tuple[float, float] | None:
        """(low, high) floors the conditions compare with (see :meth:`NoiseFloor.bounds`)."""
        lowest = self._best_val if self._validations else None
        return self._floor.bounds(self._validation_floor(), lowest)

    def _record_layers(self, layer_norms: dict[str, float]) -> None:
        names = tuple(layer_norms)
        if names != self._layer_names:  # the layer set changed: re-align the stored rows (rare)
            old = {n: i for i, n in enumerate(self._layer_names)}
            rows = [np.array([r[old[n]] if n in old else np.nan for n in names]) for r in self._layers]
            self._layers = deque(rows, maxlen=self.window)
            self._layer_names = names
        with np.errstate(all="ignore"):
            row = np.log(np.fromiter(layer_norms.values(), dtype=float, count=len(names)))
        self._layers.append(np.where(np.isfinite(row), row, np.nan))

    def _top_layers(self) -> tuple[tuple[str, float], ...]:
        if self.top_k == 0 or len(self._layers) < 3 or not self._layer_names:
            return ()
        steps = np.log([s for s, _ in self._norms][-len(self._layers) :])
        with np.errstate(all="ignore"):
            slopes = _least_squares_slopes(steps, np.vstack(self._layers))
        ranked = np.argsort(-np.nan_to_num(slopes, nan=-np.inf))[: self.top_k]
        return tuple((self._layer_names[i], float(slopes[i])) for i in ranked if np.isfinite(slopes[i]))

    def _verdict(
        self,
        step: int,
        reason: Reason | None,
        relative: float | None,
        train_loss: float | None,
        val_loss: float | None,
        decide: bool,
    ) -> Verdict:
        growth, growth_positive = self.growth()
        trend, trend_positive = self.gap_trend()
        floor = self.current_floor()
        bounds = self._floor_bounds()
        gap = self._gaps[-1][1] if self._gaps else None
        conditions = {
            Condition.BELOW_FLOOR.value: self._below_floor(train_loss, bounds),
            Condition.NEAR_FLOOR.value: self._near_floor(train_loss, val_loss, bounds),
            Condition.VAL_STALLED.value: self._val_stalled(),
            Condition.NORM_GROWING.value: self._norm_growing(growth, growth_positive),
            Condition.GAP_WIDENING.value: self._gap_widening(trend, trend_positive, gap, floor),
            Condition.DRIFTED.value: self._drifted(decide),
        }
        fired = False
        rules = self.rules()
        if decide:
            reason, fired = self._decide(rules, conditions)
            if growth is not None and len(self._norms) == self.window:  # full windows only: not the early ramp
                self._lowest_growth = min(self._lowest_growth, growth)
        assert reason is not None
        streak, rule = self._leading(rules)
        return Verdict(
            step=step,
            reason=reason,
            fired=fired,
            active=decide and bool(self._active_rules),
            streak=streak,
            rule=rule,
            conditions=conditions,
            growth_exponent=growth,
            relative_growth=relative,
            gap=gap,
            gap_trend=trend,
            noise_floor=floor,
            train_loss=train_loss,
            top_layers=self._top_layers() if decide else (),
            drift=self._drift if decide else None,
            **self._estimate_bounds(bounds),
        )

    def _estimate_bounds(self, bounds: tuple[float, float] | None) -> dict[str, float]:
        """An estimated floor's (low, high) as the conditions used them, for the verdict."""
        if self._floor.kind is not FloorKind.ESTIMATED or bounds is None:
            return {}
        return {"noise_floor_low": bounds[0], "noise_floor_high": bounds[1]}

    # ------------------------------------------------------------------ conditions
    def _below_floor(self, train_loss: float | None, bounds: tuple[float, float] | None) -> bool | None:
        """``below_floor``: the training loss under ``margin`` × the floor (an estimate's lower end)."""
        if bounds is not None and train_loss is not None:
            return train_loss < self.margin * bounds[0]
        if self._floor.kind is FloorKind.VALIDATION_MIN and self._validations:
            return False  # validation still improving: no floor yet, so not held
        return None

    def _near_floor(
        self, train_loss: float | None, val_loss: float | None, bounds: tuple[float, float] | None
    ) -> bool | None:
        """``near_floor``: the training loss nearer the floor than the validation loss, the gap
        above ``min_gap`` × the floor; only with a known or estimated floor above 0."""
        if not self._floor.can_be_positive() or bounds is None or bounds[0] <= 0.0:
            return None
        if train_loss is None or val_loss is None:
            return None
        low, high = bounds
        level = self.margin * low
        return train_loss < level + 0.5 * max(val_loss - level, 0.0) and val_loss - train_loss > self.min_gap * high

    def _val_stalled(self) -> bool | None:
        """``val_stalled``: the last validation did not improve on the best score."""
        return (self._since_best >= 1) if self._validations else None

    def _norm_growing(self, growth: float | None, growth_positive: float | None) -> bool | None:
        """``norm_growing``: the growth exponent above ``min_growth``, rebounded above its own
        lowest value, rising with ``confidence``, and the norm above its early baseline."""
        if growth is None or not math.isfinite(self._lowest_growth):
            return None
        baseline = float(np.median(self._baseline))
        return (
            growth > self.min_growth
            and growth > self._lowest_growth + self.rebound * abs(self._lowest_growth)
            and growth_positive is not None
            and growth_positive >= self.confidence
            and self._norms[-1][1] > baseline * (1.0 + self.min_norm_increase)
        )

    def _gap_widening(
        self, trend: float | None, trend_positive: float | None, gap: float | None, floor: float | None
    ) -> bool | None:
        """``gap_widening``: the gap's slope positive with ``confidence``, the latest gap above
        0 and above ``min_gap`` × the floor in effect."""
        if trend is None or gap is None:
            return None
        return (
            trend > 0
            and trend_positive is not None
            and trend_positive >= self.confidence
            and gap > 0
            and gap > self.min_gap * (floor or 0.0)
        )

    def _drifted(self, decide: bool) -> bool | None:
        """``drifted``: ‖w − w_best‖ / ‖w − w₀‖ above ``drift_share`` at this validation."""
        return None if not decide or self._drift is None else self._drift > self.drift_share

    def _decide(self, rules: tuple[Rule, ...], conditions: dict[str, bool | None]) -> tuple[Reason, bool]:
        """Advance each rule's streak by this decision; (reason, fired)."""
        names = {r.name for r in rules}
        self._streaks = {k: v for k, v in self._streaks.items() if k in names}
        evaluable = holding = 0
        previously_active = set(self._active_rules)
        was_active = bool(previously_active)
        self._active_rules = []
        for r in rules:
            values = [conditions[c] for c in r.conditions]
            if any(v is None for v in values):
                self._streaks[r.name] = 0
                continue
            evaluable += 1
            held = all(values)
            holding += held
            streak = self._streaks[r.name] = self._streaks.get(r.name, 0) + 1 if held else 0
            # active from the decision where the streak has reached the patience with the gate
            # holding, for as long as the streak goes on (the onset is reported once)
            gate_open = all(conditions[c] is True for c in r.gate)
            if streak >= r.patience and (gate_open or r.name in previously_active):
                self._active_rules.append(r.name)
        if self._active_rules:
            return Reason.SIGNATURE, not was_active
        if not evaluable:
            return Reason.INSUFFICIENT, False
        return (Reason.BUILDING if holding else Reason.NOT_MET), False

    def _leading(self, rules: tuple[Rule, ...]) -> tuple[int, str | None]:
        """(longest current streak, name of the active rule, else of the one with that streak)."""
        for r in rules:
            if r.name in self._active_rules:
                return self._streaks[r.name], r.name
        streak, _, name = max(
            ((self._streaks.get(r.name, 0), -i, r.name) for i, r in enumerate(rules)), default=(0, 0, None)
        )
        return streak, (name if streak else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "norms": [list(x) for x in self._norms],
            "layer_names": list(self._layer_names),
            "layers": [[float(v) for v in row] for row in self._layers],
            "baseline": list(self._baseline),
            "gaps": [list(x) for x in self._gaps],
            "best_val": self._best_val,
            "best_score": self._best_score,
            "since_best": self._since_best,
            "validations": self._validations,
            "streaks": dict(self._streaks),
            "active_rules": list(self._active_rules),
            "lowest_growth": self._lowest_growth,
            **self._estimate_state(),
        }

    def _estimate_state(self) -> dict[str, Any]:
        """The latest estimate (``noise_floor="estimate"`` only: other checkpoints are as before)."""
        if self._floor.kind is not FloorKind.ESTIMATED:
            return {}
        floor = self._floor
        estimate = None if floor.value is None else {"value": floor.value, "low": floor.low, "high": floor.high}
        return {"floor_estimate": estimate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._norms.extend((int(s), float(v)) for s, v in state.get("norms", []))
        self._layer_names = tuple(state.get("layer_names", ()))
        self._layers.extend(np.asarray(row, dtype=float) for row in state.get("layers", []))
        self._baseline = [float(x) for x in state.get("baseline", [])]
        self._gaps.extend((int(s), float(v)) for s, v in state.get("gaps", []))
        self._best_val = float(state.get("best_val", math.inf))
        self._best_score = float(state.get("best_score", self._best_val))
        self._since_best = int(state.get("since_best", 0))
        self._validations = int(state.get("validations", 0))
        self._streaks = {str(k): int(v) for k, v in state.get("streaks", {}).items()}
        if "streak" in state and not self._streaks:  # a checkpoint from before the rules (one streak)
            rules = self.rules()
            self._streaks = {rules[0].name: int(state["streak"])}
            for r in rules[1:]:
                if r.conditions == ("val_stalled",):  # its streak is the count of stalled validations
                    self._streaks[r.name] = self._since_best
        if "active_rules" in state:
            self._active_rules = [str(n) for n in state["active_rules"]]
        else:  # before gates: a rule was active when its streak reached its patience
            self._active_rules = [r.name for r in self.rules() if self._streaks.get(r.name, 0) >= r.patience]
        self._lowest_growth = float(state.get("lowest_growth", math.inf))
        estimate = state.get("floor_estimate")
        if estimate is not None:  # a resume keeps the latest estimate (ignored unless "estimate")
            self.set_floor_estimate(estimate["value"], estimate["low"], estimate["high"])
