"""NormGuardCallback: the Lightning front door.

A thin callback over :class:`~normguard.monitor.Monitor` (the same core as the plain
:class:`~normguard.NormGuard`): it only translates the Trainer's events into
``accumulate_loss`` / ``check`` calls, routes the numbers to the Trainer's loggers, and
turns the monitor's stop request into ``trainer.should_stop``, agreed across ranks.

* Per training batch (``on_train_batch_end``): the batch's loss, read from the ``outputs``
  Lightning passes (``training_step``'s loss, multiplied back by ``accumulate_grad_batches``),
  is added to the loss window on the device (no host sync). Under manual optimization it
  is ``outputs["loss"]`` when ``training_step`` returns the loss, else the value logged as
  ``train_loss`` on this step (read from ``trainer.callback_metrics``: Lightning turns
  ``prog_bar`` metrics into Python numbers there, a host sync per step on an accelerator, so
  return the loss from ``training_step`` to avoid it).
* Every ``every_n_steps`` optimizer steps (``trainer.global_step``, which counts
  optimizer steps, so gradient accumulation and several optimizers are handled): a check,
  one norm pass and one device→host transfer.
* At the end of each validation run during fitting (``on_validation_end``, where
  ``trainer.callback_metrics`` holds the epoch value): a check with ``val_loss``; the
  detector decides there once validation has been seen, at the train checks before. A
  validation whose watched metrics were not logged afresh (a metric logged every k-th epoch)
  is not counted.
* Resumed (``fit(ckpt_path=...)``) from a checkpoint saved after a normguard stop: the
  Trainer stops at once (``trainer.should_stop``), the weights stay the checkpoint's.
* Skipped: sanity checking, ``fast_dev_run``, ``trainer.validate``/``test``/``predict``.
* A new ``fit`` starts fresh (a callback reused on another Trainer carries nothing over);
  a fit resumed from a checkpoint (``ckpt_path=``) continues from the saved state, which
  must belong to the same model.

Logged keys: see :mod:`normguard.tags`. With a ``TensorBoardLogger`` they go to the
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
    >>> guard = NormGuardCallback(every_n_steps=2)
    >>> trainer = L.Trainer(max_epochs=1, callbacks=[guard], logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(Tiny(), data)
    >>> len(guard.verdicts), sorted(guard.last_norms())
    (2, ['layer', 'total'])
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.trainer.states import TrainerFn
    from lightning.pytorch.utilities import rank_zero_info
except ImportError as exc:  # lightning is an optional extra
    raise ImportError(
        "normguard.lightning needs Lightning (`lightning>=2.2`): pip install 'normguard[lightning]'"
    ) from exc
from typing_extensions import override

from normguard.doors import DoorResults, check_interval, crossed, missing_metric, renamed, run_check
from normguard.monitor import Monitor, StateError
from normguard.options import GuardOptions, takes_options
from normguard.sinks import MetricsLoggerSink, SummaryWriterSink
from normguard.validation import check_name

__all__ = ["NormGuardCallback", "step_metric"]

log = logging.getLogger("normguard")

CALLBACK_STATE_VERSION = 2


class NormGuardCallback(DoorResults, Callback):
    """Watch weight norms in a Lightning ``Trainer`` and act on the near-interpolation signature.

    Args:
        every_n_steps: optimizer steps (``trainer.global_step``) between checks, as in every
            normguard front door. ``every_n_train_steps`` is its old name (a ``FutureWarning``).
        **options: the options of :class:`~normguard.options.GuardOptions` (``help()`` lists
            them with their defaults); another name raises ``TypeError``.
            ``monitor`` names a metric you log in ``validation_step`` (e.g. ``"val_acc"``,
            ``mode="max"``), as for Lightning's ``EarlyStopping``. Actions act on
            ``trainer.optimizers`` and on ``trainer.should_stop``. With
            ``noise_floor="estimate"`` the floor is read at each validation end from the one
            :class:`~normguard.noise_metric.NoiseFloorMetric` among the module's submodules
            (``self.floor_metric.update(logits, y)`` in ``validation_step``).
        train_loss: under manual optimization, when ``training_step`` returns no loss: the name
            of the training loss logged with ``self.log(name, loss)`` (on step).
        val_loss: name of the validation loss logged in ``validation_step`` (``None``:
            ignore validation; decisions are then made at the train checks).
        name: optional label that makes :attr:`state_key` unique, for two callbacks that
            watch the same metrics at the same interval.

    Resuming: :meth:`state_dict` holds the detector, the action state, the events, a stop,
    the best-weights snapshot (unless ``best_weights_in_checkpoint=False``) and the partial
    loss window; the weight decays live in the optimizers' param groups, restored by Lightning.
    """

    @takes_options
    def __init__(
        self,
        every_n_steps: int = 50,
        *,
        every_n_train_steps: int | None = None,
        train_loss: str = "train_loss",
        val_loss: str | None = "val_loss",
        name: str | None = None,
        **options: Any,
    ) -> None:
        every = renamed(
            "NormGuardCallback", "every_n_train_steps", "every_n_steps", every_n_train_steps, every_n_steps, 50
        )
        self.every_n_steps = check_interval("every_n_steps", every)
        self.options = GuardOptions.from_kwargs("NormGuardCallback", options, every_n_steps=self.every_n_steps)
        self.train_loss: str = check_name("train_loss", train_loss) or train_loss
        self.val_loss = check_name("val_loss", val_loss, optional=True)
        if self.options.monitor is not None and val_loss is None:
            raise ValueError("Expected argument `val_loss` to name the validation loss when `monitor` is given.")
        self.name = check_name("name", name, optional=True)
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._last_check_step = 0  # global_step of the last train check
        self._train_metric_found = False
        self._last_seen: dict[str, Any] = {}  # the metric objects last read: the same object is not fresh
        self._missing: dict[str, tuple[str, list[str]]] = {}
        self._floor_metric: Any = None
        self._disabled = False

    @property
    def every_n_train_steps(self) -> int:
        """The old name of :attr:`every_n_steps`."""
        return self.every_n_steps

    @property
    @override
    def state_key(self) -> str:
        key: dict[str, Any] = {  # the interval keeps its old key: checkpoints of earlier versions still match
            "every_n_train_steps": self.every_n_steps,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
        }
        if self.name is not None:
            key["name"] = self.name
        return self._generate_state_key(**key)

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        callbacks = getattr(trainer, "callbacks", [])  # a Trainer property mypy does not see
        same = [c for c in callbacks if isinstance(c, NormGuardCallback) and c.state_key == self.state_key]
        if len(same) > 1:
            raise ValueError(
                f"Expected each NormGuardCallback to have a unique `state_key` but {len(same)} share "
                f"{self.state_key!r}: give them different `name=` (or metrics / every_n_steps) so their "
                "checkpoint states do not collide."
            )
        if stage == "fit" and self.detector.noise_floor == "estimate":
            self._floor_metric = _find_floor_metric(pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # not on_fit_start: Lightning restores the optimizers' state from a checkpoint between the two,
        # and the actions bind to the optimizers as they will train
        if self.monitor is not None:  # a previous fit's monitor: unhook it
            self.monitor.action.unbind()
        self.monitor = None
        self._disabled = bool(getattr(trainer, "fast_dev_run", False))
        if self._disabled:
            rank_zero_info("normguard: fast_dev_run is set; NormGuardCallback does nothing in this run")
            return
        logging_rank = trainer.is_global_zero
        self.monitor = Monitor(
            pl_module,
            list(trainer.optimizers),
            self.options,
            sinks=self._sinks_for(trainer) if logging_rank else [],
            is_logging_rank=logging_rank,
        )
        self._last_seen = {}
        self._missing = {}  # watched metrics absent at a validation
        state, self._pending_state = self._pending_state, None
        if state is not None:  # resumed from a checkpoint
            self._apply_state(state)
        else:  # a new fit starts fresh
            self._last_check_step = trainer.global_step
            self._train_metric_found = False
        if self.monitor.should_stop:  # the checkpoint of a stop: train no further
            log.warning(
                "normguard: this checkpoint (step %d) is where normguard stopped training (%s): training no further",
                trainer.global_step,
                self.monitor.stop_reason,
            )
            trainer.should_stop = True

    def _sinks_for(self, trainer: pl.Trainer) -> list[Any]:
        sinks: list[Any] = []
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                sinks.append(SummaryWriterSink(writer=logger.experiment))  # Lightning owns and closes it
            else:
                sinks.append(MetricsLoggerSink(logger))
        return sinks

    def _active(self, trainer: pl.Trainer) -> bool:
        return (
            self.monitor is not None
            and not self._disabled
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
        )

    # ------------------------------------------------------------------ loop events
    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._active(trainer):
            return
        assert self.monitor is not None
        loss = self._step_loss(trainer, pl_module, outputs)
        if loss is not None:
            self._train_metric_found = True
            self.monitor.accumulate_loss(loss)
        step = trainer.global_step
        if crossed(self._last_check_step, step, self.every_n_steps):
            self._last_check_step = step
            if not self._train_metric_found:
                raise missing_metric(
                    "NormGuardCallback",
                    "train_loss",
                    self.train_loss,
                    trainer.callback_metrics,
                    f"return the loss from `training_step` or log it there with `self.log({self.train_loss!r}, loss)`",
                )
            self._check(trainer, step)

    def _step_loss(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> Tensor | None:
        """This batch's training loss, on the device. Automatic optimization: ``outputs["loss"]``,
        which Lightning divided by ``accumulate_grad_batches``, multiplied back. Manual: the
        returned loss, else the value logged as ``train_loss`` on this step."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and loss.is_floating_point():
            if pl_module.automatic_optimization and trainer.accumulate_grad_batches != 1:
                return loss.detach() * trainer.accumulate_grad_batches
            return loss.detach()
        if pl_module.automatic_optimization:
            return None  # training_step returned None: Lightning skipped this batch
        return self._fresh(self.train_loss, step_metric(trainer, self.train_loss))

    def _fresh(self, key: str, value: Any) -> Any:
        """``value`` if it is not the object read last time under ``key`` (Lightning keeps a metric's
        tensor until it is logged again), else ``None``."""
        if value is None or value is self._last_seen.get(key):
            return None
        self._last_seen[key] = value
        return value

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_loss is None or not self._active(trainer):
            return
        values: list[Tensor | None] = []
        stale: list[str] = []
        for argument, name in (("val_loss", self.val_loss), ("monitor", self.options.monitor)):
            if name is None:
                values.append(None)
                continue
            value = trainer.callback_metrics.get(name)
            if value is None:  # not logged yet (a metric logged every k-th epoch): checked at the end of training
                self._missing[name] = (argument, sorted(trainer.callback_metrics))
                values.append(None)
                stale.append(name)
                continue
            if self._fresh(name, value) is None:
                stale.append(name)
            value = torch.as_tensor(value).detach().float().reshape(())
            if trainer.world_size > 1:  # one value on every rank, so every rank decides alike
                value = trainer.strategy.reduce(value.to(trainer.strategy.root_device), reduce_op="mean")
            values.append(value)
        estimate = None
        if self._floor_metric is not None:  # each validation run's estimate stands alone
            estimate = None if stale else _as_estimate(self._floor_metric.compute(), self._floor_metric)
            self._floor_metric.reset()
        if stale:  # not logged in this validation run: not a new validation
            log.debug("normguard: %s not logged afresh at step %d: validation not counted", stale, trainer.global_step)
            return
        self._check(trainer, trainer.global_step, val_loss=values[0], val_metric=values[1], estimate=estimate)

    def _check(
        self,
        trainer: pl.Trainer,
        step: int,
        val_loss: Tensor | None = None,
        val_metric: Tensor | None = None,
        estimate: Any = None,
    ) -> None:
        assert self.monitor is not None
        run_check(self.monitor, step, val_loss, val_metric, estimate)
        stop = trainer.strategy.reduce_boolean_decision(self.monitor.should_stop, all=False)
        if stop:
            self.monitor.follow_stop(step)
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, (argument, keys) in self._missing.items():
            if name not in self._last_seen:
                how = f"log it in `validation_step` with `self.log({name!r}, value)`"
                raise missing_metric("NormGuardCallback", argument, name, keys, how)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.end_of_training(trainer.global_step)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:  # keep what was logged before the failure
            self.monitor.flush()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.monitor is not None and stage == "fit":
            self.monitor.action.unbind()

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        return {
            "version": CALLBACK_STATE_VERSION,
            "monitor": self.monitor.state_dict(),
            "last_check_step": self._last_check_step,
            "train_metric_found": self._train_metric_found,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("monitor"), dict):
            raise StateError(
                f"Expected a NormGuardCallback state (a dict with a 'monitor' dict) but got {type(state_dict).__name__}"
                + (f" with keys {sorted(state_dict)}" if isinstance(state_dict, dict) else "")
                + "."
            )
        if self.monitor is None:
            self._pending_state = dict(state_dict)  # applied once the monitor exists (on_train_start)
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        assert self.monitor is not None
        self.monitor.load_state_dict(state["monitor"])
        self._last_check_step = int(state.get("last_check_step", 0))
        self._train_metric_found = bool(state.get("train_metric_found", False))

    def __repr__(self) -> str:
        return (
            f"NormGuardCallback(every_n_steps={self.every_n_steps}, train_loss={self.train_loss!r}, "
            f"val_loss={self.val_loss!r}, events={len(self.events)})"
        )


