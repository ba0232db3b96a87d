"""The design study behind the α interval's B floor and range-test widening (issue 16).

For every data set of a grid like ``spectrum_coverage.py``'s, the data's fit and ``--bmax``
parametric-bootstrap replicates (their full-range slopes and sub-range deviations) are
simulated once; the interval rules are then evaluated offline on the first B of them (and,
where ``2B ≤ bmax``, on the next B too), for several B and widening rules:

* ``full``: a failed range test widens by the whole disagreement max_k |δ_k − c_k| (the
  rule before this study);
* ``excess``: by max_k (|δ_k − c_k| − threshold · s_k);
* ``quad``: by max_k √((δ_k − c_k)² − (threshold · s_k)²);
* ``span`` / ``qspan``: ``excess`` / ``quad``, with the interval also spanning the
  bias-corrected α (the default since this study is ``qspan``).

All use the t quantile t_{B−1, 0.975} · √(1 + 1/B). "ratio" is the mean width over that of
the plain parametric bootstrap (1.96 × the same replicates' spread), as in
``spectrum_coverage.py``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/spectrum_interval_rules.py [--reps 20 10] [--bmax 40 24]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))
from spectrum_coverage import population, range_slope

from normguard.science import spectrum as S

Z975 = 1.959963984540054
RULES = ("full", "excess", "span", "quad", "qspan")


def simulate(dims: dict[int, tuple[int, int]]) -> list[dict]:
    rows = []
    cells = [("power", a, r, d) for d in dims for r in (0.5, 1.0, 2.0, 5.0) for a in (1.2, 1.5, 2.0, 2.5)]
    cells += [(k, 1.5, r, d) for k in ("flat-head", "wiggle") for d in dims for r in (0.5, 2.0)]
    start = time.perf_counter()
    for ci, (kind, alpha, ratio, d) in enumerate(cells):
        reps, bmax = dims[d]
        n = round(ratio * d)
        lam = population(kind, alpha, d)
        root = torch.from_numpy(np.sqrt(lam))
        for r in range(reps):
            g = torch.Generator().manual_seed(50000 + 1000 * ci + r)
            X = torch.randn(n, d, generator=g, dtype=torch.float64) * root + 1.0
            est = S.estimate_alpha(X, n_bootstrap=0, warn=False)
            first, last = est.fit_range
            m = S._rank(est.eigenvalues, n, d, True)
            p = m if m < min(n - 1, d) else d
            pop = np.arange(1, p + 1, dtype=np.float64) ** -est.alpha
            rng = np.random.default_rng(r + 7 * ci)
            logs = np.log(
                np.maximum([S.simulate_sample_eigenvalues(pop, n - 1, rng)[:last] for _ in range(bmax)], 1e-300)
            )
            pieces = S._sub_ranges(first, last)
            boot = S._ols_slopes(logs, first, last)
            log_data = np.log(est.eigenvalues[:last])[None, :]
            data_alpha = float(S._ols_slopes(log_data, first, last)[0])
            rows.append(
                {
                    "kind": kind,
                    "alpha": alpha,
                    "ratio": ratio,
                    "d": d,
                    "target": alpha if kind == "power" else range_slope(lam, first, last),
                    "ahat": est.alpha,
                    "boot": boot,
                    "rep_sub": np.stack([S._ols_slopes(logs, a, b) - boot for a, b in pieces], 1) if pieces else None,
                    "dat_sub": np.array([S._ols_slopes(log_data, a, b)[0] - data_alpha for a, b in pieces])
                    if pieces
                    else None,
                }
            )
        print(f"[{time.perf_counter() - start:6.0f} s] {kind} {alpha} {ratio} {d}", file=sys.stderr, flush=True)
    return rows


def interval(row: dict, B: int, rule: str, offset: int = 0) -> tuple[float, float, float, bool]:
    """(low, high, plain width, failed) for one data set from replicates offset..offset+B."""
    boot = row["boot"][offset : offset + B]
    ahat = row["ahat"]
    corrected = 2 * ahat - boot.mean()
    s = boot.std(ddof=1)
    factor = math.sqrt(1 + 1 / B)
    half = stats.t.ppf(0.975, B - 1) * factor * s
    failed, widening = False, 0.0
    if row["rep_sub"] is not None:
        rs = row["rep_sub"][offset : offset + B]
        centre, scale = rs.mean(0), rs.std(0, ddof=1)
        dev = np.abs(row["dat_sub"] - centre)
        threshold = stats.t.ppf(1 - 0.025 / rs.shape[1], B - 1) * factor
        failed = bool(np.max(dev / scale) > threshold)
        if failed and rule == "full":
            widening = float(dev.max())
        elif failed and rule in ("quad", "qspan"):
            widening = float(np.max(np.sqrt(np.maximum(0.0, dev**2 - (threshold * scale) ** 2))))
        elif failed:
            widening = max(0.0, float(np.max(dev - threshold * scale)))
    if not failed:
        return corrected - half, corrected + half, 2 * Z975 * s, False
    if rule in ("span", "qspan"):
        return min(ahat, corrected) - half - widening, max(ahat, corrected) + half + widening, 2 * Z975 * s, True
    return ahat - half - widening, ahat + half + widening, 2 * Z975 * s, True


def evaluate(rows: list[dict], B: int, rule: str) -> str:
    cells: dict[tuple, list[tuple[bool, float, float, bool]]] = {}
    for row in rows:
        for offset in (0, B) if len(row["boot"]) >= 2 * B else (0,):
            if offset + B > len(row["boot"]):
                continue
            lo, hi, plain, failed = interval(row, B, rule, offset)
            key = (row["kind"], row["alpha"], row["ratio"], row["d"])
            cells.setdefault(key, []).append((lo <= row["target"] <= hi, hi - lo, plain, failed))
    power = [v for k, v in cells.items() if k[0] == "power"]
    pooled = np.array([x for v in power for x in v], dtype=float)
    worst = min(np.mean([x[0] for x in v]) for v in power)
    misfit = {}
    for kind in ("flat-head", "wiggle"):
        a = np.array([x for k, v in cells.items() if k[0] == kind for x in v], dtype=float)
        misfit[kind] = f"{100 * a[:, 0].mean():.0f} % / fails {100 * a[:, 3].mean():.0f} %" if a.size else "-"
    return (
        f"| {B} | {rule} | {100 * pooled[:, 0].mean():.1f} % | {100 * worst:.1f} % "
        f"| {pooled[:, 1].mean() / pooled[:, 2].mean():.3f} | {100 * pooled[:, 3].mean():.1f} % "
        f"| {misfit['flat-head']} | {misfit['wiggle']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, nargs=2, default=[20, 10], help="data sets per cell at d = 200, 800")
    parser.add_argument("--bmax", type=int, nargs=2, default=[40, 24], help="replicates per data set at d = 200, 800")
    parser.add_argument("--B", type=int, nargs="+", default=[10, 12, 16, 20])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = simulate({200: (args.reps[0], args.bmax[0]), 800: (args.reps[1], args.bmax[1])})
    print("| B | widening | coverage (power laws) | worst cell | width ratio | range test fails | flat head | wiggle |")
    print("|---:|---|---:|---:|---:|---:|---|---|")
    for B in args.B:
        for rule in RULES:
            print(evaluate(rows, B, rule))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
