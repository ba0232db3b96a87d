"""Scaling of the norm pass: with parameter count (1 M → 100 M+, 16 tensors) and with
tensor count at a fixed total size; a log-log plot and the fitted slopes.

    python benchmarks/scaling.py            # writes benchmarks/scaling.png and its RESULTS.md section
    python benchmarks/scaling.py --quick
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import header, interleaved, median, write_section
from torch import nn

from normguard.norms import NormEngine

PLOT = Path(__file__).resolve().parent / "scaling.png"


def synthetic(total: int, tensors: int) -> nn.Module:
    """``tensors`` 1-D parameters of ``total // tensors`` elements each, in one ``ParameterList``."""
    size = max(1, total // tensors)
    return nn.ParameterList(nn.Parameter(torch.randn(size)) for _ in range(tensors))


def variants(model: nn.Module) -> dict[str, Callable[[], object]]:
    engine = NormEngine(model)
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return {
        "normguard": lambda: engine.compute().to_host(),
        "floor": lambda: torch.linalg.vector_norm(flat).item(),
        "peers": lambda: [torch.linalg.vector_norm(p.detach()).item() for p in params],
    }


def measure(model: nn.Module, repeats: int) -> dict[str, float]:
    fns = variants(model)
    t0 = time.perf_counter()
    fns["peers"]()
    inner = max(1, int(0.03 / max(time.perf_counter() - t0, 1e-6)))
    s = interleaved(fns, repeats=repeats, warmup=1, inner=inner)
    return {k: median(v) for k, v in s.items()}


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, print only")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; quick 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = [2**20, 2**22, 2**24] if args.quick else [2**20, 2**22, 2**24, 2**25, 2**26, 2**27]
    counts = [1, 10, 100, 1000] if args.quick else [1, 10, 100, 1000, 4000, 10000]
    fixed_total = 2**20 if args.quick else 2**22

    by_size: dict[str, list[float]] = {"normguard": [], "floor": [], "peers": []}
    for n in sizes:
        model = synthetic(n, 16)
        r = measure(model, repeats)
        for k in by_size:
            by_size[k].append(r[k])
        print(f"params={n}: " + " ".join(f"{k}={v * 1e3:.3f} ms" for k, v in r.items()))
        del model
        gc.collect()
    by_count: dict[str, list[float]] = {"normguard": [], "floor": [], "peers": []}
    for c in counts:
        r = measure(synthetic(fixed_total, c), repeats)
        for k in by_count:
            by_count[k].append(r[k])
        print(f"tensors={c}: " + " ".join(f"{k}={v * 1e3:.3f} ms" for k, v in r.items()))

    lines = [
        "| parameters (16 tensors) | normguard check | GB/s | floor | peers `.item()` loop |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, n in enumerate(sizes):
        t = by_size["normguard"][i]
        lines.append(
            f"| {n / 1e6:.1f} M | {t * 1e3:.3f} ms | {4 * n / t / 1e9:.1f} | {by_size['floor'][i] * 1e3:.3f} ms "
            f"| {by_size['peers'][i] * 1e3:.3f} ms |"
        )
    lines += [
        "",
        f"| tensors ({fixed_total / 1e6:.1f} M parameters in all) | normguard check | floor "
        "| peers `.item()` loop | normguard per tensor |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, c in enumerate(counts):
        t = by_count["normguard"][i]
        lines.append(
            f"| {c} | {t * 1e3:.3f} ms | {by_count['floor'][i] * 1e3:.3f} ms | {by_count['peers'][i] * 1e3:.3f} ms "
            f"| {t / c * 1e6:.2f} µs |"
        )
    upper = slice(len(sizes) // 2, None)
    tail = slice(len(counts) // 2, None)
    mid = sizes[len(sizes) // 2] / 1e6
    ng_c, ng_ct = slope(counts, by_count["normguard"]), slope(counts[tail], by_count["normguard"][tail])
    slopes = (
        f"Fitted log-log slopes — time vs parameter count (all sizes / upper half, {mid:.0f} M+): "
        f"normguard {slope(sizes, by_size['normguard']):.2f} / {slope(sizes[upper], by_size['normguard'][upper]):.2f}, "
        f"floor {slope(sizes, by_size['floor']):.2f} / {slope(sizes[upper], by_size['floor'][upper]):.2f}, "
        f"peers {slope(sizes, by_size['peers']):.2f} / {slope(sizes[upper], by_size['peers'][upper]):.2f}. "
        f"Time vs tensor count at fixed size (all / from {counts[len(counts) // 2]} tensors): "
        f"normguard {ng_c:.2f} / {ng_ct:.2f}, "
        f"floor {slope(counts, by_count['floor']):.2f}, peers {slope(counts, by_count['peers']):.2f} / "
        f"{slope(counts[tail], by_count['peers'][tail]):.2f}."
    )
    print(slopes)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k, style in (("normguard", "o-"), ("floor", "s--"), ("peers", "^:")):
        a.loglog(sizes, [t * 1e3 for t in by_size[k]], style, label=k)
        b.loglog(counts, [t * 1e3 for t in by_count[k]], style, label=k)
    a.set(xlabel="parameters (16 tensors)", ylabel="ms per pass", title="vs parameter count")
    b.set(xlabel=f"tensors ({fixed_total / 1e6:.1f} M parameters)", ylabel="ms per pass", title="vs tensor count")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"normguard norm pass, CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    fig.tight_layout()
    out = PLOT if not args.quick else Path("/tmp/scaling_quick.png")
    fig.savefig(out, dpi=100)
    print(f"[saved {out}]")

    body = (
        "### Scaling\n\n"
        + header("scaling")
        + "\n"
        + "\n".join(lines)
        + "\n\n"
        + slopes
        + f"\n\nMedians of {repeats} interleaved rounds (normguard, floor, peers). float32. "
        "Plot: `benchmarks/scaling.png`.\n\n![scaling](scaling.png)\n"
    )
    print(body)
    if not (args.quick or args.no_write):
        write_section("scaling", body)


if __name__ == "__main__":
    main()
