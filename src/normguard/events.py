"""Structured events: what happened, at which step, with its numbers.

An :class:`Event` is data first (``kind``, ``step``, ``data``); :meth:`Event.line` is one
rendering of it for people. Sinks receive the events themselves (TensorBoard writes the
lines to its Text tab and the data as JSON beside them, which ``normguard report`` reads
back), Python logging gets the line.

Example:
    >>> e = Event(120, EventKind.STOP, "stopping", {"reason": "signature"})
    >>> e.line()
    'step 120 [stop] stopping'
    >>> Event.from_dict(e.to_dict()) == e
    True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventKind", "events_from_json", "events_to_json"]


class EventKind(str, Enum):
    DETECTOR_FIRED = "detector_fired"
    WEIGHT_DECAY_CHANGED = "weight_decay_changed"
    STOP = "stop"
    RESTORE = "restore"
    RESTORE_SKIPPED = "restore_skipped"
    ACTION_ESCALATED = "action_escalated"
    NONFINITE_LOSS = "nonfinite_loss"
    NONFINITE_WEIGHTS = "nonfinite_weights"
    NONFINITE_VAL_LOSS = "nonfinite_val_loss"
    DIVERGING_LOSS = "diverging_loss"


@dataclass(frozen=True)
class Event:
    """One event. ``data`` holds plain numbers, strings and lists (JSON-friendly)."""

    step: int
    kind: EventKind
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"step {self.step} [{self.kind.value}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "kind": self.kind.value, "message": self.message, "data": _json_safe(self.data)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Event:
        if not isinstance(state, dict) or not {"step", "kind", "message"} <= set(state):
            raise ValueError(f"Expected an event as a dict with keys step, kind, message but got {state!r}.")
        return cls(int(state["step"]), EventKind(state["kind"]), str(state["message"]), dict(state.get("data") or {}))


def events_to_json(events: list[Event]) -> str:
    """The events as one JSON array (infinities and NaN written as strings)."""
    return json.dumps([e.to_dict() for e in events], allow_nan=False)


def events_from_json(text: str) -> list[Event]:
    """Events back from :func:`events_to_json`; unknown kinds (a newer normguard) are skipped."""
    out = []
    for item in json.loads(text):
        try:
            out.append(Event.from_dict(item))
        except ValueError:
            continue
    return out


def _json_safe(value: Any) -> Any:
    """Plain JSON values: non-finite floats become the strings 'inf', '-inf', 'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
