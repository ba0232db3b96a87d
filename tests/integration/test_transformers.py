"""NormGuardTrainerCallback in real Hugging Face Trainers, and NormGuard in accelerate loops.

A tiny BERT built from a config (2 layers, hidden 32, vocab 100, sequences of 16; no hub)
memorises 128 sequences with 30 % flipped labels: the training loss falls under the noise
floor while the evaluation loss rises, the near-interpolation signature.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import normguard as ng  # noqa: E402
from normguard import demos, tags  # noqa: E402
from normguard.detector import label_noise_floor  # noqa: E402
from normguard.events import EventKind  # noqa: E402
from normguard.monitor import StateError  # noqa: E402
from normguard.transformers import BEST_WEIGHTS_FILE, NormGuardTrainerCallback, add_normguard  # noqa: E402

HERE = Path(__file__).parent
FLOOR = label_noise_floor(0.6, 2)  # 30 % of 2-class labels flipped: the binary entropy of 0.3


@pytest.fixture(autouse=True)
def _quiet() -> None:
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("normguard").setLevel(logging.INFO)


# ---------------------------------------------------------------------------- small fixtures
class Sequences(torch.utils.data.Dataset):
    """Random token sequences; label = first token < 50, flipped with probability ``noise``."""

    def __init__(self, n: int, seed: int, noise: float = 0.3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 100, (n, 16), generator=g)
        clean = (self.x[:, 0] < 50).long()
        flip = torch.rand(n, generator=g) < noise
        self.y = torch.where(flip, 1 - clean, clean)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    return demos.tiny_bert(num_labels=2, seed=seed)


def training_args(out: Path, ga: int = 1, **kwargs: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 32 // ga,
        "per_device_eval_batch_size": 64,
        "gradient_accumulation_steps": ga,
        "learning_rate": 3e-3,
        "weight_decay": 0.01,
        "num_train_epochs": 25,
        "logging_steps": 4,
        "eval_strategy": "steps",
        "eval_steps": 8,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "data_seed": 0,
    }
    base.update(kwargs)
    return TrainingArguments(**base)


def make_trainer(
    out: Path, callbacks: list[Any], ga: int = 1, model: Any = None, compute_metrics: Any = None, **kwargs: Any
) -> Trainer:
    return Trainer(
        model=model if model is not None else tiny_bert(),
        args=training_args(out, ga, **kwargs),
        train_dataset=Sequences(128, 0),
        eval_dataset=Sequences(128, 1),
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


class TrueLoss(TrainerCallback):
    """Records the model's own loss at each training forward (the test's reference)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.losses: list[float] = []
        model.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training and getattr(output, "loss", None) is not None:
            self.losses.append(float(output.loss.detach()))


class RecordingSink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(step, row[tag]) for step, row in self.rows if tag in row]


def kinds(guard: NormGuardTrainerCallback) -> list[str]:
    return [e.kind.value for e in guard.events]


def weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---------------------------------------------------------------------------- stop, restore, true loss
@pytest.mark.parametrize("ga", [1, 2])
def test_stops_restores_at_train_end_and_sees_the_true_mean_loss(tmp_path: Path, ga: int) -> None:
    model = tiny_bert()
    truth = TrueLoss(model)
    sink = RecordingSink()
    # tiny BERT takes **kwargs but ignores num_items_in_batch: under accumulation the Trainer's loss is inflated
    uses = False if ga > 1 else None
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop", sinks=[sink], model_uses_num_items=uses)
    trainer = make_trainer(tmp_path, [guard, truth], ga=ga, model=model)
    with pytest.warns(UserWarning, match="accepts_loss_kwargs = False") if ga > 1 else _no_warning():
        trainer.train()

    assert kinds(guard) == ["detector_fired", "stop", "restore"]
    fired, stop, restore = guard.events
    assert fired.step == stop.step == trainer.state.global_step < trainer.state.max_steps  # stopped early
    assert restore.step == stop.step and restore.data["best_step"] < stop.step
    best = guard.monitor.best
    assert best is not None and weights_equal(model.state_dict(), best.state)

    # the loss normguard sees is the mean of the model's own losses, whatever the accumulation
    per_step = torch.tensor(truth.losses).reshape(-1, ga).mean(1)  # one value per optimizer step
    train = sink.series(tags.TRAIN_LOSS)
    assert len(train) >= 3
    last = 0
    for step, seen in train:
        assert seen == pytest.approx(per_step[last:step].mean().item(), rel=1e-5)
        last = step
    # ... and the logged value HF shows is inflated by GA (the pitfall being corrected)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[0] == pytest.approx(ga * per_step[:4].mean().item(), rel=1e-4)


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def test_the_logged_loss_is_read_as_it_is_by_default(tmp_path: Path) -> None:
    # the Trainer's own number, inflated here by a model that ignores num_items_in_batch (normguard cannot know)
    sink = RecordingSink()
    guard = NormGuardTrainerCallback(sinks=[sink])
    trainer = make_trainer(tmp_path, [guard], ga=2, max_steps=4, eval_strategy="no")
    with _no_warning():
        trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sink.series(tags.TRAIN_LOSS) == [(4, pytest.approx(logged[0], rel=1e-6))]
    with pytest.warns(FutureWarning, match="inflated_loss"):
        NormGuardTrainerCallback(inflated_loss="refuse")


