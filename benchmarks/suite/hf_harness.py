"""Run one (task, noise, seed, arm) of a Hugging Face task in a real ``transformers.Trainer``.

The same data and model as the Lightning task ``bert_majority`` (``TASKS[task].build_data``;
the bare ``BertForSequenceClassification`` of :func:`~suite.tasks.majority_hf_bert`, built
from the same seed, so the initial weights are the Lightning run's), the same epochs budget,
batch size, learning rate and evaluation once per epoch on the noisy validation set; the
result JSON has the schema of :mod:`suite.harness` (trace per epoch with the clean test
metric at every epoch, ``epochs_trained``, ``final_test_metric``, ``events``, ``verdicts``),
so :mod:`suite.report` tabulates it beside the Lightning tasks.

What is the Trainer's and not the Lightning harness's:

* **Optimizer**: the Trainer's AdamW (``optim`` default, lr 1e-3, ``weight_decay=0.01``)
  with **Hugging Face's default decay handling**: biases and LayerNorm weights in a group at
  weight decay 0 (the Lightning arms decay every parameter). ``lr_scheduler_type="constant"``
  and ``max_grad_norm=0`` (no clipping) mirror the Lightning arms, which have neither; the
  Trainer's defaults (linear decay to 0, clipping at 1.0) are not used.
* **Shuffling** is the Trainer's sampler (``data_seed`` = seed), not the Lightning loader's
  generator: the runs start from the same weights but see other batch orders.
* **Training loss** is the Trainer's logged ``loss`` at ``logging_strategy="epoch"``: the
  mean over the epoch's steps (what the Lightning trace records too).

Arms (same names as the Lightning arms they mirror, so the report pairs them):

======================  =====================================================================
``none``                full budget, last weights
``early_stopping``      ``EarlyStoppingCallback(early_stopping_patience=10)`` with
                        ``load_best_model_at_end=True``, ``metric_for_best_model="accuracy"``,
                        ``save_strategy="best"`` (Hugging Face's own early stopping)
``stop``                ``NormGuardTrainerCallback(action="stop", noise_floor=known,
                        monitor="eval_accuracy", mode="max")``: restores its best at the end
``hold_floor_restore``  ``NormGuardTrainerCallback(action="hold_floor", ...)`` with
                        ``HoldNoiseFloor``'s default ``restore_best_at_end="engaged"``
======================  =====================================================================
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from .harness import RESULTS_DIR, TraceRecorder, finish_result, saved_result, trace_path
from .tasks import TASKS, TaskData, TaskSpec, metric_value


class TokenDataset(torch.utils.data.Dataset):
    """``{"input_ids", "labels"}`` items, as a ``Trainer`` takes them."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    return model(input_ids=x).logits


@torch.no_grad()
def test_metric(spec: TaskSpec, data: TaskData, model: nn.Module) -> float:
    """The clean test metric of ``model`` now (eval mode; the mode is put back)."""
    was_training = model.training
    model.eval()
    value = metric_value(spec, _logits(model, data.x_test), data.y_test)
    model.train(was_training)
    return value


def _trace_callback(spec: TaskSpec, data: TaskData) -> Any:
    """A ``TrainerCallback`` that feeds the Lightning harness's :class:`~suite.harness.TraceRecorder`
    (one record per evaluation during ``train()``), so both harnesses write the same trace.

    Put it first among the callbacks: it reads the weight decay before an arm changes it.
    """
    from transformers import TrainerCallback

    class HFTraceRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.recorder = TraceRecorder()
            self.records = self.recorder.records
            self._train_loss = float("nan")
            self._training = False

        def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any) -> None:
            self._training = True
            self.recorder.on_fit_start(None, SimpleNamespace(model=model))  # type: ignore[arg-type]

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._training = False

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:  # logging_strategy="epoch": the mean over the epoch's steps
                self._train_loss = float(logs["loss"])

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float], model: nn.Module, **kwargs: Any
        ) -> None:
            if not self._training:
                return
            optimizer = kwargs.get("optimizer")
            trainer = SimpleNamespace(  # what TraceRecorder reads of a Lightning Trainer
                sanity_checking=False,
                current_epoch=round(state.epoch) - 1,
                callback_metrics={
                    "val_loss": metrics["eval_loss"],
                    f"val_{spec.metric}": metrics[f"eval_{spec.metric}"],
                },
                optimizers=[optimizer] if optimizer is not None else [],
            )
            module = SimpleNamespace(  # ... and of its SuiteModule
                spec=spec,
                model=model,
                take_epoch_loss=lambda: self._train_loss,
                test_metric=lambda: test_metric(spec, data, model),
            )
            self.recorder.on_validation_end(trainer, module)  # type: ignore[arg-type]

    return HFTraceRecorder()


