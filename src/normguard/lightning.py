"""NormGuardCallback: the Lightning front door.

A thin callback over :class:`~normguard.monitor.Monitor` (the same core as the plain
:class:`~normguard.NormGuard`): it only translates the Trainer's events into
``accumulate_loss`` / ``check`` calls, routes the numbers to the Trainer's loggers, and
turns the monitor's stop request into ``trainer.should_stop``, agreed across ranks.

* Per training batch (``on_train_batch_end``): the value logged as ``train_loss`` *on
  this step* is added to the loss window on the device (no host sync).
* Every ``every_n_train_steps`` optimizer steps (``trainer.global_step``, which counts
  optimizer steps, so gradient accumulation and several optimizers are handled): a check,
  one norm pass and one device→host transfer.
* At the end of each validation run during fitting (``on_validation_end``, where
  ``trainer.callback_metrics`` holds the epoch value): a check with ``val_loss``; the
  detector decides there once validation has been seen, at the train checks before.
* Skipped: sanity checking, ``fast_dev_run``, ``trainer.validate``/``test``/``predict``.

Logged keys: see :mod:`normguard.tensorboard`. With a ``TensorBoardLogger`` they go to the
run's own event file (and the custom-scalars layout with them); other loggers get the
scalars through ``log_metrics`` and events through Python logging. Rank 0 only.

Example:
    >>> import lightning as L, torch
    >>> from normguard.lightning import NormGuardCallback
    >>> class Tiny(L.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layer = torch.nn.Linear(3, 1)
    ...     def training_step(self, batch, batch_idx):
    ...         loss = self.layer(batch[0]).pow(2).mean()
    ...         self.log("train_loss", loss)
    ...         return loss
    ...     def configure_optimizers(self):
    ...         return torch.optim.SGD(self.parameters(), lr=0.1)
    >>> data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=2)
    >>> guard = NormGuardCallback(every_n_train_steps=2)
    >>> trainer = L.Trainer(max_epochs=1, callbacks=[guard], logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(Tiny(), data)
    >>> len(guard.verdicts), sorted(guard.last_norms())
    (2, ['layer', 'total'])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError as exc:  # lightning is an optional extra
    raise ImportError(
        "normguard.lightning needs Lightning (`lightning>=2.2`): pip install 'normguard[lightning]'"
    ) from exc

from normguard.actions import resolve_action
from normguard.events import Event
from normguard.monitor import Monitor, check_options
from normguard.detector import NearInterpolationDetector, Verdict
from normguard.tensorboard import Sink, SummaryWriterSink

__all__ = ["LoggerSink", "NormGuardCallback"]

log = logging.getLogger("normguard")

CALLBACK_STATE_VERSION = 1


class _TensorBoardLoggerSink(SummaryWriterSink):
    """Writes into a ``TensorBoardLogger``'s own SummaryWriter; never closes it (the logger owns it)."""

    def close(self) -> None:
        self.flush()


