"""Two-process FSDP2 (``fully_shard``) on CPU with gloo, through the plain ``NormGuard``.

Run by test_distributed.py as ``python _fsdp_worker.py OUT_DIR PORT``. Each rank trains a
small MLP whose layers are sharded over a CPU device mesh of 2 (one layer has an odd
size, so the shards are uneven), checks every step, and writes OUT_DIR/rank<r>.json with
the guard's norms next to references computed from the gathered full parameters.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def reference_norms(model: nn.Module) -> dict[str, float]:
    """Per-layer ℓ2 norms in float64 from the unsharded (gathered) parameters."""
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        sq = 0.0
        for p in params:
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            sq += float(full.detach().double().pow(2).sum())
        out[name or "<root>"] = math.sqrt(sq)
    out["total"] = math.sqrt(sum(v * v for v in out.values()))
    return out


def run(rank: int, world: int, out_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import normguard as ng

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 5), nn.Tanh(), nn.Linear(5, 1))
    unsharded = {k: v.item() for k, v in ng.layer_norms(model).items()}
    unsharded["total"] = ng.total_norm(model).item()
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    host = ng.NormEngine(model).compute().to_host()[0]  # sharded, before any step: vs the unsharded model
    at_init = {**host.layer_norms, "total": host.total}
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=1e-2)

    calls = {"all_reduce": 0}
    original = dist.all_reduce

    def counting(*args: object, **kwargs: object) -> object:
        calls["all_reduce"] += 1
        return original(*args, **kwargs)

    g = torch.Generator().manual_seed(rank)
    guard = ng.NormGuard(model, opt, every_n_steps=1)
    steps = []
    for _ in range(3):
        x, y = torch.randn(16, 7, generator=g), torch.randn(16, 1, generator=g)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        dist.all_reduce = counting  # count collectives made by the check only
        try:
            guard.step(loss)
        finally:
            dist.all_reduce = original
        steps.append(
            {"guard": guard.last_norms(), "reference": reference_norms(model), "all_reduce": calls["all_reduce"]}
        )
        calls["all_reduce"] = 0
    local_numel = {n: p.to_local().numel() for n, p in model.named_parameters()}
    result = {
        "rank": rank,
        "unsharded_at_init": unsharded,
        "sharded_at_init": at_init,
        "steps": steps,
        "local_numel": local_numel,
        "is_dtensor": all(hasattr(p, "placements") for p in model.parameters()),
        "logging_rank": guard.monitor.is_logging_rank,
    }
    guard.close()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(run, args=(2, sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
