"""NormGuardTrainerCallback: the Hugging Face ``transformers.Trainer`` front door.

A thin callback over :class:`~normguard.monitor.Monitor` (the core every front door
shares): it translates the Trainer's events into ``accumulate_loss`` / ``check`` calls and
the monitor's stop request into ``control.should_training_stop``, agreed across ranks.

* ``on_log`` (training logs): the logged ``loss`` (a Python float: the mean over the
  ``logging_steps`` since the previous log, no tensor reaches callbacks) goes into the
  loss window; every ``every_n_steps`` optimizer steps (``state.global_step``; default:
  every logging step) a check follows, unless an evaluation follows at the same step.
* ``on_evaluate`` during ``train()``: a check with ``eval_loss`` (and the ``monitor``
  metric, e.g. ``"eval_accuracy"``): the detector decides there. ``evaluate()`` called
  outside ``train()`` is ignored (no decision, no error).
* ``on_save``: the best-validation weights go to ``normguard_best_weights.pt`` in the
  checkpoint folder; the rest of the state is JSON in ``trainer_state.json``
  (:class:`~transformers.trainer_callback.ExportableState`).
* ``on_train_end``: a restore asked for by a stop is applied here, after the last
  checkpoint was saved (restoring in ``on_evaluate`` would save other weights than the
  checkpoint's ``trainer_state.json`` describes), unless ``load_best_model_at_end=True``
  made Hugging Face restore its own best, which then wins (logged).

Finding the Trainer: the Trainer passes itself to no callback. At ``on_train_begin`` (and
when Hugging Face rebuilds the callback from a checkpoint) this callback walks up the call
stack to the ``Trainer`` method that called it, to read ``model_accepts_loss_kwargs``,
``compute_loss_func``, the callbacks (for TensorBoard) and ``resume_from_checkpoint``. If
no Trainer is on the stack (hooks called by hand), it works from ``args`` and the model.

Logged keys: see :mod:`normguard.tags`, into the ``TensorBoardCallback``'s own writer when
``report_to`` includes ``"tensorboard"`` (one run directory; ``normguard report`` reads it).

Example:
    >>> import torch, transformers
    >>> from normguard.transformers import NormGuardTrainerCallback
    >>> guard = NormGuardTrainerCallback(noise_floor=0.6, action="stop")
    >>> guard.options.action.describe(), guard.state()["args"]["action"]
    ('stop', 'stop')
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

try:
    import transformers
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import ExportableState
except ImportError as exc:  # transformers is an optional extra
    raise ImportError(
        "normguard.transformers needs Hugging Face transformers (`transformers>=4.40`, `accelerate>=0.30`): "
        "pip install 'normguard[transformers]'"
    ) from exc

from normguard.detector import NearInterpolationDetector
from normguard.guard import unwrap_optimizer
from normguard.monitor import GuardResults, Monitor, StateError
from normguard.options import OPTION_NAMES, GuardOptions, GuardOptionsKwargs, takes_options
from normguard.sinks import SummaryWriterSink
from normguard.validation import check_bool, check_choice, check_int, check_name

__all__ = ["BEST_WEIGHTS_FILE", "NormGuardTrainerCallback", "from_json_safe", "to_json_safe"]

log = logging.getLogger("normguard")

BEST_WEIGHTS_FILE = "normguard_best_weights.pt"
CALLBACK_STATE_VERSION = 1
_FLOAT_TAG = "__float__"


# ---------------------------------------------------------------------------- JSON-safe state
def to_json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: non-finite floats become ``{"__float__": "inf"}``,
    tuples lists, numpy scalars Python numbers. Tensors are refused (they go to side files).

    Example:
        >>> to_json_safe({"best": float("inf"), "steps": (1, 2)})
        {'best': {'__float__': 'inf'}, 'steps': [1, 2]}
        >>> import json
        >>> from_json_safe(json.loads(json.dumps(to_json_safe([float("-inf"), float("nan")]))))
        [-inf, nan]
    """
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_FLOAT_TAG: repr(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Expected string keys in a JSON state but got {key!r} ({type(key).__name__}).")
            out[key] = to_json_safe(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        raise TypeError("Expected no tensors in a JSON state (they go to a side file) but got one.")
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return to_json_safe(item())
    raise TypeError(f"Expected JSON-able data in a normguard state but got {type(value).__name__}.")


def from_json_safe(value: Any) -> Any:
    """The inverse of :func:`to_json_safe` (lists stay lists)."""
    if isinstance(value, dict):
        if set(value) == {_FLOAT_TAG}:
            return float(value[_FLOAT_TAG])
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------- the Trainer on the stack
def _same(a: Any, b: Any) -> bool:
    """The same callback: the same object, or one Hugging Face rebuilt that shares its state."""
    return a is b or getattr(a, "__dict__", None) is getattr(b, "__dict__", 0)


def _find_trainer(callback: Any = None, depth: int = 16) -> tuple[Any, dict[str, Any]]:
    """The ``transformers.Trainer`` whose method called us (holding ``callback`` if given), and
    the locals of its frames merged (``resume_from_checkpoint`` lives there). ``(None, {})``
    when no Trainer is on the stack."""
    frame = sys._getframe(1)
    trainer: Any = None
    found: dict[str, Any] = {}
    for _ in range(depth):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        ours = isinstance(candidate, transformers.Trainer) and (
            callback is None or any(_same(cb, callback) for cb in candidate.callback_handler.callbacks)
        )
        if ours and (trainer is None or candidate is trainer):
            trainer = candidate
            for key, value in frame.f_locals.items():
                found.setdefault(key, value)
        frame = frame.f_back  # type: ignore[assignment]
    return trainer, found


def _accepts_loss_kwargs(model: nn.Module) -> bool:
    """What the Trainer computes as ``model_accepts_loss_kwargs`` (used without a Trainer)."""
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def _uses_num_items(model: nn.Module) -> bool | None:
    """Whether ``model.forward`` normalises its loss by ``num_items_in_batch`` (read from its
    source: it names ``num_items_in_batch`` or hands ``**kwargs`` to ``self.loss_function``);
    ``None`` when the source cannot be read."""
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return None
    return "num_items_in_batch" in source or "loss_function(" in source


def _any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` OR-ed over the ranks (one all-reduce when a process group runs)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


# ---------------------------------------------------------------------------- TensorBoard
class _HFTensorBoardSink(SummaryWriterSink):
    """Writes into the ``TensorBoardCallback``'s writer while Hugging Face keeps it open; once
    it is closed (Hugging Face's ``on_train_end`` runs before later callbacks), into a writer
    of its own in the same run directory, which it closes. Hugging Face's is never closed."""

    def __init__(self, tb_callback: Any) -> None:
        self._tb = tb_callback
        self._own: Any = None
        super().__init__(writer=tb_callback.tb_writer)

    @property
    def writer(self) -> Any:
        if self._tb.tb_writer is self._hf_writer:
            return self._hf_writer
        if self._own is None:
            from torch.utils.tensorboard import SummaryWriter

            self._own = SummaryWriter(log_dir=self._hf_writer.log_dir, filename_suffix=".normguard")
        return self._own

    @writer.setter
    def writer(self, value: Any) -> None:
        self._hf_writer = value

    def flush(self) -> None:
        if self._own is not None:
            self._own.flush()
        elif self._tb.tb_writer is self._hf_writer:
            self._hf_writer.flush()

    def close(self) -> None:
        self.flush()
        if self._own is not None:
            self._own.close()
            self._own = None


# ---------------------------------------------------------------------------- the callback
class NormGuardTrainerCallback(GuardResults, TrainerCallback, ExportableState):
    """Watch weight norms in a Hugging Face ``Trainer`` and act on the near-interpolation signature.

    ``Trainer(..., callbacks=[NormGuardTrainerCallback(noise_floor=..., action="stop")])``.

    Args:
        every_n_steps: optimizer steps (``state.global_step``) between train checks; checks
            happen at logging steps, so ``None`` (default) checks at every log. Evaluations
            (``eval_strategy``) are checks and decisions whatever this says.
        noise_floor, action, patience, detector, monitor, mode, include_frozen,
            track_init_distance, track_update_size, offload, log_layers, sinks,
            best_weights_in_checkpoint, max_history (``**options``): see
            :class:`~normguard.options.GuardOptions`; another name raises ``TypeError``.
            ``monitor`` names an evaluation metric as the Trainer reports it
            (``"eval_accuracy"``; ``"accuracy"`` is read as ``"eval_accuracy"``).
        measure: ``"decayed"`` (default): the norms measure what the optimizer decays
            (parameters in param groups whose ``weight_decay`` is > 0; when every group is at
            0, the parameters the Trainer would decay, ``trainer.get_decay_parameter_names``);
            ``"all"``: every trainable parameter.
        val_loss: the evaluation loss key (``"eval_loss"``; ``"eval_<name>_loss"`` for one of
            several eval datasets); ``None`` ignores evaluations.
        inflated_loss: what to do when the logged loss is inflated (a model that accepts
            ``**kwargs`` but ignores ``num_items_in_batch``: the Trainer skips the division by
            gradient accumulation and multiplies by the number of processes): ``"correct"``
            (divide it back, warn once, naming the fix) or ``"refuse"`` (raise).
        model_uses_num_items: whether the model's loss is normalised by
            ``num_items_in_batch``; ``None`` reads it from ``model.forward``'s source.
        name: a label; callbacks with different names keep separate states.
        _rebuild: internal: set in :meth:`state`'s ``args``, so that the callback Hugging Face
            rebuilds on resume shares the state of the live instance.

    Resuming: the state (detector, actions, events, the stop) is JSON in
    ``trainer_state.json``, restored only with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)`` (a warning says so
    otherwise). Hugging Face then builds a new callback from :meth:`state`'s ``args``; this
    class makes that new object share the state of the one you passed (same ``name``), so
    your object stays live. ``NormGuardTrainerCallback.find(trainer)`` returns the instance in
    ``trainer.callback_handler.callbacks``. Resumed from the checkpoint of a stop, the Trainer
    trains no further step.
    """

    @takes_options
    def __init__(
        self,
        every_n_steps: int | None = None,
        *,
        measure: Literal["decayed", "all"] = "decayed",
        val_loss: str | None = "eval_loss",
        inflated_loss: Literal["correct", "refuse"] = "correct",
        model_uses_num_items: bool | None = None,
        name: str | None = None,
        _rebuild: bool = False,
        **options: Unpack[GuardOptionsKwargs],
    ) -> None:
        if _rebuild:  # Hugging Face rebuilding from a checkpoint: share the live instance's state
            live = self._live_instance(name)
            if live is not None:
                self.__dict__ = live.__dict__
                return
            log.warning(
                "normguard: Hugging Face rebuilt NormGuardTrainerCallback from a checkpoint but the instance passed "
                "to the Trainer was not found: options that are not JSON (action objects, detector, sinks) take "
                "their defaults"
            )
        if every_n_steps is not None:
            check_int("every_n_steps", every_n_steps, 1)
        self.options = GuardOptions.from_kwargs("NormGuardTrainerCallback", options, every_n_steps=every_n_steps or 1)
        self.every_n_steps = every_n_steps
        self.measure = check_choice("measure", measure, ("decayed", "all"))
        self.val_loss = check_name("val_loss", val_loss, optional=True)
        if self.options.monitor is not None and val_loss is None:
            raise ValueError("Expected argument `val_loss` to name the evaluation loss when `monitor` is given.")
        self.inflated_loss = check_choice("inflated_loss", inflated_loss, ("correct", "refuse"))
        if model_uses_num_items is not None:
            check_bool("model_uses_num_items", model_uses_num_items)
        self.model_uses_num_items = model_uses_num_items
        self.name = check_name("name", name, optional=True)
        # what rebuilds this callback from trainer_state.json: every option that is JSON data
        # (an action object, the detector and sinks are not: the rebuild shares the live instance)
        self._json_args = {
            "every_n_steps": every_n_steps,
            **{key: getattr(self.options, key) for key in OPTION_NAMES if key not in ("detector", "sinks")},
            "action": options.get("action") if _is_json_action(options.get("action")) else None,
            "measure": measure,
            "val_loss": val_loss,
            "inflated_loss": inflated_loss,
            "model_uses_num_items": model_uses_num_items,
            "name": name,
        }
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None
        self._training = False
        self._last_check_step = 0
        self._train_scale = 1.0  # multiplies the logged training loss
        self._eval_scale = 1.0  # multiplies the logged evaluation loss
        self._device = torch.device("cpu")
        self._loss_device = torch.device("cpu")
        self._trainer: Any = None
        self._blocked_training = False

    # ------------------------------------------------------------------ finding instances
    @classmethod
    def _live_instance(cls, name: str | None) -> NormGuardTrainerCallback | None:
        trainer, _ = _find_trainer()
        if trainer is None:
            return None
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, cls) and getattr(cb, "name", None) == name and hasattr(cb, "options"):
                return cb
        return None

    @classmethod
    def find(cls, trainer: Any, name: str | None = None) -> NormGuardTrainerCallback:
        """The instance the Trainer calls (``trainer.callback_handler.callbacks``)."""
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, cls) and cb.name == name:
                return cb
        raise LookupError(f"Expected a NormGuardTrainerCallback(name={name!r}) among the Trainer's callbacks.")

    @property
    def detector(self) -> NearInterpolationDetector:
        return self.options.resolved_detector

    # ------------------------------------------------------------------ state (ExportableState)
    def state(self) -> dict[str, Any]:
        """JSON data for ``trainer_state.json``: ``args`` rebuild the callback, ``attributes``
        hold the run state (the best weights go to a side file, written in :meth:`on_save`)."""
        args = {k: v for k, v in self._json_args.items() if v is not None or k == "name"}
        return {"args": {**args, "_rebuild": True}, "attributes": {"restored_state": self._export_state()}}

    def _export_state(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        monitor_state = self.monitor.state_dict()
        best = monitor_state.get("best")
        has_weights = isinstance(best, dict) and best.get("state") is not None
        has_weights |= monitor_state.pop("drift", None) is not None  # tensors: in the side file too
        if isinstance(best, dict):
            monitor_state["best"] = {**best, "state": None}
        return {
            "version": CALLBACK_STATE_VERSION,
            "monitor": to_json_safe(monitor_state),
            "last_check_step": self._last_check_step,
            "best_weights_file": BEST_WEIGHTS_FILE if has_weights else None,
        }

    @property
    def restored_state(self) -> dict[str, Any] | None:
        """The state Hugging Face restored from a checkpoint, applied at ``on_train_begin``."""
        return self._pending_state

    @restored_state.setter
    def restored_state(self, value: Any) -> None:
        if not value:
            return
        if not isinstance(value, dict) or not isinstance(value.get("monitor"), dict):
            raise StateError(
                "Expected a NormGuardTrainerCallback state (a dict with a 'monitor' dict) but got "
                f"{type(value).__name__}" + (f" with keys {sorted(value)}" if isinstance(value, dict) else "") + "."
            )
        self._pending_state = dict(value)

    def _apply_state(self, state: dict[str, Any], checkpoint: str | None) -> None:
        assert self.monitor is not None
        monitor_state = from_json_safe(state["monitor"])
        best = monitor_state.get("best")
        weights_file = state.get("best_weights_file")
        if weights_file:
            path = os.path.join(checkpoint, weights_file) if checkpoint else None
            if path is not None and os.path.isfile(path):
                saved = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(best, dict):
                    if saved.get("step") != best.get("step"):
                        raise StateError(
                            f"Expected the best weights in {path} to be those of step {best.get('step')} but they are "
                            f"of step {saved.get('step')}."
                        )
                    best["state"] = saved["state"]
                monitor_state["drift"] = saved.get("drift")
            else:
                log.warning(
                    "normguard: the best weights file %s of this checkpoint is missing: the resumed run learns 'best' "
                    "again from its next evaluation",
                    path,
                )
        self.monitor.load_state_dict(self.monitor.check_state(monitor_state))
        self._last_check_step = int(state.get("last_check_step", 0))

    # ------------------------------------------------------------------ train begin
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        trainer, frame_locals = _find_trainer(self)
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Expected the Trainer to pass a torch.nn.Module as `model` but got {type(model).__name__}."
            )
        inner = unwrap_optimizer(optimizer)
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError(
                "Expected the Trainer's optimizer to be (or wrap) a torch.optim.Optimizer but got "
                f"{type(optimizer).__name__} (DeepSpeed's optimizers are not supported)."
            )
        if self.monitor is not None:  # a previous train(): unhook it
            self.monitor.action.unbind()
        self._trainer = trainer
        self._device = torch.device(args.device)
        logging_rank = bool(state.is_world_process_zero)
        self.monitor = Monitor(
            model,
            [inner],
            self.options,
            sinks=self._sinks_for(trainer) if logging_rank else [],
            is_logging_rank=logging_rank,
            param_filter=self._param_filter(trainer, model, inner),
            defer_restore=True,
        )
        self._train_scale, self._eval_scale = self._loss_scales(trainer, args, model)
        self._loss_device = self.monitor.engine.device  # the loss window's device: no move per log
        self._compare_best(args)
        self._last_check_step = state.global_step
        checkpoint = frame_locals.get("resume_from_checkpoint")
        if not isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = (
                os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}") if state.global_step else None
            )
        pending, self._pending_state = self._pending_state, None
        if pending is not None:
            self._apply_state(pending, str(checkpoint) if checkpoint else None)
        elif state.global_step > 0:  # a fresh train() starts at step 0: this is a resume
            message = (
                f"normguard: resuming at step {state.global_step} without normguard's saved state (the detector, "
                "the events, a stop and the best weights start afresh): pass "
                "TrainingArguments(restore_callback_states_from_checkpoint=True) to restore it"
            )
            log.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        self._training = True
        if self.monitor.should_stop:
            log.warning(
                "normguard: this checkpoint (step %d) is where normguard stopped training (%s): training no further",
                state.global_step,
                self.monitor.stop_reason,
            )
            control.should_training_stop = True
            self._block_training(trainer)

    def _sinks_for(self, trainer: Any) -> list[Any]:
        if trainer is None:
            return []
        from transformers.integrations import TensorBoardCallback

        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
                return [_HFTensorBoardSink(cb)]
        return []

    def _param_filter(self, trainer: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        if self.measure == "all":
            return None
        decayed = {id(p) for g in optimizer.param_groups if float(g.get("weight_decay", 0.0)) > 0 for p in g["params"]}
        if not decayed and trainer is not None:  # every group at 0: what the Trainer would decay
            names = set(trainer.get_decay_parameter_names(model))
            decayed = {id(p) for n, p in model.named_parameters() if n in names}
        if not decayed:
            log.info("normguard: no parameter is decayed: the norms measure every trainable parameter")
            return None
        return lambda name, param: id(param) in decayed

    def _loss_scales(self, trainer: Any, args: TrainingArguments, model: nn.Module) -> tuple[float, float]:
        """Factors that turn the logged training and evaluation losses into the true means."""
        accepts = bool(trainer.model_accepts_loss_kwargs) if trainer is not None else _accepts_loss_kwargs(model)
        custom_loss = trainer is not None and getattr(trainer, "compute_loss_func", None) is not None
        if not accepts or custom_loss:
            return 1.0, 1.0  # the Trainer divides by gradient accumulation itself / the user's function does
        scaled_for_ga = getattr(trainer, "loss_is_scaled_for_ga", None)
        ga = int(args.gradient_accumulation_steps)
        world = int(args.world_size) if getattr(args, "average_tokens_across_devices", False) else 1
        train_factor = (ga if scaled_for_ga is None else 1) * world  # an explicit flag: the user's loss says
        if train_factor == 1 and world == 1:
            return 1.0, 1.0
        uses = self.model_uses_num_items if self.model_uses_num_items is not None else _uses_num_items(model)
        if uses:
            return 1.0, 1.0
        fix = (
            f"{type(model).__name__}.forward accepts **kwargs but does not normalise its loss by "
            "`num_items_in_batch`, so the Trainer skips the division by gradient accumulation "
            f"({ga}) and multiplies by the number of processes ({world}): the logged loss is {train_factor}x the true "
            "mean (and so are its gradients). Fix: set `model.accepts_loss_kwargs = False` before building the "
            "Trainer (it then divides by gradient accumulation itself), or pass "
            "NormGuardTrainerCallback(model_uses_num_items=True) if the model does normalise by it."
        )
        if uses is None:
            raise ValueError(f"normguard cannot read {type(model).__name__}.forward's source to tell whether " + fix)
        if self.inflated_loss == "refuse":
            raise ValueError("normguard refuses the inflated logged loss (inflated_loss='refuse'): " + fix)
        message = f"normguard: correcting the logged losses (training / {train_factor}, evaluation / {world}): " + fix
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        return 1.0 / train_factor, 1.0 / world

    def _compare_best(self, args: TrainingArguments) -> None:
        if not args.load_best_model_at_end:
            return
        hf_metric = _eval_key(args.metric_for_best_model or "loss")
        hf_greater = bool(args.greater_is_better) if args.greater_is_better is not None else hf_metric != "eval_loss"
        ours = _eval_key(self.options.monitor) if self.options.monitor else self.val_loss
        ours_greater = self.options.mode == "max"
        log.info(
            "normguard: load_best_model_at_end=True: Hugging Face restores its best checkpoint at the end "
            "(by %s) and normguard does not restore over it",
            hf_metric,
        )
        if (hf_metric, hf_greater) != (ours, ours_greater):
            message = (
                f"normguard: Hugging Face judges 'best' by {hf_metric} (greater_is_better={hf_greater}) but "
                f"normguard by {ours} (mode={self.options.mode!r}): with load_best_model_at_end=True Hugging Face's "
                "best is the one restored. Set metric_for_best_model / greater_is_better and monitor / mode alike."
            )
            log.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)

    def _block_training(self, trainer: Any) -> None:
        """Resumed from a stop: the Trainer's loop gets no batches, so no step is trained."""
        if trainer is None:
            log.warning("normguard: no Trainer found on the call stack: the Trainer may train one more step")
            return
        trainer.get_batch_samples = lambda *args, **kwargs: ([], None)
        self._blocked_training = True

    # ------------------------------------------------------------------ loop events
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._training or self.monitor is None or not logs or "loss" not in logs:
            return
        value = logs["loss"]
        if not isinstance(value, (int, float)):
            return
        dtype = torch.float32 if self._loss_device.type == "mps" else torch.float64
        loss = torch.tensor(float(value) * self._train_scale, dtype=dtype, device=self._loss_device)
        self.monitor.accumulate_loss(loss)  # a host float to the device: no device->host sync
        step = state.global_step
        n = self.every_n_steps or 1
        if step > self._last_check_step and step // n > self._last_check_step // n:
            if control.should_evaluate and self.val_loss is not None:
                return  # the evaluation at this step makes the check
            self._last_check_step = step
            self._check(control, step)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._training or self.monitor is None or self.val_loss is None or metrics is None:
            return  # evaluate() outside train(): no decision
        prefix = next((k[: -len("_runtime")] for k in metrics if k.endswith("_runtime")), None)
        if prefix is not None and not self.val_loss.startswith(prefix + "_"):
            return  # another eval dataset's metrics
        val = metrics.get(self.val_loss)
        if val is None:
            raise _missing_metric("val_loss", self.val_loss, metrics)
        metric: Tensor | None = None
        if self.options.monitor is not None:
            key = self.options.monitor if self.options.monitor in metrics else _eval_key(self.options.monitor)
            found = metrics.get(key)
            if found is None:
                raise _missing_metric("monitor", self.options.monitor, metrics)
            metric = torch.tensor(float(found), dtype=torch.float64)
        self._last_check_step = max(self._last_check_step, state.global_step)
        val_t = torch.tensor(float(val) * self._eval_scale, dtype=torch.float64)
        self._check(control, state.global_step, val_loss=val_t, val_metric=metric)

    def _check(
        self,
        control: TrainerControl,
        step: int,
        val_loss: torch.Tensor | None = None,
        val_metric: torch.Tensor | None = None,
    ) -> None:
        assert self.monitor is not None
        if self.monitor.should_stop:  # stopped already (the Trainer finishes its eval and save)
            control.should_training_stop = True
            return
        self.monitor.check(step, val_loss=val_loss, val_metric=val_metric)
        if _any_rank(self.monitor.should_stop, self._device):  # every rank stops, none hangs
            self.monitor.follow_stop(step)
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is None or not args.should_save or not self.options.best_weights_in_checkpoint:
            return
        best = self.monitor.best
        drift = self.monitor.engine.drift_state()
        if (best is None or best.state is None) and drift is None:
            return
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if not os.path.isdir(folder):
            log.warning("normguard: checkpoint folder %s not found: the best weights are not saved with it", folder)
            return
        saved = {"step": None, "value": None, "state": None} if best is None else best.state_dict()
        torch.save({**saved, "drift": drift}, os.path.join(folder, BEST_WEIGHTS_FILE))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.monitor is None or not self._training:
            return
        veto = None
        if args.load_best_model_at_end and state.best_model_checkpoint is not None:
            veto = (
                f"Hugging Face's load_best_model_at_end restored {state.best_model_checkpoint} "
                f"({_eval_key(args.metric_for_best_model or 'loss')} {state.best_metric}); normguard does not restore "
                "over it"
            )
        restores = sum(e.kind.value == "restore" for e in self.monitor.events)
        self.monitor.end_of_training(state.global_step, restore_veto=veto)
        if veto is not None:
            log.info("normguard: Hugging Face's best weights win: %s", veto)
        elif sum(e.kind.value == "restore" for e in self.monitor.events) > restores and self.monitor.best is not None:
            log.info("normguard: normguard's best weights win (step %s)", self.monitor.best.step)
        self.monitor.action.unbind()
        for sink in self.monitor.sinks:
            if isinstance(sink, _HFTensorBoardSink):
                sink.close()
        if self._blocked_training and self._trainer is not None:
            self._trainer.__dict__.pop("get_batch_samples", None)
        self._blocked_training = False
        self._trainer = None
        self._training = False

    def __repr__(self) -> str:
        events = 0 if self.monitor is None else len(self.monitor.events)
        return f"NormGuardTrainerCallback(every_n_steps={self.every_n_steps}, name={self.name!r}, events={events})"


def _is_json_action(action: Any) -> bool:
    if action is None or isinstance(action, str):
        return True
    return isinstance(action, (list, tuple)) and all(isinstance(a, str) for a in action)


def _eval_key(name: str) -> str:
    return name if name.startswith("eval_") else f"eval_{name}"


def _missing_metric(argument: str, name: str, metrics: Mapping[str, Any]) -> RuntimeError:
    return RuntimeError(
        f"NormGuardTrainerCallback({argument}={name!r}) found no {name!r} in the evaluation metrics: pass "
        f"`{argument}=` one of {sorted(metrics)} (a metric needs `compute_metrics=` on the Trainer)."
    )