def step_metric(trainer: pl.Trainer, name: str) -> Tensor | None:
    """The tensor logged as ``name`` on the current training step, from the public
    ``trainer.callback_metrics`` (``name_step`` when logged on step and epoch); ``None`` if absent."""
    metrics = trainer.callback_metrics
    value = metrics.get(f"{name}_step", metrics.get(name))
    return value if isinstance(value, Tensor) else None


def _find_floor_metric(pl_module: pl.LightningModule) -> Any:
    """The one ``NoiseFloorMetric`` among the module's submodules (``noise_floor="estimate"``)."""
    from normguard.noise_metric import NoiseFloorMetric

    found = [m for m in pl_module.modules() if isinstance(m, NoiseFloorMetric)]
    if len(found) != 1:
        raise ValueError(
            f"NormGuardCallback(noise_floor='estimate') needs exactly one NoiseFloorMetric on the LightningModule "
            f"but found {len(found)}: add `self.floor_metric = NoiseFloorMetric()` in `__init__` and "
            "`self.floor_metric.update(logits, y)` in `validation_step`."
        )
    return found[0]


def _as_estimate(value: Any, metric: Any) -> Any:
    """A ``FloorEstimate`` from what ``NoiseFloorMetric.compute()`` returns (the estimate, or a dict of tensors)."""
    if isinstance(value, dict):
        from normguard.noise_floor import FloorEstimate

        numbers = {k: float(v) for k, v in value.items() if k in ("value", "low", "high")}
        kind = value.get("kind", getattr(metric, "kind", None)) or "classification"
        return FloorEstimate(**numbers, n=int(value.get("n", 0)), kind=str(kind))
    return value
