"""Coverage of ``estimate_alpha``'s 95 % interval on simulated data with a known spectrum.

Every data set is n Gaussian rows with covariance diag(λ) plus a constant offset (the
estimator centres; eigenvalues do not depend on a rotation, so none is applied). Cells:

* power laws λ_i = i^(−α): α ∈ {1.2, 1.5, 2.0, 2.5} × n/d ∈ {0.5, 1, 2, 5} × d ∈ {200, 800};
  the target is the true α;
* spectra that are not power laws, at α = 1.5: a flat head (λ_i = h^(−α) for i ≤ h,
  h = 0.03 d) and a log-periodic wiggle (λ_i = i^(−α) · exp(0.3 sin(2π ln i / ln 4))),
  n/d ∈ {0.5, 2}, d ∈ {200, 800}; the target is the population slope over the fit range
  the estimator chose (least squares of ln λ_i on ln i over it).

Per cell: coverage of the default interval (``ci_method="parametric-bootstrap"``, B from
the cost rule), of the plain parametric bootstrap (bias-corrected α ± 1.96 × the same
replicates' spread: no t quantile, no range widening), and of the regression t-interval
(``n_bootstrap=0``); mean widths and their ratio; bias and RMSE of the reported α and of
the uncorrected fit; how often the range test failed; B; and the cost: wall time of the
default call over that of the point estimate alone (``n_bootstrap=0``), both timed on the
same data set.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/spectrum_coverage.py [--reps 20] [--out FILE]``
(writes the markdown table to stdout and, with ``--out``, to FILE).

``python benchmarks/spectrum_coverage.py --timing [--threads 2]`` instead times the README's
example, a 20 000 × 4 096 float32 matrix with λ_i = i^-1.5: the point estimate
(``n_bootstrap=0``) and the default call, ``--timing-repeats`` times each (default 1).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from normguard.science.spectrum import estimate_alpha

Z975 = 1.959963984540054


def population(kind: str, alpha: float, d: int) -> np.ndarray:
    i = np.arange(1, d + 1, dtype=np.float64)
    if kind == "power":
        return i**-alpha
    if kind == "flat-head":
        h = max(2, round(0.03 * d))
        return np.maximum(i, h) ** -alpha
    if kind == "wiggle":
        return i**-alpha * np.exp(0.3 * np.sin(2 * np.pi * np.log(i) / np.log(4.0)))
    raise ValueError(kind)


def range_slope(lam: np.ndarray, first: int, last: int) -> float:
    x = np.log(np.arange(first, last + 1, dtype=np.float64))
    y = np.log(lam[first - 1 : last])
    x = x - x.mean()
    return float(-(x @ y) / (x @ x))


@dataclass
class Cell:
    kind: str
    alpha: float
    ratio: float
    d: int
    rows: list[dict] = field(default_factory=list)


def run_cell(cell: Cell, reps: int, seed0: int) -> None:
    n = round(cell.ratio * cell.d)
    lam = population(cell.kind, cell.alpha, cell.d)
    root = torch.from_numpy(np.sqrt(lam))
    for r in range(reps):
        g = torch.Generator().manual_seed(seed0 + r)
        X = torch.randn(n, cell.d, generator=g, dtype=torch.float64) * root + 1.0
        t0 = time.perf_counter()
        plain = estimate_alpha(X, n_bootstrap=0, warn=False)
        t_point = time.perf_counter() - t0
        t0 = time.perf_counter()
        est = estimate_alpha(X, seed=r, warn=False)
        t_default = time.perf_counter() - t0
        first, last = est.fit_range
        target = cell.alpha if cell.kind == "power" else range_slope(lam, first, last)
        lo, hi = est.alpha_ci
        plain_lo = est.alpha_corrected - Z975 * est.alpha_se
        plain_hi = est.alpha_corrected + Z975 * est.alpha_se
        cell.rows.append(
            {
                "target": target,
                "alpha": est.alpha,
                "uncorrected": est.alpha_uncorrected,
                "cover": lo <= target <= hi,
                "width": hi - lo,
                "plain_cover": plain_lo <= target <= plain_hi,
                "plain_width": plain_hi - plain_lo,
                "reg_cover": plain.alpha_ci[0] <= target <= plain.alpha_ci[1],
                "reg_width": plain.alpha_ci[1] - plain.alpha_ci[0],
                "fail": est.range_test == "fail",
                "B": est.n_bootstrap,
                "cost": t_default / t_point,
                "t_default": t_default,
            }
        )


def summarise(rows: list[dict]) -> dict:
    a = {k: np.array([row[k] for row in rows], dtype=float) for k in rows[0]}
    err = a["alpha"] - a["target"]
    err_u = a["uncorrected"] - a["target"]
    return {
        "cover": a["cover"].mean(),
        "plain_cover": a["plain_cover"].mean(),
        "reg_cover": a["reg_cover"].mean(),
        "width": a["width"].mean(),
        "plain_width": a["plain_width"].mean(),
        "reg_width": a["reg_width"].mean(),
        "bias": err.mean(),
        "rmse": math.sqrt((err**2).mean()),
        "bias_u": err_u.mean(),
        "rmse_u": math.sqrt((err_u**2).mean()),
        "fail": a["fail"].mean(),
        "B": np.median(a["B"]),
        "cost": np.median(a["cost"]),
        "t": np.median(a["t_default"]),
        "count": len(rows),
    }


HEADER = (
    "| spectrum | α | n/d | d | sets | coverage | plain PB | regr. t | width | plain width | ratio "
    "| bias | RMSE | bias uncorr. | RMSE uncorr. | range test fails | B | cost × point | s / estimate |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row_md(label: str, alpha: str, ratio: str, d: str, s: dict) -> str:
    return (
        f"| {label} | {alpha} | {ratio} | {d} | {s['count']} | {100 * s['cover']:.1f} % "
        f"| {100 * s['plain_cover']:.1f} % "
        f"| {100 * s['reg_cover']:.1f} % | {s['width']:.4f} | {s['plain_width']:.4f} "
        f"| {s['width'] / s['plain_width']:.2f} | {s['bias']:+.4f} | {s['rmse']:.4f} | {s['bias_u']:+.4f} "
        f"| {s['rmse_u']:.4f} | {100 * s['fail']:.0f} % | {s['B']:.0f} | {s['cost']:.1f} | {s['t']:.3f} |"
    )


def timing(repeats: int) -> str:
    """The README example: point estimate and default interval on 20 000 × 4 096 float32 data."""
    n, d = 20_000, 4_096
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g) * torch.arange(1, d + 1, dtype=torch.float32) ** -0.75
    rows = []
    for label, kwargs in (("point estimate (n_bootstrap=0)", {"n_bootstrap": 0}), ("default call", {})):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            est = estimate_alpha(X, warn=False, **kwargs)
            times.append(time.perf_counter() - t0)
        lo, hi = est.alpha_ci
        rows.append(
            f"| {label} | {np.median(times):.1f} | {est.ci_method} | {est.n_bootstrap} | {est.alpha:.4f} "
            f"| [{lo:.4f}, {hi:.4f}] | {est.range_test} | {est.alpha_uncorrected:.4f} |"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "\n".join(
        [
            f"20 000 × 4 096 float32, λ_i = i^-1.5 (true α = 1.5); torch threads {torch.get_num_threads()}, "
            f"median of {repeats}; 1-minute load average at the end {load:.2f}.",
            "",
            "| call | s | ci_method | B | α | 95 % interval | range test | uncorrected fit |",
            "|---|---:|---|---:|---:|---|---|---:|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps",
        type=int,
        nargs="+",
        default=[20],
        help="data sets per cell: one number, or one per --dims entry (default: %(default)s)",
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.2, 1.5, 2.0, 2.5])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0])
    parser.add_argument("--dims", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--no-misfit", action="store_true", help="skip the spectra that are not power laws")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--timing", action="store_true", help="time the README's 20 000 × 4 096 example instead")
    parser.add_argument("--timing-repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.timing:
        torch.set_num_threads(args.threads)
        text = timing(args.timing_repeats)
        print(text)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(text + "\n")
        return 0
    if len(args.reps) not in (1, len(args.dims)):
        parser.error("--reps takes one number or one per --dims entry")
    reps_of = dict(zip(args.dims, args.reps * len(args.dims) if len(args.reps) == 1 else args.reps))
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    cells = [Cell("power", a, r, d) for d in args.dims for r in args.ratios for a in args.alphas]
    if not args.no_misfit:
        cells += [Cell(k, 1.5, r, d) for k in ("flat-head", "wiggle") for d in args.dims for r in (0.5, 2.0)]
    for index, cell in enumerate(cells):
        run_cell(cell, reps_of[cell.d], seed0=1000 * index)
        s = summarise(cell.rows)
        print(
            f"[{time.perf_counter() - start:6.0f} s] {cell.kind} α={cell.alpha} n/d={cell.ratio} d={cell.d}: "
            f"cover {s['cover']:.2f} width {s['width']:.4f} B {s['B']:.0f} cost {s['cost']:.1f}",
            file=sys.stderr,
            flush=True,
        )
    power = [c for c in cells if c.kind == "power"]
    pooled = summarise([row for c in power for row in c.rows])
    worst = min(power, key=lambda c: summarise(c.rows)["cover"])
    lines = [
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
        "python benchmarks/spectrum_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads "
        f"{torch.get_num_threads()}; torch {torch.__version__}, numpy {np.__version__}; "
        f"total wall time {time.perf_counter() - start:.0f} s.",
        "",
        HEADER,
    ]
    for c in cells:
        lines.append(row_md(c.kind, f"{c.alpha:g}", f"{c.ratio:g}", str(c.d), summarise(c.rows)))
    lines.append(row_md("**power laws pooled**", "all", "all", "all", pooled))
    for d in args.dims:
        lines.append(
            row_md(
                f"power laws, d = {d}", "all", "all", str(d), summarise([r for c in power if c.d == d for r in c.rows])
            )
        )
    for kind in ("flat-head", "wiggle"):
        rows = [r for c in cells if c.kind == kind for r in c.rows]
        if rows:
            lines.append(row_md(f"{kind} pooled", "1.5", "all", "all", summarise(rows)))
    ws = summarise(worst.rows)
    lines += [
        "",
        f"Pooled over power laws: coverage {100 * pooled['cover']:.1f} % (plain parametric bootstrap "
        f"{100 * pooled['plain_cover']:.1f} %, regression t-interval {100 * pooled['reg_cover']:.1f} %); "
        f"worst cell {100 * ws['cover']:.1f} % (α = {worst.alpha:g}, n/d = {worst.ratio:g}, d = {worst.d}); "
        f"mean width {pooled['width']:.4f} = {pooled['width'] / pooled['plain_width']:.2f}× the plain parametric "
        f"bootstrap's {pooled['plain_width']:.4f}; range test failed on {100 * pooled['fail']:.1f} % of power-law "
        f"data sets; median cost {pooled['cost']:.1f}× the point estimate.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
