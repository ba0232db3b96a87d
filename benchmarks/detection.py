"""Detection quality: normguard against Lightning's EarlyStopping and against no intervention.

Every arm trains the same LightningModule with the same seed and data in a real
``L.Trainer``; only the callbacks differ:

* ``none`` — train for the full budget;
* ``early_stopping`` — ``EarlyStopping(monitor="val_loss", patience=p)`` plus a
  ``ModelCheckpoint(monitor="val_loss")`` whose best checkpoint is loaded before testing;
* ``normguard_stop`` — ``NormGuardCallback(action="stop")`` (stop + restore best weights);
* ``normguard_escalation`` — ``NormGuardCallback(action=["weight_decay", "stop"])``.

Tasks: scikit-learn's digits with 30 % symmetric label noise in training/validation labels
(clean test accuracy; noise floor = the label-noise entropy) and the paper's synthetic
regression (α = 1.5, σ² = 1; test MSE; noise floor 1.0).

Run: ``python benchmarks/detection.py [--seeds 5] [--out benchmarks/results/detection.md]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import normguard as ng
from normguard.science.datasets import noisy_digits, power_law_regression


def _lightning() -> Any:
    import lightning as L

    return L


class Task(nn.Module):
    """Model + loss + test metric of one benchmark task."""

    def __init__(self, name: str, data: dict[str, torch.Tensor], model: nn.Module, loss: Callable, lr: float) -> None:
        super().__init__()
        self.name, self.data, self.model, self.loss_fn, self.lr = name, data, model, loss, lr

    def test_metric(self) -> float:
        with torch.no_grad():
            out = self.model(self.data["x_test"])
            if self.name == "digits":
                return 100.0 * (out.argmax(1) == self.data["y_test"]).float().mean().item()
            return self.loss_fn(out, self.data["y_test"]).item()


def make_task(name: str, seed: int) -> tuple[Task, dict[str, Any]]:
    torch.manual_seed(seed)
    if name == "digits":
        data = noisy_digits(0.3, seed=seed)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        task = Task(name, data, model, nn.functional.cross_entropy, 1e-3)
        setup = {"batch_size": 64, "epochs": 100, "floor": ng.label_noise_floor(0.3, 10), "every": 8, "val_every": 1}
    else:
        data = power_law_regression(300, 1.5, seed=seed)
        model = nn.Linear(data["x_train"].shape[1], 1, bias=False)
        nn.init.zeros_(model.weight)

        def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (out.squeeze(-1) - y).pow(2).mean()

        task = Task(name, data, model, mse, 1e-2)
        setup = {"batch_size": 300, "epochs": 1000, "floor": 1.0, "every": 10, "val_every": 10}
    return task, setup


def module_for(task: Task) -> Any:
    L = _lightning()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.task = task

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            loss = self.task.loss_fn(self.task.model(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=False)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", self.task.loss_fn(self.task.model(x), y), on_epoch=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.task.model.parameters(), lr=self.task.lr, weight_decay=0.0)

    return Module()


def run_arm(task_name: str, arm: str, seed: int, patience: int) -> dict[str, float]:
    L = _lightning()
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from normguard.lightning import NormGuardCallback

    L.seed_everything(seed, verbose=False)
    task, setup = make_task(task_name, seed)
    module = module_for(task)
    d = task.data
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(
        TensorDataset(d["x_train"], d["y_train"]), batch_size=setup["batch_size"], shuffle=True, generator=g
    )
    val = DataLoader(TensorDataset(d["x_val"], d["y_val"]), batch_size=len(d["y_val"]))
    callbacks: list[Any] = []
    checkpoint = None
    with tempfile.TemporaryDirectory() as tmp:
        if arm == "early_stopping":
            checkpoint = ModelCheckpoint(dirpath=tmp, monitor="val_loss", mode="min", save_top_k=1)
            callbacks += [EarlyStopping(monitor="val_loss", patience=patience, mode="min"), checkpoint]
        elif arm.startswith("normguard"):
            action = "stop" if arm == "normguard_stop" else ["weight_decay", "stop"]
            callbacks.append(NormGuardCallback(every_n_steps=setup["every"], noise_floor=setup["floor"], action=action))
        trainer = L.Trainer(
            max_epochs=setup["epochs"],
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=checkpoint is not None,
            enable_progress_bar=False,
            enable_model_summary=False,
            check_val_every_n_epoch=setup["val_every"],
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
        )
        started = time.perf_counter()
        trainer.fit(module, train, val)
        seconds = time.perf_counter() - started
        epochs = trainer.current_epoch
        if checkpoint is not None and checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, weights_only=False)["state_dict"]
            module.load_state_dict(state)
    return {"metric": task.test_metric(), "epochs": float(epochs), "seconds": seconds}


ARMS = ("none", "early_stopping", "normguard_stop", "normguard_escalation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--patience", type=int, default=5, help="EarlyStopping patience (validations)")
    parser.add_argument("--tasks", default="digits,regression")
    parser.add_argument("--out", default="benchmarks/results/detection.md")
    parser.add_argument("--no-write", action="store_true", help="leave benchmarks/RESULTS.md untouched")
    args = parser.parse_args(argv)
    logging.getLogger("normguard").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    lines = [
        "| task | arm | test metric (median) | per seed | epochs used (median) |",
        "|---|---|---|---|---|",
    ]
    for task_name in args.tasks.split(","):
        for arm in ARMS:
            results = [run_arm(task_name, arm, seed, args.patience) for seed in range(args.seeds)]
            metrics = [r["metric"] for r in results]
            epochs = [r["epochs"] for r in results]
            unit = "clean test accuracy %" if task_name == "digits" else "test MSE"
            lines.append(
                f"| {task_name} ({unit}) | {arm} | {statistics.median(metrics):.3f} | "
                f"{', '.join(f'{m:.3f}' for m in metrics)} | {statistics.median(epochs):.0f} |"
            )
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"Command: `python benchmarks/detection.py --seeds {args.seeds} --patience {args.patience}`; "
        f"torch {torch.__version__}, 1 thread.\n\n"
    )
    out.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {out}")
    if not args.no_write:
        from _common import write_section

        write_section("detection", header + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
