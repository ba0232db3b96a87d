"""Runs as read from the logs: :class:`Series` (one scalar tag) and :class:`RunData` (one run).

A run is what one directory of TensorBoard event files holds: normguard's tags, and the
losses and epoch the training framework logged itself (Lightning's ``train_loss`` /
``val_loss`` and ``epoch``, Hugging Face's ``train/loss`` / ``eval/loss`` and
``train/epoch``). A run without normguard's tags (a baseline trained without it) is drawn
from those losses alone.

Example:
    >>> run = RunData("baseline", "", {"train_loss": Series.from_pairs([(1, 2.0), (2, 1.0)])})
    >>> run.has_normguard_data, run.train_loss_tag, run.train_loss().values.tolist()
    (False, 'train_loss', [2.0, 1.0])
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from normguard import tags
from normguard.events import Event, EventKind

__all__ = [
    "EPOCH_TAGS",
    "LOGGER_TAGS",
    "TRAIN_LOSS_TAGS",
    "VAL_LOSS_TAGS",
    "RunData",
    "Series",
]

#: a framework's own training-loss tags, in the order they are preferred (Lightning's
#: ``self.log("train_loss", ...)`` and its ``_step`` / ``_epoch`` variants, ``train/loss``
#: as Hugging Face and many Lightning modules write it, then a bare ``loss``)
TRAIN_LOSS_TAGS = (
    "train_loss",
    "train_loss_step",
    "train/loss",
    "train/loss_step",
    "training_loss",
    "train_loss_epoch",
    "train/loss_epoch",
    "loss",
)
#: a framework's own validation-loss tags, in the order they are preferred
VAL_LOSS_TAGS = (
    "val_loss",
    "val/loss",
    "eval/loss",
    "valid_loss",
    "validation_loss",
    "val_loss_epoch",
    "val/loss_epoch",
    "eval_loss",
)
#: the epoch as frameworks log it (Lightning's ``epoch``, Hugging Face's ``train/epoch``)
EPOCH_TAGS = ("epoch", "train/epoch")
#: every non-normguard tag the report reads
LOGGER_TAGS = frozenset(TRAIN_LOSS_TAGS + VAL_LOSS_TAGS + EPOCH_TAGS)

_RESTORED = re.compile(r"restored the weights of step (\d+)")  # event text of logs before normguard 0.2


@dataclass(frozen=True)
class Series:
    """One scalar tag: steps (ascending, one value per step: the last one written) and values."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    def last(self) -> float | None:
        """The last finite value, or ``None``."""
        finite = np.isfinite(self.values)
        return float(self.values[finite][-1]) if finite.any() else None

    def final(self) -> float | None:
        """The value at the last step, finite or not (``None`` if empty)."""
        return float(self.values[-1]) if len(self) else None

    def at(self, step: int) -> float | None:
        """The value logged at ``step``, or ``None``."""
        index = np.searchsorted(self.steps, step)
        if index < len(self) and int(self.steps[index]) == step:
            return float(self.values[index])
        return None

    def nonfinite_since(self) -> int | None:
        """The first step of the trailing stretch of non-finite values (``None`` if the last is finite).

        Example:
            >>> Series.from_pairs([(1, 1.0), (2, math.nan), (3, 2.0), (4, math.inf), (5, math.nan)]).nonfinite_since()
            4
        """
        finite = np.isfinite(self.values)
        if not len(self) or finite[-1]:
            return None
        good = np.flatnonzero(finite)
        return int(self.steps[good[-1] + 1]) if len(good) else int(self.steps[0])

    def last_finite_step(self) -> int | None:
        finite = np.flatnonzero(np.isfinite(self.values))
        return int(self.steps[finite[-1]]) if len(finite) else None

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, float]]) -> Series:
        """Build from (step, value) pairs in write order; a repeated step keeps its last value.

        Example:
            >>> s = Series.from_pairs([(10, 1.0), (20, 2.0), (10, 1.5)])
            >>> s.steps.tolist(), s.values.tolist()
            ([10, 20], [1.5, 2.0])
        """
        by_step: dict[int, float] = {}
        for step, value in pairs:
            by_step[int(step)] = float(value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        return cls(steps, np.array([by_step[s] for s in steps.tolist()], dtype=np.float64))


@dataclass
class RunData:
    """One run: its scalars by tag (normguard's and the framework's own losses and epoch), its
    events in order, and ``warnings`` naming any event file that could not be read to its end."""

    name: str
    path: str
    scalars: dict[str, Series] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: float = 0.0  # wall time of the first record (orders the columns)

    def series(self, tag: str) -> Series | None:
        return self.scalars.get(tag)

    def group(self, prefix: str) -> dict[str, Series]:
        """The tags under ``prefix/``, keyed by the rest of the tag."""
        start = prefix + "/"
        return {tag[len(start) :]: s for tag, s in self.scalars.items() if tag.startswith(start)}

    @property
    def has_normguard_data(self) -> bool:
        """Whether normguard logged this run (else it is a baseline drawn from the framework's losses)."""
        return bool(self.events) or any(tags.is_normguard_tag(t) for t in self.scalars)

    @property
    def layers(self) -> dict[str, Series]:
        return self.group(tags.LAYER_NORM)

    @property
    def conditions(self) -> dict[str, Series]:
        """Condition strips (0/1 per decision); the streak count is left out."""
        return {k: v for k, v in self.group(tags.CONDITION).items() if k != "streak"}

    @property
    def weight_decays(self) -> dict[str, Series]:
        """The weight decay in effect per param group, by tag suffix (``group_0``, ...).

        Logs written before one tag per group held an action's λ beside the group's own value
        (``hold_floor/opt_0_group_0`` beside ``group_0``): the λ is the one in effect.

        Example:
            >>> one = Series.from_pairs([(1, 0.0)])
            >>> lam = Series.from_pairs([(1, 10.0)])
            >>> run = RunData("r", "", {"normguard/weight_decay/group_0": one,
            ...                         "normguard/weight_decay/hold_floor/opt_0_group_0": lam})
            >>> {k: s.values.tolist() for k, s in run.weight_decays.items()}
            {'group_0': [10.0]}
        """
        return tags.weight_decays_in_effect(self.group(tags.WEIGHT_DECAY))

    @property
    def train_loss_tag(self) -> str | None:
        """The tag of the training loss drawn: normguard's, else the framework's own."""
        return self._first_present((tags.TRAIN_LOSS, *TRAIN_LOSS_TAGS))

    @property
    def val_loss_tag(self) -> str | None:
        """The tag of the validation loss drawn: normguard's, else the framework's own."""
        return self._first_present((tags.VAL_LOSS, *VAL_LOSS_TAGS))

    def train_loss(self) -> Series | None:
        tag = self.train_loss_tag
        return None if tag is None else self.scalars[tag]

    def val_loss(self) -> Series | None:
        tag = self.val_loss_tag
        return None if tag is None else self.scalars[tag]

    def _first_present(self, candidates: Iterable[str]) -> str | None:
        return next((t for t in candidates if t in self.scalars and len(self.scalars[t])), None)

    @property
    def epoch_tag(self) -> str | None:
        return self._first_present(EPOCH_TAGS)

    def epochs(self, steps: np.ndarray) -> np.ndarray:
        """The epoch at each of ``steps``, interpolated from the epoch the framework logged.

        Raises ``ValueError`` naming the run when it logged no epoch (a custom loop's run).

        Example:
            >>> run = RunData("r", "", {"epoch": Series.from_pairs([(0, 0.0), (10, 1.0), (20, 2.0)])})
            >>> run.epochs(np.array([5, 20])).tolist()
            [0.5, 2.0]
        """
        tag = self.epoch_tag
        if tag is None:
            raise ValueError(
                f"run {self.name!r} logged no epoch (Lightning's `epoch` or Hugging Face's `train/epoch`): "
                "draw it against the step instead"
            )
        epoch = self.scalars[tag]
        ok = np.isfinite(epoch.values)
        return np.interp(np.asarray(steps, dtype=np.float64), epoch.steps[ok], epoch.values[ok])

    @property
    def last_step(self) -> int | None:
        steps = [int(s.steps[-1]) for s in self.scalars.values() if len(s)]
        steps += [e.step for e in self.events]
        return max(steps) if steps else None

    @property
    def last_check_step(self) -> int | None:
        """The last step normguard measured the weights (``None`` without normguard data)."""
        total = self.series(tags.TOTAL_NORM)
        return int(total.steps[-1]) if total is not None and len(total) else None

    def restore(self) -> tuple[int, int] | None:
        """(step of the last restore event, the step whose weights it put back), or ``None``."""
        found = None
        for e in self.events:
            if e.kind is not EventKind.RESTORE:
                continue
            if "best_step" in e.data:
                found = (e.step, int(e.data["best_step"]))
            elif (match := _RESTORED.search(e.message)) is not None:  # logs written before normguard 0.2
                found = (e.step, int(match.group(1)))
        return found

    def restored_step(self) -> int | None:
        """The step whose weights a restore put back, when that changed the weights: ``None``
        without a restore event, and ``None`` when the best weights were the latest ones (a
        restore of the weights the run already had: see :meth:`kept_last_weights`)."""
        restore = self.restore()
        if restore is None or self._is_latest(restore[1], restore[0]):
            return None
        return restore[1]

    def kept_last_weights(self) -> bool:
        """The run ended with the weights it trained to (no restore, or a restore of those same
        weights) although normguard acted on it: ``hold_floor`` without a restore, say."""
        restore = self.restore()
        if restore is not None:
            return self._is_latest(restore[1], restore[0])
        return any(e.kind in (EventKind.WEIGHT_DECAY_CHANGED, EventKind.ACTION_ESCALATED) for e in self.events)

    def _is_latest(self, best: int, at: int) -> bool:
        last = self.last_check_step
        return best >= at or (last is not None and best >= last)

    def engaged_steps(self) -> list[int]:
        """Where a weight-decay action engaged: ``hold_floor``'s engage events, else the first
        weight-decay change of each run of changes (what the figure marks, not every change).

        Example:
            >>> e = lambda s, d: Event(s, EventKind.WEIGHT_DECAY_CHANGED, "", d)
            >>> RunData("r", "", events=[e(20, {"engaged": True}), e(20, {}), e(40, {})]).engaged_steps()
            [20]
            >>> RunData("r", "", events=[e(30, {}), e(50, {})]).engaged_steps()
            [30]
        """
        changes = [e for e in self.events if e.kind is EventKind.WEIGHT_DECAY_CHANGED]
        engaged = [e.step for e in changes if e.data.get("engaged") is True or "engaged" in e.message]
        if engaged:
            return sorted(set(engaged))
        return [changes[0].step] if changes else []


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
