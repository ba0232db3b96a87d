"""The paper's Figure-1 linear experiments, on the CPU, with the theory next to them.

Setting (Wang, Sonthalia, Hu, AISTATS 2024; THEORY.md): x = Σ^{1/2} z, Σ = diag(i^-α),
d = 1.5 n, y = xᵀβ* + ε with σ² = 1 and β* ~ N(0, 10/d I). The minimum-norm
τ-near-interpolator is the ridge solution whose training error equals τ
(:func:`normguard.science.theory.min_norm_near_interpolator`); its test error is the exact
expectation σ² + (β − β*)ᵀ Σ (β − β*).

Two experiments, for α = 1.5 and 2.5:

1. Norm growth at τ = 0.2: median ‖β‖² over seeds on a log grid of n, and the slope of
   log(median ‖β‖²) against log n (:func:`normguard.science.pilot.linear_pilot` with
   :func:`normguard.science.pilot.paper_generator`), next to α and to the theory's σ² n^α 𝓝(κ).
2. Trade-off at fixed n: empirical test error against τ, next to the theory curve
   :func:`normguard.science.theory.tradeoff_curve`.

Run::

    python examples/paper_linear.py                 # full: n = 200..2000, 8 seeds (a few minutes)
    python examples/paper_linear.py --quick         # n = 100..800, 8 seeds (under a minute)
    python examples/paper_linear.py --threads 1     # one BLAS thread (faster on a busy machine)

It prints its numbers and writes ``norm_growth.png``, ``tradeoff.png`` and
``results.json`` to ``--out`` (default ``runs/paper_linear``).

The full grid stops at n = 2000 (the paper goes to 5000) because each fit is an n×n
eigendecomposition in float64: n = 5000 costs about a minute per seed on two CPU cores.
Pass ``--max-n 5000`` to go further.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from normguard.science.pilot import linear_pilot, paper_generator
from normguard.science.theory import min_norm_near_interpolator, paper_data, predict, tradeoff_curve

GAMMA = 2 / 3  # n / d
ALPHAS = (1.5, 2.5)


def norm_growth(alpha: float, sizes: list[int], n_seeds: int, tau: float) -> dict:
    """Median ‖β_τ‖² per n, the fitted exponent with its bootstrap-over-seeds interval."""
    res = linear_pilot(paper_generator(alpha, gamma=GAMMA), None, tau=tau, sizes=sizes, n_seeds=n_seeds, seed=0)
    theory = predict(alpha, GAMMA, tau)
    return {
        "alpha": alpha,
        "tau": tau,
        "sizes": res.sizes,
        "median_norm_sq": res.norms_sq,
        "norm_sq_all": res.norms_sq_all.tolist(),
        "theory_norm_sq": [theory.expected_norm_sq(n) for n in res.sizes],
        "exponent": res.exponent,
        "exponent_ci": list(res.exponent_ci),
        "r2": res.r2,
        "alpha_estimated": res.alpha,
    }


def tradeoff(alpha: float, n: int, taus: np.ndarray, n_seeds: int) -> dict:
    """Empirical test error of the min-norm τ-near-interpolator per τ (seeds × taus), and theory."""
    errors = np.full((n_seeds, taus.size), np.nan)
    for s in range(n_seeds):
        data = paper_data(n, alpha, gamma=GAMMA, seed=1000 + s)
        for k, tau in enumerate(taus):
            fit = min_norm_near_interpolator(data.X, data.y, float(tau))
            errors[s, k] = data.test_error(fit.beta)
    theory = tradeoff_curve(alpha, GAMMA, taus)
    return {
        "alpha": alpha,
        "n": n,
        "taus": taus.tolist(),
        "test_error_mean": errors.mean(axis=0).tolist(),
        "test_error_std": errors.std(axis=0, ddof=1).tolist() if n_seeds > 1 else [0.0] * taus.size,
        "test_error_all": errors.tolist(),
        "theory_test_error": theory.tolist(),
    }


def plot(growth: list[dict], trade: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {1.5: "tab:blue", 2.5: "tab:red"}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for g in growth:
        c = colors.get(g["alpha"])
        sizes = np.asarray(g["sizes"], dtype=float)
        allv = np.asarray(g["norm_sq_all"])
        for col in allv.T:
            ax.loglog(sizes, col, ".", color=c, alpha=0.25, ms=4)
        ax.loglog(sizes, g["median_norm_sq"], "o-", color=c, label=f"α = {g['alpha']}: slope {g['exponent']:.2f}")
        ax.loglog(sizes, g["theory_norm_sq"], "--", color=c, alpha=0.8, label="theory σ² n^α N(κ)")
    ax.set_xlabel("n (d = 1.5 n)")
    ax.set_ylabel("‖β_τ‖²  (τ = 0.2)")
    ax.set_title("min-norm near-interpolator: norm growth")
    ax.legend(fontsize=8)
    path1 = out / "norm_growth.png"
    fig.savefig(path1, dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for t in trade:
        c = colors.get(t["alpha"])
        taus = np.asarray(t["taus"])
        ax.errorbar(
            taus, t["test_error_mean"], yerr=t["test_error_std"], fmt="o", color=c, ms=4, capsize=2,
            label=f"α = {t['alpha']}: empirical (n = {t['n']})",
        )  # fmt: skip
        fine = np.linspace(taus.min(), taus.max(), 60)
        ax.plot(fine, tradeoff_curve(t["alpha"], GAMMA, fine), "-", color=c, label=f"α = {t['alpha']}: theory")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("training error τ")
    ax.set_ylabel("test error")
    ax.set_title("trade-off (σ² = 1)")
    ax.legend(fontsize=8)
    path2 = out / "tradeoff.png"
    fig.savefig(path2, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [str(path1), str(path2)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid (under a minute)")
    parser.add_argument("--out", default="runs/paper_linear", help="folder for figures and results.json")
    parser.add_argument("--max-n", type=int, default=None, help="largest n of the norm-growth grid")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per n (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tau = 0.2
    if args.quick:
        min_n, max_n, n_grid, n_seeds = 100, args.max_n or 800, 5, args.seeds or 8
        trade_n, trade_seeds, taus = 400, 4, np.linspace(0.1, 0.9, 5)
    else:
        min_n, max_n, n_grid, n_seeds = 200, args.max_n or 2000, 7, args.seeds or 8
        trade_n, trade_seeds, taus = 1000, 8, np.linspace(0.05, 0.95, 10)
    sizes = sorted({int(v) for v in np.round(np.geomspace(min_n, max_n, n_grid))})

    start = time.perf_counter()
    growth = []
    print(f"(i) norm growth at tau = {tau}, d = 1.5 n, {n_seeds} seeds per n, medians")
    for alpha in ALPHAS:
        g = norm_growth(alpha, sizes, n_seeds, tau)
        growth.append(g)
        lo, hi = g["exponent_ci"]
        print(f"  alpha = {alpha}: fitted exponent {g['exponent']:.3f} [95% CI {lo:.3f}, {hi:.3f}], R^2 {g['r2']:.4f}")
        print(f"    {'n':>6} {'median |b|^2':>14} {'theory':>12} {'ratio':>7}")
        for n, m, th in zip(g["sizes"], g["median_norm_sq"], g["theory_norm_sq"]):
            print(f"    {n:>6} {m:>14.4g} {th:>12.4g} {m / th:>7.3f}")
    print(f"  [{time.perf_counter() - start:.1f} s]")

    trade = []
    print(f"(ii) trade-off at n = {trade_n}, {trade_seeds} seeds: empirical test error (mean ± sd) vs theory")
    for alpha in ALPHAS:
        t = tradeoff(alpha, trade_n, taus, trade_seeds)
        trade.append(t)
        print(f"  alpha = {alpha}")
        print(f"    {'tau':>6} {'empirical':>18} {'theory':>9}")
        for tau_k, m, sd, th in zip(t["taus"], t["test_error_mean"], t["test_error_std"], t["theory_test_error"]):
            print(f"    {tau_k:>6.3f} {m:>10.4f} ± {sd:<6.4f} {th:>9.4f}")
    worse = all(b > a for a, b in zip(trade[0]["test_error_mean"], trade[1]["test_error_mean"]))
    print(f"  larger alpha has higher test error at every tau: {worse}")
    elapsed = time.perf_counter() - start
    print(f"  [{elapsed:.1f} s]")

    figures = plot(growth, trade, out)
    results = {"mode": "quick" if args.quick else "full", "gamma": GAMMA, "growth": growth, "tradeoff": trade}
    results["figures"] = figures
    results["seconds"] = elapsed
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("wrote", ", ".join([*figures, str(out / "results.json")]))
    return results


if __name__ == "__main__":
    main()
