"""``normguard pilot FILE --tau T``: how fast the min-norm near-interpolator's norm grows with n.

FILE is an ``.npz`` with arrays ``X`` (n × d) and ``y`` (n). τ is a training mean squared
error in the units of y². Fits the minimum-norm τ-near-interpolator (ridge) on random
subsets of growing size and reports the exponent of ‖β‖² ~ n^exponent, with a bootstrap
interval over seeds, next to the data's eigendecay α.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np

from normguard.cli import UsageError, add_progress_argument, progress_flag, usage_errors
from normguard.cli.spectrum import load_array, load_matrix
from normguard.validation import check_int, check_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help=".npz with arrays X (n x d) and y (n)")
    parser.add_argument("--tau", type=float, required=True, help="target training MSE (units of y^2)")
    parser.add_argument("--sizes", type=int, nargs="+", help="subset sizes (default: 6 geometric sizes)")
    parser.add_argument("--seeds", type=int, default=8, help="subsets per size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from normguard.science.pilot import linear_pilot

    if not str(args.file).lower().endswith(".npz"):
        raise UsageError(f"{args.file}: expected an .npz file with arrays X and y")
    X = load_matrix(args.file, "X")
    y = load_array(args.file, "y")
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise UsageError(f"{args.file}: expected y of shape ({X.shape[0]},) but got {y.shape}")
    if not np.isfinite(y).all():
        raise UsageError(f"{args.file}: y holds NaN or inf values")
    with usage_errors():
        check_int("--seeds", args.seeds, 1)
        check_number("--tau", args.tau, low=0, low_open=True)
    mean_sq = float(np.mean(np.asarray(y, dtype=np.float64) ** 2))
    if not args.tau < mean_sq:
        raise UsageError(
            f"Expected argument `tau` to be below mean(y^2) = {mean_sq:.4g} (the error of beta = 0) "
            f"but got {args.tau!r}."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with usage_errors():
            res = linear_pilot(
                X, y, args.tau, sizes=args.sizes, n_seeds=args.seeds, seed=args.seed, progress=progress_flag(args)
            )
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if args.json:
        out = res.to_dict()
        if args.seeds < 2:  # a bootstrap over one seed has no spread: no interval
            out["exponent_ci"] = None
        out["n_samples"], out["n_features"] = int(X.shape[0]), int(X.shape[1])
        out["warnings"] = notes
        print(json.dumps(out))
        return 0
    lo, hi = res.exponent_ci
    interval = f"95% interval [{lo:.3f}, {hi:.3f}]" if args.seeds >= 2 else "95% interval n/a (needs --seeds >= 2)"
    print(f"data        n = {X.shape[0]}, d = {X.shape[1]}, tau = {res.tau:g} (mean y^2 = {mean_sq:.4g})")
    print(f"exponent    {res.exponent:.3f}   {interval}  (||beta||^2 ~ n^exponent)")
    print(f"data alpha  {res.alpha:.3f}   95% interval [{res.alpha_ci[0]:.3f}, {res.alpha_ci[1]:.3f}]")
    print("size   median ||beta||^2")
    for n, v in zip(res.sizes, res.norms_sq):
        print(f"{n:>5}  {v:.4g}")
    for note in notes:
        print(f"warning: {note}")
    return 0