class HelperNormalised(torch.nn.Module):
    """A model that normalises its loss by ``num_items_in_batch`` in a helper function (D7)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.EmbeddingBag(100, 16)
        self.head = torch.nn.Linear(16, 2)
        self.true_losses: list[float] = []

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> dict[str, torch.Tensor]:
        logits = self.head(self.embed(input_ids))
        if self.training:
            self.true_losses.append(torch.nn.functional.cross_entropy(logits, labels).item())
        return {"loss": _sum_over_items(logits, labels, **kwargs), "logits": logits}


def _sum_over_items(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None, **_: Any) -> Any:
    total = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())


def test_a_model_normalising_in_a_helper_gives_the_true_loss_under_accumulation(tmp_path: Path) -> None:
    model = HelperNormalised()
    sink = RecordingSink()
    guard = NormGuardTrainerCallback(sinks=[sink])
    trainer = make_trainer(tmp_path, [guard], ga=4, model=model, max_steps=8, eval_strategy="no", learning_rate=1e-2)
    with _no_warning():
        trainer.train()
    per_step = torch.tensor(model.true_losses).reshape(-1, 4).mean(1)  # equal micro-batches: the mean of means
    assert [step for step, _ in sink.series(tags.TRAIN_LOSS)] == [4, 8]
    for step, seen in sink.series(tags.TRAIN_LOSS):
        assert seen == pytest.approx(per_step[step - 4 : step].mean().item(), rel=1e-5)


def test_no_correction_when_the_trainer_divides_itself(tmp_path: Path) -> None:
    model = tiny_bert()
    model.accepts_loss_kwargs = False  # the fix named in the message: the Trainer divides by GA itself
    truth = TrueLoss(model)
    sink = RecordingSink()
    guard = NormGuardTrainerCallback(sinks=[sink])
    trainer = make_trainer(tmp_path, [guard, truth], ga=2, model=model, max_steps=8)
    with _no_warning():
        trainer.train()
    per_step = torch.tensor(truth.losses).reshape(-1, 2).mean(1)
    assert sink.series(tags.TRAIN_LOSS)[0][1] == pytest.approx(per_step[:4].mean().item(), rel=1e-5)
    assert guard._scales == (1.0, 1.0)


# ---------------------------------------------------------------------------- evaluate() outside train()
def test_evaluate_before_and_after_train_makes_no_decision(tmp_path: Path) -> None:
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    trainer = make_trainer(tmp_path, [guard], max_steps=16)
    trainer.evaluate()  # before train(): no monitor yet, nothing happens
    assert guard.monitor is None and guard.verdicts == []
    trainer.train()
    verdicts, events = len(guard.verdicts), list(guard.events)
    assert verdicts == 2 + 2  # train checks at 4 and 12; evaluations at 8 and 16
    trainer.evaluate()
    assert len(guard.verdicts) == verdicts and guard.events == events


# ---------------------------------------------------------------------------- load_best_model_at_end
def test_load_best_model_at_end_wins_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_bert()
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    trainer = make_trainer(
        tmp_path, [guard], model=model, save_strategy="steps", save_steps=8, load_best_model_at_end=True
    )
    with caplog.at_level(logging.INFO, logger="normguard"), _no_warning():
        trainer.train()
    assert kinds(guard) == ["detector_fired", "stop", "restore_skipped"]
    assert "load_best_model_at_end" in guard.events[-1].message
    assert "Hugging Face's best weights win" in caplog.text
    # the two judge alike (eval_loss, lower is better): the same best step
    assert trainer.state.best_global_step == guard.monitor.best.step
    from safetensors.torch import load_file

    saved = load_file(os.path.join(trainer.state.best_model_checkpoint, "model.safetensors"))
    current = model.state_dict()
    assert all(torch.equal(current[k], v) for k, v in saved.items())


def test_warns_when_the_trainer_and_normguard_judge_best_differently(tmp_path: Path) -> None:
    sink = RecordingSink()
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, monitor="accuracy", mode="max", sinks=[sink])
    trainer = make_trainer(
        tmp_path,
        [guard],
        compute_metrics=accuracy,
        save_strategy="steps",
        save_steps=8,
        load_best_model_at_end=True,
        max_steps=8,
    )
    with pytest.warns(UserWarning, match=r"judges 'best' by eval_loss .* normguard by eval_accuracy"):
        trainer.train()
    [(step, value)] = sink.series(tags.VAL_METRIC)  # "accuracy" read as eval_accuracy
    assert step == 8 and value == trainer.state.log_history[-2]["eval_accuracy"]


# ---------------------------------------------------------------------------- state, resume
def _events(guard: NormGuardTrainerCallback) -> list[tuple[int, str, str]]:
    return [(e.step, e.kind.value, e.message) for e in guard.events]


def _strict_json(path: Path) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run that stops, checkpointing every evaluation, with callback states restored on resume."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stopped")
    model = tiny_bert()
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    trainer = make_trainer(
        out, [guard], model=model, save_strategy="steps", save_steps=8, restore_callback_states_from_checkpoint=True
    )
    trainer.train()
    return {
        "out": out,
        "events": _events(guard),
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "stop": trainer.state.global_step,
        "best_step": guard.monitor.best.step,
    }


def test_checkpoint_holds_json_state_and_the_best_weights_file(stopped_run: dict[str, Any]) -> None:
    stop = stopped_run["stop"]
    folder = stopped_run["out"] / f"checkpoint-{stop}"
    state = _strict_json(folder / "trainer_state.json")["stateful_callbacks"]["NormGuardTrainerCallback"]
    assert state["args"]["action"] == "stop" and state["args"]["_rebuild"] == {"not_json": []}
    saved = state["attributes"]["restored_state"]
    assert saved["monitor"]["should_stop"] and saved["monitor"]["restore_pending"]
    assert saved["best_weights_file"] == BEST_WEIGHTS_FILE
    best = torch.load(folder / BEST_WEIGHTS_FILE, weights_only=True)
    assert best["step"] == stopped_run["best_step"]
    # the checkpoint holds the weights its trainer_state.json describes (the last ones), not the restored best
    from safetensors.torch import load_file

    last = load_file(folder / "model.safetensors")
    assert not all(torch.equal(last[k], best["state"][k]) for k in last)


def test_resume_mid_run_gives_identical_events_and_weights(stopped_run: dict[str, Any], tmp_path: Path) -> None:
    checkpoint = stopped_run["out"] / f"checkpoint-{stopped_run['stop'] - 8}"
    model = tiny_bert(seed=1)  # other initial weights: the checkpoint's replace them
    trainer = make_trainer(
        tmp_path, [], model=model, save_strategy="steps", save_steps=8, restore_callback_states_from_checkpoint=True
    )
    mine = add_normguard(trainer, noise_floor=FLOOR, action="stop")
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert NormGuardTrainerCallback.find(trainer) is mine  # Hugging Face rebuilt it; the user's object is back
    assert _events(mine) == stopped_run["events"]
    assert trainer.state.global_step == stopped_run["stop"]
    assert weights_equal(model.state_dict(), stopped_run["weights"])


def test_resume_from_the_stop_checkpoint_trains_no_further(stopped_run: dict[str, Any], tmp_path: Path) -> None:
    checkpoint = stopped_run["out"] / f"checkpoint-{stopped_run['stop']}"
    model = tiny_bert(seed=1)
    truth = TrueLoss(model)
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    trainer = make_trainer(
        tmp_path,
        [guard],
        model=model,
        save_strategy="steps",
        save_steps=8,
        restore_callback_states_from_checkpoint=True,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    # Hugging Face starts one step whatever a callback says; it gets no gradients, so the weights do not move
    assert len(truth.losses) <= 1 and trainer.state.global_step <= stopped_run["stop"] + 1
    live = NormGuardTrainerCallback.find(trainer)
    assert _events(live) == stopped_run["events"]  # the pending restore applied at the end, as in the first run
    assert weights_equal(model.state_dict(), stopped_run["weights"])


def test_resume_without_callback_states_restores_too(stopped_run: dict[str, Any], tmp_path: Path) -> None:
    checkpoint = stopped_run["out"] / f"checkpoint-{stopped_run['stop'] - 8}"
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    trainer = make_trainer(tmp_path, [guard], max_steps=stopped_run["stop"] - 4)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert NormGuardTrainerCallback.find(trainer) is guard  # not rebuilt: the state is read from trainer_state.json
    assert guard.events == [] or guard.events[0].step > 0
    assert len(guard.verdicts) >= 1 and guard.detector.state_dict() != NormGuardTrainerCallback().detector.state_dict()


def test_foreign_state_is_refused(stopped_run: dict[str, Any]) -> None:
    folder = stopped_run["out"] / f"checkpoint-{stopped_run['stop']}"
    state = _strict_json(folder / "trainer_state.json")["stateful_callbacks"]["NormGuardTrainerCallback"]
    other = BertForSequenceClassification(
        BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop")
    guard.restored_state = state["attributes"]["restored_state"]
    args = training_args(folder.parent)
    opt = torch.optim.AdamW(other.parameters(), weight_decay=0.01)
    control = transformers.TrainerControl()
    with pytest.raises(StateError, match="another model"):
        guard.on_train_begin(args, transformers.TrainerState(global_step=8), control, model=other, optimizer=opt)
    guard.restored_state = {"garbage": 1}
    with pytest.raises(StateError, match="Expected a NormGuardTrainerCallback state"):
        guard.on_train_begin(args, transformers.TrainerState(global_step=8), control, model=other, optimizer=opt)


# ---------------------------------------------------------------------------- TensorBoard
def test_tensorboard_shares_the_run_dir_and_report_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.tensorboard import SummaryWriter

    closed: list[int] = []
    original_close = SummaryWriter.close
    monkeypatch.setattr(SummaryWriter, "close", lambda self: (closed.append(id(self)), original_close(self))[1])
    trainer = make_trainer(tmp_path, [], report_to=["tensorboard"])
    guard = add_normguard(trainer, noise_floor=FLOOR, action="stop")
    from transformers.integrations import TensorBoardCallback

    tb = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TensorBoardCallback))
    hf_writer: list[Any] = []
    trainer.add_callback(
        type("Spy", (TrainerCallback,), {"on_train_begin": lambda *a, **k: hf_writer.append(tb.tb_writer)})
    )
    trainer.train()
    assert closed.count(id(hf_writer[0])) == 1  # closed once, by Hugging Face

    [run_dir] = [p for p in (tmp_path / "runs").iterdir()]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "train/loss" in scalars and "eval/loss" in scalars  # Hugging Face's tags
    assert tags.TOTAL_NORM in scalars and tags.event_tag("restore") in scalars  # normguard's, same run
    stop = guard.events[-1].step
    assert [e.step for e in acc.Scalars(tags.event_tag("restore"))] == [stop]

    from normguard import report

    runs = report.load_runs(tmp_path / "runs")
    summary = report.summarize(runs[run_dir.name])
    assert summary["first_fired_step"] == stop and summary["restored_to_step"] == guard.monitor.best.step
    assert {"stop", "restore"} <= set(summary["actions_taken"])


def test_tensorboard_without_the_trainer_uses_the_run_dir_hf_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # Hugging Face's documented setting
    guard = NormGuardTrainerCallback(noise_floor=FLOOR)
    trainer = make_trainer(tmp_path, [guard], report_to=["tensorboard"], max_steps=8)
    trainer.train()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "train/loss" in scalars and tags.TOTAL_NORM in scalars  # one run directory
    assert [e.step for e in acc.Scalars(tags.TOTAL_NORM)] == [4, 8]


# ---------------------------------------------------------------------------- weight decay and norms
def test_no_decay_group_untouched_and_norms_measure_the_decayed(tmp_path: Path) -> None:
    model = tiny_bert()
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="weight_decay", patience=1)
    trainer = make_trainer(tmp_path, [guard], model=model, max_steps=48)
    trainer.train()
    decay, no_decay = trainer.optimizer.param_groups
    assert EventKind.WEIGHT_DECAY_CHANGED in [e.kind for e in guard.events]
    assert decay["weight_decay"] > 0.01 and no_decay["weight_decay"] == 0.0
    layers = set(guard.last_norms())
    assert "bert.embeddings.LayerNorm" not in layers and "classifier" in layers
    expected = torch.cat([p.detach().flatten() for p in decay["params"]]).norm().item()
    assert guard.last_norms()["total"] == pytest.approx(expected, rel=1e-5)

    everything = NormGuardTrainerCallback(measure="all")
    trainer = make_trainer(tmp_path, [everything], model=tiny_bert(), max_steps=4, eval_strategy="no")
    trainer.train()
    assert "bert.embeddings.LayerNorm" in everything.last_norms()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        NormGuardTrainerCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="measure"):
        NormGuardTrainerCallback(measure="some")
    with pytest.raises(ValueError, match="val_loss"):
        NormGuardTrainerCallback(monitor="eval_accuracy", val_loss=None)


def test_missing_eval_metric_lists_the_keys(tmp_path: Path) -> None:
    guard = NormGuardTrainerCallback(monitor="eval_f1", mode="max")
    trainer = make_trainer(tmp_path, [guard], max_steps=8)
    with pytest.raises(RuntimeError, match=r"monitor='eval_f1'.*eval_loss"):
        trainer.train()


def test_normguard_imports_without_transformers() -> None:
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import normguard\n"
        "try:\n    import normguard.transformers\nexcept ImportError as e:\n    print(e)\n"
        "import normguard.demos\n"  # imports transformers only when a model is built
        "try:\n    normguard.demos.tiny_bert()\nexcept ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "pip install 'normguard[transformers]'" in out
    assert "tiny_bert needs Hugging Face transformers" in out


# ---------------------------------------------------------------------------- accelerate loops
def _accelerate_loop(ga: int, attach: bool, mixed_precision: str = "no") -> tuple[ng.NormGuard, list[float]]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh accelerator per test (its state is global)
    GradientState._reset_state()
    try:
        return _run_accelerate_loop(
            Accelerator(cpu=True, gradient_accumulation_steps=ga, mixed_precision=mixed_precision), attach
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _run_accelerate_loop(accelerator: Any, attach: bool) -> tuple[ng.NormGuard, list[float]]:

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x, y = torch.randn(128, 6), torch.randn(128)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    model, opt, data = accelerator.prepare(net, opt, data)
    guard = ng.NormGuard(model, opt, every_n_steps=2, attach=attach)  # an AcceleratedOptimizer, unwrapped
    losses = []
    for xb, yb in data:
        with accelerator.accumulate(model):
            loss = (model(xb).squeeze(-1) - yb).float().pow(2).mean()
            guard.report_loss(loss)  # every micro-batch, before the step that may check (no host sync)
            accelerator.backward(loss)
            opt.step()  # attached: the inner optimizer's step hook counts only real optimizer steps
            opt.zero_grad()
        losses.append(loss.item())
        if not attach and accelerator.sync_gradients:  # count optimizer steps, not micro-batches
            guard.step()
    guard.close()
    return guard, losses


@pytest.mark.parametrize("attach", [True, False])
def test_accelerate_loop_counts_optimizer_steps_under_accumulation(attach: bool) -> None:
    guard, losses = _accelerate_loop(ga=4, attach=attach)
    assert guard.global_step == 16 // 4  # 16 micro-batches, 4 optimizer steps
    assert len(guard.verdicts) == 2
    assert [v.train_loss for v in guard.verdicts] == pytest.approx([sum(losses[:8]) / 8, sum(losses[8:]) / 8])
    assert EventKind.DIVERGING_LOSS not in [e.kind for e in guard.events]


def test_accelerate_bf16_on_cpu() -> None:
    guard, _ = _accelerate_loop(ga=2, attach=True, mixed_precision="bf16")
    assert guard.global_step == 8 and len(guard.verdicts) == 4
    assert all(math.isfinite(v.train_loss) for v in guard.verdicts)
    assert all(math.isfinite(n) for n in guard.last_norms().values())


# ---------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_ddp_trainer_corrects_stops_together(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), str(HERE / "_hf_ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    # inflated by GA (2) x processes (2) for training, by processes for evaluation: corrected
    assert r0["train_scale"] == 0.25 and r0["eval_scale"] == 0.5
    # the ranks stop together, at the same step, with the same events
    assert r0["events"] == r1["events"] and [k for _, k in r0["events"]] == ["detector_fired", "stop", "restore"]
    assert r0["global_step"] == r1["global_step"] < r0["max_steps"]
    # the training loss normguard saw is the true mean over both ranks' micro-batches
    ga, world = 2, 2
    per_step = torch.tensor(r0["true_losses"]).reshape(-1, ga) + torch.tensor(r1["true_losses"]).reshape(-1, ga)
    per_step = per_step.mean(1) / world
    # the evaluation loss too: the Trainer logs twice the true value (about ln 2 at the start)
    assert r0["val_seen"] == pytest.approx([v / 2 for v in r0["eval_logged"]]) and r1["val_seen"] == []
    assert r0["val_seen"][0] < 0.8 < r0["eval_logged"][0]
    checks = [(step, seen) for step, seen in r0["train_checks"] if step % 8 == 4]  # each covers 4 steps
    assert checks
    for step, seen in checks:
        assert seen == pytest.approx(per_step[step - 4 : step].mean().item(), rel=1e-4)
    # accelerate's DDP wrapper adds `module.` to layer names; unwrap_model gives the plain names
    assert all(n.startswith("module.") for n in r0["names_wrapped"])
    assert r0["names_unwrapped"] == ["0", "2"]
