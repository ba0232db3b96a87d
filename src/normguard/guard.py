"""NormGuard: the plain-PyTorch front door.

Call :meth:`NormGuard.step` after ``optimizer.step()`` with the batch's loss (a tensor is
accumulated on the device, no host sync), and :meth:`NormGuard.validation_end` with the
validation loss when you validate. Every ``every_n_steps`` steps the guard makes a check:
one fused norm pass and one device→host transfer; other steps touch only the device.

Logged keys (TensorBoard, under ``log_dir``; see :mod:`normguard.tensorboard`):

====================================  =========================================
``normguard/norm/total``              total ℓ2 weight norm, every check
``normguard/layer_norm/<layer>``      per-layer ℓ2 norms, every check
``normguard/norm/growth_exponent``    d log‖w‖ / d log(step), once 3 checks exist
``normguard/loss/train``              mean training loss since the previous check
``normguard/loss/val``, ``gap/*``     at each validation
``normguard/condition/*``             the detector's conditions at each decision
``normguard/event/*`` + text          events (fired, weight decay, stop, restore, NaN)
====================================  =========================================

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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from normguard.events import Event
from normguard.monitor import Monitor
from normguard.detector import NearInterpolationDetector, Verdict
from normguard.tensorboard import Sink, SummaryWriterSink

__all__ = ["NormGuard"]


def _is_logging_rank() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class NormGuard:
    """Watch weight norms in a custom training loop and act on the near-interpolation signature.

    Args:
        model: the model being trained.
        optimizer: its optimizer (or ``None`` to only observe; actions that change weight
            decay need it). It must hold parameters of ``model``.
        log_dir: TensorBoard directory (``None``: no files; events still go to logging).
        every_n_steps: steps between checks.
        noise_floor: σ̂² for the detector: a float, ``"auto"`` or ``None`` (see
            :mod:`normguard.detector`).
        action: ``"warn"`` (default), ``"weight_decay"``, ``"stop"``, ``"stop_no_restore"``,
            an action object, a callable ``fn(verdict, context)``, or a list (escalation).
        patience: decisions the signature must persist before firing.
        detector: a configured :class:`~normguard.detector.NearInterpolationDetector`
            (instead of ``noise_floor``/``patience``).
        attach: register an optimizer step post-hook that counts steps, so the loop only
            reports losses with :meth:`report_loss`.
        include_frozen, track_init_distance, track_update_size, offload: norm engine
            options (:class:`~normguard.norms.NormEngine`).
        log_layers: write per-layer norms (one tag per layer).
        sinks: extra sinks (objects with ``scalars``, ``text``, ``flush``, ``close``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        log_dir: str | None = None,
        every_n_steps: int = 50,
        *,
        noise_floor: float | str | None = None,
        action: Any = None,
        patience: int = 3,
        detector: NearInterpolationDetector | None = None,
        attach: bool = False,
        include_frozen: bool = False,
        track_init_distance: bool = False,
        track_update_size: bool = False,
        offload: str = "device",
        log_layers: bool = True,
        sinks: Sequence[Sink] = (),
    ) -> None:
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            got = type(optimizer).__name__
            raise TypeError(f"Expected argument `optimizer` to be a torch.optim.Optimizer or None but got {got}.")
        if log_dir is not None and not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
            raise TypeError(f"Expected argument `log_dir` to be a path or None but got {type(log_dir).__name__}.")
        logging_rank = _is_logging_rank()
        self.monitor = Monitor(
            model,
            [optimizer] if optimizer is not None else [],
            every_n_steps=every_n_steps,
            noise_floor=noise_floor,
            action=action,
            patience=patience,
            detector=detector,
            include_frozen=include_frozen,
            track_init_distance=track_init_distance,
            track_update_size=track_update_size,
            offload=offload,
            log_layers=log_layers,
            sinks=sinks,
            is_logging_rank=logging_rank,
        )
        if log_dir is not None and logging_rank:
            self.monitor.sinks.append(SummaryWriterSink(str(log_dir)))
        self.model = model
        self.optimizer = optimizer
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.global_step = 0
        self._hook = None
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
        if isinstance(loss, Tensor):
            self.monitor.accumulate_loss(loss)
        elif isinstance(loss, (int, float)) and not isinstance(loss, bool):
            self.monitor.accumulate_loss(torch.tensor(float(loss)))
        else:
            raise TypeError(f"Expected argument `loss` to be a tensor or a float but got {type(loss).__name__}.")

    def _advance(self) -> Verdict | None:
        self.global_step += 1
        if self.global_step % self.every_n_steps == 0:
            return self.monitor.check(self.global_step)
        return None

    def validation_end(self, val_loss: Tensor | float) -> Verdict:
        """Report the validation loss: makes a check and a detector decision now."""
        if isinstance(val_loss, bool) or not isinstance(val_loss, (Tensor, int, float)):
            raise TypeError(
                f"Expected argument `val_loss` to be a tensor or a float but got {type(val_loss).__name__}."
            )
        if isinstance(val_loss, Tensor) and val_loss.numel() != 1:
            raise ValueError(f"Expected argument `val_loss` to be a scalar but got shape {tuple(val_loss.shape)}.")
        return self.monitor.check(self.global_step, val_loss=val_loss)

    def attach(self) -> None:
        """Count steps from the optimizer's step post-hook; report losses with :meth:`report_loss`."""
        if self.optimizer is None:
            raise ValueError("Expected an optimizer to attach to but this NormGuard has none.")
        if self._hook is None:
            self._hook = self.optimizer.register_step_post_hook(lambda *_: self._advance())

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ------------------------------------------------------------------ results
    @property
    def should_stop(self) -> bool:
        return self.monitor.should_stop

    @property
    def events(self) -> list[Event]:
        return self.monitor.events

    @property
    def verdicts(self) -> list[Verdict]:
        return self.monitor.verdicts

    @property
    def detector(self) -> NearInterpolationDetector:
        return self.monitor.detector

    def last_norms(self) -> dict[str, float]:
        """Per-layer norms of the latest check (host floats), plus ``"total"``."""
        host = self.monitor.last_host
        if host is None:
            return {}
        return {**host.layer_norms, "total": host.total}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, **self.monitor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state.get("global_step", 0))
        self.monitor.load_state_dict(state)

    def close(self) -> None:
        self.detach()
        self.monitor.close()

    def __enter__(self) -> NormGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NormGuard(every_n_steps={self.every_n_steps}, step={self.global_step}, events={len(self.events)})"
