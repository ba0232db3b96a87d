"""NormGuard: the plain-PyTorch front door.

Call :meth:`NormGuard.step` after ``optimizer.step()`` with the batch's loss (a tensor is
accumulated on the device, no host sync), and :meth:`NormGuard.validation_end` with the
validation loss when you validate. Every ``every_n_steps`` steps the guard makes a check:
one fused norm pass and one device→host transfer; other steps touch only the device.

Logged keys: the tag scheme of :mod:`normguard.tags` (norm, losses with the noise floor, gap,
growth rates, per-layer norms, conditions and events), written under ``log_dir`` at checks.

Cost: a check reads every measured weight once (bandwidth-bound, like one
``vector_norm`` over all weights). Memory: nothing beyond a few scalars unless
``track_init_distance``/``track_update_size`` (one copy of the weights each) or a
restore-best action (one copy of the model state, on the CPU by default) ask for it.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with ng.NormGuard(model, opt, every_n_steps=2) as guard:
    ...     for _ in range(4):
    ...         loss = model(torch.randn(8, 4)).pow(2).mean()
    ...         opt.zero_grad(); loss.backward(); opt.step()
    ...         _ = guard.step(loss)
    >>> len(guard.verdicts), guard.should_stop
    (2, False)
"""

from __future__ import annotations

import warnings
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from normguard.detector import Verdict
from normguard.doors import (
    DoorResults,
    as_loss_tensor,
    as_scalar,
    check_interval,
    is_logging_rank,
    run_check,
    unwrap_optimizer,
)
from normguard.monitor import Monitor
from normguard.options import GuardOptions, takes_options
from normguard.sinks import SummaryWriterSink

__all__ = ["NormGuard", "as_loss_tensor", "unwrap_optimizer"]  # the two helpers: re-exported from doors


