"""Time ``estimate_alpha`` on a (20 000 × 4 096) float32 matrix, and the streaming form's memory.

What is measured (medians of ``--repeats`` runs after one warm-up, in this process):

* ``estimate_alpha(X)`` with the default interval setting (``n_bootstrap=None``; at this size
  the budget rule falls back to the regression interval, so no bootstrap is run);
* its parts: centring, the covariance product (``_smaller_gram``: one float32 BLAS ``ssyrk``
  at this size) and ``_eigenvalues`` (float32 ``eigvalsh``);
* ``estimate_alpha`` on a steep spectrum (λ_i = i^-2.5) whose tail float32 cannot resolve,
  so that the default ``precision="auto"`` redoes it in float64 (the worst case of the rule);
* the float64 route as the accuracy reference (float64 products of 2048-row chunks and a
  float64 ``eigvalsh``; what ``spectrum.py`` does below 10¹⁰ multiply-adds, and what it did
  for every size before), with the largest relative eigenvalue error of the float32 route
  over the fit range and both α; and ``estimate_alpha`` with one torch thread;
* the streaming form (:class:`CovarianceAccumulator`, batches of 1024 rows made on the fly)
  in a fresh subprocess: peak RSS (VmHWM, reset after the imports; else ``ru_maxrss``) above
  the process's RSS after imports,
  next to the n×d float32 data size, and the same for ``estimate_alpha`` on the whole matrix.

Run::

    python benchmarks/spectrum.py            # writes benchmarks/RESULTS_spectrum.md
    python benchmarks/spectrum.py --quick    # (4 000 × 1 024), 2 repeats, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, cpu_model

from normguard.science import spectrum
from normguard.science.spectrum import estimate_alpha

OUT = Path(__file__).resolve().parent / "RESULTS_spectrum.md"
ALPHA = 1.5
STEEP_ALPHA = 2.5

_MEMORY_CHILD = r"""
import json, resource, sys, time, warnings
import torch
from normguard.science.spectrum import CovarianceAccumulator, estimate_alpha
n, d, batch, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(int(sys.argv[5]))
scale = torch.arange(1, d + 1, dtype=torch.float32) ** -0.75
def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
g = torch.Generator().manual_seed(0)
torch.linalg.eigvalsh(torch.eye(4, dtype=torch.float64))  # load LAPACK before the baseline
base = status_kib("VmRSS")
try:  # reset the peak-RSS mark (VmHWM) so that the import's transient peak does not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if mode == "stream":
        acc = CovarianceAccumulator()
        for start in range(0, n, batch):
            acc.update(torch.randn(min(batch, n - start), d, generator=g) * scale)
        est = acc.estimate(warn=False)
    else:
        X = torch.randn(n, d, generator=g) * scale
        est = estimate_alpha(X, warn=False)