# ---------------------------------------------------------------------- arms
@dataclass
class HFArm:
    """An arm: extra ``TrainingArguments`` and a callbacks factory ``(spec, data) -> list``."""

    name: str
    callbacks: Callable[[TaskSpec, TaskData], list[Any]]
    description: str
    args: dict[str, Any]
    normguard: bool = False


def _early_stopping(spec: TaskSpec, data: TaskData) -> list[Any]:
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=10)]


def _normguard(action: str) -> Callable[[TaskSpec, TaskData], list[Any]]:
    def build(spec: TaskSpec, data: TaskData) -> list[Any]:
        from normguard.transformers import NormGuardTrainerCallback

        return [
            NormGuardTrainerCallback(
                noise_floor=data.floor,
                action=action,
                monitor=f"eval_{spec.metric}",
                mode=spec.mode,  # type: ignore[arg-type]
            )
        ]

    return build


HF_ARMS: dict[str, HFArm] = {
    "none": HFArm("none", lambda spec, data: [], "full budget, last weights", {}),
    "early_stopping": HFArm(
        "early_stopping",
        _early_stopping,
        "EarlyStoppingCallback(early_stopping_patience=10) + load_best_model_at_end=True (metric: eval accuracy)",
        {"load_best_model_at_end": True, "save_strategy": "best", "save_only_model": True, "save_total_limit": 1},
    ),
    "stop": HFArm(
        "stop", _normguard("stop"), "NormGuardTrainerCallback(action='stop'), known floor", {}, normguard=True
    ),
    "hold_floor_restore": HFArm(
        "hold_floor_restore",
        _normguard("hold_floor"),
        "NormGuardTrainerCallback(action='hold_floor'): HoldNoiseFloor's default restore_best_at_end='engaged'",
        {},
        normguard=True,
    ),
}


def _training_args(spec: TaskSpec, data: TaskData, seed: int, budget: int, out: str, **extra: Any) -> Any:
    from transformers import TrainingArguments

    metric = {"metric_for_best_model": spec.metric, "greater_is_better": spec.mode == "max"}
    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=len(data.y_val),  # one validation batch, as the Lightning harness
        learning_rate=1e-3,
        weight_decay=0.01,  # the Trainer leaves biases and LayerNorm weights at 0
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        num_train_epochs=budget,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy=extra.pop("save_strategy", "no"),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **metric,
        **extra,
    )


# ---------------------------------------------------------------------- one run
def run(
    task: str,
    noise: float,
    seed: int,
    arm: str,
    *,
    epochs: int | None = None,
    root: Path | None = RESULTS_DIR,
    force: bool = False,
) -> dict[str, Any]:
    """Train one arm in a ``transformers.Trainer`` and return (and, with ``root``, save) its result.

    Same signature and result schema as :func:`suite.harness.run`; a saved result with the
    same budget and trace version is reused unless ``force``.
    """
    import transformers
    from transformers import PrinterCallback, Trainer

    spec = TASKS[task]
    budget = epochs or spec.epochs
    path = trace_path(task, noise, seed, arm, root) if root is not None else None
    saved = saved_result(path, budget) if not force else None
    if saved is not None:
        return saved
    arm_spec = HF_ARMS[arm]
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # checkpoint writing of the early_stopping arm
    data = spec.build_data(noise, seed)
    torch.manual_seed(seed)
    model = spec.build_model(data)
    recorder = _trace_callback(spec, data)
    arm_callbacks = arm_spec.callbacks(spec, data)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=_training_args(spec, data, seed, budget, tmp, **dict(arm_spec.args)),
            train_dataset=TokenDataset(data.x_train, data.y_train),
            eval_dataset=TokenDataset(data.x_val, data.y_val),
            compute_metrics=lambda pred: {
                spec.metric: metric_value(spec, torch.as_tensor(pred.predictions), torch.as_tensor(pred.label_ids))
            },
            callbacks=[recorder, *arm_callbacks],
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm=True prints every log otherwise
        steps_per_epoch = len(trainer.get_train_dataloader())
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        restored = bool(trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint)
    return finish_result(
        path,
        task=task,
        noise=noise,
        seed=seed,
        arm=arm,
        budget=budget,
        data=data,
        steps_per_epoch=steps_per_epoch,
        records=recorder.records,
        final_test_metric=test_metric(spec, data, trainer.model),
        restored=restored,
        seconds=seconds,
        callbacks=arm_callbacks,
        framework=f"transformers {transformers.__version__}",
    )


__all__ = ["HF_ARMS", "HFArm", "TokenDataset", "run", "test_metric"]