class LoggerSink:
    """A sink over any Lightning logger: scalars through ``logger.log_metrics(values, step)``.

    Text events are not sent (Lightning's logger API has no text call); the monitor already
    writes every event to the ``normguard`` Python logger.
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def flush(self) -> None:
        save = getattr(self.logger, "save", None)
        if save is not None:
            save()

    def close(self) -> None:
        self.flush()


class NormGuardCallback(Callback):
    """Watch weight norms in a Lightning ``Trainer`` and act on the near-interpolation signature.

    Args:
        every_n_train_steps: optimizer steps (``trainer.global_step``) between checks.
        noise_floor, action, patience, detector, include_frozen, track_init_distance,
            track_update_size, offload, log_layers, sinks: as for :class:`normguard.NormGuard`.
            Actions act on ``trainer.optimizers`` (weight decay: every optimizer's groups)
            and on ``trainer.should_stop``.
        train_loss: name of the training loss logged with ``self.log(name, loss)`` in
            ``training_step`` (on step, Lightning's default there).
        val_loss: name of the validation loss logged in ``validation_step`` (``None``:
            ignore validation; decisions are then made at the train checks).
        name: optional label that makes :attr:`state_key` unique, for two callbacks that
            watch the same metrics at the same interval.

    Why the logged metric and not ``outputs["loss"]``: it exists under manual
    optimization (where ``training_step`` may return nothing), it is not divided by
    ``accumulate_grad_batches`` as ``outputs["loss"]`` is, and it is the number users see.
    The value read is the one logged at *this* step (Lightning's step cache), never an
    epoch aggregate; a step where it was not logged adds nothing.

    Resuming: :meth:`state_dict` holds the detector, the action state (cooldowns,
    escalation stage), the events, the best-weights snapshot (one copy of the model state
    on the CPU when a restore-best action is used) and the partial loss window (kept by the
    monitor); the
    weight-decay values live in the optimizers' param groups, restored by Lightning.
    """

    def __init__(
        self,
        every_n_train_steps: int = 50,
        *,
        noise_floor: float | str | None = None,
        action: Any = None,
        patience: int = 3,
        detector: NearInterpolationDetector | None = None,
        include_frozen: bool = False,
        track_init_distance: bool = False,
        track_update_size: bool = False,
        offload: str = "device",
        log_layers: bool = True,
        sinks: Sequence[Sink] = (),
        train_loss: str = "train_loss",
        val_loss: str | None = "val_loss",
        name: str | None = None,
    ) -> None:
        check_options("every_n_train_steps", every_n_train_steps, detector, noise_floor, patience, offload)
        if not isinstance(train_loss, str) or not train_loss:
            raise ValueError(f"Expected argument `train_loss` to be a metric name but got {train_loss!r}.")
        if val_loss is not None and (not isinstance(val_loss, str) or not val_loss):
            raise ValueError(f"Expected argument `val_loss` to be a metric name or None but got {val_loss!r}.")
        self.every_n_train_steps = every_n_train_steps
        self.detector = detector or NearInterpolationDetector(noise_floor=noise_floor, patience=patience)
        self.action = resolve_action(action)  # one instance for the callback's life: its state persists
        self.include_frozen = include_frozen
        self.track_init_distance = track_init_distance
        self.track_update_size = track_update_size
        self.offload = offload
        self.log_layers = log_layers
        self.extra_sinks = list(sinks)
        self.train_loss = train_loss
        self.val_loss = val_loss
        self.name = name
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._last_check_step = 0  # global_step of the last train check
        self._train_metric_found = False
        self._last_loss: Tensor | None = None
        self._logger_sinks: dict[int, Sink] = {}
        self._disabled = False

    # ------------------------------------------------------------------ identity
    @property
    def state_key(self) -> str:
        key: dict[str, Any] = {
            "every_n_train_steps": self.every_n_train_steps,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
        }
        if self.name is not None:
            key["name"] = self.name
        return self._generate_state_key(**key)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        same = [c for c in trainer.callbacks if isinstance(c, NormGuardCallback) and c.state_key == self.state_key]
        if len(same) > 1:
            raise ValueError(
                f"Expected each NormGuardCallback to have a unique `state_key` but {len(same)} share "
                f"{self.state_key!r}: give them different `name=` (or metrics / every_n_train_steps) so their "
                "checkpoint states do not collide."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._disabled = bool(trainer.fast_dev_run)
        if self._disabled:
            log.info("normguard: fast_dev_run is set; NormGuardCallback does nothing in this run")
            return
        previous = self._pending_state
        if previous is None and self.monitor is not None:
            previous = self._callback_state()  # a second fit with the same callback continues
        logging_rank = trainer.is_global_zero
        sinks = self._sinks_for(trainer) if logging_rank else []
        self.monitor = Monitor(
            pl_module,
            list(trainer.optimizers),
            every_n_steps=self.every_n_train_steps,
            action=self.action,
            detector=self.detector,
            include_frozen=self.include_frozen,
            track_init_distance=self.track_init_distance,
            track_update_size=self.track_update_size,
            offload=self.offload,
            log_layers=self.log_layers,
            sinks=sinks,
            is_logging_rank=logging_rank,
        )
        self._pending_state = None
        self._last_loss = None
        if previous is not None:
            self._apply_state(previous)
        else:
            self._last_check_step = trainer.global_step

    def _sinks_for(self, trainer: pl.Trainer) -> list[Sink]:
        sinks: list[Sink] = []
        for logger in trainer.loggers:
            key = id(logger)
            if key not in self._logger_sinks:
                if isinstance(logger, TensorBoardLogger):
                    self._logger_sinks[key] = _TensorBoardLoggerSink(writer=logger.experiment)
                else:
                    self._logger_sinks[key] = LoggerSink(logger)
            sinks.append(self._logger_sinks[key])
        return sinks + self.extra_sinks

    def _active(self, trainer: pl.Trainer) -> bool:
        return (
            self.monitor is not None
            and not self._disabled
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
        )

    # ------------------------------------------------------------------ loop events
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._active(trainer):
            return
        assert self.monitor is not None
        loss = _step_value(trainer, self.train_loss)
        if loss is not None and loss is not self._last_loss:  # the same object: not logged again this step
            self._last_loss = loss
            self._train_metric_found = True
            self.monitor.accumulate_loss(loss)
        step = trainer.global_step
        if step > self._last_check_step and step // self.every_n_train_steps > (
            self._last_check_step // self.every_n_train_steps
        ):
            self._last_check_step = step
            if not self._train_metric_found:
                raise _missing_metric("train_loss", self.train_loss, trainer, "training_step")
            self._check(trainer, step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_loss is None or not self._active(trainer):
            return
        value = trainer.callback_metrics.get(self.val_loss)
        if value is None:
            raise _missing_metric("val_loss", self.val_loss, trainer, "validation_step")
        value = torch.as_tensor(value).detach().float().reshape(())
        if trainer.world_size > 1:  # one value on every rank, so every rank decides alike
            value = trainer.strategy.reduce(value.to(trainer.strategy.root_device), reduce_op="mean")
        self._check(trainer, trainer.global_step, val_loss=value)

    def _check(self, trainer: pl.Trainer, step: int, val_loss: Tensor | None = None) -> Verdict:
        assert self.monitor is not None
        verdict = self.monitor.check(step, val_loss=val_loss)
        stop = trainer.strategy.reduce_boolean_decision(self.monitor.should_stop, all=False)
        if stop and not self.monitor.should_stop:  # another rank decided: follow it, as it did
            if self.monitor.best is not None:
                self.monitor.restore_best(step)
            self.monitor.request_stop(step, "another rank asked to stop")
        if stop:
            trainer.should_stop = True
        return verdict

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.flush()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:  # keep what was logged before the failure
            self.monitor.flush()

    # ------------------------------------------------------------------ results
    @property
    def should_stop(self) -> bool:
        return self.monitor is not None and self.monitor.should_stop

    @property
    def events(self) -> list[Event]:
        return [] if self.monitor is None else self.monitor.events

    @property
    def verdicts(self) -> list[Verdict]:
        return [] if self.monitor is None else self.monitor.verdicts

    def last_norms(self) -> dict[str, float]:
        """Per-layer norms of the latest check (host floats), plus ``"total"``."""
        host = None if self.monitor is None else self.monitor.last_host
        if host is None:
            return {}
        return {**host.layer_norms, "total": host.total}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        return self._callback_state()

    def _callback_state(self) -> dict[str, Any]:
        assert self.monitor is not None
        state: dict[str, Any] = {
            "version": CALLBACK_STATE_VERSION,
            "monitor": self.monitor.state_dict(),
            "last_check_step": self._last_check_step,
            "train_metric_found": self._train_metric_found,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.monitor is None:
            self._pending_state = dict(state_dict)  # applied once the monitor exists (on_fit_start)
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        assert self.monitor is not None
        self.monitor.load_state_dict(state.get("monitor", {}))
        self._last_check_step = int(state.get("last_check_step", 0))
        self._train_metric_found = bool(state.get("train_metric_found", False))

    def __repr__(self) -> str:
        return (
            f"NormGuardCallback(every_n_train_steps={self.every_n_train_steps}, train_loss={self.train_loss!r}, "
            f"val_loss={self.val_loss!r}, events={len(self.events)})"
        )


def _step_value(trainer: pl.Trainer, name: str) -> Tensor | None:
    """The value of ``name`` logged at the current training step, without a host sync.

    Reads Lightning's result collection (its step cache, the same object until the next
    ``self.log``); ``trainer.callback_metrics`` is the fallback, though reading it turns
    every ``prog_bar`` metric into a Python number (a host sync on an accelerator).
    """
    results = getattr(trainer, "_results", None)
    if results is not None and hasattr(results, "items"):
        try:
            for metric in results.values():
                meta = getattr(metric, "meta", None)
                if meta is None or meta.name != name or getattr(metric, "has_reset", False):
                    continue
                if not meta.on_step:
                    raise ValueError(
                        f"Expected the metric {name!r} watched by NormGuardCallback(train_loss={name!r}) to be "
                        f"logged on step, but it is logged with on_step=False: log it with "
                        f"`self.log({name!r}, loss, on_step=True)`."
                    )
                cache = getattr(metric, "_forward_cache", None)
                if isinstance(cache, Tensor):
                    return cache
        except AttributeError:  # a Lightning whose result collection differs: use the public path
            pass
    metrics = trainer.callback_metrics
    value = metrics.get(f"{name}_step", metrics.get(name))
    return value if isinstance(value, Tensor) else None


def _missing_metric(argument: str, name: str, trainer: pl.Trainer, where: str) -> RuntimeError:
    available = sorted(trainer.callback_metrics)
    return RuntimeError(
        f"NormGuardCallback({argument}={name!r}) found no metric {name!r} logged during fitting. "
        f"Log it in `{where}` with `self.log({name!r}, loss)` or pass `{argument}=` one of the available "
        f"keys in trainer.callback_metrics: {available}."
    )
