"""NormGuardCallback in a Lightning Trainer: the paper's linear setting, on the CPU.

Data (Wang, Sonthalia, Hu, AISTATS 2024): x = Σ^{1/2} z with Σ = diag(i^-1.5), d = 1.5 n
features, y = xᵀβ* + ε with noise variance σ² = 1 (the noise floor) and β* ~ N(0, 10/d I):
almost no signal. A bias-free linear model trained full-batch with Adam fits the noise:
its training loss sinks under 1 while its weight norm grows and the validation–train gap
widens.

The same training runs twice from the same seed:

* ``watch``: the callback only watches (``action="warn"``); training runs to the end;
* ``guard``: the callback stops training at the signature and restores the weights of the
  best validation loss (``action="stop"``).

Run::

    python examples/lightning_quickstart.py                         # prints the numbers
    python examples/lightning_quickstart.py --log-dir runs/lightning
    tensorboard --logdir runs/lightning                             # normguard/* tags, Custom Scalars tab
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

import normguard as ng
from normguard.lightning import NormGuardCallback
from normguard.science.datasets import power_law_regression


class LinearRegression(L.LightningModule):
    """A bias-free linear model; logs ``train_loss`` each step and ``val_loss`` each validation."""

    def __init__(self, d: int, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = torch.nn.Linear(d, 1, bias=False)
        torch.nn.init.zeros_(self.net.weight)
        self.lr = lr

    def mse(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return (self.net(x).squeeze(-1) - y).pow(2).mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.mse(batch)
        self.log("train_loss", loss)  # on_step is the default in training_step: what normguard reads
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.mse(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def run(data: dict[str, torch.Tensor], action: str, args: argparse.Namespace, log_dir: str) -> dict[str, Any]:
    L.seed_everything(args.seed, verbose=False)
    full = len(data["y_train"])
    train = DataLoader(TensorDataset(data["x_train"], data["y_train"]), batch_size=full)  # full batch
    val = DataLoader(TensorDataset(data["x_val"], data["y_val"]), batch_size=len(data["y_val"]))
    module = LinearRegression(data["x_train"].shape[1], lr=args.lr)
    guard = NormGuardCallback(
        every_n_steps=5,  # a check: one norm pass, one device→host transfer
        noise_floor=1.0,  # σ²: known here; "auto" estimates it from the validation loss
        action=action,  # "warn", "weight_decay", "stop", or a list: ["weight_decay", "stop"]
    )
    trainer = L.Trainer(
        max_epochs=args.steps,  # one batch per epoch: epochs = steps
        check_val_every_n_epoch=5,
        log_every_n_steps=1,
        callbacks=[guard],
        logger=TensorBoardLogger(log_dir, name=action),
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ng.actions.NormGuardWarning)
        trainer.fit(module, train, val)
    with torch.no_grad():
        test = module.mse((data["x_test"], data["y_test"])).item()
        train_mse = module.mse((data["x_train"], data["y_train"])).item()
    fired = next((e.step for e in guard.events if e.kind == ng.EventKind.DETECTOR_FIRED), None)
    best = guard.monitor.best
    return {
        "steps run": trainer.global_step,
        "detector fired at": fired,
        "restored step": None if best is None or not guard.should_stop else best.step,
        "final train MSE": train_mse,
        "test MSE": test,
        "weight norm": ng.total_norm(module).item(),
        "log dir": trainer.logger.log_dir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="training samples (d = 1.5 n features)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=None, help="TensorBoard directory (default: a temporary one)")
    args = parser.parse_args()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("normguard").setLevel(logging.ERROR)  # the events are printed below instead
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch/Lightning deprecation noise

    data = power_law_regression(n=args.n, alpha=1.5, seed=args.seed)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="normguard-lightning-")
    results = {action: run(data, action, args, log_dir) for action in ("warn", "stop")}

    print(f"paper's linear setting: n={args.n}, d={data['x_train'].shape[1]}, noise floor σ²=1")
    keys = list(results["warn"])
    width = max(map(len, keys))
    print(f"{'':{width}}  {'watch (warn)':>14}  {'guard (stop)':>14}")
    for key in keys:
        cells = []
        for action in ("warn", "stop"):
            value = results[action][key]
            cells.append(f"{value:14.4g}" if isinstance(value, float) else f"{'-' if value is None else value!s:>14}")
        if key == "log dir":
            print(f"{key:{width}}  {results['warn'][key]}\n{'':{width}}  {results['stop'][key]}")
        else:
            print(f"{key:{width}}  {'  '.join(cells)}")


if __name__ == "__main__":
    main()
