"""Events: what happened, at which step. Logged to TensorBoard (scalar + text) and Python logging."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventKind"]


class EventKind(str, Enum):
    DETECTOR_FIRED = "detector_fired"
    WEIGHT_DECAY_CHANGED = "weight_decay_changed"
    STOP = "stop"
    RESTORE = "restore"
    RESTORE_SKIPPED = "restore_skipped"
    ACTION_ESCALATED = "action_escalated"
    NONFINITE_LOSS = "nonfinite_loss"
    NONFINITE_WEIGHTS = "nonfinite_weights"
    DIVERGING_LOSS = "diverging_loss"


@dataclass(frozen=True)
class Event:
    """One event. ``data`` holds plain numbers and strings (JSON-friendly).

    Example:
        >>> Event(120, EventKind.STOP, "stopping").line()
        'step 120 [stop] stopping'
    """

    step: int
    kind: EventKind
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"step {self.step} [{self.kind.value}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Event:
        return cls(int(state["step"]), EventKind(state["kind"]), str(state["message"]), dict(state.get("data", {})))
