"""The best-validation weights, and the fingerprint that ties saved state to one model.

:class:`BestWeights` keeps one copy of the model's ``state_dict()`` (on the CPU by
default: one copy of parameters and buffers in host memory), replaced at every validation
that improves on the best score; ``mode`` says whether lower (a loss) or higher (an
accuracy) is better.

:func:`model_fingerprint` names the model's layout (state-dict keys and shapes; no data),
so a state saved for another model is refused at load instead of failing at the stop.

Example:
    >>> import torch
    >>> best = BestWeights(mode="max")
    >>> model = torch.nn.Linear(2, 1)
    >>> best.offer(model, 0.8, step=10), best.offer(model, 0.7, step=20), best.step
    (True, False, 10)
    >>> model_fingerprint(model) == model_fingerprint(torch.nn.Linear(2, 1))
    True
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["BestWeights", "model_fingerprint", "rekey_state"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_forward_module.")


def _bare(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def rekey_state(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """``saved`` with its keys spelt as in ``current`` (a state saved from a ``torch.compile``d,
    DDP-wrapped or Lightning-wrapped model loads into the bare model and the reverse), or None
    when the two do not hold the same tensors.

    Example:
        >>> rekey_state({"_orig_mod.weight": 1}, {"weight": 0})
        {'weight': 1}
    """
    by_bare = {_bare(k): k for k in current}
    if len(by_bare) != len(current):
        return None
    out = {}
    for key, value in saved.items():
        target = by_bare.get(_bare(key))
        if target is None or target in out:
            return None
        out[target] = value
    return out if len(out) == len(current) else None


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's state-dict keys and shapes (wrapper prefixes stripped)."""
    parts = []
    for key, value in model.state_dict().items():
        key = _bare(key)
        shape = tuple(value.shape) if isinstance(value, Tensor) else ()
        parts.append(f"{key}:{shape}")
    return hashlib.sha1(";".join(sorted(parts)).encode()).hexdigest()[:16]


class BestWeights:
    """A copy of the model's state at its best validation score (on ``device``, CPU by default)."""

    def __init__(self, device: str | torch.device = "cpu", mode: Literal["min", "max"] = "min") -> None:
        self.device = torch.device(device)
        self.mode = mode
        self.value = math.inf if mode == "min" else -math.inf
        self.step: int | None = None
        self.state: dict[str, Tensor] | None = None
        self.last: float | None = None  # the latest score offered, best or not

    def improves(self, value: float) -> bool:
        return value < self.value if self.mode == "min" else value > self.value

    def offer(self, model: nn.Module, value: float, step: int) -> bool:
        if math.isfinite(value):
            self.last = float(value)
        if not math.isfinite(value) or not self.improves(value):
            return False
        self.value, self.step = float(value), int(step)
        self.state = {k: v.detach().to(self.device, copy=True) for k, v in model.state_dict().items()}
        return True

    def ended_worse(self, by: float) -> bool:
        """Whether the latest score is worse than the best by more than ``by`` (a fraction of the best's size).

        Example:
            >>> best = BestWeights(mode="max")
            >>> best.value, best.last = 60.0, 58.0
            >>> best.ended_worse(0.02), best.ended_worse(0.05)
            (True, False)
        """
        if self.last is None or not math.isfinite(self.value):
            return False
        margin = by * abs(self.value)
        return self.last > self.value + margin if self.mode == "min" else self.last < self.value - margin

    def restore(self, model: nn.Module) -> bool:
        if self.state is None:
            return False
        with torch.no_grad():
            model.load_state_dict(self.state)
        return True

    def state_dict(self, with_weights: bool = True) -> dict[str, Any]:
        return {
            "value": self.value,
            "step": self.step,
            "mode": self.mode,
            "last": self.last,
            "state": self.state if with_weights else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        default = math.inf if self.mode == "min" else -math.inf
        self.value = float(state.get("value", default))
        self.step = state.get("step")
        last = state.get("last")
        self.last = None if last is None else float(last)
        self.state = state.get("state")
        if self.state is None:  # saved without weights: the next validation sets "best" again
            self.value, self.step = default, None