peak = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seconds = time.perf_counter() - t
print(json.dumps({"base_kib": base, "peak_kib": peak, "hwm_reset": reset, "alpha": est.alpha, "seconds": seconds}))
"""


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times, out


def head_error(eigs: np.ndarray, ref: np.ndarray, fit_range: tuple[int, int]) -> float:
    first, last = fit_range
    a, b = eigs[first - 1 : last], ref[first - 1 : last]
    return float(np.max(np.abs(a - b) / b))


def memory(n: int, d: int, mode: str, threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(n), str(d), "1024", mode, str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reading(t_all, t_c, t_g, t_e, t_g64, t_e64, alt, mem, n, d, load_end) -> list[str]:
    """The 'Reading' section: what the numbers say, computed from them."""
    one_thread = [b for a, b, _ in alt if "set_num_threads(1)" in a]
    stream = [m for m in mem if m["mode"] == "stream"]
    in_mem = [m for m in mem if m["mode"] == "in-memory"]
    out = [
        "## Reading",
        "",
        f"- Load average at the end {load_end[0]:.2f}. Parts, timed separately: centring {t_c:.1f} s + product "
        f"{t_g:.1f} s + eigvalsh {t_e:.1f} s = {t_c + t_g + t_e:.1f} s, against the {t_all:.1f} s median of the whole "
        "call (input checks and the fit are milliseconds; the rest is run-to-run noise).",
        f"- The product is a symmetric rank-k update: n·d²/2 = {n * d * d / 2:.2e} multiply-adds, "
        f"{n * d * d / t_g / 1e9:.0f} GFLOP/s. The float64 route's product took {t_g64:.1f} s and its eigvalsh "
        f"{t_e64:.1f} s ({(t_g64 + t_e64) / (t_g + t_e):.2f}x the float32 route's product + eigvalsh).",
        "- A steep spectrum (the λ_i = i^-2.5 row) is the rule's worst case: float32 cannot resolve its tail, so "
        "the float32 route's work is followed by the whole float64 route; the fit range and α are then the "
        "float64 ones.",
        "- What is left is the floor of the exact dense method on this CPU: one pass over the data for the "
        "product and a dense symmetric eigensolver on d×d; only approximate (iterative or sketched) "
        "eigenvalues or a GPU would go below it.",
    ]
    if one_thread:
        out.append(
            f"- `torch.set_num_threads(1)`: {one_thread[0]:.1f} s vs {t_all:.1f} s with the default threads"
            + (
                "; on shared, oversubscribed cores one thread avoids OpenMP spin-waiting."
                if one_thread[0] < t_all
                else " (both cores help when they are free)."
            )
        )
    if stream:
        ex = ", ".join(f"{m['extra_mib']:.0f} MiB at n = {m['n']}" for m in stream)
        out.append(
            f"- The streaming form accumulates in float64 batch by batch (exact, and slower: it is for data that "
            f"does not fit in memory). Its peak is O(d²) and does not grow with n ({ex}); "
            f"d×d float64 is {d * d * 8 / 2**20:.0f} MiB, and the peak holds about four such matrices "
            "(the sum, the covariance and its temporaries, eigvalsh's workspace). "
            "It is below the n×d data only once n·d·4 bytes exceeds that, "
            f"n > {stream[0]['extra_mib'] * 2**20 / (4 * d):.0f} here."
        )
    if in_mem:
        out.append(
            f"- estimate_alpha on the whole matrix peaks {in_mem[0]['extra_mib']:.0f} MiB above the imports "
            f"(the data {in_mem[0]['data_mib']:.0f} MiB, made in the subprocess, its centred copy of the same size, "
            "and the d×d matrices)."
        )
    out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n, d = (4000, 1024) if args.quick else (20_000, 4096)
    repeats = args.repeats or (2 if args.quick else 3)
    threads = torch.get_num_threads()
    load = os.getloadavg()

    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g) * torch.arange(1, d + 1, dtype=torch.float32) ** (-ALPHA / 2)
    rows: list[tuple[str, float, str]] = []
    print(f"X: {n} x {d} float32 ({X.numel() * 4 / 2**20:.0f} MiB), torch threads {threads}, load {load}")

    t_all, times_all, est = timed(lambda: estimate_alpha(X, warn=False), repeats)
    rows.append(("estimate_alpha(X) (default n_bootstrap=None)", t_all, f"α = {est.alpha:.4f}, ci {est.ci_method}"))
    print(rows[-1], times_all)
    t_c, _, Xc = timed(lambda: spectrum._center(X), repeats)
    rows.append(("  centring (_center)", t_c, ""))
    dtype = spectrum._product_dtype(Xc)
    t_g, _, G = timed(lambda: spectrum._smaller_gram(Xc, dtype), repeats)
    flops = 2.0 * n * d * d
    rows.append(
        (f"  covariance product (_smaller_gram, {dtype})", t_g,
         f"{flops / 2 / t_g / 1e9:.0f} GFLOP/s (n·d²/2 multiply-adds)")
    )  # fmt: skip
    t_e, _, eigs = timed(lambda: spectrum._eigenvalues(G), repeats)
    rows.append((f"  eigvalsh (_eigenvalues, {G.dtype})", t_e, ""))
    for r in rows[1:]:
        print(r)
    fr = est.fit_range

    # The float64 route (the accuracy reference): chunked float64 products, float64 eigvalsh.
    alt: list[tuple[str, float, str]] = []
    t_g64, _, G64 = timed(lambda: spectrum._smaller_gram(Xc, torch.float64), max(1, repeats - 1))
    t_e64, _, eigs_ref = timed(lambda: spectrum._eigenvalues(G64), max(1, repeats - 1))
    est64 = estimate_alpha(X, warn=False, precision="float64")
    alt.append(("  float64 product (2048-row chunks)", t_g64, ""))
    alt.append(("  float64 eigvalsh", t_e64, ""))
    alt.append(
        ("float64 route, product + eigvalsh", t_g64 + t_e64,
         f"α = {est64.alpha:.4f}, fit range {est64.fit_range}; float32 route's max rel. eigenvalue error over "
         f"{fr}: {head_error(eigs, eigs_ref, fr):.1e}")
    )  # fmt: skip
    # A steep spectrum: float32 cannot resolve its tail, so "auto" redoes it in float64.
    steep = torch.randn(n, d, generator=g) * torch.arange(1, d + 1, dtype=torch.float32) ** (-STEEP_ALPHA / 2)
    t_steep, _, est_steep = timed(lambda: estimate_alpha(steep, warn=False), max(1, repeats - 1))
    alt.append(
        (f"estimate_alpha on λ_i = i^-{STEEP_ALPHA} data (auto: float32, then float64)", t_steep,
         f"α = {est_steep.alpha:.4f}, fit range {est_steep.fit_range}")
    )  # fmt: skip
    if threads > 1:
        torch.set_num_threads(1)
        t1, _, _ = timed(lambda: estimate_alpha(X, warn=False), max(1, repeats - 1))
        torch.set_num_threads(threads)
        alt.append(("estimate_alpha(X) with torch.set_num_threads(1)", t1, ""))
    for r in alt:
        print(r)

    mem = []
    for mode, nn_ in (("stream", n), ("stream", 2 * n), ("in-memory", n)):
        m = memory(nn_, d, mode, threads)
        m.update(mode=mode, n=nn_, data_mib=nn_ * d * 4 / 2**20, extra_mib=(m["peak_kib"] - m["base_kib"]) / 1024)
        mem.append(m)
        print(m)

    if args.quick:
        return
    lines = [
        "# estimate_alpha: time and memory",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores visible, torch threads {threads}; torch {torch.__version__};"
        f" load average at start {load[0]:.2f} (1-minute average: it also counts jobs that ended just before).",
        "",
        f"Data: X = randn({n}, {d}) float32 scaled by i^(-{ALPHA}/2) (λ_i = i^-{ALPHA}); "
        f"{X.numel() * 4 / 2**20:.0f} MiB. Median of {repeats} after one warm-up.",
        "",
        "| step | median s | notes |",
        "|---|---:|---|",
        *[f"| {a} | {b:.2f} | {c} |" for a, b, c in rows],
        "",
        "Reference and variants (the float64 route is what `spectrum.py` uses below 10¹⁰ multiply-adds, and "
        "after the float32 route when float32 cannot resolve the tail):",
        "",
        "| alternative | median s | notes |",
        "|---|---:|---|",
        *[f"| {a} | {b:.2f} | {c} |" for a, b, c in alt],
        "",
        "Peak memory (fresh subprocess per row, batches of 1024 rows generated on the fly for the streaming form;"
        " extra = peak RSS (VmHWM after resetting it via /proc/self/clear_refs, else `ru_maxrss`)"
        " − VmRSS after imports):",
        "",
        "| form | n | d | n×d float32 data MiB | extra peak MiB | α | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {m['mode']} | {m['n']} | {d} | {m['data_mib']:.0f} | {m['extra_mib']:.0f} | {m['alpha']:.4f} | "
            f"{m['seconds']:.1f} |"
            for m in mem
        ],
        "",
        *reading(t_all, t_c, t_g, t_e, t_g64, t_e64, alt, mem, n, d, os.getloadavg()),
    ]
    OUT.write_text("\n".join(lines))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
