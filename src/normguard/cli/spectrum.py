"""``normguard spectrum FILE``: the eigendecay exponent α of a data matrix.

FILE is ``.npy``, ``.npz`` (array ``X``; an archive without an ``X`` is refused, even with
a single array, so that a wrongly named array is never used by accident), ``.pt`` (a
tensor, or a dict with ``X``) or ``.csv`` (numbers, comma-separated, an optional header
row); rows are samples, real numbers (complex input is refused).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from normguard.cli import UsageError, add_progress_argument, progress_flag, usage_errors
from normguard.progress import progress


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
        help="bootstrap replicates B for the interval (default: chosen from a compute budget; 0: regression interval)",
    )
    parser.add_argument(
        "--ci-method",
        choices=("parametric-bootstrap", "bootstrap", "regression-se"),
        default="parametric-bootstrap",
        help="how the 95%% interval is made (default: %(default)s, see normguard.science.spectrum)",
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
    add_progress_argument(parser)


def _from_npz(path: str, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if key in archive:
            return archive[key]
        raise UsageError(
            f"{path}: expected an array named {key!r} but found {archive.files} "
            f"(save it with np.savez(path, {key}=array))"
        )


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
            if obj.is_complex():
                raise UsageError(f"{path}: expected real numbers but found complex dtype {obj.dtype}")
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
    if not np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_:
        raise UsageError(f"{path}: expected numbers but found dtype {data.dtype}")
    if np.iscomplexobj(data):
        raise UsageError(f"{path}: expected real numbers but found complex dtype {data.dtype}")
    return data


def check_plot_path(path: str) -> None:
    """Refuse a ``--plot`` path that cannot be written (missing folder, unknown format) up front.

    Example:
        >>> check_plot_path("/no/such/folder/x.png")
        Traceback (most recent call last):
        ...
        normguard.cli.UsageError: --plot /no/such/folder/x.png: the folder /no/such/folder does not exist
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--plot {path}: the folder {folder} does not exist")
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UsageError("--plot needs matplotlib: pip install 'normguard[report]'") from exc
    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in formats:
        raise UsageError(
            f"--plot {path}: expected a file name ending in one of {', '.join('.' + f for f in sorted(formats))} "
            f"but got {('.' + ext) if ext else 'no extension'}"
        )


def save_figure(save: Any, path: str) -> None:
    """Call ``save(path)``; an error writing the file becomes a one-line UsageError."""
    try:
        save(path)
    except ImportError as exc:
        raise UsageError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--plot {path}: could not save the figure: {reason}") from exc


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

    if args.plot:
        check_plot_path(args.plot)
    # one call does the work: the bar names the stage and keeps the elapsed time moving
    with progress(None, f"normguard spectrum: reading {args.file}", enabled=progress_flag(args), tick=0.5) as bar:
        X = load_matrix(args.file)
        bar.set_description(f"normguard spectrum: alpha of {X.shape[0]} x {X.shape[1]}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with usage_errors():
                est = estimate_alpha(
                    X,
                    center=not args.no_center,
                    fit_range=tuple(args.fit_range) if args.fit_range else "auto",
                    n_bootstrap=args.bootstrap,
                    seed=args.seed,
                    precision=args.precision,
                    ci_method=args.ci_method,
                )
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if est.ci_method == "none":  # n too small for a fit: refuse rather than print a meaningless alpha
            raise UsageError(next(note for note in notes if "too small" in note))
        if args.plot:
            bar.set_description(f"normguard spectrum: drawing {args.plot}")
            save_figure(lambda path: plot_spectrum(est, path=path), args.plot)
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
    replicates = f", B = {est.n_bootstrap}" if est.n_bootstrap else ""
    print(f"alpha      {_fmt(est.alpha)}   95% interval [{_fmt(lo)}, {_fmt(hi)}] ({est.ci_method}{replicates})")
    if est.ci_method == "parametric-bootstrap":
        used = "used" if est.range_test != "fail" else "not used: the range test failed"
        print(
            f"           fit {_fmt(est.alpha_uncorrected)}, bias estimate {est.bias:+.3g}, "
            f"bias-corrected {_fmt(est.alpha_corrected)} ({used})"
        )
        if est.range_test == "not run":
            print("range test not run (fit range too short)")
        else:
            verdict = "consistent with a power law" if est.range_test == "pass" else "NOT a power law"
            sign = "<=" if est.range_test == "pass" else ">"
            print(
                f"range test {est.range_test}: {verdict} over the fit range "
                f"(statistic {est.range_statistic:.3g} {sign} {est.range_threshold:.3g})"
            )
    print(f"R^2        {est.r2:.4f}")
    print(f"fit range  eigenvalues {first}..{last} of {est.eigenvalues.size}")
    print(f"data       n = {est.n_samples} samples, d = {est.n_features} features")
    print(f"(WeightWatcher-style density tail exponent 1 + 1/alpha = {_fmt(est.density_tail_exponent())})")
    for note in notes:
        print(f"warning: {note}")
    if args.plot:
        print(f"figure     {args.plot}")
    return 0
