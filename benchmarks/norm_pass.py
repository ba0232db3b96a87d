"""Norm pass vs the floor: normguard's per-layer + total norm pass against (a) one
``vector_norm`` over a pre-flattened buffer of all weights, (b) the peers' per-parameter
loop with ``.item()`` per tensor, (c) a per-parameter ``vector_norm`` loop without ``.item()``.

    python benchmarks/norm_pass.py            # full run, writes its section of RESULTS.md
    python benchmarks/norm_pass.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
from collections.abc import Callable

import torch
from _common import header, interleaved, median, param_stats, reference_models, spread, write_section
from torch import nn

from normguard.norms import NormEngine

VARIANTS = ("normguard_check", "normguard_compute", "floor", "peers_item", "loop_no_item")


def make_variants(model: nn.Module) -> dict[str, Callable[[], object]]:
    """The five ways of measuring ``model``'s weight norms, as zero-argument callables."""
    engine = NormEngine(model)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def normguard_check() -> object:
        return engine.compute().to_host()

    def normguard_compute() -> object:
        return engine.compute()

    def floor() -> object:
        return torch.linalg.vector_norm(flat).item()

    def peers_item() -> object:
        # Composer OptimizerMonitor / Cockpit / Lightning grad_norm: one norm and one host
        # read per tensor, the total assembled on the host.
        norms = {n: torch.linalg.vector_norm(p.detach()).item() for n, p in zip(names, params)}
        return sum(v * v for v in norms.values()) ** 0.5

    def loop_no_item() -> object:
        norms = [torch.linalg.vector_norm(p.detach()) for p in params]
        return torch.stack(norms).square().sum().sqrt()

    return {
        "normguard_check": normguard_check,
        "normguard_compute": normguard_compute,
        "floor": floor,
        "peers_item": peers_item,
        "loop_no_item": loop_no_item,
    }


def check_agreement(model: nn.Module) -> tuple[float, float]:
    """Relative error of normguard's total and of the float32 floor against a float64 reference."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref = flat.double().norm().item()
    host, _ = NormEngine(model).compute().to_host()
    return abs(host.total - ref) / ref, abs(torch.linalg.vector_norm(flat).item() - ref) / ref


def inner_count(fn: Callable[[], object], target_s: float) -> int:
    """How many back-to-back calls make one sample of about ``target_s`` seconds."""
    import time

    fn()
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(target_s / dt))


def bench_model(model: nn.Module, repeats: int, target_s: float) -> dict[str, float]:
    """Median seconds per pass of each variant, plus per-round ratio medians."""
    fns = make_variants(model)
    # One inner count for all variants (set by the slowest), so each sample is comparable.
    inner = min(inner_count(fn, target_s) for fn in fns.values())
    samples = interleaved(fns, repeats=repeats, warmup=2, inner=inner)
    out = {name: median(samples[name]) for name in VARIANTS}
    ratios_floor = [f / g for f, g in zip(samples["floor"], samples["normguard_check"])]
    ratios_peer = [p / g for p, g in zip(samples["peers_item"], samples["normguard_check"])]
    out["thr_vs_floor"] = median(ratios_floor)
    out["thr_vs_floor_iqr"] = spread(ratios_floor)  # type: ignore[assignment]
    out["speedup_vs_peers"] = median(ratios_peer)
    out["speedup_vs_peers_iqr"] = spread(ratios_peer)  # type: ignore[assignment]
    out["inner"] = inner
    return out


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def profile_engine(model: nn.Module, passes: int = 50, top: int = 15) -> str:
    """cProfile of ``passes`` normguard checks on ``model`` (host-side cost breakdown)."""
    engine = NormEngine(model)
    engine.compute().to_host()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(passes):
        engine.compute().to_host()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few repeats, print only")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15; quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--profile", default=None, help="print a cProfile of normguard's pass on this model")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 15)
    target_s = 0.005 if args.quick else 0.05
    models = reference_models(quick=args.quick)

    if args.profile:
        print(profile_engine(models[args.profile]))
        return

    rows = []
    for name, model in models.items():
        n_t, n_el, n_bytes = param_stats(model)
        err = check_agreement(model)
        r = bench_model(model, repeats, target_s)
        rows.append((name, n_t, n_el, n_bytes, err, r))
        print(f"{name}: tensors={n_t} params={n_el} " + " ".join(f"{k}={fmt_time(r[k])}" for k in VARIANTS))

    lines = [
        "| model | tensors | params | MB | normguard check | GB/s | compute only | (a) floor | GB/s "
        "| (b) peers `.item()` loop | (c) loop, no `.item()` | throughput vs floor (IQR) "
        "| speed-up vs peers (IQR) | rel. err vs fp64: normguard / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n_t, n_el, n_bytes, err, r in rows:
        gbs = n_bytes / r["normguard_check"] / 1e9
        gbs_floor = n_bytes / r["floor"] / 1e9
        lo, hi = r["thr_vs_floor_iqr"]
        plo, phi = r["speedup_vs_peers_iqr"]
        lines.append(
            f"| {name} | {n_t} | {n_el / 1e6:.2f} M | {n_bytes / 1e6:.1f} | {fmt_time(r['normguard_check'])} "
            f"| {gbs:.1f} | {fmt_time(r['normguard_compute'])} | {fmt_time(r['floor'])} | {gbs_floor:.1f} "
            f"| {fmt_time(r['peers_item'])} | {fmt_time(r['loop_no_item'])} "
            f"| {r['thr_vs_floor']:.2f}× ({lo:.2f}–{hi:.2f}) | {r['speedup_vs_peers']:.2f}× ({plo:.2f}–{phi:.2f}) "
            f"| {err[0]:.1e} / {err[1]:.1e} |"
        )
    note = (
        f"Medians of {repeats} interleaved rounds after 2 warm-up rounds; each sample times "
        'back-to-back passes (≥ ~50 ms per sample) and divides. "throughput vs floor" = t(floor) / '
        't(normguard check), per round; "speed-up vs peers" = t(peers) / t(normguard check), per round. '
        "float32 weights."
    )
    body = "### Norm pass vs the floor\n\n" + header("norm_pass") + "\n" + "\n".join(lines) + "\n\n" + note + "\n"
    print(body)
    if not (args.quick or args.no_write):
        write_section("norm_pass", body)


if __name__ == "__main__":
    main()
