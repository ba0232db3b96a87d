"""The training-loss window: per-step losses kept on the device until a check reads them.

:class:`LossBuffer` copies each step's loss into a preallocated device buffer (no host
sync); :class:`LossWindow` folds the buffer into sums (all-reduced across ranks
when a check reads them). Non-finite losses are counted,
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

__all__ = ["LossBuffer", "LossWindow"]

WINDOW_STATES = ("total", "count", "seen", "first_nonfinite")


class LossWindow:
    """Sum and count of the finite per-step losses since the last reset, on the device.

    ``update`` takes a 1-D tensor of per-step losses and never synchronises with the host.
    :meth:`totals` sums the window over ranks when a process group is running (one
    all-gather of four numbers).
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=self.dtype, device=self.device)  # total, finite count, seen
        self.first_nonfinite = torch.full((1,), math.inf, dtype=self.dtype, device=self.device)

    def to(self, device: torch.device | str) -> LossWindow:
        self.device = torch.device(device)
        self.sums = self.sums.to(self.device)
        self.first_nonfinite = self.first_nonfinite.to(self.device)
        return self

    def update(self, losses: Tensor) -> None:
        losses = losses.detach().reshape(-1).to(self.dtype)
        finite = torch.isfinite(losses)
        index = self.sums[2] + torch.arange(losses.numel(), device=losses.device, dtype=losses.dtype)
        self.first_nonfinite = torch.minimum(self.first_nonfinite, torch.where(finite, math.inf, index).min())
        added = torch.stack([torch.where(finite, losses, 0.0).sum(), finite.sum().to(self.dtype)])
        self.sums[:2] += added
        self.sums[2] += losses.numel()

    def totals(self) -> Tensor:
        """(sum, finite count, seen, first non-finite index), summed over ranks; still on the device."""
        local = torch.cat([self.sums, self.first_nonfinite])
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return local
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)  # one collective; summed and minimised here
        every = torch.stack(gathered)
        return torch.cat([every[:, :3].sum(0), every[:, 3:].min(0).values])

    def state_floats(self) -> dict[str, float]:
        """The rank-local sums as host floats (a host sync: call at a check or a save only)."""
        values = torch.cat([self.sums, self.first_nonfinite]).tolist()
        return dict(zip(WINDOW_STATES, values))

    def load_floats(self, saved: dict[str, Any]) -> None:
        """Restore sums saved by :meth:`state_floats`."""
        values = [float(saved[k]) for k in WINDOW_STATES]
        self.sums = torch.tensor(values[:3], dtype=self.dtype, device=self.device)
        self.first_nonfinite = torch.tensor(values[3:], dtype=self.dtype, device=self.device)


class LossBuffer:
    """Per-step losses written into a preallocated device buffer: one small copy per step.

    Folded into a :class:`LossWindow` when full and at every check (no host sync either way).
    """

    def __init__(self, window: LossWindow, capacity: int) -> None:
        self.window = window
        self.capacity = max(1, capacity)
        self._buffer = torch.empty(self.capacity, dtype=window.dtype, device=window.device)
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

    def clear(self) -> None:
        """Drop the losses not folded into the window yet."""
        self._size = 0
