"""NormGuardTrainerCallback: the Hugging Face ``transformers.Trainer`` front door.

A callback on Hugging Face's public ``TrainerCallback`` contract (the event arguments,
``state``, ``control``, the ``logs``/``metrics`` dicts, the model and optimizer in the event
keywords) over :class:`~normguard.monitor.Monitor`, the core every front door shares.
``on_log`` feeds the logged training ``loss`` (correct under gradient accumulation) to the
loss window and checks at the first log at or after each multiple of ``every_n_steps``;
``on_evaluate`` during ``train()`` checks with ``eval_loss`` (the ``monitor`` metric, the
floor estimate of ``compute_metrics=normguard.noise_floor.hf_noise_floor_metrics``) and
decides; a stop sets ``control.should_training_stop`` and holds on resume; the best weights
are restored at ``on_train_end``, after the last checkpoint. What it reads from the Trainer's
setup is :mod:`normguard.hf_setup`'s; what it keeps in checkpoints, :mod:`normguard.hf_state`'s.

Example:
    >>> guard = NormGuardTrainerCallback(noise_floor=0.6, action="stop")
    >>> guard.state()["args"]["action"], guard.every_n_steps
    ('stop', None)
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Literal

import torch
from torch import nn

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import ExportableState
except ImportError as exc:  # transformers is an optional extra
    raise ImportError(
        "normguard.transformers needs Hugging Face transformers (`transformers>=4.40`, `accelerate>=0.30`): "
        "pip install 'normguard[transformers]'"
    ) from exc

from normguard import doors, hf_setup, hf_state
from normguard.hf_setup import eval_key
from normguard.hf_state import BEST_WEIGHTS_FILE
from normguard.monitor import Monitor
from normguard.noise_floor import FloorEstimate
from normguard.options import GuardOptions, takes_options
from normguard.validation import check_bool, check_choice, check_name

__all__ = ["BEST_WEIGHTS_FILE", "NormGuardTrainerCallback", "add_normguard"]

log = logging.getLogger("normguard")


class NormGuardTrainerCallback(doors.DoorResults, TrainerCallback, ExportableState):
    """Watch weight norms in a Hugging Face ``Trainer`` and act on the near-interpolation signature.

    Args:
        every_n_steps: optimizer steps (``state.global_step``) between train checks, as in every
            normguard front door; the loss is known only at logs, so a check waits for the next
            log (``None``: at every log). Evaluations are checks and decisions whatever this says.
        trainer: the ``Trainer`` (optional, or use :func:`add_normguard`): its TensorBoard writer
            (without it: a writer of normguard's own in the folder ``TENSORBOARD_LOGGING_DIR``
            names), its decay rule, and your object kept as the live callback on resume.
        measure: ``"decayed"``: the norms measure the parameters of groups with ``weight_decay > 0``
            (all at 0: those the Trainer would decay, with ``trainer``); ``"all"``: every one.
        val_loss: the evaluation loss key; ``None`` ignores evaluations.
        model_uses_num_items: ``False`` states that the model takes ``**kwargs`` but ignores
            ``num_items_in_batch``, so the Trainer's losses are ``gradient_accumulation_steps`` ×
            processes too large: normguard divides them back and warns (see
            :func:`~normguard.hf_setup.loss_scales`). ``None``/``True``: read as they are.
        name: a label; two callbacks on one Trainer need different names.
        inflated_loss: no longer used (a ``FutureWarning``); see ``model_uses_num_items``.
        **options: the options of :class:`~normguard.options.GuardOptions` (``help()`` lists
            them with their defaults); another name raises ``TypeError``. ``monitor`` names an
            evaluation metric (``"accuracy"`` is read as ``"eval_accuracy"``).
    """

    @takes_options
    def __init__(
        self,
        every_n_steps: int | None = None,
        *,
        trainer: Any = None,
        measure: Literal["decayed", "all"] = "decayed",
        val_loss: str | None = "eval_loss",
        model_uses_num_items: bool | None = None,
        name: str | None = None,
        inflated_loss: str | None = None,
        _rebuild: Any = False,
        **options: Any,
    ) -> None:
        self.every_n_steps = None if every_n_steps is None else doors.check_interval("every_n_steps", every_n_steps)
        self.options = GuardOptions.from_kwargs("NormGuardTrainerCallback", options, every_n_steps=every_n_steps or 1)
        self.measure = check_choice("measure", measure, ("decayed", "all"))
        self.val_loss = check_name("val_loss", val_loss, optional=True)
        if self.options.monitor is not None and val_loss is None:
            raise ValueError("Expected argument `val_loss` to name the evaluation loss when `monitor` is given.")
        self.model_uses_num_items = (
            None if model_uses_num_items is None else check_bool("model_uses_num_items", model_uses_num_items)
        )
        self.name = check_name("name", name, optional=True)
        if inflated_loss is not None:
            advice = "the Trainer's logged loss is read as it is; pass model_uses_num_items=False for a model that "
            doors.retired("NormGuardTrainerCallback", "inflated_loss", advice + "ignores num_items_in_batch.")
        own = {"every_n_steps": self.every_n_steps, "measure": measure, "val_loss": val_loss, "name": name}
        self._args = hf_state.rebuild_args(self.options, options, {**own, "model_uses_num_items": model_uses_num_items})
        self._rebuilt = _rebuild  # built by Hugging Face from a checkpoint's args
        self.trainer = trainer
        if trainer is not None:
            hf_state.keep_live(self)
        self.monitor: Monitor | None = None
        self.restored_state: Any = None  # set by Hugging Face on a rebuild; the state is read from `state`
        self._training = self._stopped_at_start = False
        self._last_check_step = self._begin = 0
        self._scales = (1.0, 1.0)  # multiply the logged training / evaluation losses
        self._agree = functools.partial(doors.any_rank, device=torch.device("cpu"))  # one stop for every rank
        self._run: tuple[str, TrainerState] | None = None  # the output folder; the TrainerState counts on in place
        self._tensorboard = hf_setup.TensorBoardRun(trainer, None, main_process=False)

    def state(self) -> dict[str, Any]:
        """``ExportableState``: JSON for ``trainer_state.json`` (``args`` rebuild the callback)."""
        saved: dict[str, Any] = {}
        if self.monitor is not None:
            folder = None if self._run is None else hf_state.checkpoint_folder(self._run[0], self._run[1].global_step)
            saved = hf_state.export(self.monitor, self._last_check_step, self.name, folder)
        return {"args": self._args, "attributes": {"restored_state": saved}}

    # ------------------------------------------------------------------ train begin
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self._rebuilt:  # Hugging Face rebuilt this callback from a checkpoint: the user's object takes over
            self._rebuilt, live = False, hf_state.hand_over(self, state, self._args["_rebuild"]["not_json"])
            if live is not None:
                live.on_train_begin(args, state, control, **kw)
                return
        model, optimizer = kw.get("model"), doors.unwrap_optimizer(kw.get("optimizer"))
        if not isinstance(model, nn.Module) or not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                "Expected the Trainer to pass a torch.nn.Module `model` and a torch.optim.Optimizer `optimizer` "
                f"but got {type(model).__name__} and {type(kw.get('optimizer')).__name__}."
            )
        hf_state.check_unique(self, state)
        if self.monitor is not None:  # a previous train(): unhook it
            self.monitor.action.unbind()
        self._agree = functools.partial(doors.any_rank, device=torch.device(args.device))
        self._run = (os.path.abspath(str(args.output_dir)), state)
        self._tensorboard = hf_setup.TensorBoardRun(self.trainer, args, bool(state.is_world_process_zero))
        self.monitor = Monitor(
            model,
            [optimizer],
            self.options,
            sinks=self._tensorboard.sinks,
            is_logging_rank=bool(state.is_world_process_zero),
            param_filter=hf_setup.param_filter(model, optimizer, self.measure, self.trainer),
            defer_restore=True,
        )
        self._scales = hf_setup.loss_scales(args, model, self.trainer, self.model_uses_num_items)
        hf_setup.compare_best(args, self.options.monitor, self.val_loss, self.options.mode)
        self._last_check_step = self._begin = state.global_step
        saved = hf_state.find_saved(self, state) if state.global_step > 0 else None  # global_step > 0: a resume
        if saved is not None:
            self._last_check_step = hf_state.load(self.monitor, saved, args, state.global_step)
        self._training, self._stopped_at_start = True, self.monitor.should_stop
        if self._stopped_at_start:
            log.warning(
                "normguard: this checkpoint (step %d) is where normguard stopped: no further training",
                state.global_step,
            )
            self.monitor.action.unbind()
            control.should_training_stop = True

    # ------------------------------------------------------------------ loop events
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        value = (kw.get("logs") or {}).get("loss")
        if not self._training or self.monitor is None or not isinstance(value, (int, float)):
            return
        device = self.monitor.engine.device
        loss = torch.tensor(value * self._scales[0], dtype=doors.loss_dtype(device), device=device)
        self.monitor.accumulate_loss(loss)
        if doors.crossed(self._last_check_step, state.global_step, self.every_n_steps or 1):
            if control.should_evaluate and self.val_loss is not None:
                return  # the evaluation at this step makes the check
            self._last_check_step = state.global_step
            self._check(control, state.global_step)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        metrics = kw.get("metrics")
        if not self._training or self.monitor is None or self.val_loss is None or metrics is None:
            return  # evaluate() outside train(): no decision
        prefix = next((k[: -len("_runtime")] for k in metrics if k.endswith("_runtime")), None)
        if prefix is not None and not self.val_loss.startswith(prefix + "_"):
            return  # another eval dataset's metrics
        val = torch.tensor(self._metric(metrics, "val_loss", self.val_loss) * self._scales[1], dtype=torch.float64)
        metric = None
        if self.options.monitor is not None:
            metric = torch.tensor(self._metric(metrics, "monitor", self.options.monitor), dtype=torch.float64)
        estimate = self._estimate(metrics, prefix or "eval")
        self._last_check_step = max(self._last_check_step, state.global_step)
        self._check(control, state.global_step, val, metric, estimate)

    def _metric(self, metrics: dict[str, Any], argument: str, name: str) -> float:
        value = metrics.get(name, metrics.get(eval_key(name)))
        if value is None:
            how = "the Trainer reports it from `compute_metrics=`"
            raise doors.missing_metric("NormGuardTrainerCallback", argument, name, metrics, how)
        return float(value)

    def _estimate(self, metrics: dict[str, Any], prefix: str) -> Any:
        if self.detector.noise_floor != "estimate":
            return None
        key = f"{prefix}_noise_floor"
        value, low, high = (self._metric(metrics, "noise_floor", key + s) for s in ("", "_low", "_high"))
        return FloorEstimate(value=value, low=low, high=high, n=int(metrics.get(key + "_n", 0)), kind="classification")

    def _check(
        self, control: TrainerControl, step: int, val: Any = None, metric: Any = None, estimate: Any = None
    ) -> None:
        assert self.monitor is not None  # stopped already: the Trainer still finishes its evaluation and save
        if self.monitor.should_stop or doors.check_and_agree(self.monitor, step, self._agree, val, metric, estimate):
            control.should_training_stop = True

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._stopped_at_start and isinstance(kw.get("model"), nn.Module):
            kw["model"].zero_grad(set_to_none=True)  # the step Hugging Face takes after a stop changes nothing

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.monitor is not None and args.should_save and self.options.best_weights_in_checkpoint:
            folder = hf_state.checkpoint_folder(args.output_dir, state.global_step)
            hf_state.save_weights(self.monitor, folder, self.name)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.monitor is None or not self._training:
            return
        veto, own = hf_setup.restore_veto(args, state), self._tensorboard.writers_for_the_end()
        # resumed from a stop: the step Hugging Face counted on trained nothing; the run ends where it stopped
        self.monitor.end_of_training(self._begin if self._stopped_at_start else state.global_step, veto)
        if veto is not None:
            log.info("normguard: Hugging Face's best weights win: %s", veto)
        self.monitor.action.unbind()
        for writer in own:
            writer.close()
        self._training = self._stopped_at_start = False

    @classmethod
    def find(cls, trainer: Any, name: str | None = None) -> NormGuardTrainerCallback:
        """The instance the Trainer calls (``trainer.callback_handler.callbacks``)."""
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, cls) and cb.name == name:
                return cb
        raise LookupError(f"Expected a NormGuardTrainerCallback(name={name!r}) among the Trainer's callbacks.")

    def __repr__(self) -> str:
        events = len(self.events)
        return f"NormGuardTrainerCallback(every_n_steps={self.every_n_steps}, name={self.name!r}, events={events})"


def add_normguard(trainer: Any, **options: Any) -> NormGuardTrainerCallback:
    """Build a :class:`NormGuardTrainerCallback` that knows ``trainer`` and add it to it."""
    callback = NormGuardTrainerCallback(trainer=trainer, **options)
    trainer.add_callback(callback)
    return callback
