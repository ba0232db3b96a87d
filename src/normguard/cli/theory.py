"""``normguard theory``: the paper's prediction of test error for a near-interpolator.

Given the data's eigendecay α, the ratio γ = n/d and a target training error τ (and the
noise variance σ²), prints the asymptotic test error, ridge constant r, κ, κ_crit, the norm
constant 𝓝(κ) (‖β‖² ≈ σ² n^α 𝓝) and the test error of perfect interpolation (τ → 0).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from normguard.cli import UsageError, usage_errors
from normguard.cli.spectrum import check_plot_path, save_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, required=True, help="eigendecay exponent, > 1")
    parser.add_argument("--gamma", type=float, required=True, help="n / d, in (0, 1)")
    parser.add_argument("--tau", type=float, required=True, help="training error, in (0, sigma2)")
    parser.add_argument("--sigma2", type=float, default=1.0, help="noise variance (default: %(default)s)")
    parser.add_argument("--plot", metavar="PNG", help="save the trade-off curve for several alpha")


def _plot(args: argparse.Namespace, path: str) -> None:
    from normguard.science.theory import predict, tradeoff_curve

    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib: pip install 'normguard[report]'") from exc
    alphas = sorted({1.25, 1.5, 2.0, 3.0, round(args.alpha, 4)})
    taus = np.linspace(0.01, 0.99, 60) * args.sigma2
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for a in alphas:
        ax.plot(
            taus,
            tradeoff_curve(a, args.gamma, taus, args.sigma2),
            label=f"α = {a:g}",
            lw=2.5 if a == round(args.alpha, 4) else 1.2,
        )
    p = predict(args.alpha, args.gamma, args.tau, args.sigma2)
    ax.plot([p.tau], [p.test_error], "ko", label=f"τ = {p.tau:g}: test {p.test_error:.3g}")
    ax.axhline(args.sigma2, color="0.5", ls=":", label="noise floor σ²")
    ax.set_xlabel("training error τ")
    ax.set_ylabel("test error")
    ax.set_title(f"near-interpolation trade-off (γ = {args.gamma:g})")
    ax.legend(fontsize=8)
    try:
        save_figure(lambda target: fig.savefig(target, dpi=120, bbox_inches="tight"), path)
    finally:
        plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.plot:  # first: a usage error is reported before the science loads
        check_plot_path(args.plot)
    from normguard.science.theory import predict

    with usage_errors():
        p = predict(args.alpha, args.gamma, args.tau, args.sigma2)
    if args.plot:
        _plot(args, args.plot)
    if args.json:
        out = p.to_dict()
        if args.plot:
            out["plot"] = args.plot
        print(json.dumps(out))
        return 0
    print(f"alpha = {p.alpha:g}, gamma = {p.gamma:g}, tau = {p.tau:g}, sigma2 = {p.sigma2:g}")
    print(f"predicted test error        {p.test_error:.4f}   (noise floor {p.sigma2:g})")
    print(f"test error if interpolating {p.interpolation_test_error:.4f}   (tau -> 0)")
    print(f"ridge r (penalty r n^-alpha) {p.ridge_r:.4g}")
    print(f"kappa                       {p.kappa:.4g}   (kappa_crit {p.kappa_crit:.4g})")
    print(f"norm constant N(kappa)      {p.norm_constant:.4g}   (||beta||^2 ~ sigma2 n^alpha N)")
    if args.plot:
        print(f"figure                      {args.plot}")
    return 0
