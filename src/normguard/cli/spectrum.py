"""``normguard spectrum FILE``: the eigendecay exponent α of a data matrix.

FILE is ``.npy``, ``.npz`` (array ``X``), ``.pt`` (a tensor, or a dict with ``X``) or
``.csv`` (numbers, comma-separated, an optional header row); rows are samples.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from normguard.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="data matrix: .npy, .npz (key X), .pt or .csv; rows are samples")
    parser.add_argument("--no-center", action="store_true", help="do not subtract the column means")
    parser.add_argument(
        "--fit-range",
        nargs=2,
        type=int,
        metavar=("FIRST", "LAST"),
        help="1-based inclusive eigenvalue indices to fit (default: the documented auto rule)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        help="bootstrap replicates for the interval (default: chosen from a compute budget)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "float64"),
        default="auto",
        help="arithmetic of the covariance product and eigenvalues "
        "(default: %(default)s, see normguard.science.spectrum)",
    )
    parser.add_argument("--plot", metavar="PNG", help="save the spectrum with its fit to this file")


def _from_npz(path: str, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if key in archive:
            return archive[key]
        if len(archive.files) == 1 and key == "X":
            return archive[archive.files[0]]
        raise UsageError(f"{path}: expected an array named {key!r} but found {archive.files}")


def load_array(path: str, key: str = "X") -> np.ndarray:
    """Read an array from .npy/.npz/.pt/.csv, or raise UsageError with a one-line reason."""
    if not os.path.isfile(path):
        raise UsageError(f"file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            data: Any = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            data = _from_npz(path, key)
        elif ext in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if key not in obj:
                    raise UsageError(f"{path}: expected a tensor named {key!r} but found {sorted(obj)}")
                obj = obj[key]
            if not isinstance(obj, torch.Tensor):
                raise UsageError(f"{path}: expected a tensor but found {type(obj).__name__}")
            data = obj.detach().to(dtype=torch.float64).numpy()
        elif ext == ".csv":
            try:
                data = np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                data = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
        else:
            raise UsageError(f"{path}: unsupported file type {ext!r} (use .npy, .npz, .pt or .csv)")
    except UsageError:
        raise
    except Exception as exc:  # unreadable file: one line, no traceback
        raise UsageError(
            f"could not read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.number):
        raise UsageError(f"{path}: expected numbers but found dtype {data.dtype}")
    return data


def load_matrix(path: str, key: str = "X") -> np.ndarray:
    """A finite 2-d float matrix from ``path``."""
    data = load_array(path, key)
    if data.ndim != 2:
        raise UsageError(f"{path}: expected a 2-d matrix (n samples x d features) but got shape {data.shape}")
    if data.shape[0] < 3 or data.shape[1] < 3:
        raise UsageError(f"{path}: expected at least 3 rows and 3 columns but got shape {data.shape}")
    if not np.isfinite(data).all():
        raise UsageError(f"{path}: the matrix holds NaN or inf values")
    return data.astype(np.float64, copy=False) if data.dtype not in (np.float32, np.float64) else data


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def run(args: argparse.Namespace) -> int:
    from normguard.science.spectrum import estimate_alpha, plot_spectrum

    X = load_matrix(args.file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est = estimate_alpha(
                X,
                center=not args.no_center,
                fit_range=tuple(args.fit_range) if args.fit_range else "auto",
                n_bootstrap=args.bootstrap,
                seed=args.seed,
                precision=args.precision,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if args.plot:
        try:
            plot_spectrum(est, path=args.plot)
        except ImportError as exc:
            raise UsageError(str(exc)) from exc
    if args.json:
        out = est.to_dict()
        out["density_tail_exponent"] = est.density_tail_exponent()
        out["warnings"] = notes
        if args.plot:
            out["plot"] = args.plot
        print(json.dumps(out))
        return 0
    lo, hi = est.alpha_ci
    first, last = est.fit_range
    print(f"alpha      {_fmt(est.alpha)}   95% interval [{_fmt(lo)}, {_fmt(hi)}] ({est.ci_method})")
    print(f"R^2        {est.r2:.4f}")
    print(f"fit range  eigenvalues {first}..{last} of {est.eigenvalues.size}")
    print(f"data       n = {est.n_samples} samples, d = {est.n_features} features")
    print(f"(WeightWatcher-style density tail exponent 1 + 1/alpha = {_fmt(est.density_tail_exponent())})")
    for note in notes:
        print(f"warning: {note}")
    if args.plot:
        print(f"figure     {args.plot}")
    return 0
