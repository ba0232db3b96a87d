"""Resuming through each front door's public path, compared step by step with an uninterrupted run.

* plain loop: ``NormGuard.state_dict`` → a file → a new model, optimizer and guard →
  ``load_state_dict``;
* Lightning: ``trainer.save_checkpoint`` → a new Trainer, module and callback → ``fit(ckpt_path=...)``;
* Hugging Face: the Trainer's own checkpoints → ``train(resume_from_checkpoint=...)``.

``hold_floor`` is resumed before and after it engaged, under Adam (normguard's decoupled
shrink hook) and AdamW (its own decay): weights, the controller's per-step shrink
(``scalars()``) and the events must equal the uninterrupted run's at every step. A run
resumed from the checkpoint of a stop trains no further, through each door.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import normguard as ng
from normguard.events import EventKind
from normguard.science.datasets import power_law_regression

FLOOR = 1.0
STEPS = 60


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    return power_law_regression(n=64, alpha=1.5, seed=0)


def mlp(d: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))


def optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(model.parameters(), lr=3e-3)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def event_rows(events: list[Any]) -> list[tuple[int, str, str]]:
    return [(e.step, e.kind.value, e.message) for e in events]


# ---------------------------------------------------------------------------- plain loop
def plain_run(
    data: dict[str, torch.Tensor], opt_name: str, until: int, resume: Path | None = None
) -> tuple[dict[int, Any], ng.NormGuard, dict[str, Any]]:
    """Train to step ``until`` (from the state saved in ``resume``, if given): a trace per step, the
    guard and what a checkpoint holds."""
    model = mlp(data["x_train"].shape[1], seed=0 if resume is None else 1)  # resumed: other weights, replaced
    opt = optimizer(opt_name, model)
    guard = ng.NormGuard(model, opt, every_n_steps=5, noise_floor=FLOOR, action="hold_floor")
    if resume is not None:
        saved = torch.load(resume, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        guard.load_state_dict(saved["guard"])

    def mse(split: str) -> torch.Tensor:
        return (model(data[f"x_{split}"]).squeeze(-1) - data[f"y_{split}"]).pow(2).mean()

    trace: dict[int, Any] = {}
    for step in range(guard.global_step + 1, until + 1):
        loss = mse("train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.step(loss)
        if step % 10 == 0:
            with torch.no_grad():
                guard.validation_end(mse("val"))
        assert guard.monitor is not None
        trace[step] = (flat(model), guard.monitor.action.scalars(), guard.monitor.action.engaged)
    return trace, guard, {"model": model.state_dict(), "optimizer": opt.state_dict(), "guard": guard.state_dict()}


def engaged_at(trace: dict[int, Any]) -> int:
    return min(step for step, (_, _, engaged) in trace.items() if engaged)


def assert_same_from(start: int, full: dict[int, Any], resumed: dict[int, Any]) -> None:
    assert sorted(resumed) == [s for s in sorted(full) if s > start]
    for step in sorted(resumed):
        weights, scalars, engaged = resumed[step]
        torch.testing.assert_close(weights, full[step][0], msg=f"weights differ at step {step}")
        assert scalars == pytest.approx(full[step][1]), f"lr·λ differs at step {step}"
        assert engaged == full[step][2]


@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_plain_hold_floor_resumes_step_by_step(
    data: dict[str, torch.Tensor], tmp_path: Path, opt_name: str, when: str
) -> None:
    full, full_guard, _ = plain_run(data, opt_name, STEPS)
    engage = engaged_at(full)
    assert 2 <= engage <= STEPS - 10, "the test needs the controller to engage mid-run"
    start = engage - 1 if when == "before" else engage + 7
    _, first, saved = plain_run(data, opt_name, start)
    torch.save(saved, tmp_path / "state.pt")
    first.close(training_completed=False)
    resumed, guard, _ = plain_run(data, opt_name, STEPS, resume=tmp_path / "state.pt")
    assert_same_from(start, full, resumed)
    assert event_rows(guard.events) == event_rows(full_guard.events)


def test_plain_stop_holds_on_resume(data: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = mlp(data["x_train"].shape[1])
    opt = optimizer("adam", model)
    guard = ng.NormGuard(model, opt, every_n_steps=1, noise_floor=FLOOR, action="stop_no_restore", patience=1)
    for _ in range(200):
        loss = (model(data["x_train"]).squeeze(-1) - data["y_train"]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.step(loss)
        with torch.no_grad():
            guard.validation_end((model(data["x_val"]).squeeze(-1) - data["y_val"]).pow(2).mean())
        if guard.should_stop:
            break
    assert guard.should_stop
    again = ng.NormGuard(mlp(data["x_train"].shape[1], seed=1), every_n_steps=1, noise_floor=FLOOR, action="stop")
    again.load_state_dict(guard.state_dict())
    assert again.should_stop and again.global_step == guard.global_step  # the loop's `while not guard.should_stop`


# ---------------------------------------------------------------------------- Lightning
L = pytest.importorskip("lightning")


class Regressor(L.LightningModule):
    def __init__(self, data: dict[str, torch.Tensor], opt_name: str, seed: int = 0) -> None:
        super().__init__()
        self.net = mlp(data["x_train"].shape[1], seed)
        self.opt_name = opt_name

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return (self.net(x).squeeze(-1) - y).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", (self.net(x).squeeze(-1) - y).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return optimizer(self.opt_name, self.net)


class Trace(L.Callback):
    def __init__(self, guard: Any) -> None:
        self.guard = guard
        self.steps: dict[int, Any] = {}

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        action = self.guard.monitor.action
        self.steps[trainer.global_step] = (flat(pl_module.net), action.scalars(), getattr(action, "engaged", False))


def lightning_run(
    data: dict[str, torch.Tensor],
    opt_name: str,
    epochs: int,
    ckpt: Path | None = None,
    action: str = "hold_floor",
    save_to: Path | None = None,
) -> tuple[Any, Any, Trace]:
    """``save_to``: a checkpoint at every step there (``step=N.ckpt``), as a preempted job has."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from normguard.lightning import NormGuardCallback

    L.seed_everything(0, verbose=False)
    train = DataLoader(TensorDataset(data["x_train"], data["y_train"]), batch_size=len(data["x_train"]))
    val = DataLoader(TensorDataset(data["x_val"], data["y_val"]), batch_size=len(data["x_val"]))
    guard = NormGuardCallback(5, noise_floor=FLOOR, action=action)
    trace = Trace(guard)
    saving = [] if save_to is None else [ModelCheckpoint(save_to, "{step}", every_n_train_steps=1, save_top_k=-1)]
    trainer = L.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=10,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=save_to is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        callbacks=[guard, trace, *saving],
    )
    module = Regressor(data, opt_name, seed=0 if ckpt is None else 1)
    trainer.fit(module, train, val, ckpt_path=str(ckpt) if ckpt else None)
    return trainer, guard, trace


