"""The core both front doors share: losses on the device, one transfer per check, the
detector, the actions and the sinks. :class:`~normguard.guard.NormGuard` and
:class:`~normguard.lightning.NormGuardCallback` only translate loop events into calls here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from normguard import tensorboard as tags
from normguard.actions import ActionContext, resolve_action
from normguard.events import Event, EventKind
from normguard.norms import HostSnapshot, NormEngine
from normguard.detector import NearInterpolationDetector, Verdict

log = logging.getLogger("normguard")

__all__ = ["BestWeights", "LossWindow", "Monitor"]

STATE_VERSION = 1


_WINDOW_STATES = ("total", "count", "seen", "first_nonfinite")


class LossWindow(Metric):
    """Sum and count of the finite per-step losses since the last reset, kept on the device.

    A torchmetrics ``Metric`` (so it syncs across ranks at ``compute``); ``update`` takes a
    1-D tensor of per-step losses. Non-finite losses are counted, not summed, and the
    position of the first one is kept. ``update`` never synchronises with the host.
    (``MeanMetric`` does not fit: its only sync-free NaN mode also drops the weights
    needed to skip a value.)

    Example:
        >>> w = LossWindow()
        >>> w.update(torch.tensor([1.0, float("nan"), 3.0]))
        >>> w.compute().tolist()  # sum, finite count, updates, index of the first non-finite
        [4.0, 2.0, 3.0, 1.0]
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


class BestWeights:
    """A copy of the model's state at its best validation loss (on ``device``, CPU by default).

    Costs one copy of the parameters and buffers, held in host memory by default; every
    improvement copies the state device→host (at a validation boundary).
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.value = math.inf
        self.step: int | None = None
        self.state: dict[str, Tensor] | None = None

    def offer(self, model: nn.Module, value: float, step: int) -> bool:
        if not value < self.value:
            return False
        self.value, self.step = float(value), int(step)
        self.state = {k: v.detach().to(self.device, copy=True) for k, v in model.state_dict().items()}
        return True

    def restore(self, model: nn.Module) -> bool:
        if self.state is None:
            return False
        with torch.no_grad():
            model.load_state_dict(self.state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state.get("value", math.inf))
        self.step = state.get("step")
        self.state = state.get("state")


def check_options(
    interval_name: str,
    interval: Any,
    detector: NearInterpolationDetector | None,
    noise_floor: Any,
    patience: Any,
    offload: Any,
) -> None:
    """The argument checks both front doors make at construction, before any model is seen."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        raise ValueError(f"Expected argument `{interval_name}` to be a positive integer but got {interval!r}.")
    if detector is not None and (noise_floor is not None or patience != 3):
        raise ValueError("Expected either argument `detector` or `noise_floor`/`patience`, not both.")
    if offload not in ("cpu", "device"):
        raise ValueError(f"Expected argument `offload` to be 'cpu' or 'device' but got {offload!r}.")


