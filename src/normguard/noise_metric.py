"""The noise-floor estimate as a ``torchmetrics.Metric`` (for Lightning's ``validation_step``).

This module imports torchmetrics (installed with Lightning); ``import normguard`` does not load it.

Usage in a ``LightningModule``::

    self.floor_metric = NoiseFloorMetric()          # in __init__: a child module, moved to the device
    self.floor_metric.update(logits, y)             # in validation_step: the one line

At the end of validation, ``self.floor_metric.estimate()`` gathers the states of every process
(DDP: a collective call, run it on every rank) and returns a
:class:`~normguard.noise_floor.FloorEstimate` of plain floats. ``compute()`` returns the same
numbers as a dict of 0-d CPU float64 tensors ``{"value", "low", "high", "n"}`` (torchmetrics
cannot carry the frozen dataclass through its ``compute`` wrapper), so
``self.log_dict(self.floor_metric.compute())`` works too; ``estimate()`` reuses a cached
``compute()``. Call ``reset()`` after reading it. Calling the metric (``forward``) only updates
it and returns None: the estimate needs the whole validation set, so there is no per-batch value.

Example:
    >>> import torch
    >>> metric = NoiseFloorMetric()
    >>> metric.update(5.0 * torch.eye(4), torch.arange(4))
    >>> metric.estimate()
    FloorEstimate(value=0.0, low=0.0, high=0.0, n=4, kind='classification')
    >>> sorted(metric.compute())
    ['high', 'low', 'n', 'value']
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from normguard.noise_floor import (
    FloorEstimate,
    Task,
    _as_tensor,
    _check_options,
    _estimate,
    _flatten,
    _gather_to_host,
    _infer_task,
)

__all__ = ["NoiseFloorMetric"]


class NoiseFloorMetric(Metric):
    """Estimated noise floor from validation outputs and targets (see :func:`normguard.estimate_noise_floor`).

    States are lists of the batches' outputs and targets, concatenated across processes
    (``dist_reduce_fx="cat"``): they stay on the device until :meth:`compute`, which moves
    them to the host once. :meth:`estimate` returns the result as a
    :class:`~normguard.noise_floor.FloorEstimate`, :meth:`compute` as a dict of tensors.

    Args:
        task, confidence, num_bootstrap, seed: as in :func:`normguard.estimate_noise_floor`.
        **kwargs: passed to ``torchmetrics.Metric``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    outputs: list[torch.Tensor]
    targets: list[torch.Tensor]

    def __init__(
        self,
        *,
        task: Task | None = None,
        confidence: float = 0.95,
        num_bootstrap: int = 200,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_options(confidence, num_bootstrap)
        if task is not None and task not in ("classification", "regression"):
            raise ValueError(f"Expected argument `task` to be None, 'classification' or 'regression' but got {task!r}.")
        self.task: Task | None = task
        self.confidence = confidence
        self.num_bootstrap = int(num_bootstrap)
        self.seed = seed
        self._kind: str | None = None
        self.add_state("outputs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep one batch (detached; checked by dtype and shape only: no host sync)."""
        outputs_t, targets_t = _as_tensor(outputs, "outputs"), _as_tensor(targets, "targets")
        kind = _infer_task(outputs_t, targets_t, self.task)
        outputs_t, targets_t = _flatten(outputs_t, targets_t, kind)
        self.outputs.append(outputs_t)
        self.targets.append(targets_t)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Update only: the estimate needs the whole validation set (no per-batch value)."""
        self.update(*args, **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        """The estimate over every batch of every process since the last ``reset()``, as 0-d tensors.

        Keys ``value``, ``low``, ``high`` (float64) and ``n`` (int64), on the CPU.
        """
        if isinstance(self.outputs, list) and not self.outputs:  # after a sync the states are tensors
            raise RuntimeError("NoiseFloorMetric.compute() needs at least one update() since the last reset().")
        outputs, targets = dim_zero_cat(self.outputs), dim_zero_cat(self.targets)
        kind = _infer_task(outputs, targets, self.task)
        host_outputs, host_targets = _gather_to_host([outputs], [targets])
        est = _estimate(host_outputs, host_targets, kind, self.confidence, self.num_bootstrap, self.seed)
        self._kind = est.kind
        return {
            "value": torch.tensor(est.value, dtype=torch.float64),
            "low": torch.tensor(est.low, dtype=torch.float64),
            "high": torch.tensor(est.high, dtype=torch.float64),
            "n": torch.tensor(est.n, dtype=torch.int64),
        }

    @property
    def kind(self) -> str | None:
        """``"classification"`` or ``"regression"``: the task of the last :meth:`compute` (None before one)."""
        return self._kind

    def estimate(self) -> FloorEstimate:
        """:meth:`compute` as a :class:`~normguard.noise_floor.FloorEstimate` of plain floats."""
        result = self.compute()
        return FloorEstimate(
            value=float(result["value"]),
            low=float(result["low"]),
            high=float(result["high"]),
            n=int(result["n"]),
            kind=self._kind or (self.task or "classification"),
        )