@pytest.mark.slow
@pytest.mark.parametrize(
    ("opt_name", "when"), [("adam", "before"), ("adam", "after"), ("adamw", "before"), ("adamw", "after")]
)
def test_lightning_hold_floor_resumes_step_by_step(
    data: dict[str, torch.Tensor], tmp_path: Path, opt_name: str, when: str
) -> None:
    # one step per epoch; a checkpoint at every step (saved mid-run: not after fit's end-of-training restore)
    _, full_guard, full = lightning_run(data, opt_name, STEPS, save_to=tmp_path)
    engage = engaged_at(full.steps)
    assert 2 <= engage <= STEPS - 10
    start = engage - 1 if when == "before" else engage + 7
    trainer, guard, resumed = lightning_run(data, opt_name, STEPS, ckpt=tmp_path / f"step={start}.ckpt")
    assert trainer.global_step == STEPS
    assert_same_from(start, full.steps, resumed.steps)
    assert event_rows(guard.events) == event_rows(full_guard.events)


def test_lightning_stop_in_a_checkpoint_stops_at_once(data: dict[str, torch.Tensor], tmp_path: Path) -> None:
    # D8: a checkpoint saved after a normguard stop; fit(ckpt_path=...) trains no further
    first, guard, _ = lightning_run(data, "adam", 200, action="stop_no_restore")
    assert guard.should_stop and first.global_step < 200
    first.save_checkpoint(tmp_path / "stopped.ckpt")
    stopped_weights = flat(first.lightning_module.net)
    trainer, again, trace = lightning_run(data, "adam", 200, ckpt=tmp_path / "stopped.ckpt", action="stop_no_restore")
    assert trainer.global_step == first.global_step and trace.steps == {}
    assert again.should_stop
    torch.testing.assert_close(flat(trainer.lightning_module.net), stopped_weights, rtol=0, atol=0)


# ---------------------------------------------------------------------------- Hugging Face
transformers = pytest.importorskip("transformers")


class HFRegressor(nn.Module):
    def __init__(self, d: int, seed: int = 0) -> None:
        super().__init__()
        self.net = mlp(d, seed)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = self.net(x).squeeze(-1)
        return {"loss": (pred - labels).pow(2).mean(), "logits": pred}


