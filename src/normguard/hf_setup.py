"""What the Hugging Face door reads from the Trainer's setup.

:class:`~normguard.transformers.NormGuardTrainerCallback` is given the model, the optimizer and
the ``TrainingArguments`` (and, optionally, the ``Trainer``); from them it learns, once per
``train()``:

* which parameters the norms measure (:func:`param_filter`);
* by how much the logged losses are inflated, for a model that ignores ``num_items_in_batch``
  (:func:`loss_scales`);
* whether Hugging Face's ``load_best_model_at_end`` judges "best" as normguard does
  (:func:`compare_best`), and, at the end, whether it restored its own best (:func:`restore_veto`);
* which TensorBoard run its tags go into (:class:`TensorBoardRun`).

It reads the public attributes of the objects it is given (Hugging Face is imported only to
recognise its ``TensorBoardCallback``).

Example:
    >>> eval_key("accuracy"), eval_key("eval_loss")
    ('eval_accuracy', 'eval_loss')
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from normguard.sinks import SummaryWriterSink

__all__ = ["TensorBoardRun", "compare_best", "eval_key", "loss_scales", "param_filter", "restore_veto"]

log = logging.getLogger("normguard")


def eval_key(name: str) -> str:
    """The key Hugging Face reports an evaluation metric under (``eval_`` prefixed)."""
    return name if name.startswith("eval_") else f"eval_{name}"


def param_filter(
    model: nn.Module, optimizer: torch.optim.Optimizer, measure: str, trainer: Any
) -> Callable[[str, torch.Tensor], bool] | None:
    """``measure="decayed"``: the parameters of groups with ``weight_decay > 0`` (all at 0: those
    ``trainer`` would decay); ``None`` measures every one."""
    if measure == "all":
        return None
    decayed = {id(p) for g in optimizer.param_groups if float(g.get("weight_decay", 0.0)) > 0 for p in g["params"]}
    if not decayed and trainer is not None:  # every group at 0: what the Trainer would decay
        names = set(trainer.get_decay_parameter_names(model))
        decayed = {id(p) for n, p in model.named_parameters() if n in names}
    return (lambda name, param: id(param) in decayed) if decayed else None


def loss_scales(args: Any, model: nn.Module, trainer: Any, model_uses_num_items: bool | None) -> tuple[float, float]:
    """What multiplies the logged training and evaluation losses: ``model_uses_num_items=False``
    undoes the Trainer's inflation (it skips the division by accumulation when the model takes
    ``**kwargs``, as ``model_accepts_loss_kwargs`` says), with a warning."""
    accepts = getattr(trainer, "model_accepts_loss_kwargs", getattr(model, "accepts_loss_kwargs", None))
    if accepts is None:
        accepts = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
    if model_uses_num_items is not False or not accepts or getattr(trainer, "compute_loss_func", None):
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


def compare_best(args: Any, monitor: str | None, val_loss: str | None, mode: str) -> None:
    """Warn when ``load_best_model_at_end`` judges "best" by another metric or direction than normguard."""
    if not args.load_best_model_at_end:
        return
    key = eval_key(args.metric_for_best_model or "loss")
    hf = (key, bool(args.greater_is_better) if args.greater_is_better is not None else key != "eval_loss")
    ours = (eval_key(monitor) if monitor else val_loss, mode == "max")
    if hf != ours:
        warnings.warn(
            f"normguard: Hugging Face judges 'best' by {hf[0]} (greater_is_better={hf[1]}) but normguard by "
            f"{ours[0]} (mode={mode!r}): with load_best_model_at_end=True Hugging Face's best is "
            "the one restored. Set metric_for_best_model / greater_is_better and monitor / mode alike.",
            UserWarning,
            stacklevel=3,
        )


def restore_veto(args: Any, state: Any) -> str | None:
    """Why normguard does not restore its best weights at the end: ``load_best_model_at_end`` restored
    Hugging Face's own best (``None``: no veto)."""
    if args.load_best_model_at_end and state.best_model_checkpoint is not None:
        return (
            f"Hugging Face's load_best_model_at_end restored {state.best_model_checkpoint}; normguard does "
            "not restore over it"
        )
    return None


class TensorBoardRun:
    """The TensorBoard run normguard's tags go into, for one ``train()``: the ``TensorBoardCallback``'s
    writer (with ``trainer``), else a writer of normguard's own in the directory that
    ``TENSORBOARD_LOGGING_DIR`` names; none off the main process (``main_process=False``)."""

    def __init__(self, trainer: Any, args: Any, main_process: bool) -> None:
        self.trainer = trainer
        self.sinks: list[SummaryWriterSink] = []
        self.owned: list[Any] = []  # the writers normguard opened: closed at the end
        if main_process:
            self._pick(args)

    def _pick(self, args: Any) -> None:
        from transformers.integrations import TensorBoardCallback

        callbacks = _callbacks(self.trainer)
        writers = [c.tb_writer for c in callbacks if isinstance(c, TensorBoardCallback) and c.tb_writer is not None]
        if writers:
            self.sinks = [SummaryWriterSink(writer=writers[0])]
        elif self.trainer is None and "tensorboard" in (args.report_to or []):
            folder = os.environ.get("TENSORBOARD_LOGGING_DIR")
            if folder:
                self.sinks = [SummaryWriterSink(os.path.expanduser(folder))]
                self.owned = [self.sinks[0].writer]
            else:
                log.info(
                    "normguard: pass NormGuardTrainerCallback(trainer=...) to log into the Trainer's TensorBoard run"
                )

    def writers_for_the_end(self) -> list[Any]:
        """Hugging Face closes its TensorBoard writer before normguard's ``on_train_end``: what normguard
        writes last goes to a writer of its own in the same run directory. Returns the writers to close
        once written (those normguard opened and these), and forgets them."""
        from torch.utils.tensorboard import SummaryWriter

        held = [getattr(c, "tb_writer", None) for c in _callbacks(self.trainer)]
        own, self.owned = self.owned, []
        for sink in self.sinks:
            if sink.writer not in own and not any(w is sink.writer for w in held):
                sink.writer = SummaryWriter(log_dir=sink.writer.log_dir, filename_suffix=".normguard")
                own.append(sink.writer)
        return own


def _callbacks(trainer: Any) -> list[Any]:
    return [] if trainer is None else list(trainer.callback_handler.callbacks)
