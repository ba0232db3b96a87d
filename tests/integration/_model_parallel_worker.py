"""Lightning's ModelParallelStrategy (FSDP2 via ``configure_model``) on two CPU processes (gloo).

Run by test_distributed.py as ``python _model_parallel_worker.py OUT_DIR``; Lightning's
launcher re-runs the script for rank 1. Each rank writes OUT_DIR/rank<r>.json with the
callback's last norms, references from the gathered full parameters, and a restore-best
round trip on the sharded weights.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def full_norms(net: nn.Module) -> dict[str, float]:
    out = {}
    for name, module in net.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            out[f"net.{name}"] = math.sqrt(sum(float(p.full_tensor().detach().double().pow(2).sum()) for p in params))
    return out


def main(out_dir: str) -> None:
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy

    from normguard.best import BestWeights
    from normguard.lightning import NormGuardCallback

    logging.getLogger("lightning").setLevel(logging.ERROR)

    class Sharded(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 1))

        def configure_model(self) -> None:
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for layer in (self.net[0], self.net[2]):
                fully_shard(layer, mesh=mesh)
            fully_shard(self.net, mesh=mesh)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = (self.net(x).squeeze(-1) - y).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 7, generator=g), torch.randn(64, generator=g))
    guard = NormGuardCallback(every_n_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=4,
        logger=False,
        callbacks=[guard],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    module = Sharded()
    trainer.fit(module, DataLoader(data, batch_size=8))
    reference = full_norms(module.net)
    # restore-best on sharded weights: snapshot, change the weights, restore
    best = BestWeights()
    best.offer(module, 1.0, trainer.global_step)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(2.0)
    best.restore(module)
    result = {
        "rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "steps": [v.step for v in guard.verdicts],
        "guard": guard.last_norms(),
        "reference": reference,
        "after_restore": full_norms(module.net),
        "sharded": all(hasattr(p, "placements") for p in module.parameters()),
    }
    (Path(out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
