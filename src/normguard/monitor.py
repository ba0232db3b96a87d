"""The core every front door shares: compute → one transfer → watch → detect → act → sink.

:class:`~normguard.guard.NormGuard`, :class:`~normguard.lightning.NormGuardCallback` and
:class:`~normguard.transformers.NormGuardTrainerCallback` only translate their loop's
events into :meth:`Monitor.accumulate_loss` (every step, on the device) and
:meth:`Monitor.check` (at a check: norms and losses, one device→host transfer), and read
the results through :class:`GuardResults`. Policy lives here: what a check logs, when the
action runs, restoring before a stop another rank asked for, what a checkpoint holds and
which saved state this model accepts.

Example:
    >>> import torch
    >>> from normguard.options import GuardOptions
    >>> model = torch.nn.Linear(3, 1)
    >>> monitor = Monitor(model, [], GuardOptions(every_n_steps=1))
    >>> monitor.accumulate_loss(torch.tensor(0.5))
    >>> monitor.check(step=1).reason.value
    'insufficient'
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normguard import tags
from normguard.actions import ActionContext
from normguard.best import BestWeights, model_fingerprint, rekey_state
from normguard.detector import Verdict
from normguard.events import Event, EventKind
from normguard.losses import LossBuffer, LossWindow
from normguard.norms import HostSnapshot, NormEngine, ParamFilter, widest_float
from normguard.options import GuardOptions
from normguard.sinks import write_events
from normguard.watchers import DivergenceWatcher, NonFiniteWatcher

log = logging.getLogger("normguard")

__all__ = [
    "CLEAN_LABELS_FLOOR",
    "ENDED_WORSE_BY",
    "ESTIMATE_SPREAD",
    "STATE_VERSION",
    "GuardResults",
    "Monitor",
    "StateError",
]

STATE_VERSION = 2
_REQUIRED_KEYS = ("version", "detector", "action", "events")


#: a classification floor estimate under this many nats reads as clean labels (a floor of 0): the
#: estimator gives 0-0.04 nats on clean labels once trained (benchmarks/RESULTS_noise_floor.md);
#: 2 % symmetric noise on 10 classes has a floor of 0.13
CLEAN_LABELS_FLOOR = 0.05

#: the estimates of the last three validations must lie within this ratio of each other before a
#: controller engages on them (see :attr:`Monitor.estimate_settled`)
ESTIMATE_SPREAD = 1.15

#: a run "ended worse" when its last validation score is worse than its best by more than this
#: fraction of the best (``hold_floor`` then restores the best weights even if it never engaged)
ENDED_WORSE_BY = 0.02


def _estimate_values(estimate: Any) -> tuple[float, float, float] | None:
    """(value, low, high) of a floor estimate; None for one that failed (too few samples)."""
    value, low, high = (float(getattr(estimate, k)) for k in ("value", "low", "high"))
    if not (math.isfinite(value) and math.isfinite(low)) or math.isnan(high):
        return None
    if getattr(estimate, "kind", "classification") == "classification" and value < CLEAN_LABELS_FLOOR:
        return 0.0, 0.0, max(high, 0.0)
    return value, low, high


class StateError(ValueError):
    """A saved state that does not belong to this guard (another model, a newer version, garbage)."""


@dataclass(frozen=True)
class _Reading:
    """The host numbers of one check."""

    train_loss: float | None  # mean since the previous check
    train_for_val: float | None  # mean since the previous validation (at a validation)
    val_loss: float | None
    val_metric: float | None
    nonfinite_losses: int
    first_nonfinite: float


class Monitor:
    """Front-door-independent core; configured by one :class:`~normguard.options.GuardOptions`."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        options: GuardOptions,
        *,
        sinks: Sequence[Any] = (),
        is_logging_rank: bool = True,
        best_weights_device: str | torch.device = "cpu",
        param_filter: ParamFilter | None = None,
        defer_restore: bool = False,
    ) -> None:
        """``param_filter``: which parameters the norms measure (see
        :func:`~normguard.norms.group_parameters`; default all). ``defer_restore``: a
        restore asked for during training (a stop) is applied at :meth:`end_of_training`,
        for loops that save a checkpoint after the decision (Hugging Face's ``Trainer``)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected argument `model` to be a torch.nn.Module but got {type(model).__name__}.")
        self.model = model
        self.options = options
        self.optimizers = list(optimizers)
        self.detector = options.build_detector()  # this guard's own copy: nothing shared with another guard
        self.engine = NormEngine(
            model,
            include_frozen=options.include_frozen,
            track_init_distance=options.track_init_distance,
            track_update_size=options.track_update_size,
            offload=options.offload,
            param_filter=param_filter,
            track_drift=self.detector.needs_drift,
        )
        self.defer_restore = bool(defer_restore)
        self._check_optimizers()
        self.action = options.build_action()
        self.sinks = [*sinks, *options.sinks]
        self.is_logging_rank = is_logging_rank
        self.fingerprint = model_fingerprint(model)
        self._best_weights_device = best_weights_device
        # on the weights' device from the start, so the first loss needs no transfer; float64
        # sums where the device has them (MPS has not)
        device = self.engine.device
        self._window = LossWindow(device, widest_float(device))
        self._losses = LossBuffer(self._window, capacity=min(options.every_n_steps, 1024))
        self.action.bind(self.optimizers)
        self.start_fresh()

    def start_fresh(self) -> None:
        """Forget everything a previous run left (a new fit, not a resume)."""
        self.detector.reset()
        self.engine.forget_drift()
        self.action.reset()
        self.events: deque[Event] = deque(maxlen=self.options.max_history)
        self.verdicts: deque[Verdict] = deque(maxlen=self.options.max_history)
        self.should_stop = False
        self.stop_reason: str | None = None
        self.restore_pending = False  # a deferred restore, applied at end_of_training
        self._ending = False
        self._restore_veto: str | None = None
        self.last_host: HostSnapshot | None = None
        self.restored_norms: dict[str, float] | None = None  # measured after a restore, until the next check
        needs_best = self.action.needs_best_weights
        self.best = BestWeights(self._best_weights_device, mode=self.options.mode) if needs_best else None
        self.divergence = DivergenceWatcher()
        self._fired_while_holding = False  # the detector's firing was reported once while hold_floor acts
        self.nonfinite = NonFiniteWatcher()
        self._buffer: tuple[dict[str, float], list[Event]] = ({}, [])
        self._buffered_step: int | None = None
        self._losses.clear()
        self._window.reset()
        self._floor_interval: tuple[float, float] | None = None
        self._held_estimate: tuple[float, float, float] | None = None
        self._estimate_history: deque[float] = deque(maxlen=3)
        self._val_sum = 0.0  # finite training losses since the last validation (host, from checks)
        self._val_count = 0.0
        self._window_start = 0

    def _check_optimizers(self) -> None:
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
    def accumulate_loss(self, loss: Tensor) -> None:
        """Add one training loss (a real-valued tensor) to the window; no host synchronisation."""
        if isinstance(loss, Tensor) and loss.device.type == "meta":
            raise ValueError("Expected the training loss to hold a value but got a tensor on the 'meta' device.")
        self._losses.add(loss)

    # ---------------------------------------------------------------- per check
    def check(
        self,
        step: int,
        val_loss: Tensor | float | None = None,
        val_metric: Tensor | float | None = None,
        floor_estimate: Any = None,
    ) -> Verdict:
        """One check: compute → one transfer → watch → detect → act → sink.

        ``floor_estimate``: an estimate of the noise floor from this validation's predictions (a
        :class:`~normguard.noise_floor.FloorEstimate`) for ``noise_floor="estimate"``. The guard
        holds the lowest estimate so far (early estimates are high while the model still learns
        the signal, and they rise again once it memorises: ``benchmarks/RESULTS_noise_floor.md``),
        and a controller engages on it only once it has settled (:attr:`estimate_settled`); a
        classification estimate under :data:`CLEAN_LABELS_FLOOR` nats is read as clean labels
        (a floor of 0).
        """
        for name, value in (("val_loss", val_loss), ("val_metric", val_metric)):
            if isinstance(value, Tensor) and value.device.type == "meta":
                raise ValueError(f"Expected argument `{name}` to hold a value but got a tensor on the 'meta' device.")
        estimate = None if floor_estimate is None else _estimate_values(floor_estimate)
        host, reading = self._measure(step, val_loss, val_metric)
        self._watch(step, host, reading)
        verdict = self._detect(step, host, reading)
        if estimate is not None and reading.val_loss is not None:
            self._hold_floor_estimate(*estimate)
        self._act(step, verdict, reading)
        self._log_check(step, host, reading, verdict)
        return verdict

    def _hold_floor_estimate(self, value: float, low: float, high: float) -> None:
        setter = getattr(self.detector, "set_floor_estimate", None)
        if setter is None:
            raise ValueError("Expected a detector that takes floor estimates (noise_floor='estimate').")
        held = self._held_estimate
        if held is None or value <= held[0]:
            held = self._held_estimate = (value, low, high)
        self._estimate_history.append(value)
        setter(*held)
        self._floor_interval = (held[1], held[2])

    @property
    def estimate_settled(self) -> bool:
        """Whether the floor estimate has settled: the last three validations' estimates lie
        within 15 % of each other (early in training, or while the model jumps around at a high
        learning rate, they do not, and an estimate then is not the noise)."""
        history = self._estimate_history
        return len(history) >= 3 and max(history) <= ESTIMATE_SPREAD * min(history)

    def _measure(
        self, step: int, val_loss: Tensor | float | None, val_metric: Tensor | float | None
    ) -> tuple[HostSnapshot, _Reading]:
        snapshot = self.engine.compute(drift=val_loss is not None)
        self._losses.fold()
        extras = [self._window.totals()]
        for value in (val_loss, val_metric):
            if value is not None:
                extras.append(torch.as_tensor(value).detach().reshape(1))
        host, values = snapshot.to_host(*extras)  # the one device→host transfer of this check
        self.last_host = host
        self.restored_norms = None
        self._window.reset()
        total, count, seen, first_bad = values[:4]
        rest = iter(values[4:])
        val = next(rest) if val_loss is not None else None
        metric = next(rest) if val_metric is not None else None
        self._val_sum += total
        self._val_count += count
        train_for_val = None
        if val is not None:
            train_for_val = self._val_sum / self._val_count if self._val_count > 0 else None
            self._val_sum = self._val_count = 0.0
        reading = _Reading(
            train_loss=total / count if count > 0 else None,
            train_for_val=train_for_val,
            val_loss=val,
            val_metric=metric,
            nonfinite_losses=int(seen - count),
            first_nonfinite=first_bad,
        )
        return host, reading

    def _watch(self, step: int, host: HostSnapshot, reading: _Reading) -> None:
        found = self.nonfinite.losses(step, self._window_start, reading.nonfinite_losses, reading.first_nonfinite)
        found += self.nonfinite.weights(step, host.nonfinite_layers)
        for value in (reading.val_loss, reading.val_metric):
            if value is not None:
                found += self.nonfinite.val_loss(step, value)
        holding = bool(getattr(self.action, "engaged", False))
        floor = self.detector.current_floor() if holding else None
        found += self.divergence.update(step, reading.train_loss, floor=floor)
        for event in found:
            self.emit(event)
        self._window_start = step

    def _detect(self, step: int, host: HostSnapshot, reading: _Reading) -> Verdict:
        val = reading.val_loss if reading.val_loss is not None and math.isfinite(reading.val_loss) else None
        metric = reading.val_metric if reading.val_metric is not None and math.isfinite(reading.val_metric) else None
        if self.options.monitor is not None and metric is None:
            val = None  # the named metric is missing or not finite: this validation is not scored by anything else
        score = metric if self.options.monitor is not None else val
        if self.best is not None and score is not None:
            self.best.offer(self.model, score, step)
        verdict = self.detector.update(
            step,
            total_norm=host.total,
            layer_norms=host.layer_norms,
            train_loss=reading.train_for_val if reading.val_loss is not None else reading.train_loss,
            val_loss=val,
            val_metric=metric if self.options.monitor is not None else None,
            drift=host.drift_share() if val is not None else None,
        )
        if val is not None and self.detector.improved:
            self.engine.mark_best()  # the reference of the next validations' drift
        self.verdicts.append(verdict)
        holding = bool(getattr(self.action, "engaged", False))
        if verdict.fired and not (holding and self._fired_while_holding):
            self.emit(Event(step, EventKind.DETECTOR_FIRED, verdict.describe(), verdict.to_data()))
            self._fired_while_holding = holding  # while hold_floor acts, the firing is reported once
        return verdict

    def _act(self, step: int, verdict: Verdict, reading: _Reading | None = None) -> None:
        context = self._context(step, reading)
        # triggers at decided, active verdicts; controllers at every check, validation or not
        if (verdict.active and verdict.decided) or self.action.every_decision:
            self.action(verdict, context)

    def _context(self, step: int, reading: _Reading | None = None) -> ActionContext:
        floor, may_engage = self.detector.held_floor()
        if self.detector.noise_floor == "estimate":
            may_engage = may_engage and self.estimate_settled
        return ActionContext(
            step=step,
            optimizers=self.optimizers,
            emit=self.emit,
            request_stop=lambda reason: self.request_stop(step, reason),
            restore_best=lambda: self.restore_best(step),
            train_loss=None if reading is None else reading.train_loss,
            noise_floor=floor,
            may_engage=may_engage,
            ended_worse=self.best is not None and self.best.ended_worse(ENDED_WORSE_BY),
        )

    # ---------------------------------------------------------------- stopping and restoring
    def request_stop(self, step: int, reason: str) -> None:
        if self.should_stop:
            return
        self.should_stop = True
        self.stop_reason = reason
        self.emit(Event(step, EventKind.STOP, f"stopping: {reason}", {"reason": reason}))

    def follow_stop(self, step: int) -> None:
        """Another rank asked to stop: restore as it did (when restoring), then stop."""
        if self.should_stop:
            return
        if self.best is not None and self.action.needs_best_weights:
            self.restore_best(step)
        self.request_stop(step, "another rank asked to stop")

    def restore_best(self, step: int) -> bool:
        """Put the best-validation weights back (deferred to :meth:`end_of_training` with ``defer_restore``)."""
        if self.defer_restore and not self._ending:
            self.restore_pending = True
            return True
        if self._restore_veto is not None:
            self.emit(Event(step, EventKind.RESTORE_SKIPPED, self._restore_veto, {"reason": self._restore_veto}))
            return False
        if self.best is None or self.best.state is None:
            self.emit(Event(step, EventKind.RESTORE_SKIPPED, "no validation seen yet: nothing to restore"))
            return False
        self.best.restore(self.model)
        self.restored_norms = self.engine.measure_host()  # last_norms() shows the restored weights
        what = self.options.monitor or "validation loss"
        self.emit(
            Event(
                step,
                EventKind.RESTORE,
                f"restored the weights of step {self.best.step} ({what} {self.best.value:.4g})",
                {"best_step": self.best.step, "best_value": self.best.value, "monitor": what},
            )
        )
        return True

    def end_of_training(self, step: int, restore_veto: str | None = None) -> None:
        """Training ended: a deferred restore is applied; without a normguard stop, actions
        such as ``hold_floor`` may restore. ``restore_veto``: a reason not to restore (e.g.
        the loop restored its own best weights), logged as a ``restore_skipped`` event."""
        self._ending = True
        self._restore_veto = restore_veto
        try:
            if not self.should_stop:
                self.action.on_train_end(self._context(step))
            if self.restore_pending:
                self.restore_pending = False
                self.restore_best(step)
        finally:
            self._ending = False
            self._restore_veto = None
        self.flush()

    # ---------------------------------------------------------------- sinks
    def emit(self, event: Event) -> None:
        self.events.append(event)
        if not self.is_logging_rank:
            return
        level = logging.INFO if event.kind in (EventKind.WEIGHT_DECAY_CHANGED, EventKind.RESTORE) else logging.WARNING
        log.log(level, "normguard: %s", event.line())
        self._buffer_for(event.step)[1].append(event)
        self._buffer_for(event.step)[0][tags.event_tag(event.kind.value)] = 1.0

    def _buffer_for(self, step: int) -> tuple[dict[str, float], list[Event]]:
        """What this step will log. A step's values are written once, when a later step
        starts or at a flush, so a train check and a validation at the same step give one
        value per tag (the latest) and one events entry (TensorBoard keeps one per step)."""
        if step != self._buffered_step:
            self._write_buffer()
            self._buffered_step = step
        return self._buffer

    def _write_buffer(self) -> None:
        values, events = self._buffer
        if self._buffered_step is not None and (values or events):
            for sink in self.sinks:
                if values:
                    sink.scalars(self._buffered_step, dict(values))
                if events:
                    write_events(sink, self._buffered_step, list(events))
        self._buffer = ({}, [])
        self._buffered_step = None

    def _log_check(self, step: int, host: HostSnapshot, reading: _Reading, verdict: Verdict) -> None:
        if not (self.is_logging_rank and self.sinks):
            return
        values = tags.check_values(
            host,
            verdict,
            train_loss=reading.train_loss,
            val_loss=reading.val_loss,
            val_metric=reading.val_metric,
            log_layers=self.options.log_layers,
            weight_decays=self._weight_decays() if self.action.changes_weight_decay else {},
        )
        values.update({f"{tags.PREFIX}/{key}": value for key, value in self.action.scalars().items()})
        if self._floor_interval is not None and reading.val_loss is not None:
            values[tags.NOISE_FLOOR_LOW], values[tags.NOISE_FLOOR_HIGH] = self._floor_interval
        self._buffer_for(step)[0].update(values)

    def _weight_decays(self) -> dict[str, float]:
        """One value per group: the decoupled weight decay in effect, whoever applies it (the
        optimizer's own ``weight_decay``, or ``hold_floor``'s λ where it applies the shrink itself)."""
        out = {}
        for k, opt in enumerate(self.optimizers):
            for i, group in enumerate(opt.param_groups):
                if "weight_decay" in group:
                    suffix = f"group_{i}" if len(self.optimizers) == 1 else f"opt_{k}_group_{i}"
                    out[suffix] = float(group["weight_decay"])
        out.update(self.action.decays())
        return out

    def flush(self) -> None:
        self._write_buffer()
        for sink in self.sinks:
            if callable(getattr(sink, "flush", None)):
                sink.flush()

    def close(self) -> None:
        self._write_buffer()
        self.action.unbind()
        for sink in self.sinks:
            if callable(getattr(sink, "close", None)):
                sink.close()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain data (and the best weights' tensors unless ``best_weights_in_checkpoint=False``)."""
        with_weights = self.options.best_weights_in_checkpoint
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "detector": self.detector.state_dict(),
            "action": self.action.state_dict(),
            "events": [e.to_dict() for e in self.events],
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "restore_pending": self.restore_pending,
            "best": None if self.best is None else self.best.state_dict(with_weights=with_weights),
            "divergence": self.divergence.state_dict(),
            "nonfinite": self.nonfinite.state_dict(),
            "window_start": self._window_start,
            "held_estimate": self._held_estimate,
            "estimate_history": list(self._estimate_history),
            "val_sum": self._val_sum,
            "val_count": self._val_count,
            "loss_window": self._loss_window_state(),
            "drift": self.engine.drift_state() if with_weights else None,
        }

    def _loss_window_state(self) -> dict[str, Any] | None:
        """The losses seen since the last check (rank-local, so saved only with one rank)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return None
        self._losses.fold()
        return self._window.state_floats()

    def check_state(self, state: Any) -> dict[str, Any]:
        """``state`` if it is a guard state this model accepts; else :class:`StateError` saying why."""
        if not isinstance(state, dict):
            raise StateError(f"Expected a normguard state dict but got {type(state).__name__}.")
        missing = [k for k in _REQUIRED_KEYS if k not in state]
        if missing:
            raise StateError(f"Expected a normguard state with keys {list(_REQUIRED_KEYS)} but {missing} are missing.")
        version = state["version"]
        if not isinstance(version, int) or version < 1 or version > STATE_VERSION:
            raise StateError(
                f"Expected a normguard state of version 1..{STATE_VERSION} but got version {version!r} "
                "(written by a newer normguard?)."
            )
        saved = state.get("fingerprint")
        if saved is not None and saved != self.fingerprint:
            raise StateError(
                f"This normguard state belongs to another model (layout fingerprint {saved}, this model "
                f"{self.fingerprint}): load it into the model it was saved from."
            )
        best = state.get("best") or {}
        weights = best.get("state") if isinstance(best, dict) else None
        if weights is not None:
            current = self.model.state_dict()
            matched = rekey_state(weights, current)  # a compiled or wrapped model's keys map to the bare model's
            if matched is None or any(tuple(matched[k].shape) != tuple(current[k].shape) for k in current):
                raise StateError("The best weights in this normguard state do not fit this model's state_dict.")
            if matched.keys() != weights.keys():
                state = {**state, "best": {**best, "state": matched}}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = self.check_state(state)
        self.start_fresh()
        self.detector.load_state_dict(state["detector"])
        self.action.load_state_dict(state["action"] or {})
        self.events.extend(Event.from_dict(e) for e in state["events"])
        self.should_stop = bool(state.get("should_stop", False))
        self.stop_reason = state.get("stop_reason")
        self.restore_pending = bool(state.get("restore_pending", False))
        if self.best is not None and state.get("best"):
            self.best.load_state_dict(state["best"])
        if "divergence" in state:
            self.divergence.load_state_dict(state["divergence"])
        else:  # version 1
            self.divergence.best = float(state.get("best_train", math.inf))
        self.nonfinite.load_state_dict(state.get("nonfinite") or {})
        self._window_start = int(state.get("window_start", 0))
        held = state.get("held_estimate")
        self._held_estimate = None if held is None else tuple(float(v) for v in held)  # type: ignore[assignment]
        self._estimate_history.extend(float(v) for v in state.get("estimate_history") or [])
        self._val_sum = float(state.get("val_sum", 0.0))
        self._val_count = float(state.get("val_count", 0.0))
        saved = state.get("loss_window")
        if saved:
            self._window.load_floats(saved)
        if self.engine.track_drift and not self.engine.load_drift_state(state.get("drift")):
            log.warning(
                "normguard: this state has no drift references that fit the model: ‖w − w₀‖ and ‖w − w_best‖ are "
                "measured from the resumed weights and the next improving validation"
            )


class GuardResults:
    """The results every front door shows, written once: read from its :class:`Monitor`."""

    monitor: Monitor | None

    @property
    def should_stop(self) -> bool:
        """Whether normguard asked training to stop."""
        return self.monitor is not None and self.monitor.should_stop

    @property
    def events(self) -> list[Event]:
        """What happened (the last ``max_history``), oldest first."""
        return [] if self.monitor is None else list(self.monitor.events)

    @property
    def verdicts(self) -> list[Verdict]:
        """The detector's verdicts (the last ``max_history``), oldest first."""
        return [] if self.monitor is None else list(self.monitor.verdicts)

    def last_norms(self) -> dict[str, float]:
        """Per-layer norms of the latest check (host floats), plus ``"total"``; after a restore of
        the best weights, the norms of the restored weights."""
        if self.monitor is not None and self.monitor.restored_norms is not None:
            norms = self.monitor.restored_norms
            return {**norms, "total": math.sqrt(sum(v * v for v in norms.values()))}
        host = None if self.monitor is None else self.monitor.last_host
        if host is None:
            return {}
        return {**host.layer_norms, "total": host.total}