class NormGuard(DoorResults):
    """Watch weight norms in a custom training loop and act on the near-interpolation signature.

    Args:
        model: the model being trained.
        optimizer: its optimizer (or ``None`` to only observe; actions that change weight
            decay need it). It must hold parameters of ``model``. Wrappers (accelerate's
            ``AcceleratedOptimizer``) are unwrapped.
        log_dir: TensorBoard directory (``None``: no files; events still go to logging).
        every_n_steps: optimizer steps between checks (the same meaning in every front door).
        attach: register an optimizer step post-hook that counts steps, so the loop only
            reports losses with :meth:`report_loss`.
        **options: the options of :class:`~normguard.options.GuardOptions` (``help()`` lists
            them with their defaults); another name raises ``TypeError``.
    """

    @takes_options
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        log_dir: str | None = None,
        every_n_steps: int = 50,
        *,
        attach: bool = False,
        **options: Any,
    ) -> None:
        every_n_steps = check_interval("every_n_steps", every_n_steps)
        self.options = GuardOptions.from_kwargs("NormGuard", options, every_n_steps=every_n_steps)
        if optimizer is not None:
            optimizer = unwrap_optimizer(optimizer)
            if not isinstance(optimizer, torch.optim.Optimizer):
                got = type(optimizer).__name__
                raise TypeError(f"Expected argument `optimizer` to be a torch.optim.Optimizer or None but got {got}.")
        if log_dir is not None and not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
            raise TypeError(f"Expected argument `log_dir` to be a path or None but got {type(log_dir).__name__}.")
        logging_rank = is_logging_rank()
        self.monitor: Monitor = Monitor(
            model, [optimizer] if optimizer is not None else [], self.options, is_logging_rank=logging_rank
        )
        if log_dir is not None and logging_rank:
            self.monitor.sinks.append(SummaryWriterSink(str(log_dir)))
        self.model = model
        self.optimizer = optimizer
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.global_step = 0
        self._hook: Any = None
        self._closed = False
        if attach:
            self.attach()

    # ------------------------------------------------------------------ loop events
    def step(self, loss: Tensor | float | None = None) -> Verdict | None:
        """Count one optimizer step and record its loss; check every ``every_n_steps``.

        Returns the verdict at a check step, else ``None``.
        """
        if self._hook is not None:
            raise RuntimeError(
                "This NormGuard is attached to the optimizer: call `report_loss(loss)` instead of `step`."
            )
        if loss is not None:
            self.report_loss(loss)
        return self._advance()

    def report_loss(self, loss: Tensor | float) -> None:
        """Record a training loss without counting a step (no host sync)."""
        self._check_open()
        self.monitor.accumulate_loss(as_loss_tensor("loss", loss))

    def _advance(self) -> Verdict | None:
        self._check_open()
        self.global_step += 1
        if self.global_step % self.every_n_steps == 0:
            return self.monitor.check(self.global_step)
        return None

    def validation_end(
        self,
        val_loss: Tensor | float,
        val_metric: Tensor | float | None = None,
        *,
        noise_estimate: Any = None,
        metric: Tensor | float | None = None,
    ) -> Verdict:
        """Report the validation loss (and the ``monitor`` metric): a check and a decision now.

        ``val_loss`` and ``val_metric`` are scalars (tensors, numpy or Python numbers).
        ``noise_estimate``: with ``noise_floor="estimate"``, a
        :class:`~normguard.noise_floor.NoiseFloorEstimator` fed during this validation (read with
        ``compute()``, then ``reset()``) or a :class:`~normguard.noise_floor.FloorEstimate`.
        ``metric=`` is the old name of ``val_metric`` (a ``FutureWarning``).
        """
        self._check_open()
        if metric is not None:
            warnings.warn(
                "NormGuard.validation_end(metric=...) is renamed `val_metric`; `metric` will be removed.",
                FutureWarning,
                stacklevel=2,
            )
            if val_metric is not None:
                raise TypeError("NormGuard.validation_end() got both `val_metric` and its old name `metric`.")
            val_metric = metric
        value = as_scalar("val_loss", val_loss)
        if self.options.monitor is not None and val_metric is None:
            raise ValueError(
                f"Expected argument `val_metric` (the value of {self.options.monitor!r}, named by `monitor=`) "
                "but got None."
            )
        if val_metric is not None:
            if self.options.monitor is None:
                raise ValueError("Expected `monitor=` (the metric's name) at construction to pass `val_metric`.")
            val_metric = as_scalar("val_metric", val_metric)
        estimate = _floor_estimate(noise_estimate)
        return run_check(self.monitor, self.global_step, value, val_metric, estimate)

    def attach(self) -> None:
        """Count steps from the optimizer's step post-hook; report losses with :meth:`report_loss`."""
        if self.optimizer is None:
            raise ValueError("Expected an optimizer to attach to but this NormGuard has none.")
        if self._hook is None:

            def count_step(*_: Any) -> None:
                self._advance()

            self._hook = self.optimizer.register_step_post_hook(count_step)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This NormGuard is closed: build a new one for another run.")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, **self.monitor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; a state of another model or garbage raises ``StateError``."""
        self.monitor.check_state(state)
        self.global_step = int(state.get("global_step", 0))
        self.monitor.load_state_dict(state)

    def close(self, *, training_completed: bool = True) -> None:
        """End of training: actions that restore at the end do so (unless the loop failed,
        ``training_completed=False``); files are flushed and closed."""
        if self._closed:
            return
        self.detach()
        if training_completed:
            self.monitor.end_of_training(self.global_step)
        self.monitor.close()
        self._closed = True

    def __enter__(self) -> NormGuard:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(training_completed=exc_type is None)

    def __getstate__(self) -> NoReturn:
        raise TypeError(
            "A NormGuard cannot be pickled (it holds hooks and a TensorBoard writer): save `guard.state_dict()` "
            "and call `load_state_dict` on a new NormGuard built for the same model."
        )

    def __repr__(self) -> str:
        return f"NormGuard(every_n_steps={self.every_n_steps}, step={self.global_step}, events={len(self.events)})"


def _floor_estimate(noise_estimate: Any) -> Any:
    """A ``FloorEstimate`` from ``validation_end(noise_estimate=...)``: an estimator is computed, then reset."""
    if noise_estimate is None:
        return None
    compute = getattr(noise_estimate, "compute", None)
    if callable(compute) and callable(getattr(noise_estimate, "reset", None)):
        estimate = compute()
        noise_estimate.reset()
        return estimate
    if all(hasattr(noise_estimate, k) for k in ("value", "low", "high")):
        return noise_estimate
    raise TypeError(
        "Expected argument `noise_estimate` to be a NoiseFloorEstimator or a FloorEstimate but got "
        f"{type(noise_estimate).__name__}."
    )
