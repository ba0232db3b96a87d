"""Throughput of the functional norms (``ng.total_norm``, ``ng.layer_norms``) against one
``torch.linalg.vector_norm`` over a flat buffer of the same weights (8 × 2048² float32, CPU).

Run: ``python benchmarks/functional_norms.py`` (best of 3 × 20 calls each, side by side).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

import normguard as ng


def best_time(fn: Callable[[], object], calls: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> int:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2048, 2048, bias=False) for _ in range(8)])
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    floor = best_time(lambda: torch.linalg.vector_norm(flat))
    total = best_time(lambda: ng.total_norm(model))
    layers = best_time(lambda: ng.layer_norms(model))
    print(f"| flat vector_norm | {floor * 1e3:.1f} ms | 1.00 |")
    print(f"| ng.total_norm | {total * 1e3:.1f} ms | {floor / total:.2f} |")
    print(f"| ng.layer_norms | {layers * 1e3:.1f} ms | {floor / layers:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
