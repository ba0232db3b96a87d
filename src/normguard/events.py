"""Structured events, and normguard's one JSON codec.

An :class:`Event` is data first (``kind``, ``step``, ``data``); :meth:`Event.line` is one
rendering of it for people. It is the one event type: the monitor emits it, sinks receive
it (TensorBoard writes the lines to its Text tab and the JSON beside them), and
``normguard report`` reads the same type back from the logs.

JSON: :func:`to_json_safe` / :func:`from_json_safe` turn plain data into strict JSON data
and back, losslessly. Non-finite floats are the one thing JSON cannot hold; they are
written one way everywhere, as ``{"__float__": "inf"}`` (``"-inf"``, ``"nan"``), so a
string ``"inf"`` stays a string. :func:`events_to_json` / :func:`events_from_json` use it
for a list of events; checkpoints use it for their state.

Example:
    >>> e = Event(120, EventKind.STOP, "stopping", {"gap": float("inf")})
    >>> e.line()
    'step 120 [stop] stopping'
    >>> events_to_json([e])
    '[{"step": 120, "kind": "stop", "message": "stopping", "data": {"gap": {"__float__": "inf"}}}]'
    >>> events_from_json(events_to_json([e])) == [e]
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventKind", "events_from_json", "events_to_json", "from_json_safe", "to_json_safe"]

#: the key of a non-finite float in JSON data: ``{"__float__": "inf"}``
FLOAT_KEY = "__float__"
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


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
    #: read back from a log: a kind this version does not know (its name is in ``data["kind"]``)
    #: or an event line that could not be parsed. normguard never emits it.
    OTHER = "other"


@dataclass(frozen=True)
class Event:
    """One event. ``data`` holds plain numbers, strings, lists and dicts (see :func:`to_json_safe`).

    Example:
        >>> Event.from_dict({"step": 3, "kind": "from_the_future", "message": "hi"})
        Event(step=3, kind=<EventKind.OTHER: 'other'>, message='hi', data={'kind': 'from_the_future'})
    """

    step: int
    kind: EventKind
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The kind as written (an unknown kind's own name for :attr:`EventKind.OTHER`)."""
        if self.kind is EventKind.OTHER and isinstance(self.data.get("kind"), str):
            return str(self.data["kind"])
        return self.kind.value

    def line(self) -> str:
        return f"step {self.step} [{self.name}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON data (non-finite floats as ``{"__float__": ...}``)."""
        return {"step": self.step, "kind": self.kind.value, "message": self.message, "data": to_json_safe(self.data)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict`; a kind this version does not know becomes :attr:`EventKind.OTHER`."""
        if not isinstance(state, Mapping) or not {"step", "kind", "message"} <= set(state):
            raise ValueError(f"Expected an event as a dict with keys step, kind, message but got {state!r}.")
        data = from_json_safe(dict(state.get("data") or {}))
        try:
            kind = EventKind(state["kind"])
        except ValueError:
            kind, data = EventKind.OTHER, {**data, "kind": str(state["kind"])}
        return cls(int(state["step"]), kind, str(state["message"]), data)


def to_json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: non-finite floats become ``{"__float__": "inf"}`` (``"-inf"``,
    ``"nan"``), tuples lists, enums their value, numpy scalars Python numbers. Dict keys must be
    strings (or string enums); tensors and other objects are refused with a ``TypeError``.

    Example:
        >>> to_json_safe({"best": float("inf"), "steps": (1, 2), "x": float("nan")})
        {'best': {'__float__': 'inf'}, 'steps': [1, 2], 'x': {'__float__': 'nan'}}
        >>> from_json_safe(json.loads(json.dumps(to_json_safe([float("-inf"), "inf", 1.5]))))
        [-inf, 'inf', 1.5]
    """
    if isinstance(value, Enum):
        return to_json_safe(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        value = float(value)  # numpy's float64 is a float: written as a plain one
        return value if math.isfinite(value) else {FLOAT_KEY: repr(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, str):
                raise TypeError(f"Expected string keys in JSON data but got {key!r} ({type(key).__name__}).")
            out[str(key)] = to_json_safe(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if type(value).__module__.startswith("torch"):
        raise TypeError("Expected no tensors in JSON data (they go to a side file) but got one.")
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return to_json_safe(item())
    raise TypeError(f"Expected JSON-able data (numbers, strings, lists, dicts) but got {type(value).__name__}.")


def from_json_safe(value: Any) -> Any:
    """The inverse of :func:`to_json_safe` (lists stay lists)."""
    if isinstance(value, dict):
        if set(value) == {FLOAT_KEY} and value[FLOAT_KEY] in _NONFINITE:
            return _NONFINITE[value[FLOAT_KEY]]
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def events_to_json(events: Iterable[Event]) -> str:
    """The events as one strict JSON array (see :func:`to_json_safe`)."""
    return json.dumps([e.to_dict() for e in events], allow_nan=False, ensure_ascii=False)


def events_from_json(text: str) -> list[Event]:
    """Events back from :func:`events_to_json`. A malformed array raises ``ValueError``; an item
    that is not an event is skipped; an unknown kind (a newer normguard) is kept as
    :attr:`EventKind.OTHER`."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError(f"Expected a JSON array of events but got {type(items).__name__}.")
    out = []
    for item in items:
        try:
            out.append(Event.from_dict(item))
        except (ValueError, TypeError):
            continue
    return out
