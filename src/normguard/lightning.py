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
    >>> guard = NormGuardCallback(every_n_train_steps=2)
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
    import lightning
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.trainer.states import TrainerFn
    from lightning.pytorch.utilities import rank_zero_info
except ImportError as exc:  # lightning is an optional extra
    raise ImportError(
        "normguard.lightning needs Lightning (`lightning>=2.2`): pip install 'normguard[lightning]'"
    ) from exc
from typing_extensions import Unpack, override

from normguard.detector import NearInterpolationDetector
from normguard.monitor import GuardResults, Monitor, StateError
from normguard.options import GuardOptions, GuardOptionsKwargs, takes_options
from normguard.sinks import MetricsLoggerSink, SummaryWriterSink
from normguard.validation import check_name

__all__ = ["NormGuardCallback", "step_metric"]

log = logging.getLogger("normguard")

CALLBACK_STATE_VERSION = 2


class NormGuardCallback(GuardResults, Callback):
    """Watch weight norms in a Lightning ``Trainer`` and act on the near-interpolation signature.

    Args:
        every_n_train_steps: optimizer steps (``trainer.global_step``) between checks.
        noise_floor, action, patience, detector, monitor, mode, include_frozen,
            track_init_distance, track_update_size, offload, log_layers, sinks,
            best_weights_in_checkpoint, max_history (``**options``): see
            :class:`~normguard.options.GuardOptions`; another name raises ``TypeError``.
            ``monitor`` names a metric you log in ``validation_step`` (e.g. ``"val_acc"``,
            ``mode="max"``), as for Lightning's ``EarlyStopping``. Actions act on
            ``trainer.optimizers`` and on ``trainer.should_stop``.
        train_loss: name of the training loss logged with ``self.log(name, loss)`` in
            ``training_step`` (on step, Lightning's default there).
        val_loss: name of the validation loss logged in ``validation_step`` (``None``:
            ignore validation; decisions are then made at the train checks).
        name: optional label that makes :attr:`state_key` unique, for two callbacks that
            watch the same metrics at the same interval.

    Why the logged metric and not ``outputs["loss"]``: it exists under manual
    optimization (where ``training_step`` may return nothing), it is not divided by
    ``accumulate_grad_batches`` as ``outputs["loss"]`` is, and it is the number users see.
    The value read is the one logged at *this* step (:func:`step_metric`), never an epoch
    aggregate; a step where it was not logged adds nothing.

    Resuming: :meth:`state_dict` holds the detector, the action state, the events, the
    best-weights snapshot (unless ``best_weights_in_checkpoint=False``) and the partial loss
    window; the weight decays live in the optimizers' param groups, restored by Lightning.
    """

    @takes_options
    def __init__(
        self,
        every_n_train_steps: int = 50,
        *,
        train_loss: str = "train_loss",
        val_loss: str | None = "val_loss",
        name: str | None = None,
        **options: Unpack[GuardOptionsKwargs],
    ) -> None:
        self.options = GuardOptions.from_kwargs(
            "NormGuardCallback", options, every_n_steps=every_n_train_steps, interval_name="every_n_train_steps"
        )
        self.train_loss: str = check_name("train_loss", train_loss) or train_loss
        self.val_loss = check_name("val_loss", val_loss, optional=True)
        if self.options.monitor is not None and val_loss is None:
            raise ValueError("Expected argument `val_loss` to name the validation loss when `monitor` is given.")
        self.every_n_train_steps = every_n_train_steps
        self.name = name
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._last_check_step = 0  # global_step of the last train check
        self._train_metric_found = False
        self._last_loss: Tensor | None = None
        self._disabled = False

    @property
    def detector(self) -> NearInterpolationDetector:
        return self.options.resolved_detector

    @property
    def action(self) -> Any:
        return self.options.resolved_action

    @property
    @override
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
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        same = [
            c
            for c in getattr(trainer, "callbacks", [])
            if isinstance(c, NormGuardCallback) and c.state_key == self.state_key
        ]
        if len(same) > 1:
            raise ValueError(
                f"Expected each NormGuardCallback to have a unique `state_key` but {len(same)} share "
                f"{self.state_key!r}: give them different `name=` (or metrics / every_n_train_steps) so their "
                "checkpoint states do not collide."
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
        self._last_loss = None
        state, self._pending_state = self._pending_state, None
        if state is not None:  # resumed from a checkpoint
            self._apply_state(state)
        else:  # a new fit starts fresh
            self._last_check_step = trainer.global_step
            self._train_metric_found = False

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
        loss = step_metric(trainer, self.train_loss)
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

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_loss is None or not self._active(trainer):
            return
        values: list[Tensor | None] = []
        for argument, name in (("val_loss", self.val_loss), ("monitor", self.options.monitor)):
            if name is None:
                values.append(None)
                continue
            value = trainer.callback_metrics.get(name)
            if value is None:
                raise _missing_metric(argument, name, trainer, "validation_step")
            value = torch.as_tensor(value).detach().float().reshape(())
            if trainer.world_size > 1:  # one value on every rank, so every rank decides alike
                value = trainer.strategy.reduce(value.to(trainer.strategy.root_device), reduce_op="mean")
            values.append(value)
        self._check(trainer, trainer.global_step, val_loss=values[0], val_metric=values[1])

    def _check(
        self, trainer: pl.Trainer, step: int, val_loss: Tensor | None = None, val_metric: Tensor | None = None
    ) -> None:
        assert self.monitor is not None
        self.monitor.check(step, val_loss=val_loss, val_metric=val_metric)
        stop = trainer.strategy.reduce_boolean_decision(self.monitor.should_stop, all=False)
        if stop:
            self.monitor.follow_stop(step)
            trainer.should_stop = True

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
            self._pending_state = dict(state_dict)  # applied once the monitor exists (on_fit_start)
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        assert self.monitor is not None
        self.monitor.load_state_dict(state["monitor"])
        self._last_check_step = int(state.get("last_check_step", 0))
        self._train_metric_found = bool(state.get("train_metric_found", False))

    def __repr__(self) -> str:
        return (
            f"NormGuardCallback(every_n_train_steps={self.every_n_train_steps}, train_loss={self.train_loss!r}, "
            f"val_loss={self.val_loss!r}, events={len(self.events)})"
        )


# ---------------------------------------------------------------------- Lightning internals
_PRIVATE_READ_TESTED = ((2, 2), (3, 0))  # Lightning versions whose result collection step_metric reads
_private_read_ok = True


def _version(text: str) -> tuple[int, int]:
    major, minor = ([int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split(".")[:2]] + [0, 0])[:2]
    return major, minor


def step_metric(trainer: pl.Trainer, name: str) -> Tensor | None:
    """The tensor logged as ``name`` at the current training step, without a host sync.

    The public ``trainer.callback_metrics`` would do, but reading it turns every
    ``prog_bar`` metric into a Python number (a host sync per step on an accelerator), so
    for Lightning versions in ``_PRIVATE_READ_TESTED`` this reads Lightning's step cache
    (``trainer._results``: the metric's ``_forward_cache``, the same object until the next
    ``self.log``). Any other version, or a result collection shaped differently, uses the
    public path (correct, with that sync). A training loss logged ``on_step=False`` is
    refused: its value would be the previous epoch's aggregate.
    """
    global _private_read_ok
    low, high = _PRIVATE_READ_TESTED
    results = getattr(trainer, "_results", None)
    if _private_read_ok and low <= _version(lightning.__version__) < high and results is not None:
        try:
            for metric in results.values():
                meta = metric.meta
                if meta.name != name or metric.has_reset:
                    continue
                if not meta.on_step:
                    raise ValueError(
                        f"Expected the metric {name!r} watched by NormGuardCallback(train_loss={name!r}) to be "
                        f"logged on step, but it is logged with on_step=False: log it with "
                        f"`self.log({name!r}, loss, on_step=True)`."
                    )
                cache = metric._forward_cache
                if isinstance(cache, Tensor):
                    return cache
        except AttributeError:  # a result collection shaped differently: use the public path from now on
            _private_read_ok = False
            log.warning(
                "normguard: Lightning %s's step cache is not readable; using callback_metrics", lightning.__version__
            )
    metrics = trainer.callback_metrics
    value = metrics.get(f"{name}_step", metrics.get(name))
    return value if isinstance(value, Tensor) else None


def _missing_metric(argument: str, name: str, trainer: pl.Trainer, where: str) -> RuntimeError:
    available = sorted(trainer.callback_metrics)
    return RuntimeError(
        f"NormGuardCallback({argument}={name!r}) found no metric {name!r} logged during fitting. "
        f"Log it in `{where}` with `self.log({name!r}, value)` or pass `{argument}=` one of the available "
        f"keys in trainer.callback_metrics: {available}."
    )
