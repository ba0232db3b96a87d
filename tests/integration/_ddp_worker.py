"""Two-process DDP on CPU (gloo) with NormGuardCallback; run by test_distributed.py as a script.

Usage: python _ddp_worker.py OUT_DIR [ACTION]. Lightning's DDP launcher re-runs this script
for rank 1; each rank writes OUT_DIR/rank<r>.json. ACTION is an action name, or
``rank1_stops``: only rank 1 asks to stop (the ranks must still agree, and none hang).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


def main(out_dir: str, action: str) -> None:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from normguard.lightning import NormGuardCallback
    from normguard.science.datasets import power_law_regression

    logging.getLogger("lightning").setLevel(logging.ERROR)

    class Linear(L.LightningModule):
        def __init__(self, d: int) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Linear(d, 1, bias=False)
            self.step_losses: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = (self.net(x).squeeze(-1) - y).pow(2).mean()
            self.step_losses.append(loss.item())  # for the test's reference only
            self.log("train_loss", loss)  # rank-local: the monitor's loss window syncs at checks
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", (self.net(x).squeeze(-1) - y).pow(2).mean())  # rank-local on purpose

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    L.seed_everything(0)
    data = power_law_regression(n=200, alpha=1.5, seed=0)
    train = DataLoader(TensorDataset(data["x_train"], data["y_train"]), batch_size=100)
    val = DataLoader(TensorDataset(data["x_val"], data["y_val"]), batch_size=100)
    module = Linear(data["x_train"].shape[1])
    if action == "rank1_stops":

        def rank1_stops(verdict: Any, context: Any) -> None:
            if torch.distributed.get_rank() == 1:
                context.request_stop("rank 1 only")

        chosen: Any = rank1_stops
    else:
        chosen = action
    guard = NormGuardCallback(every_n_steps=5, noise_floor=1.0, action=chosen)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=150,
        check_val_every_n_epoch=5,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(Path(out_dir) / "tb"), name="run"),
        callbacks=[guard],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, train, val)
    rank = trainer.global_rank
    result = {
        "rank": rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "should_stop": trainer.should_stop,
        "events": [e.to_dict() for e in guard.events],
        "verdicts": [[v.step, v.reason.value, v.streak, v.train_loss] for v in guard.verdicts],
        "step_losses": module.step_losses,
        "sinks": len(guard.monitor.sinks),
        "weight": module.net.weight.detach().flatten()[:5].tolist(),
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "stop")