class Monitor:
    """Front-door-independent core. See :class:`normguard.NormGuard` for the options."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer] = (),
        *,
        every_n_steps: int = 50,
        noise_floor: float | str | None = None,
        action: Any = None,
        patience: int = 3,
        detector: NearInterpolationDetector | None = None,
        include_frozen: bool = False,
        track_init_distance: bool = False,
        track_update_size: bool = False,
        offload: str = "device",
        log_layers: bool = True,
        best_weights_device: str | torch.device = "cpu",
        sinks: Sequence[tags.Sink] = (),
        is_logging_rank: bool = True,
    ) -> None:
        check_options("every_n_steps", every_n_steps, detector, noise_floor, patience, offload)
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected argument `model` to be a torch.nn.Module but got {type(model).__name__}.")
        self.model = model
        self.optimizers = list(optimizers)
        self.every_n_steps = every_n_steps
        self.engine = NormEngine(
            model,
            include_frozen=include_frozen,
            track_init_distance=track_init_distance,
            track_update_size=track_update_size,
            offload=offload,
        )
        self._check_optimizers()
        self.detector = detector or NearInterpolationDetector(noise_floor=noise_floor, patience=patience)
        self.action = resolve_action(action)
        bind = getattr(self.action, "bind", None)
        if bind is not None:
            bind(self.optimizers)
        self.best = BestWeights(best_weights_device) if getattr(self.action, "needs_best_weights", False) else None
        self.log_layers = log_layers
        self.sinks = list(sinks)
        self.is_logging_rank = is_logging_rank
        self.events: list[Event] = []
        self._pending_text: dict[int, list[str]] = {}
        self.verdicts: list[Verdict] = []
        self.should_stop = False
        self.stop_reason: str | None = None
        self.last_host: HostSnapshot | None = None
        # on the weights' device from the start, so the first loss needs no transfer; float64
        # sums where the device has them (MPS has not)
        device = self.engine.device
        self._window = LossWindow().to(device).set_dtype(torch.float32 if device.type == "mps" else torch.float64)
        self._losses = LossBuffer(self._window, capacity=min(every_n_steps, 1024))
        self._val_sum = 0.0  # finite training losses since the last validation (host, from checks)
        self._val_count = 0.0
        self._window_start = 0
        self._best_train = math.inf
        self._diverging = False
        self._stop_requested: Callable[[str], None] | None = None

    def _check_optimizers(self) -> None:
        if not self.optimizers:
            return
        measured = {id(p) for p in self.engine.parameters()}
        for k, opt in enumerate(self.optimizers):
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(
                    f"Expected argument `optimizer` to be a torch.optim.Optimizer but got {type(opt).__name__}."
                )
            held = [p for g in opt.param_groups for p in g["params"]]
            if held and not any(id(p) in measured for p in held):
                raise ValueError(
                    f"Expected optimizer {k} ({type(opt).__name__}) to hold parameters of the model, but it holds "
                    "none of the measured ones: was it built for another model?"
                )
        # parameters the optimizer holds but the model does not own are measured too
        self.engine.optimizer = self.optimizers[0] if len(self.optimizers) == 1 else None

    # ---------------------------------------------------------------- per step (hot path)
    def accumulate_loss(self, loss: Tensor | float) -> None:
        """Add one training loss to the running windows; no host synchronisation."""
        if not isinstance(loss, Tensor):
            loss = torch.tensor(float(loss))
        self._losses.add(loss)

    # ---------------------------------------------------------------- per check
    def check(self, step: int, val_loss: Tensor | float | None = None) -> Verdict:
        """One check: norms, losses and (if given) the validation loss in one transfer."""
        snapshot = self.engine.compute()
        self._losses.fold()
        extras = [self._window.compute() if self._window.update_count else torch.tensor([0.0, 0.0, 0.0, math.inf])]
        if val_loss is not None:
            extras.append(torch.as_tensor(val_loss).detach().reshape(1))
        host, values = snapshot.to_host(*extras)  # the one device→host transfer of this check
        self.last_host = host
        total, count, seen, first_bad = values[:4]
        nonfinite = seen - count
        train_loss = total / count if count > 0 else None
        self._val_sum += total
        self._val_count += count
        val = train_for_val = None
        if val_loss is not None:
            val = values[4]
            train_for_val = self._val_sum / self._val_count if self._val_count > 0 else None
            self._val_sum = self._val_count = 0.0
        self._report_nonfinite(step, host, nonfinite, first_bad)
        self._watch_divergence(step, train_loss)
        if val is not None and self.best is not None and math.isfinite(val):
            self.best.offer(self.model, val, step)
        verdict = self.detector.update(
            step,
            total_norm=host.total,
            layer_norms=host.layer_norms,
            train_loss=train_for_val if val is not None else train_loss,
            val_loss=val if val is not None and math.isfinite(val) else None,
        )
        if val is not None and not math.isfinite(val):
            log.warning("normguard: non-finite validation loss %s at step %d ignored", val, step)
        self.verdicts.append(verdict)
        if verdict.fired:
            self.emit(Event(step, EventKind.DETECTOR_FIRED, verdict.describe(), _verdict_data(verdict)))
        if verdict.active:
            self.action(verdict, self._context(step))
        self._log_check(step, host, train_loss, val, train_for_val, verdict)
        self._write_event_text()
        self._window.reset()
        self._window_start = step
        return verdict

    def _report_nonfinite(self, step: int, host: HostSnapshot, nonfinite: float, first_bad: float) -> None:
        if nonfinite > 0:
            first_step = self._window_start + int(first_bad) + 1
            self.emit(
                Event(
                    step,
                    EventKind.NONFINITE_LOSS,
                    f"{int(nonfinite)} non-finite training loss(es) since step {self._window_start}, "
                    f"first at step {first_step}; left out of the mean",
                    {"count": int(nonfinite), "first_step": first_step},
                )
            )
        if host.nonfinite_layers:
            shown = ", ".join(host.nonfinite_layers[:10])
            self.emit(
                Event(
                    step,
                    EventKind.NONFINITE_WEIGHTS,
                    f"non-finite weights in {len(host.nonfinite_layers)} layer(s): {shown}",
                    {"layers": list(host.nonfinite_layers)},
                )
            )

    def _watch_divergence(self, step: int, train_loss: float | None) -> None:
        if train_loss is None:
            return
        if train_loss > 10.0 * self._best_train and train_loss - self._best_train > 1e-8 and not self._diverging:
            self._diverging = True
            self.emit(
                Event(
                    step,
                    EventKind.DIVERGING_LOSS,
                    f"training loss {train_loss:.4g} is over 10x its best so far ({self._best_train:.4g})",
                    {"train_loss": train_loss, "best": self._best_train},
                )
            )
        elif train_loss <= 2.0 * self._best_train:
            self._diverging = False
        self._best_train = min(self._best_train, train_loss)

    def _context(self, step: int) -> ActionContext:
        return ActionContext(
            step=step,
            optimizers=self.optimizers,
            emit=self.emit,
            request_stop=lambda reason: self.request_stop(step, reason),
            restore_best=lambda: self.restore_best(step),
        )

    def request_stop(self, step: int, reason: str) -> None:
        if self.should_stop:
            return
        self.should_stop = True
        self.stop_reason = reason
        self.emit(Event(step, EventKind.STOP, f"stopping: {reason}"))

    def restore_best(self, step: int) -> bool:
        if self.best is None or self.best.state is None:
            self.emit(Event(step, EventKind.RESTORE_SKIPPED, "no validation loss seen yet: nothing to restore"))
            return False
        self.best.restore(self.model)
        self.emit(
            Event(
                step,
                EventKind.RESTORE,
                f"restored the weights of step {self.best.step} (validation loss {self.best.value:.4g})",
                {"best_step": self.best.step, "best_val_loss": self.best.value},
            )
        )
        return True

    # ---------------------------------------------------------------- sinks
    def emit(self, event: Event) -> None:
        self.events.append(event)
        level = logging.INFO if event.kind in (EventKind.WEIGHT_DECAY_CHANGED, EventKind.RESTORE) else logging.WARNING
        log.log(level, "normguard: %s", event.line())
        if self.is_logging_rank:
            for sink in self.sinks:
                sink.scalars(event.step, {tags.event_tag(event.kind.value): 1.0})
            self._pending_text.setdefault(event.step, []).append(event.line())

    def _write_event_text(self) -> None:
        """One text entry per step with all its event lines (TensorBoard keeps one per step and tag)."""
        for step, lines in self._pending_text.items():
            for sink in self.sinks:
                sink.text(step, tags.EVENTS_TEXT, "\n\n".join(lines))
        self._pending_text.clear()

    def _log_check(
        self,
        step: int,
        host: HostSnapshot,
        train_loss: float | None,
        val: float | None,
        train_for_val: float | None,
        verdict: Verdict,
    ) -> None:
        if not self.is_logging_rank or not self.sinks:
            return
        values: dict[str, float] = {tags.TOTAL_NORM: host.total}
        if self.log_layers:
            values.update({tags.layer_tag(k): v for k, v in host.layer_norms.items()})
            for kind, data in (
                (tags.LAYER_INIT_DISTANCE, host.init_distance),
                (tags.LAYER_UPDATE_SIZE, host.update_size),
            ):
                values.update({tags.layer_tag(k, kind): v for k, v in (data or {}).items()})
        optional = {
            tags.TRAIN_LOSS: train_loss,
            tags.GROWTH_EXPONENT: verdict.growth_exponent,
            tags.RELATIVE_GROWTH: verdict.relative_growth,
            tags.NOISE_FLOOR: verdict.noise_floor,
            tags.VAL_LOSS: val,
        }
        if val is not None and train_for_val is not None:
            optional[tags.GAP] = verdict.gap
            optional[tags.GAP_TREND] = verdict.gap_trend
        values.update({k: v for k, v in optional.items() if v is not None})
        if verdict.decided:
            values.update({tags.condition_tag(k): float(v) for k, v in verdict.conditions.items() if v is not None})
            values[tags.condition_tag("streak")] = float(verdict.streak)
        for k, opt in enumerate(self.optimizers):
            for i, group in enumerate(opt.param_groups):
                if "weight_decay" in group:
                    suffix = f"group_{i}" if len(self.optimizers) == 1 else f"opt_{k}_group_{i}"
                    values[f"{tags.WEIGHT_DECAY}/{suffix}"] = float(group["weight_decay"])
        for sink in self.sinks:
            sink.scalars(step, values)

    def flush(self) -> None:
        self._write_event_text()
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        self._write_event_text()
        for sink in self.sinks:
            sink.close()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "detector": self.detector.state_dict(),
            "action": getattr(self.action, "state_dict", dict)(),
            "events": [e.to_dict() for e in self.events],
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "best": None if self.best is None else self.best.state_dict(),
            "best_train": self._best_train,
            "window_start": self._window_start,
            "val_sum": self._val_sum,
            "val_count": self._val_count,
            "loss_window": self._loss_window_state(),
        }

    def _loss_window_state(self) -> dict[str, Any] | None:
        """The losses seen since the last check (rank-local, so saved only with one rank)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return None
        self._losses.fold()
        state: dict[str, Any] = {k: float(getattr(self._window, k)) for k in _WINDOW_STATES}
        state["update_count"] = int(self._window.update_count)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state.get("detector", {}))
        load = getattr(self.action, "load_state_dict", None)
        if load is not None:
            load(state.get("action", {}))
        self.events = [Event.from_dict(e) for e in state.get("events", [])]
        self.should_stop = bool(state.get("should_stop", False))
        self.stop_reason = state.get("stop_reason")
        if self.best is not None and state.get("best"):
            self.best.load_state_dict(state["best"])
        self._best_train = float(state.get("best_train", math.inf))
        self._window_start = int(state.get("window_start", 0))
        self._val_sum = float(state.get("val_sum", 0.0))
        self._val_count = float(state.get("val_count", 0.0))
        saved = state.get("loss_window")
        self._window.reset()
        if saved:
            for k in _WINDOW_STATES:
                current = getattr(self._window, k)
                setattr(self._window, k, torch.tensor(float(saved[k]), dtype=current.dtype, device=current.device))
            self._window._update_count = int(saved.get("update_count", 0))


def _verdict_data(verdict: Verdict) -> dict[str, Any]:
    return {
        "conditions": dict(verdict.conditions),
        "growth_exponent": verdict.growth_exponent,
        "gap": verdict.gap,
        "noise_floor": verdict.noise_floor,
        "train_loss": verdict.train_loss,
        "top_layers": [list(x) for x in verdict.top_layers],
    }
