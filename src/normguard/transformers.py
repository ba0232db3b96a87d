"""NormGuardTrainerCallback: the Hugging Face ``transformers.Trainer`` front door.

A callback on Hugging Face's public ``TrainerCallback`` contract (the event arguments,
``state``, ``control``, the ``logs``/``metrics`` dicts and the model and optimizer passed
in the event keywords) over :class:`~normguard.monitor.Monitor`, the core every front door
shares.

* ``on_log``: the logged training ``loss`` (the Trainer's mean over the optimizer steps
  since its previous log, correct under gradient accumulation) enters the loss window, so
  a check can only happen at a logging step: the first log at or after each multiple of
  ``every_n_steps`` optimizer steps (``None``, the default: every log), unless an
  evaluation follows at that step.
* ``on_evaluate`` during ``train()``: a check with ``eval_loss`` (and the ``monitor``
  metric, e.g. ``"eval_accuracy"``; with ``noise_floor="estimate"``, the
  ``eval_noise_floor``/``_low``/``_high`` that ``compute_metrics=normguard.noise_floor.hf_noise_floor_metrics``
  adds): the detector decides there.
* A stop sets ``control.should_training_stop``; the best weights are restored at
  ``on_train_end``, after the last checkpoint, unless ``load_best_model_at_end`` restored
  Hugging Face's own best. Resumed from the checkpoint of a stop, training stops at once
  (the one step Hugging Face starts anyway gets no gradients: the weights stay the stop's).
* The state is JSON in ``trainer_state.json`` (``ExportableState``), read back on resume
  from ``state.stateful_callbacks`` (with or without ``restore_callback_states_from_checkpoint``);
  the best weights go to a file beside it in the checkpoint folder.

The Trainer itself is needed only to write into its TensorBoard run (without it: a writer of
normguard's own in the folder ``TENSORBOARD_LOGGING_DIR`` names, when set), to know what it
would decay when every parameter group has ``weight_decay=0``, and to keep your object as the
live callback when Hugging Face rebuilds callbacks on resume: pass it,
``NormGuardTrainerCallback(trainer=trainer)``, or use :func:`add_normguard`.

Example:
    >>> guard = NormGuardTrainerCallback(noise_floor=0.6, action="stop")
    >>> guard.state()["args"]["action"], guard.every_n_steps
    ('stop', None)
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import warnings
import weakref
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

from normguard.doors import DoorResults, any_rank, check_interval, crossed, loss_dtype, missing_metric, run_check
from normguard.doors import unwrap_optimizer as _unwrap
from normguard.events import from_json_safe, to_json_safe
from normguard.monitor import Monitor, StateError
from normguard.options import OPTION_NAMES, GuardOptions, takes_options
from normguard.sinks import SummaryWriterSink
from normguard.validation import check_bool, check_choice, check_name

__all__ = ["BEST_WEIGHTS_FILE", "NormGuardTrainerCallback", "add_normguard", "from_json_safe", "to_json_safe"]

log = logging.getLogger("normguard")

BEST_WEIGHTS_FILE = "normguard_best_weights.pt"
CALLBACK_STATE_VERSION = 1
_WITH_TRAINER: weakref.WeakSet[NormGuardTrainerCallback] = weakref.WeakSet()  # instances given their Trainer


class NormGuardTrainerCallback(DoorResults, TrainerCallback, ExportableState):
    """Watch weight norms in a Hugging Face ``Trainer`` and act on the near-interpolation signature.

    Args:
        every_n_steps: optimizer steps (``state.global_step``) between train checks, as in every
            normguard front door; the loss is known only at logs, so a check waits for the next
            log (``None``: at every log). Evaluations are checks and decisions whatever this says.
        trainer: the ``Trainer`` (optional): its TensorBoard writer, its decay rule, and your
            object kept as the live callback when Hugging Face rebuilds callbacks on resume.
        noise_floor, action, patience, detector, monitor, mode, include_frozen,
            track_init_distance, track_update_size, offload, log_layers, sinks,
            best_weights_in_checkpoint, max_history (``**options``): see
            :class:`~normguard.options.GuardOptions`. ``monitor`` names an evaluation metric
            (``"accuracy"`` is read as ``"eval_accuracy"``).
        measure: ``"decayed"``: the norms measure the parameters of groups with ``weight_decay > 0``
            (all at 0: those the Trainer would decay, with ``trainer``); ``"all"``: every one.
        val_loss: the evaluation loss key; ``None`` ignores evaluations.
        model_uses_num_items: ``False`` states that the model takes ``**kwargs`` but ignores
            ``num_items_in_batch``, so the Trainer's loss (and its gradients) are
            ``gradient_accumulation_steps`` × processes too large; normguard then divides
            them back and warns (the fix: ``model.accepts_loss_kwargs = False``).
            ``None``/``True``: the logged loss is read as it is.
        name: a label; two callbacks on one Trainer need different names.
        inflated_loss: no longer used (a ``FutureWarning``); see ``model_uses_num_items``.
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
        self.every_n_steps = None if every_n_steps is None else check_interval("every_n_steps", every_n_steps)
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
            warnings.warn(
                "NormGuardTrainerCallback(inflated_loss=...) is no longer used: the Trainer's logged loss is read as "
                "it is; pass model_uses_num_items=False for a model that ignores num_items_in_batch.",
                FutureWarning,
                stacklevel=2,
            )
        not_json = [k for k in ("action", "detector", "sinks") if not _is_json(options.get(k))]
        self._args = {  # what Hugging Face rebuilds this callback from (JSON only)
            **to_json_safe({k: getattr(self.options, k) for k in options if k in OPTION_NAMES and k not in not_json}),
            "every_n_steps": self.every_n_steps,
            "measure": measure,
            "val_loss": val_loss,
            "model_uses_num_items": model_uses_num_items,
            "name": name,
            "_rebuild": {"not_json": not_json},
        }
        self._rebuilt = _rebuild  # built by Hugging Face from a checkpoint's args
        self.trainer = trainer
        if trainer is not None:
            _WITH_TRAINER.add(self)
        self.monitor: Monitor | None = None
        self.restored_state: Any = None  # set by Hugging Face on a rebuild; the state is read from `state`
        self._training = False
        self._stopped_at_start = False
        self._last_check_step = self._begin = 0
        self._scales = (1.0, 1.0)  # multiply the logged training / evaluation losses
        self._device = torch.device("cpu")
        self._run: tuple[str, TrainerState] | None = None
        self._tb_sinks: list[SummaryWriterSink] = []  # the TensorBoard run's sinks
        self._owned: list[Any] = []  # the writers among them normguard opened

    # ------------------------------------------------------------------ state (ExportableState)
    def state(self) -> dict[str, Any]:
        """JSON data for ``trainer_state.json``: ``args`` rebuild the callback, ``attributes`` hold the run."""
        saved: dict[str, Any] = {}
        if self.monitor is not None:
            monitor = self.monitor.state_dict()
            best, drift = monitor.get("best"), monitor.pop("drift", None)
            has_file = drift is not None or (isinstance(best, dict) and best.get("state") is not None)
            if isinstance(best, dict):
                monitor["best"] = {**best, "state": None}  # tensors: in the side file
            saved = {
                "version": CALLBACK_STATE_VERSION,
                "monitor": to_json_safe(monitor),
                "last_check_step": self._last_check_step,
                "best_weights_file": self._weights_file() if has_file else None,
                "checkpoint": self._checkpoint() if has_file else None,
            }
        return {"args": self._args, "attributes": {"restored_state": saved}}

    def _checkpoint(self) -> str | None:
        """The folder of the checkpoint being saved (recorded: a resume from another output_dir finds it)."""
        return None if self._run is None else os.path.join(self._run[0], f"checkpoint-{self._run[1].global_step}")

    def _weights_file(self) -> str:
        safe = re.sub(r"\W", "_", self.name or "")
        return BEST_WEIGHTS_FILE if self.name is None else f"normguard_best_weights_{safe}.pt"

    def _saved(self, state: TrainerState) -> dict[str, Any] | None:
        """This callback's latest state in ``state.stateful_callbacks`` (Hugging Face appends an
        entry per save when a class has several instances: the last one with this name)."""
        entries = _stateful(state).get(type(self).__name__)
        for entry in reversed(entries if isinstance(entries, list) else [entries]):
            if isinstance(entry, dict) and (entry.get("args") or {}).get("name") == self.name:
                saved = (entry.get("attributes") or {}).get("restored_state")
                if saved:
                    return _valid(saved)
        return _valid(self.restored_state) if self.restored_state else None  # set by hand or by a rebuild

    def _load(self, saved: dict[str, Any], args: TrainingArguments, step: int) -> None:
        assert self.monitor is not None
        monitor = from_json_safe(saved["monitor"])
        if saved.get("best_weights_file"):
            here = os.path.join(str(args.output_dir), f"checkpoint-{step}")
            folders = [args.resume_from_checkpoint, saved.get("checkpoint"), here]
            paths = [os.path.join(str(f), saved["best_weights_file"]) for f in folders if isinstance(f, str)]
            path = next((p for p in paths if os.path.isfile(p)), None)
            if path is None:
                log.warning("normguard: no best weights file in %s: 'best' is learned again", paths)
            else:
                side = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(monitor.get("best"), dict):
                    if side.get("step") != monitor["best"].get("step"):
                        raise StateError(
                            f"Expected the best weights in {path} to be of step {monitor['best']['step']}."
                        )
                    monitor["best"]["state"] = side["state"]
                monitor["drift"] = side.get("drift")
        self.monitor.load_state_dict(monitor)
        self._last_check_step = int(saved.get("last_check_step", 0))

    # ------------------------------------------------------------------ train begin
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self._rebuilt and self._hand_over(args, state, control, **kw):
            return
        model, optimizer = kw.get("model"), _unwrap(kw.get("optimizer"))
        if not isinstance(model, nn.Module) or not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                "Expected the Trainer to pass a torch.nn.Module `model` and a torch.optim.Optimizer `optimizer` "
                f"but got {type(model).__name__} and {type(kw.get('optimizer')).__name__}."
            )
        self._check_unique(state)
        if self.monitor is not None:  # a previous train(): unhook it
            self.monitor.action.unbind()
        self._device = torch.device(args.device)
        self._run = (os.path.abspath(str(args.output_dir)), state)  # the TrainerState counts on in place
        self._tb_sinks = sinks = self._tensorboard(args) if state.is_world_process_zero else []
        self.monitor = Monitor(
            model,
            [optimizer],
            self.options,
            sinks=sinks,
            is_logging_rank=bool(state.is_world_process_zero),
            param_filter=self._param_filter(model, optimizer),
            defer_restore=True,
        )
        self._scales = self._loss_scales(args, model)
        self._compare_best(args)
        self._last_check_step = self._begin = state.global_step
        saved = self._saved(state) if state.global_step > 0 else None  # global_step > 0: a resume
        if saved is not None:
            self._load(saved, args, state.global_step)
        self._training = True
        self._stopped_at_start = self.monitor.should_stop
        if self._stopped_at_start:
            log.warning(
                "normguard: this checkpoint (step %d) is where normguard stopped: no further training",
                state.global_step,
            )
            self.monitor.action.unbind()
            control.should_training_stop = True

    def _hand_over(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> bool:
        """Hugging Face replaced the user's callback by one rebuilt from the checkpoint: put the user's
        object back in the Trainer's callback list when it was given its Trainer."""
        self._rebuilt = False
        for live in list(_WITH_TRAINER):
            handler = live.trainer.callback_handler
            if live.trainer.state is state and live.name == self.name and live not in handler.callbacks:
                handler.callbacks[handler.callbacks.index(self)] = live
                live.on_train_begin(args, state, control, **kw)
                return True
        if self._args["_rebuild"]["not_json"]:
            log.warning(
                "normguard: Hugging Face rebuilt NormGuardTrainerCallback without its %s options: pass "
                "NormGuardTrainerCallback(trainer=trainer) to keep your object",
                self._args["_rebuild"]["not_json"],
            )
        return False

    def _check_unique(self, state: TrainerState) -> None:
        if self.trainer is not None:
            same = [c for c in self.trainer.callback_handler.callbacks if isinstance(c, type(self))]
        else:  # a fresh run: one entry per instance
            entries = _stateful(state).get(type(self).__name__) if state.global_step == 0 else None
            same = entries if isinstance(entries, list) else []
        names = [c.name if isinstance(c, NormGuardTrainerCallback) else (c.get("args") or {}).get("name") for c in same]
        if names.count(self.name) > 1:
            raise ValueError(
                f"Expected each NormGuardTrainerCallback on a Trainer to have its own `name=` but "
                f"{names.count(self.name)} are named {self.name!r}: their checkpoint states would collide."
            )

    def _tensorboard(self, args: TrainingArguments) -> list[SummaryWriterSink]:
        """The TensorBoardCallback's writer (with ``trainer``), else a writer of normguard's own in the run
        directory that ``TENSORBOARD_LOGGING_DIR`` names."""
        from transformers.integrations import TensorBoardCallback

        callbacks = [] if self.trainer is None else self.trainer.callback_handler.callbacks
        tb = next((c for c in callbacks if isinstance(c, TensorBoardCallback) and c.tb_writer is not None), None)
        if tb is not None:
            return [SummaryWriterSink(writer=tb.tb_writer)]
        if self.trainer is None and "tensorboard" in (args.report_to or []):
            folder = os.environ.get("TENSORBOARD_LOGGING_DIR")
            if folder:
                own = SummaryWriterSink(os.path.expanduser(folder))
                self._owned = [own.writer]
                return [own]
            log.info("normguard: pass NormGuardTrainerCallback(trainer=...) to log into the Trainer's TensorBoard run")
        return []

    def _param_filter(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        if self.measure == "all":
            return None
        decayed = {id(p) for g in optimizer.param_groups if float(g.get("weight_decay", 0.0)) > 0 for p in g["params"]}
        if not decayed and self.trainer is not None:  # every group at 0: what the Trainer would decay
            names = set(self.trainer.get_decay_parameter_names(model))
            decayed = {id(p) for n, p in model.named_parameters() if n in names}
        return (lambda name, param: id(param) in decayed) if decayed else None

    def _loss_scales(self, args: TrainingArguments, model: nn.Module) -> tuple[float, float]:
        """``model_uses_num_items=False``: undo the Trainer's inflation of the logged losses (it skips
        the division by accumulation when the model takes ``**kwargs``, as ``model_accepts_loss_kwargs``)."""
        accepts = getattr(self.trainer, "model_accepts_loss_kwargs", getattr(model, "accepts_loss_kwargs", None))
        if accepts is None:
            accepts = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
        if self.model_uses_num_items is not False or not accepts or getattr(self.trainer, "compute_loss_func", None):
            return 1.0, 1.0
        world = int(args.world_size) if args.average_tokens_across_devices else 1
        train = int(args.gradient_accumulation_steps) * world
        warnings.warn(
            f"normguard: model_uses_num_items=False: dividing the logged training loss by {train} and the evaluation "
            f"loss by {world}; the gradients are inflated too: fix the model with `model.accepts_loss_kwargs = False`",
            UserWarning,
            stacklevel=3,
        )
        return 1.0 / train, 1.0 / world

    def _compare_best(self, args: TrainingArguments) -> None:
        if not args.load_best_model_at_end:
            return
        hf = (_eval_key(args.metric_for_best_model or "loss"), args.greater_is_better)
        hf = (hf[0], bool(hf[1]) if hf[1] is not None else hf[0] != "eval_loss")
        ours = (_eval_key(self.options.monitor) if self.options.monitor else self.val_loss, self.options.mode == "max")
        if hf != ours:
            warnings.warn(
                f"normguard: Hugging Face judges 'best' by {hf[0]} (greater_is_better={hf[1]}) but normguard by "
                f"{ours[0]} (mode={self.options.mode!r}): with load_best_model_at_end=True Hugging Face's best is "
                "the one restored. Set metric_for_best_model / greater_is_better and monitor / mode alike.",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ loop events
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        value = (kw.get("logs") or {}).get("loss")
        if not self._training or self.monitor is None or not isinstance(value, (int, float)):
            return
        device = self.monitor.engine.device
        self.monitor.accumulate_loss(torch.tensor(value * self._scales[0], dtype=loss_dtype(device), device=device))
        if crossed(self._last_check_step, state.global_step, self.every_n_steps or 1):
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
        val, metric = self._metric(metrics, "val_loss", self.val_loss), None
        if self.options.monitor is not None:
            metric = self._metric(metrics, "monitor", self.options.monitor)
        estimate = self._estimate(metrics, prefix or "eval")
        self._last_check_step = max(self._last_check_step, state.global_step)
        val_t = torch.tensor(val * self._scales[1], dtype=torch.float64)
        metric_t = None if metric is None else torch.tensor(metric, dtype=torch.float64)
        self._check(control, state.global_step, val_t, metric_t, estimate)

    def _metric(self, metrics: dict[str, Any], argument: str, name: str) -> float:
        value = metrics.get(name, metrics.get(_eval_key(name)))
        if value is None:
            how = "the Trainer reports it from `compute_metrics=`"
            raise missing_metric("NormGuardTrainerCallback", argument, name, metrics, how)
        return float(value)

    def _estimate(self, metrics: dict[str, Any], prefix: str) -> Any:
        if self.detector.noise_floor != "estimate":
            return None
        from normguard.noise_floor import FloorEstimate

        key = f"{prefix}_noise_floor"
        value, low, high = (self._metric(metrics, "noise_floor", key + s) for s in ("", "_low", "_high"))
        return FloorEstimate(value=value, low=low, high=high, n=int(metrics.get(key + "_n", 0)), kind="classification")

    def _check(
        self, control: TrainerControl, step: int, val: Any = None, metric: Any = None, estimate: Any = None
    ) -> None:
        assert self.monitor is not None
        if self.monitor.should_stop:  # stopped already (the Trainer finishes its evaluation and save)
            control.should_training_stop = True
            return
        run_check(self.monitor, step, val, metric, estimate)
        if any_rank(self.monitor.should_stop, self._device):  # every rank stops, none hangs
            self.monitor.follow_stop(step)
            control.should_training_stop = True

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._stopped_at_start and isinstance(kw.get("model"), nn.Module):
            kw["model"].zero_grad(set_to_none=True)  # the step Hugging Face takes after a stop changes nothing

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.monitor is None or not args.should_save or not self.options.best_weights_in_checkpoint:
            return
        best, drift = self.monitor.best, self.monitor.engine.drift_state()
        folder = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if ((best is None or best.state is None) and drift is None) or not os.path.isdir(folder):
            return
        saved = {"step": None, "value": None, "state": None} if best is None else best.state_dict()
        torch.save({**saved, "drift": drift}, os.path.join(folder, self._weights_file()))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.monitor is None or not self._training:
            return
        veto = None
        if args.load_best_model_at_end and state.best_model_checkpoint is not None:
            veto = (
                f"Hugging Face's load_best_model_at_end restored {state.best_model_checkpoint}; normguard does "
                "not restore over it"
            )
        own = self._own_writers()
        # resumed from a stop: the step Hugging Face counted on trained nothing; the run ends where it stopped
        self.monitor.end_of_training(self._begin if self._stopped_at_start else state.global_step, veto)
        if veto is not None:
            log.info("normguard: Hugging Face's best weights win: %s", veto)
        self.monitor.action.unbind()
        for writer in own:
            writer.close()
        self._training = self._stopped_at_start = False

    def _own_writers(self) -> list[Any]:
        """Hugging Face closes its TensorBoard writer before this callback's ``on_train_end``: what
        normguard writes last goes to a writer of its own in the same run directory."""
        from torch.utils.tensorboard import SummaryWriter

        callbacks = [] if self.trainer is None else self.trainer.callback_handler.callbacks
        own, self._owned = self._owned, []  # normguard's own writer (no Trainer given): closed at the end
        for sink in self._tb_sinks:
            if sink.writer not in own and not any(getattr(c, "tb_writer", 0) is sink.writer for c in callbacks):
                sink.writer = SummaryWriter(log_dir=sink.writer.log_dir, filename_suffix=".normguard")
                own.append(sink.writer)
        return own

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


def _stateful(state: TrainerState) -> dict[str, Any]:
    """The callback states a TrainerState holds (a dict once built; typed as a list by Hugging Face)."""
    found = state.stateful_callbacks
    return found if isinstance(found, dict) else {}


def _valid(saved: Any) -> dict[str, Any]:
    if not isinstance(saved, dict) or not isinstance(saved.get("monitor"), dict):
        raise StateError(
            f"Expected a NormGuardTrainerCallback state (a dict with a 'monitor' dict) but got {saved!r:.200}"
        )
    return saved


def _is_json(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (str, int, float))
        or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    )


def _eval_key(name: str) -> str:
    return name if name.startswith("eval_") else f"eval_{name}"
