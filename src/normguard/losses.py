"""The training-loss window: per-step losses kept on the device until a check reads them.

:class:`LossBuffer` copies each step's loss into a preallocated device buffer (no host
sync); :class:`LossWindow` folds the buffer into sums (a torchmetrics ``Metric``, so the
sums are all-reduced across ranks when a check reads them). Non-finite losses are counted,
not summed, and the position of the first one is kept.

Example:
    >>> window = LossWindow()
    >>> buffer = LossBuffer(window, capacity=4)
    >>> for value in (1.0, float("nan"), 3.0):
    ...     buffer.add(torch.tensor(value))
    >>> buffer.fold()
    >>> window.totals().tolist()  # sum, finite count, losses seen, index of the first non-finite
    [4.0, 2.0, 3.0, 1.0]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["LossBuffer", "LossWindow"]

WINDOW_STATES = ("total", "count", "seen", "first_nonfinite")


class LossWindow(Metric):
    """Sum and count of the finite per-step losses since the last reset, on the device.

    ``update`` takes a 1-D tensor of per-step losses and never synchronises with the host.
    (``MeanMetric`` does not fit: its only sync-free NaN mode also drops the weights
    needed to skip a value.)
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("seen", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("first_nonfinite", torch.full((), math.inf), dist_reduce_fx="min")

    def update(self, losses: Tensor) -> None:
        losses = losses.detach().reshape(-1).to(self.total.dtype)
        finite = torch.isfinite(losses)
        self.total += torch.where(finite, losses, 0.0).sum()
        self.count += finite.sum()
        index = self.seen + torch.arange(losses.numel(), device=losses.device, dtype=losses.dtype)
        self.first_nonfinite = torch.minimum(self.first_nonfinite, torch.where(finite, math.inf, index).min())
        self.seen += losses.numel()

    def compute(self) -> Tensor:
        return torch.stack([self.total, self.count, self.seen, self.first_nonfinite])

    def totals(self) -> Tensor:
        """(sum, finite count, seen, first non-finite index), summed over ranks; still on the device."""
        with self.sync_context():
            return torch.stack([self.total, self.count, self.seen, self.first_nonfinite])

    def state_floats(self) -> dict[str, float]:
        """The rank-local sums as host floats (a host sync: call at a check or a save only)."""
        return {k: float(getattr(self, k)) for k in WINDOW_STATES}

    def load_floats(self, saved: dict[str, Any]) -> None:
        """Restore sums saved by :meth:`state_floats`."""
        self.reset()
        for k in WINDOW_STATES:
            current = getattr(self, k)
            setattr(self, k, torch.tensor(float(saved[k]), dtype=current.dtype, device=current.device))


class LossBuffer:
    """Per-step losses written into a preallocated device buffer: one small copy per step.

    Folded into a :class:`LossWindow` when full and at every check (no host sync either way).
    """

    def __init__(self, window: LossWindow, capacity: int) -> None:
        self.window = window
        self.capacity = max(1, capacity)
        self._buffer = torch.empty(self.capacity, dtype=window.total.dtype, device=window.device)
        self._size = 0

    def add(self, loss: Tensor) -> None:
        loss = loss.detach()
        if loss.device != self._buffer.device:
            self.fold()
            self.window.to(loss.device)
            self._buffer = self._buffer.to(loss.device)
        self._buffer[self._size].copy_(loss.mean() if loss.ndim else loss)
        self._size += 1
        if self._size == self.capacity:
            self.fold()

    def fold(self) -> None:
        if self._size:
            self.window.update(self._buffer[: self._size])
            self._size = 0
