"""Fault watchers: host-side checks of each check's numbers that turn faults into events.

* :class:`DivergenceWatcher` — the mean training loss jumped over ``factor`` × its best so
  far (one event per episode; the episode ends when the loss is back under
  ``recover_factor`` × best).
* :class:`NonFiniteWatcher` — NaN/Inf training losses, weights or validation losses: the
  onset is an event; while the fault persists, later checks only count it, and the count
  is reported when it clears (no flood of identical events).

Both are pure (host floats in, events out) and checkpointable as plain dicts.

Example:
    >>> watch = DivergenceWatcher()
    >>> [e.kind.value for v in (1.0, 0.5, 8.0) for e in watch.update(10, v)]
    ['diverging_loss']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from normguard.events import Event, EventKind
from normguard.validation import check_number

__all__ = ["DivergenceWatcher", "NonFiniteWatcher"]


class DivergenceWatcher:
    """Flags a training loss over ``factor`` × its best so far (and at least ``min_rise`` above it).

    ``floor``: while a controller holds the training loss at a noise floor, the reference is
    at least that floor: a loss the controller raises back towards the floor (from a best that
    was memorisation) is not a divergence.
    """

    def __init__(self, factor: float = 10.0, recover_factor: float = 2.0, min_rise: float = 1e-8) -> None:
        self.factor = check_number("factor", factor, low=1.0, low_open=True)
        self.recover_factor = check_number("recover_factor", recover_factor, low=1.0)
        self.min_rise = check_number("min_rise", min_rise, low=0.0)
        self.best = math.inf
        self.diverging = False

    def update(self, step: int, train_loss: float | None, floor: float | None = None) -> list[Event]:
        if train_loss is None or not math.isfinite(train_loss):
            return []
        events = []
        reference = max(self.best, floor) if floor is not None and math.isfinite(floor) else self.best
        if train_loss > self.factor * reference and train_loss - reference > self.min_rise and not self.diverging:
            self.diverging = True
            events.append(
                Event(
                    step,
                    EventKind.DIVERGING_LOSS,
                    f"training loss {train_loss:.4g} is over {self.factor:g}x its best so far ({self.best:.4g})",
                    {"train_loss": train_loss, "best": self.best},
                )
            )
        elif train_loss <= self.recover_factor * reference:
            self.diverging = False
        self.best = min(self.best, train_loss)
        return events

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "diverging": self.diverging}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", math.inf))
        self.diverging = bool(state.get("diverging", False))


class NonFiniteWatcher:
    """Onset events for non-finite losses, weights and validation losses; counts afterwards."""

    def __init__(self) -> None:
        self._weights_bad_since: int | None = None
        self._weights_checks = 0
        self._val_bad = 0

    def losses(self, step: int, window_start: int, nonfinite: int, first_index: float) -> list[Event]:
        """Non-finite training losses in the window (each window's count is new information)."""
        if nonfinite <= 0:
            return []
        first_step = window_start + int(first_index) + 1
        return [
            Event(
                step,
                EventKind.NONFINITE_LOSS,
                f"{nonfinite} non-finite training loss(es) since step {window_start}, first at step {first_step}; "
                "left out of the mean",
                {"count": nonfinite, "first_step": first_step},
            )
        ]

    def weights(self, step: int, nonfinite_layers: Sequence[str]) -> list[Event]:
        if nonfinite_layers:
            self._weights_checks += 1
            if self._weights_bad_since is not None:
                return []
            self._weights_bad_since = step
            shown = ", ".join(nonfinite_layers[:10])
            return [
                Event(
                    step,
                    EventKind.NONFINITE_WEIGHTS,
                    f"non-finite weights in {len(nonfinite_layers)} layer(s): {shown} (later checks are counted, "
                    "not repeated)",
                    {"layers": list(nonfinite_layers)},
                )
            ]
        if self._weights_bad_since is None:
            return []
        since, count = self._weights_bad_since, self._weights_checks
        self._weights_bad_since, self._weights_checks = None, 0
        return [
            Event(
                step,
                EventKind.NONFINITE_WEIGHTS,
                f"weights finite again; they were non-finite at {count} check(s) from step {since}",
                {"layers": [], "recovered": True, "since": since, "checks": count},
            )
        ]

    def val_loss(self, step: int, value: float) -> list[Event]:
        if math.isfinite(value):
            return []
        self._val_bad += 1
        return [
            Event(
                step,
                EventKind.NONFINITE_VAL_LOSS,
                f"validation loss is {value}; ignored by the detector and by restore-best "
                f"({self._val_bad} non-finite validation(s) so far)",
                {"value": value, "count": self._val_bad},
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights_bad_since": self._weights_bad_since,
            "weights_checks": self._weights_checks,
            "val_bad": self._val_bad,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        since = state.get("weights_bad_since")
        self._weights_bad_since = None if since is None else int(since)
        self._weights_checks = int(state.get("weights_checks", 0))
        self._val_bad = int(state.get("val_bad", 0))