class Rows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class HFTrace(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.guard: Any = None
        self.steps: dict[int, Any] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        action = self.guard.monitor.action
        self.steps[state.global_step] = (flat(model.net), action.scalars(), getattr(action, "engaged", False))


def hf_run(
    data: dict[str, torch.Tensor],
    out: Path,
    weight_decay: float,
    resume: str | None = None,
    action: str = "hold_floor",
    max_steps: int = STEPS,
) -> tuple[Any, Any, HFTrace]:
    from normguard.transformers import add_normguard

    args = transformers.TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=len(data["x_train"]),
        per_device_eval_batch_size=len(data["x_val"]),
        learning_rate=3e-3,
        weight_decay=weight_decay,
        lr_scheduler_type="constant",
        max_steps=max_steps,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=10,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        restore_callback_states_from_checkpoint=True,
    )
    trace = HFTrace()
    trainer = transformers.Trainer(
        model=HFRegressor(data["x_train"].shape[1], seed=0 if resume is None else 1),
        args=args,
        train_dataset=Rows(data["x_train"], data["y_train"]),
        eval_dataset=Rows(data["x_val"], data["y_val"]),
        callbacks=[trace],
    )
    trace.guard = add_normguard(trainer, every_n_steps=5, noise_floor=FLOOR, action=action)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, trace.guard, trace


@pytest.mark.slow
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("when", ["before", "after"])
def test_hf_hold_floor_resumes_step_by_step(
    data: dict[str, torch.Tensor], tmp_path: Path, weight_decay: float, when: str
) -> None:
    # the Trainer's AdamW: at weight_decay 0 normguard's shrink hook acts (as under Adam), else the group's own decay
    _, full_guard, full = hf_run(data, tmp_path / "full", weight_decay)
    engage = engaged_at(full.steps)
    assert 2 <= engage <= STEPS - 10
    start = engage - 1 if when == "before" else engage + 7
    checkpoint = str(tmp_path / "full" / f"checkpoint-{start}")
    trainer, guard, resumed = hf_run(data, tmp_path / "resumed", weight_decay, resume=checkpoint)
    assert trainer.state.global_step == STEPS
    assert_same_from(start, full.steps, resumed.steps)
    assert event_rows(guard.events) == event_rows(full_guard.events)


@pytest.mark.slow
def test_hf_stop_in_a_checkpoint_stops_at_once(data: dict[str, torch.Tensor], tmp_path: Path) -> None:
    trainer, guard, _ = hf_run(data, tmp_path / "first", 0.01, action="stop_no_restore", max_steps=200)
    assert guard.should_stop and trainer.state.global_step < 200
    stop = trainer.state.global_step
    stopped = flat(trainer.model.net)
    checkpoint = str(tmp_path / "first" / f"checkpoint-{stop}")
    again, guard2, _ = hf_run(
        data, tmp_path / "again", 0.01, resume=checkpoint, action="stop_no_restore", max_steps=200
    )
    assert guard2.should_stop and EventKind.STOP in [e.kind for e in guard2.events]
    assert again.state.global_step <= stop + 1  # Hugging Face starts one step; it gets no gradients
    torch.testing.assert_close(flat(again.model.net), stopped, rtol=0, atol=0)


def hf_two_callbacks(
    data: dict[str, torch.Tensor], out: Path, names: tuple[Any, Any], resume: str | None = None, restore: bool = True
) -> tuple[Any, list[Any]]:
    from normguard.transformers import NormGuardTrainerCallback

    guards = [
        NormGuardTrainerCallback(name=names[0], noise_floor=FLOOR, patience=2, action="weight_decay"),
        NormGuardTrainerCallback(3, name=names[1], noise_floor=0.5, patience=5, action="weight_decay"),
    ]
    args = transformers.TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=len(data["x_train"]),
        learning_rate=3e-3,
        weight_decay=0.01,
        lr_scheduler_type="constant",
        max_steps=20,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=5,
        save_strategy="steps",
        save_steps=5,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        restore_callback_states_from_checkpoint=restore,
    )
    trainer = transformers.Trainer(
        model=HFRegressor(data["x_train"].shape[1], seed=0 if resume is None else 1),
        args=args,
        train_dataset=Rows(data["x_train"], data["y_train"]),
        eval_dataset=Rows(data["x_val"], data["y_val"]),
        callbacks=guards,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, [NormGuardTrainerCallback.find(trainer, n) for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("restore", [True, False])
def test_hf_two_named_callbacks_resume_each_with_its_own_state(
    data: dict[str, torch.Tensor], tmp_path: Path, restore: bool
) -> None:
    # D6: Hugging Face appends both states to one list at every save and hands the first (empty) entries to
    # the callbacks it rebuilds; each callback reads its own latest entry by name instead
    _, full = hf_two_callbacks(data, tmp_path / "full", ("a", "b"))
    checkpoint = str(tmp_path / "full" / "checkpoint-10")
    _, resumed = hf_two_callbacks(data, tmp_path / "resumed", ("a", "b"), resume=checkpoint, restore=restore)
    for mine, theirs in zip(resumed, full):
        assert mine.detector.state_dict() == theirs.detector.state_dict()
        assert event_rows(mine.events) == event_rows(theirs.events)
    assert full[0].detector.state_dict() != full[1].detector.state_dict()


def test_hf_two_unnamed_callbacks_are_refused(data: dict[str, torch.Tensor], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="its own `name=`"):
        hf_two_callbacks(data, tmp_path, (None, None))
