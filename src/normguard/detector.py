"""Signals and the near-interpolation detector: host floats in, verdicts out.

Nothing here touches torch: the detector is fed plain floats once per check, so it can be
tested by scripted sequences and saved in a checkpoint as a plain dict.

Six conditions (THEORY.md: training error under the noise floor, the weights growing and
moving on, the validation–train gap widening; and validation no longer improving):

``below_floor``
    mean training loss < ``margin`` × noise floor σ̂². The floor is a number you give
    (known measurement noise; :func:`label_noise_floor` for symmetric label noise), or
    ``"auto"``: the lowest validation loss seen so far, available once the validation score
    has failed to improve at least once. With ``None`` the condition is not used.
``near_floor``
    with a known floor σ̂² > 0: the mean training loss is nearer the floor than the
    validation loss is, ``train < (val + σ̂²) / 2`` (``margin`` × σ̂² in place of σ̂²;
    ``train < σ̂²`` when the validation loss is under the floor), and the gap is above
    ``min_gap`` × σ̂² (so a well-posed model converged at the floor, train ≈ σ̂²(1 − p/n) and
    val ≈ σ̂²(1 + p/n), does not count). The gap measured in units of the model's excess over
    the floor: a model that learns without memorising has train ≈ val (a plateau: a gap near
    0), one that fits the noise moves its training loss from the validation loss down towards
    the floor. Unavailable without validation or without a known floor above 0 (with a floor
    of 0 every model that fits its data has train < val / 2, so it carries no information).
``val_stalled``
    the validation score did not improve on its best at this validation. The score is the
    validation metric named by ``monitor`` (``mode="max"`` for accuracy) or else the
    validation loss. Held at ``patience`` consecutive validations, it is EarlyStopping's
    rule with patience ``patience``.
``norm_growing``
    the growth exponent g = d log‖w‖ / d log(step) — a Theil–Sen (median of pairwise) slope
    over the last ``window`` norm checks, with at least ``confidence`` of the pairwise
    slopes positive — is above ``min_growth`` *and* has rebounded above (1 + ``rebound``) ×
    its own lowest value earlier in the run. Under Adam(W) the norm grows through all of
    ordinary training, so "growing" alone carries no information (it held at 99–100 % of
    epochs on clean and noisy labels alike in ``benchmarks/suite``); what separates
    memorising from learning better is the growth *speeding up again* once the signal is
    learnt. Replayed on the suite's 45 unguarded runs
    (``benchmarks/suite/replay_norm_condition.py``), this condition as fed here (the norm of
    every parameter) held at 69 / 93 % of decisions before / after the validation optimum on
    noisy runs but also at 49 / 50 % on clean ones (42 / 22 % when fed the ≥ 2-D weights
    only): on the tiny BERT at 97–100 % of clean decisions, since a transformer's norm keeps
    speeding up as it leaves its plateaus (0 % on the clean CNN and MLP). Reported and logged
    as evidence; no default rule reads it (``drifted`` took its place).
``gap_widening``
    gap = validation loss − mean training loss over the same stretch of steps; its
    Theil–Sen slope over the last ``window`` validations is positive with ``confidence``
    of pairwise slopes positive, and the latest gap is positive and, when a floor is known,
    above ``min_gap`` × floor. Needs two validations. Required with ``"auto"`` and without a floor.
``drifted``
    at a validation: the weights have moved far since the best validation point,
    ‖w − w_best‖ > ``drift_share`` × ‖w − w₀‖ (default 0.2: a fifth of the distance travelled
    since the first check was travelled after the last improvement; 0 at a validation that
    improves). This is the norm condition that separates memorising from learning, by
    measurement (``benchmarks/suite/replay_norm_condition.py`` on the suite's 45 unguarded
    runs): it held at 9 % / 2 % of decisions before / after the validation optimum on clean
    labels (tiny BERT 7–11 % / 0 %) and 10 % / 80 % on noisy ones, where ``norm_growing``
    held at 49 % / 50 % on clean labels (tiny BERT 97–100 %). Needs the two distances, which
    the guard measures at validations when a rule reads this condition
    (:attr:`NearInterpolationDetector.needs_drift`: two host copies of the measured weights);
    unavailable otherwise.

The detector fires when one of its *rules* — a set of conditions and a patience — has held
at that many consecutive decisions. The rules depend on what is known, by measurement
(``benchmarks/suite/FINDINGS.md``; replayed on every unguarded trace of the suite by
``benchmarks/suite/replay_detector.py``):

* a known floor σ̂² > 0: ``below_floor`` and ``val_stalled`` at ``floor_patience`` (7)
  decisions — the training loss under the floor says the model fits noise, so the validation
  score gets less patience than EarlyStopping(patience=10) would give it (7: the smallest
  count that stopped none of the suite's noisy runs before a stall it later broke) — **or**
  ``val_stalled`` at ``patience`` (10) decisions with ``near_floor`` at the last of them:
  EarlyStopping's own rule, except on a plateau, where the training loss has not started
  towards the floor. The
  training loss reaches the floor late (the first rule alone stopped 10 of the suite's 30
  noisy runs after EarlyStopping; in the 7 of them where the model was memorising, the
  training loss was still 2–43 % above the floor when EarlyStopping stopped); the second rule
  stops those runs when EarlyStopping does, while waiting out the plateaus (train ≈ val, far
  above the floor) where EarlyStopping stopped too soon.
* a known floor of 0 (clean labels: no noise to memorise): ``below_floor`` and
  ``val_stalled`` — which cannot hold, so the guard never fires.
* ``"auto"``: ``below_floor``, ``val_stalled`` and ``gap_widening`` at ``patience``, with
  ``drifted`` at the last of them (the estimated floor is weak evidence, so the gap and the
  weights' drift must confirm and the validation score gets EarlyStopping's patience: in the
  replay, ``"auto"`` without ``gap_widening`` fired on all 3 clean Lightning BERT seeds while
  they sat on a plateau they later left; with it at patience 6, on 2 of the 3 clean Hugging
  Face BERT seeds; at 10 without a norm condition, on 2 of 12 clean runs; with the drift gate,
  on none);
* no floor: ``val_stalled`` and ``gap_widening`` at ``patience``, with ``drifted`` at the last.

Without validation, ``val_stalled`` is unavailable: with a known floor, ``below_floor`` held
at ``floor_patience`` checks decides (the paper's definition of a near-interpolator: training
error under the noise floor); without a known floor nothing fires. ``require=`` names one
rule in place of these, at ``patience`` (all its conditions held throughout). A rule with a
condition that cannot be evaluated yet does not count (its streak restarts): the detector
never fires on missing evidence, and a rule with ``val_stalled`` never fires while the
validation score still improves.

The verdict names the ``top_k`` layers whose norms grow fastest, ranked by a least-squares
slope of log‖w_layer‖ against log(step) over the same window (vectorised, so thousands of
layers cost microseconds).

When decisions happen: every call of :meth:`NearInterpolationDetector.update` with a
validation loss is a decision. Calls without one are decisions only while no validation
has ever been seen (validation absent); once validation appears, those calls only record
norms, so with infrequent validation ``patience`` counts validations.

Non-finite inputs (NaN/Inf norms or losses) are not recorded; such a call returns a
verdict with reason ``NON_FINITE`` and leaves the streak as it was.

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

from normguard.validation import check_int as _check_int
from normguard.validation import check_number as _check_number

__all__ = [
    "Condition",
    "NearInterpolationDetector",
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

    @property
    def decided(self) -> bool:
        return self.reason not in (Reason.RECORDED, Reason.NON_FINITE)

    def to_data(self) -> dict[str, Any]:
        """The verdict's numbers as plain data (an event's ``data``)."""
        return {
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


def label_noise_floor(noise_rate: float, num_classes: int) -> float:
    """Cross-entropy noise floor for symmetric label noise at rate η over C classes.

    The entropy of the noisy label given the clean one (THEORY.md).

    Example:
        >>> round(label_noise_floor(0.3, 10), 4)
        1.1765
    """
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"Expected argument `noise_rate` to be in [0, 1) but got {noise_rate}.")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"Expected argument `num_classes` to be an integer >= 2 but got {num_classes}.")
    keep = 1.0 - noise_rate + noise_rate / num_classes
    flip = noise_rate / num_classes
    floor = -keep * math.log(keep)
    if flip > 0:
        floor -= (num_classes - 1) * flip * math.log(flip)
    return floor if floor > 0 else 0.0  # never -0.0 (η = 0)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class NearInterpolationDetector:
    """Recognises the near-interpolation signature from norms and losses (see module doc).

    Args:
        noise_floor: σ̂² as a float ≥ 0, ``"auto"``, or ``None`` (condition unused).
        margin: the floor condition is ``train_loss < margin * noise_floor``.
        min_gap: the gap must exceed ``min_gap * noise_floor`` (when a floor is known) for
            ``gap_widening`` to hold. A well-posed model with p parameters converges to a
            training loss of about σ²(1 − p/n), just under the floor, with a gap of about
            2σ²p/n that still creeps up, and a validation set of m samples measures the gap
            with an error of about σ²√(2/m). The default 0.1 keeps both from reading as the
            signature (p/n under about 5 %, m over about 200).
        patience: consecutive decisions a rule's conditions must hold to fire (default 10,
            EarlyStopping's usual patience; see the module doc for the rules).
        floor_patience: the shorter patience of the ``below_floor`` rule with a known floor
            (default 7; never more than ``patience``): a training loss under the floor is
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
        if isinstance(noise_floor, str) and noise_floor != "auto":
            raise ValueError(f"Expected argument `noise_floor` to be a float, 'auto' or None but got {noise_floor!r}.")
        if noise_floor is not None and not isinstance(noise_floor, str):
            noise_floor = _check_number("noise_floor", noise_floor, low=0.0, note="or 'auto' or None")
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
            if noise_floor is None:
                never = {"below_floor", "near_floor"} & set(require)
            elif noise_floor == "auto" or float(noise_floor) == 0.0:
                never = {"near_floor"} & set(require)
            else:
                never = set()
            if never:
                raise ValueError(
                    f"Expected argument `require` to name conditions that can be evaluated with "
                    f"noise_floor={noise_floor!r} but got {sorted(never)} (below_floor needs a floor; near_floor "
                    "a known floor above 0)."
                )
        _check_number("confidence", confidence, low=0.5, high=1.0)
        _check_int("baseline_checks", baseline_checks, 1)
        _check_number("min_norm_increase", min_norm_increase, low=0.0)
        _check_int("top_k", top_k, 0)
        self.noise_floor: float | str | None = noise_floor
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
        self._best_val = math.inf  # lowest validation loss (the "auto" floor)
        self._best_score = math.inf  # best validation score, as a loss (a "max" metric negated)
        self._since_best = 0
        self._validations = 0
        self._streaks: dict[str, int] = {}  # rule name -> consecutive decisions its conditions held
        self._active_rules: list[str] = []  # the rules whose streak and gate held at the last decision
        self._lowest_growth = math.inf  # the lowest growth exponent at an earlier decision
        self._drift: float | None = None  # ‖w − w_best‖ / ‖w − w₀‖ at the current decision

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
        return self.noise_floor is None or self.noise_floor == "auto"

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
        if self.noise_floor is None:  # without validation this stays insufficient: the norm never fires alone
            return (Rule(("val_stalled", "gap_widening"), self.patience, gate=("drifted",)),)
        if self.noise_floor == "auto":
            return (Rule(("below_floor", "val_stalled", "gap_widening"), self.patience, gate=("drifted",)),)
        fast = min(self.floor_patience, self.patience)
        if not self._validations:
            return (Rule(("below_floor",), fast),)
        if float(self.noise_floor) == 0.0:
            return (Rule(("below_floor", "val_stalled"), fast),)
        return (
            Rule(("below_floor", "val_stalled"), fast),
            Rule(("val_stalled",), self.patience, gate=("near_floor",)),
        )

    def current_floor(self) -> float | None:
        if self.noise_floor == "auto":
            return self._best_val if self._validations and self._since_best >= 1 else None
        return None if self.noise_floor is None else float(self.noise_floor)

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
        gap = self._gaps[-1][1] if self._gaps else None

        below: bool | None = None
        if floor is not None and train_loss is not None:
            below = train_loss < self.margin * floor
        elif self.noise_floor == "auto" and self._validations:
            below = False  # validation still improving: no floor estimate yet, so not held
        near: bool | None = None
        if self._known_positive_floor() and floor is not None and train_loss is not None and val_loss is not None:
            level = self.margin * floor
            near = (
                train_loss < level + 0.5 * max(val_loss - level, 0.0) and val_loss - train_loss > self.min_gap * floor
            )
        growing: bool | None = None
        if growth is not None and math.isfinite(self._lowest_growth):
            baseline = float(np.median(self._baseline))
            growing = (
                growth > self.min_growth
                and growth > self._lowest_growth + self.rebound * abs(self._lowest_growth)
                and growth_positive is not None
                and growth_positive >= self.confidence
                and self._norms[-1][1] > baseline * (1.0 + self.min_norm_increase)
            )
        widening: bool | None = None
        if trend is not None and gap is not None:
            widening = (
                trend > 0
                and trend_positive is not None
                and trend_positive >= self.confidence
                and gap > 0
                and gap > self.min_gap * (floor or 0.0)
            )
        stalled: bool | None = (self._since_best >= 1) if self._validations else None
        drifted = None if not decide or self._drift is None else self._drift > self.drift_share

        conditions = {
            Condition.BELOW_FLOOR.value: below,
            Condition.NEAR_FLOOR.value: near,
            Condition.VAL_STALLED.value: stalled,
            Condition.NORM_GROWING.value: growing,
            Condition.GAP_WIDENING.value: widening,
            Condition.DRIFTED.value: drifted,
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
        )

    def _known_positive_floor(self) -> bool:
        return self.noise_floor not in (None, "auto") and float(self.noise_floor) > 0.0

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
        }

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
