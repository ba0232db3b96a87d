"""Eigendecay exponent α of a data matrix or of a layer's inputs, with an interval and a plot.

If the covariance eigenvalues of the data decay as a power law, λ_i ~ i^(−α), every model whose
training loss is under the noise floor has a squared weight norm growing at least like n^α, and
a larger α gives a worse trade-off between training and test error. This module measures α. The
rule in brief (the reasons, measurements and formulas are in the documentation,
``docs/guides/spectrum-method.md``):

1. Eigenvalues of the smaller of XᵀX/n and XXᵀ/n (rows centred), in float64, or in float32 for
   float32 data above 10¹⁰ multiply-adds, redone in float64 when float32 cannot resolve the tail.
2. ``m`` = the count above numerical zero (λ₁ · max(n, d) · 100 · ε₆₄; λ₁ · 4 · ε₃₂ in float32).
3. Fit range ("auto"): ``first = max(2, ceil(0.01 m))``, ``last = floor(f · m)`` with ``f = 0.5``
   when n ≥ 5 d else ``0.1``, raised to ``first + 7`` where possible, at most ``m``.
4. α = minus the least-squares slope of log λ_i on log i over that range.
5. Interval (``ci_method="parametric-bootstrap"``): refits on eigenvalues simulated under the
   fitted spectrum give the bias (subtracted) and the spread (a t interval).
6. Range test: sub-ranges refitted against the replicates; on failure, not a power law: no bias
   correction, a widened interval, a warning (``range_test``).
7. B (``n_bootstrap=None``): replicates costing about 9× the point estimate (10 ≤ B ≤ 100).

``ci_method="bootstrap"`` (rows resampled) and ``"regression-se"`` are the other intervals.
Warnings: not a power law (R² < 0.9 or the range test fails), α ≤ 1, fewer than 8 eigenvalues
in the fit range; no interval (NaN) when n < d limits the rank to fewer than 10.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(2000, 200, generator=g, dtype=torch.float64)
    >>> X = X * torch.arange(1, 201, dtype=torch.float64) ** -1.0   # λ_i = i^-2
    >>> est = estimate_alpha(X, n_bootstrap=20, seed=0)
    >>> round(est.alpha, 1), est.fit_range, est.ci_method, est.range_test
    (2.0, (2, 100), 'parametric-bootstrap', 'pass')
    >>> est.alpha_ci[0] < 2.0 < est.alpha_ci[1]
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

try:
    from scipy import linalg, stats
    from scipy.linalg import blas, lapack
except ImportError as exc:  # the [science] extra
    raise ImportError(
        "normguard.science.spectrum needs scipy, which is not installed: pip install 'normguard[science]'"
    ) from exc
from torch import Tensor, nn

from normguard.validation import check_choice, check_finite, check_int, check_matrix, check_real_array

__all__ = [
    "AlphaEstimate",
    "CovarianceAccumulator",
    "auto_fit_range",
    "estimate_alpha",
    "estimate_alpha_streaming",
    "fit_power_law",
    "layer_input_alphas",
    "plot_spectrum",
]

_CHUNK = 2048
_BOOTSTRAP_BUDGET_FLOPS = 4e10
_ZERO_EPS = 100 * float(np.finfo(np.float64).eps)
# float32 data: products above this many multiply-adds (n · d · min(n, d)) stay in float32.
_FLOAT32_PRODUCT_MACS = 1e10
# float32 products: eigenvalues ≤ λ₁ · 4 · ε₃₂ (≈ λ₁ · 4.8e-7) are numerical zeros; measured
# rounding "zeros" of rank-deficient float32 data sit at λ₁ · 1e-8 … 8.5e-8.
_FLOAT32_ZERO_FACTOR = 4.0


@dataclass(frozen=True, eq=False)
class AlphaEstimate:
    """The fitted eigendecay λ_i ≈ exp(intercept) · i^(−α) of a data matrix.

    Attributes:
        alpha: rank-ordered eigendecay exponent (λ_i ~ i^(−α)): the bias-corrected
            fit for the parametric bootstrap whose range test passed, else the plain fit.
        alpha_ci: (low, high), 95 % interval; how it was made is in ``ci_method``
            (NaN when n is too small for a fit).
        r2: coefficient of determination of the log-log fit over ``fit_range``.
        fit_range: (first, last), 1-based inclusive eigenvalue indices used by the fit.
        eigenvalues: all eigenvalues, descending (numpy float64).
        n_samples, n_features: the data's shape.
        intercept: the fit's intercept (natural log), of the uncorrected fit.
        ci_method: ``"parametric-bootstrap"``, ``"bootstrap"`` (rows resampled),
            ``"regression-se"`` or ``"none"`` (no interval).
        n_bootstrap: replicates used (0 for the regression interval).
        precision: ``"float32"`` or ``"float64"``, the arithmetic of the product and the
            eigenvalues behind the estimate (see rule 1 of the module docstring).
        alpha_uncorrected: the least-squares fit over ``fit_range`` (NaN: same as ``alpha``).
        alpha_corrected: ``alpha_uncorrected − bias`` (parametric bootstrap only, else NaN).
        bias: the parametric bootstrap's estimate of the fit's bias (NaN if not estimated).
        alpha_se: the parametric replicates' standard deviation of α (NaN if not estimated).
        range_test: ``"pass"``, ``"fail"`` (not a power law over the fit range) or ``"not run"``.
        range_statistic, range_threshold: the range test's statistic and its 95 % threshold.
        range_widening: added to each side of the interval when the range test failed (else 0).
    """

    alpha: float
    alpha_ci: tuple[float, float]
    r2: float
    fit_range: tuple[int, int]
    eigenvalues: np.ndarray
    n_samples: int
    n_features: int
    intercept: float = 0.0
    ci_method: str = "bootstrap"
    n_bootstrap: int = 0
    precision: str = "float64"
    alpha_uncorrected: float = math.nan
    alpha_corrected: float = math.nan
    bias: float = math.nan
    alpha_se: float = math.nan
    range_test: str = "not run"
    range_statistic: float = math.nan
    range_threshold: float = math.nan
    range_widening: float = 0.0

    def density_tail_exponent(self) -> float:
        """WeightWatcher's "alpha": the tail exponent of the eigenvalue *density*.

        If λ_i ~ i^(−α) (rank-ordered, this module's α), the empirical density of the
        eigenvalues decays as p(λ) ~ λ^(−(1 + 1/α)), so WeightWatcher's exponent is
        ``1 + 1/alpha``. The two are different numbers for the same spectrum: a *larger*
        eigendecay α (faster decay) gives a *smaller* density exponent.

        Example:
            >>> est = AlphaEstimate(2.0, (1.9, 2.1), 0.99, (2, 10), np.ones(3), 10, 3)
            >>> est.density_tail_exponent()
            1.5
        """
        return 1.0 + 1.0 / self.alpha

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly summary (no eigenvalues; NaN becomes ``None``).

        Example:
            >>> est = AlphaEstimate(2.0, (1.9, 2.1), 0.99, (2, 10), np.ones(3), 10, 3)
            >>> d = est.to_dict()
            >>> d["alpha_uncorrected"], d["bias"], d["range_test"]
            (2.0, None, 'not run')
        """

        def num(value: float) -> float | None:
            return float(value) if math.isfinite(value) else None

        uncorrected = self.alpha if math.isnan(self.alpha_uncorrected) else self.alpha_uncorrected
        return {
            "alpha": num(self.alpha),
            "alpha_ci": [num(self.alpha_ci[0]), num(self.alpha_ci[1])],
            "alpha_uncorrected": num(uncorrected),
            "alpha_corrected": num(self.alpha_corrected),
            "bias": num(self.bias),
            "alpha_se": num(self.alpha_se),
            "r2": self.r2,
            "fit_range": [self.fit_range[0], self.fit_range[1]],
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "ci_method": self.ci_method,
            "n_bootstrap": self.n_bootstrap,
            "range_test": self.range_test,
            "range_statistic": num(self.range_statistic),
            "range_threshold": num(self.range_threshold),
            "range_widening": num(self.range_widening),
            "precision": self.precision,
        }


# --------------------------------------------------------------------------- helpers


def _as_matrix(X: Any, name: str = "X") -> Tensor:
    """A 2-d floating tensor (float32 or float64), checked for shape and NaNs."""
    X = check_real_array(name, X)
    X = torch.from_numpy(np.ascontiguousarray(X)) if isinstance(X, np.ndarray) else X.detach()
    check_matrix(name, X, min_rows=3, min_cols=3)
    if X.dtype not in (torch.float32, torch.float64):
        X = X.to(torch.float64)
    return check_finite(name, X)


def _syrk(X: Tensor, *, covariance: bool, scale: float = 1.0) -> Tensor:
    """``scale · XᵀX`` (``covariance=True``) or ``scale · XXᵀ`` in X's dtype; lower triangle guaranteed.

    On the CPU this is one BLAS symmetric rank-k update (``?syrk``: half the multiply-adds of
    a general product, no copy of X); elsewhere a plain matmul.
    """
    if X.device.type != "cpu":
        return (X.T @ X if covariance else X @ X.T).mul_(scale)
    syrk = blas.ssyrk if X.dtype == torch.float32 else blas.dsyrk
    fortran_view = X.contiguous().numpy().T  # d × n, Fortran-ordered: no copy
    return torch.from_numpy(syrk(scale, fortran_view, trans=0 if covariance else 1, lower=1))


def _smaller_gram(X: Tensor, dtype: torch.dtype) -> Tensor:
    """The smaller of XᵀX/n and XXᵀ/n (lower triangle), multiplied in ``dtype``.

    The float64 product of float32 data is formed over row/column chunks, so no float64
    copy of X is ever made.
    """
    n, d = X.shape
    covariance = d <= n
    if X.dtype == dtype:
        return _syrk(X, covariance=covariance, scale=1.0 / n)
    size = d if covariance else n
    out = torch.zeros(size, size, dtype=torch.float64, device=X.device)
    for start in range(0, n if covariance else d, _CHUNK):
        chunk = X[start : start + _CHUNK] if covariance else X[:, start : start + _CHUNK]
        out += _syrk(chunk.to(torch.float64), covariance=covariance)
    return out / n


def _product_dtype(X: Tensor, precision: str = "auto") -> torch.dtype:
    """The precision the product (and ``eigvalsh``) of ``X`` starts in (rule 1)."""
    if X.dtype != torch.float32 or precision == "float64":
        return torch.float64
    n, d = X.shape
    if precision == "float32" or n * d * min(n, d) > _FLOAT32_PRODUCT_MACS:
        return torch.float32
    return torch.float64


def _spectrum(Xc: Tensor, dtype: torch.dtype) -> np.ndarray:
    gram = _smaller_gram(Xc, dtype)
    eigs = _eigenvalues(gram)
    del gram
    return eigs


def _center(X: Tensor) -> Tensor:
    """X minus its column means (torch's cascaded sum: ~1e-7 relative error in float32)."""
    mean = X.sum(dim=0) / X.shape[0]
    if not bool(torch.isfinite(mean).all()):  # float32 sums of values near 1e38 overflow
        mean = X.sum(dim=0, dtype=torch.float64).div_(X.shape[0]).to(X.dtype)
    return X - mean


def _eigenvalues(matrix: Tensor, uplo: str = "L") -> np.ndarray:
    """Eigenvalues, descending, in the matrix's own precision (the ``uplo`` triangle read)."""
    vals = torch.linalg.eigvalsh(matrix, UPLO=uplo)
    return vals.flip(0).clamp_min(0.0).to(torch.float64).cpu().numpy()


def _zero_threshold(top: float, n: int, d: int, product_dtype: torch.dtype) -> float:
    """Eigenvalues at or below this are numerical zeros (see rule 2 of the module docstring)."""
    if product_dtype == torch.float32:
        return top * _FLOAT32_ZERO_FACTOR * float(np.finfo(np.float32).eps)
    return top * max(n, d) * _ZERO_EPS


def _rank(eigs: np.ndarray, n: int, d: int, center: bool, product_dtype: torch.dtype = torch.float64) -> int:
    limit = min(n - 1 if center else n, d)
    if eigs.size == 0 or eigs[0] <= 0:
        return 0
    above = int(np.sum(eigs > _zero_threshold(float(eigs[0]), n, d, product_dtype)))
    return max(0, min(limit, above))


def auto_fit_range(m: int, n: int, d: int) -> tuple[int, int]:
    """The documented "auto" fit range (1-based, inclusive) for ``m`` usable eigenvalues.

    Example:
        >>> auto_fit_range(1000, n=1000, d=1500)
        (10, 100)
        >>> auto_fit_range(60, n=1797, d=64)
        (2, 30)
    """
    if m < 3:
        raise ValueError(
            f"Expected at least 3 eigenvalues above numerical zero but got {m}: the data has (numerically) rank < 3."
        )
    first = max(2, math.ceil(0.01 * m))
    fraction = 0.5 if n >= 5 * d else 0.1
    last = max(math.floor(fraction * m), first + 7)
    last = min(last, m)
    if last - first < 2:
        first = max(1, last - 2)
    return first, last


def fit_power_law(eigenvalues: np.ndarray, first: int, last: int) -> tuple[float, float, float, float]:
    """OLS of log λ_i on log i for i in [first, last]: (alpha, intercept, r2, slope s.e.).

    Example:
        >>> lam = np.arange(1, 51, dtype=float) ** -1.5
        >>> [round(v, 6) for v in fit_power_law(lam, 2, 40)[:3]]
        [1.5, 0.0, 1.0]
    """
    idx = np.arange(first, last + 1, dtype=np.float64)
    vals = np.asarray(eigenvalues[first - 1 : last], dtype=np.float64)
    if np.any(vals <= 0):
        raise ValueError("Expected positive eigenvalues over the fit range but got zeros.")
    xs, ys = np.log(idx), np.log(vals)
    res = stats.linregress(xs, ys)
    r2 = float(res.rvalue**2) if np.isfinite(res.rvalue) else 0.0
    return float(-res.slope), float(res.intercept), r2, float(res.stderr)


def _resolve_range(
    fit_range: str | tuple[int, int] | None, eigs: np.ndarray, n: int, d: int, m: int
) -> tuple[int, int]:
    if fit_range is None or fit_range == "auto":
        return auto_fit_range(m, n, d)
    if isinstance(fit_range, str):
        raise ValueError(f"Expected argument `fit_range` to be 'auto' or (first, last) but got {fit_range!r}.")
    first, last = (int(v) for v in fit_range)
    if not 1 <= first < last <= m or last - first < 2:
        raise ValueError(
            f"Expected argument `fit_range` to satisfy 1 <= first, first + 2 <= last <= {m} "
            f"(eigenvalues above numerical zero) but got {fit_range}."
        )
    return first, last


def _warn_if_poor(est: AlphaEstimate, where: str = "", *, stacklevel: int = 3) -> None:
    """The warnings of the module docstring: not a power law, α ≤ 1, too few eigenvalues."""
    prefix = f"{where}: " if where else ""
    alpha, r2 = est.alpha, est.r2
    first, last = est.fit_range
    points = last - first + 1
    if est.ci_method == "none":
        warnings.warn(
            f"{prefix}n = {est.n_samples} samples is too small for a fit on d = {est.n_features} features: "
            f"the data has only {min(est.n_samples, est.eigenvalues.size)} eigenvalues to fit, so alpha = "
            f"{alpha:.3g} is not meaningful and no interval is given (use at least "
            f"{_MIN_RANK_FOR_INTERVAL + 1} samples; many more for an accurate alpha).",
            stacklevel=stacklevel,
        )
    elif points < _MIN_FIT_POINTS:
        warnings.warn(
            f"{prefix}only {points} eigenvalues in the fit range {first}..{last} "
            f"(n = {est.n_samples}, d = {est.n_features}): too few for a reliable power-law fit.",
            stacklevel=stacklevel,
        )
    if est.range_test == "fail":
        warnings.warn(
            f"{prefix}not a power law over the fit range {first}..{last}: sub-ranges disagree "
            f"(statistic {est.range_statistic:.3g} > {est.range_threshold:.3g}); alpha = {alpha:.3g} is the "
            f"uncorrected fit and its interval is widened by {est.range_widening:.3g} on each side.",
            stacklevel=stacklevel,
        )
    if r2 < 0.9:
        warnings.warn(
            f"{prefix}the eigenvalue spectrum is not a power law over the fit range "
            f"(R² = {r2:.3f} < 0.9); alpha = {alpha:.3g} is not meaningful.",
            stacklevel=stacklevel,
        )
    if alpha <= 1:
        warnings.warn(
            f"{prefix}alpha = {alpha:.3g} <= 1: the spectrum decays too slowly for the "
            "power-law theory (which needs alpha > 1).",
            stacklevel=stacklevel,
        )


def _t_interval(alpha: float, se: float, n_points: int) -> tuple[float, float]:
    if n_points <= 2 or not math.isfinite(se):
        return (alpha, alpha)
    half = float(stats.t.ppf(0.975, n_points - 2)) * se
    return (alpha - half, alpha + half)


def _fit_estimate(
    eigs: np.ndarray,
    n: int,
    d: int,
    *,
    center: bool,
    fit_range: str | tuple[int, int] | None,
    product_dtype: torch.dtype = torch.float64,
) -> AlphaEstimate:
    """Rules 2–4 of the module docstring on descending ``eigs``, with the regression interval."""
    m = _rank(eigs, n, d, center, product_dtype)
    first, last = _resolve_range(fit_range, eigs, n, d, m)
    alpha, intercept, r2, se = fit_power_law(eigs, first, last)
    return AlphaEstimate(
        alpha=alpha,
        alpha_ci=_t_interval(alpha, se, last - first + 1),
        r2=r2,
        fit_range=(first, last),
        eigenvalues=eigs,
        n_samples=n,
        n_features=d,
        intercept=intercept,
        ci_method="regression-se",
        n_bootstrap=0,
        precision="float32" if product_dtype == torch.float32 else "float64",
    )


# --------------------------------------------------------------------------- parametric bootstrap

_B_MIN, _B_MAX = 10, 100
_INTERVAL_COST_FACTOR = 9.0  # replicates' cost over the point estimate's: the call costs ~10×
_MIN_FIT_POINTS = 8
_MIN_RANK_FOR_INTERVAL = 10
# Cost model (seconds per unit, measured on one core, float64; only the ratios matter): a
# normal draw, a multiply-add of a symmetric product, the k³ and k² terms of torch's
# ``eigvalsh`` (the point estimate), one pass over the data, the fixed cost of a point
# estimate and of a replicate; a replicate's SciPy eigenvalue solve (size ≤ _SCIPY_EIG_MAX)
# costs _COST_EIG_SCIPY times torch's.
_COST_NORMAL, _COST_MAC, _COST_EIG3, _COST_EIG2, _COST_PASS = 1.5e-8, 8e-11, 2.6e-10, 2.8e-8, 3e-9
_COST_POINT_CALL, _COST_REPLICATE_CALL, _COST_EIG_SCIPY = 1e-3, 1.5e-4, 0.6
_SCIPY_EIG_MAX = 1024  # replicates' eigenvalue solves up to this size use SciPy, larger ones torch


def _eig_cost(k: int) -> float:
    return _COST_EIG3 * k**3 + _COST_EIG2 * k**2


def _replicate_eig_cost(k: int) -> float:
    return _eig_cost(k) * (_COST_EIG_SCIPY if k <= _SCIPY_EIG_MAX else 1.0)


def simulate_sample_eigenvalues(population: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Eigenvalues (descending) of the sample covariance of ``n_rows`` Gaussian rows with
    covariance ``diag(population)``, divided by ``n_rows``.

    The eigenvalues do not depend on the covariance's eigenvectors, so none is drawn. For
    ``n_rows ≥ p`` (p = ``population.size``) the sum of outer products is a Wishart matrix
    ``D A Aᵀ D`` (D = diag(√population)), with A from the Bartlett decomposition: lower
    triangular, ``A_ii = √χ²(n_rows − i + 1)``, ``A_ij ~ N(0, 1)`` below the diagonal. For
    ``n_rows < p`` it is the ``n_rows × n_rows`` Gram matrix ``Z D² Zᵀ`` of standard normal
    rows Z, which has the same non-zero eigenvalues; the result then has ``n_rows`` entries.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> lam = np.arange(1, 51, dtype=float) ** -2.0
        >>> big, small = simulate_sample_eigenvalues(lam, 100_000, rng), simulate_sample_eigenvalues(lam, 20, rng)
        >>> big.shape, small.shape, bool(abs(big[0] - 1.0) < 0.02)
        ((50,), (20,), True)
    """
    lam = np.asarray(population, dtype=np.float64)
    p = lam.size
    if n_rows < 1 or p < 1 or np.any(lam < 0):
        raise ValueError(
            f"Expected `n_rows` >= 1 and a non-empty, non-negative `population` but got {n_rows} and {p} values."
        )
    root = np.sqrt(lam)
    if n_rows >= p:
        factor = np.tril(rng.standard_normal((p, p)), -1)
        factor[np.diag_indices(p)] = np.sqrt(rng.chisquare(np.arange(n_rows, n_rows - p, -1, dtype=np.float64)))
        factor *= root[:, None]  # L = D A: row i scaled by √λ_i, still lower triangular
        # L Lᵀ and Lᵀ L share their eigenvalues; LAPACK ?lauum forms Lᵀ L from the triangle
        # (a third of the multiply-adds of a general product). The Fortran view of the
        # C-ordered L is U = Lᵀ, for which ?lauum(lower=0) gives U Uᵀ = Lᵀ L in the upper
        # triangle of its (Fortran-ordered) result.
        gram, info = lapack.dlauum(factor.T, lower=0, overwrite_c=1)
        lower = False
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise RuntimeError(f"LAPACK dlauum failed with info = {info}.")
    else:
        factor = rng.standard_normal((n_rows, p))
        factor *= root[None, :]  # Z D
        # factor · factorᵀ via ?syrk on the Fortran view (no copy); lower triangle filled
        gram, lower = blas.dsyrk(1.0, factor.T, trans=1, lower=1), True
    if gram.shape[0] > _SCIPY_EIG_MAX:
        return _eigenvalues(torch.from_numpy(gram), uplo="L" if lower else "U") / n_rows
    # SciPy's divide-and-conquer driver: 1.3–1.7× faster than torch.linalg.eigvalsh on one
    # core for 200 ≤ p ≤ 800, 1.3× on two at 1 024, but slower at 2 048 (1.3×) and above.
    vals = linalg.eigh(gram, eigvals_only=True, lower=lower, driver="evd", overwrite_a=True, check_finite=False)
    return np.maximum(vals[::-1], 0.0) / n_rows


def _ols_slopes(log_eigs: np.ndarray, first: int, last: int) -> np.ndarray:
    """−slope of log λ on log i over [first, last] for every row of ``log_eigs`` (B × k)."""
    x = np.log(np.arange(first, last + 1, dtype=np.float64))
    x = x - x.mean()
    y = log_eigs[:, first - 1 : last]
    return -(y @ x) / float(x @ x)


def _sub_ranges(first: int, last: int) -> list[tuple[int, int]]:
    """K = 3 (else 2) consecutive sub-ranges of [first, last], equal in log i (rule 6)."""
    for parts, min_points in ((3, 4), (2, 3)):
        edges = [
            round(math.exp(math.log(first) + (math.log(last) - math.log(first)) * k / parts)) for k in range(1, parts)
        ]
        edges = [first, *edges, last]
        pieces = [(edges[k], edges[k + 1]) for k in range(parts)]
        if all(b - a + 1 >= min_points for a, b in pieces):
            return pieces
    return []


@dataclass(frozen=True)
class _Parametric:
    bias: float
    spread: float
    half_width: float
    test: str
    statistic: float
    threshold: float
    excess: float


def _parametric_bootstrap(
    eigs: np.ndarray, alpha: float, first: int, last: int, p: int, n_rows: int, n_bootstrap: int, seed: int
) -> _Parametric:
    """Rules 5 and 6 of the module docstring: bias, spread, half width and the range test."""
    population = np.arange(1, p + 1, dtype=np.float64) ** -alpha
    rng = np.random.default_rng(seed)
    pieces = _sub_ranges(first, last)
    needed = last
    reps = np.empty((n_bootstrap, needed))
    for b in range(n_bootstrap):
        sim = simulate_sample_eigenvalues(population, n_rows, rng)[:needed]
        reps[b] = np.log(np.maximum(sim, np.finfo(np.float64).tiny))
    boot = _ols_slopes(reps, first, last)
    bias = float(boot.mean() - alpha)
    spread = float(boot.std(ddof=1)) if n_bootstrap >= 2 else math.nan
    t_factor = math.sqrt(1.0 + 1.0 / n_bootstrap)
    half = float(stats.t.ppf(0.975, n_bootstrap - 1)) * spread * t_factor if n_bootstrap >= 2 else math.nan
    if not pieces or n_bootstrap < 3:
        return _Parametric(bias, spread, half, "not run", math.nan, math.nan, 0.0)
    log_data = np.log(np.asarray(eigs[:needed], dtype=np.float64))[None, :]
    data_alpha = float(_ols_slopes(log_data, first, last)[0])
    threshold = float(stats.t.ppf(1 - 0.025 / len(pieces), n_bootstrap - 1)) * t_factor
    scaled, excess = [], []
    for a, b in pieces:
        delta_reps = _ols_slopes(reps, a, b) - boot
        delta_data = float(_ols_slopes(log_data, a, b)[0]) - data_alpha
        centre, scale = float(delta_reps.mean()), float(delta_reps.std(ddof=1))
        deviation = abs(delta_data - centre)
        scaled.append(deviation / scale if scale > 0 else math.inf)
        excess.append(max(0.0, deviation - threshold * scale))  # beyond what sampling explains
    statistic = max(scaled)
    test = "fail" if statistic > threshold else "pass"
    return _Parametric(bias, spread, half, test, statistic, threshold, max(excess))


def _bootstrap_size(point_cost: float, p: int, n_rows: int) -> int:
    """B of rule 7: replicates costing about 9× the point estimate (10 ≤ B ≤ 100)."""
    if n_rows >= p:  # p² normals, a triangular Lᵀ L (?lauum: ~p³/3 at a general product's rate), p×p solve
        replicate = _COST_NORMAL * p * p + _COST_MAC * p**3 / 3 + _replicate_eig_cost(p)
    else:
        replicate = _COST_NORMAL * n_rows * p + _COST_MAC * n_rows**2 * p / 2 + _replicate_eig_cost(n_rows)
    replicate += _COST_REPLICATE_CALL
    return int(min(_B_MAX, max(_B_MIN, _INTERVAL_COST_FACTOR * point_cost // replicate)))


def _point_cost(n: int, d: int, *, streaming: bool = False, float32: bool = False) -> float:
    """The cost model's estimate of the point estimate (in-memory product or streamed outer products).

    The float32 route (rule 1) runs its product about twice and its ``eigvalsh`` about 1.2×
    as fast as float64 (benchmarks/RESULTS_spectrum.md); replicates are always float64.
    """
    k = min(n, d)
    product = _COST_MAC * n * d * d if streaming else _COST_MAC * n * d * k / 2
    eig = _eig_cost(k)
    if float32:
        product, eig = product / 2, eig / 1.2
    return _COST_PASS * n * d + product + eig + _COST_POINT_CALL


def _with_interval(
    est: AlphaEstimate,
    *,
    m: int,
    center: bool,
    ci_method: str,
    n_bootstrap: int | None,
    seed: int,
    point_cost: float,
) -> AlphaEstimate:
    """Attach the parametric-bootstrap interval (rules 5–7) to a plain fit, or say why there is none."""
    n, d = est.n_samples, est.n_features
    n_rows = n - 1 if center else n
    first, last = est.fit_range
    est = replace(est, alpha_uncorrected=est.alpha)
    if n_rows < d and m < _MIN_RANK_FOR_INTERVAL:
        return replace(est, alpha_ci=(math.nan, math.nan), ci_method="none", n_bootstrap=0)
    if ci_method == "regression-se" or n_bootstrap == 0:
        return est
    p = m if m < min(n_rows, d) else d  # rank-deficient data: the power law over its rank only
    B = _bootstrap_size(point_cost, p, n_rows) if n_bootstrap is None else max(2, n_bootstrap)
    res = _parametric_bootstrap(est.eigenvalues, est.alpha, first, last, p, n_rows, B, seed)
    corrected = est.alpha - res.bias
    if res.test == "fail":  # the uncorrected fit; the interval spans it and the corrected one
        centre, half = est.alpha, res.half_width + res.excess
        interval = (min(centre, corrected) - half, max(centre, corrected) + half)
    else:
        centre, half = corrected, res.half_width
        interval = (centre - half, centre + half)
    return replace(
        est,
        alpha=centre,
        alpha_ci=interval,
        ci_method="parametric-bootstrap",
        n_bootstrap=B,
        alpha_corrected=corrected,
        bias=res.bias,
        alpha_se=res.spread,
        range_test=res.test,
        range_statistic=res.statistic,
        range_threshold=res.threshold,
        range_widening=res.excess if res.test == "fail" else 0.0,
    )


# --------------------------------------------------------------------------- in memory


_CI_METHODS = ("parametric-bootstrap", "bootstrap", "regression-se")


def _check_interval_args(ci_method: str, n_bootstrap: int | None) -> None:
    check_choice("ci_method", ci_method, _CI_METHODS)
    if check_int("n_bootstrap", n_bootstrap, 0, optional=True) == 1:
        raise ValueError(
            "Expected argument `n_bootstrap` to be 0, >= 2 or None but got 1 (one replicate has no spread)."
        )


def estimate_alpha(
    X: Any,
    *,
    center: bool = True,
    fit_range: str | tuple[int, int] | None = "auto",
    n_bootstrap: int | None = None,
    seed: int = 0,
    warn: bool = True,
    precision: str = "auto",
    ci_method: str = "parametric-bootstrap",
) -> AlphaEstimate:
    """Estimate the eigendecay exponent α of the rows of ``X`` (n samples × d features).

    Args:
        X: data matrix, torch tensor (any device) or numpy array, real.
        center: subtract the column means first (covariance rather than second moment).
        fit_range: ``"auto"``/``None`` (the documented rule, see the module docstring) or
            ``(first, last)``, 1-based inclusive eigenvalue indices.
        n_bootstrap: replicates B for ``alpha_ci``; ``0`` for the regression interval;
            ``None`` picks B from a compute budget (rule 7 of the module docstring; for
            ``ci_method="bootstrap"``, the former budget of that method).
        seed: seed of the bootstrap's random draws.
        warn: warn when the spectrum is not a power law (R² < 0.9 or the range test
            fails), α ≤ 1, or the fit has too few eigenvalues.
        precision: ``"auto"`` (rule 1 of the module docstring: float32 for large float32
            data, redone in float64 when float32 cannot resolve the tail), ``"float64"``
            (always exact), or ``"float32"`` (always fast; for float32 data, a steep or
            rank-deficient spectrum is then fitted over a shorter head).
        ci_method: ``"parametric-bootstrap"`` (default, bias-corrected, with the fit-range
            test), ``"bootstrap"`` (rows resampled) or ``"regression-se"``.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> est = estimate_alpha(load_digits().data, warn=False)
        >>> est.n_samples, est.n_features, est.alpha_ci[0] <= est.alpha <= est.alpha_ci[1]
        (1797, 64, True)
        >>> est.ci_method, est.range_test  # digits' spectrum bends over the fit range
        ('parametric-bootstrap', 'fail')
    """
    _check_interval_args(ci_method, n_bootstrap)
    check_choice("precision", precision, ("auto", "float32", "float64"))
    X = _as_matrix(X)
    n, d = X.shape
    Xc = _center(X) if center else X
    dtype = _product_dtype(X, precision)
    eigs = _spectrum(Xc, dtype)
    if dtype == torch.float32 and precision == "auto" and _rank(eigs, n, d, center, dtype) < min(n - int(center), d):
        dtype = torch.float64  # float32 could not resolve the tail: let float64 decide the rank
        eigs = _spectrum(Xc, dtype)
    del Xc
    est = _fit_estimate(eigs, n, d, center=center, fit_range=fit_range, product_dtype=dtype)
    if ci_method == "bootstrap" and n_bootstrap != 0:
        est = _row_bootstrap(X, est, center=center, n_bootstrap=n_bootstrap, seed=seed, dtype=dtype)
    else:
        m = _rank(eigs, n, d, center, dtype)
        est = _with_interval(
            est,
            m=m,
            center=center,
            ci_method=ci_method,
            n_bootstrap=n_bootstrap,
            seed=seed,
            point_cost=_point_cost(n, d, float32=dtype == torch.float32),
        )
    if warn:
        _warn_if_poor(est)
    return est


def _row_bootstrap(
    X: Tensor, est: AlphaEstimate, *, center: bool, n_bootstrap: int | None, seed: int, dtype: torch.dtype
) -> AlphaEstimate:
    """``ci_method="bootstrap"``: rows resampled with replacement, percentiles re-centred on α̂."""
    n, d = X.shape
    first, last = est.fit_range
    est = replace(est, alpha_uncorrected=est.alpha)
    if n_bootstrap is None:
        small = min(n, d)
        cost = 2.0 * n * d * small + 10.0 * small**3
        n_bootstrap = int(min(200, _BOOTSTRAP_BUDGET_FLOPS // max(cost, 1.0)))
        if n_bootstrap < 20:
            return est
    reps = []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(n_bootstrap):
        rows = torch.randint(0, n, (n,), generator=gen).to(X.device)
        Xb = X.index_select(0, rows)
        Xb = _center(Xb) if center else Xb
        eb = _spectrum(Xb, dtype)
        if np.all(eb[first - 1 : last] > 0):
            reps.append(fit_power_law(eb, first, last)[0])
    if len(reps) < 2:
        return est
    lo, hi = np.percentile(reps, [2.5, 97.5]) - np.mean(reps) + est.alpha
    return replace(
        est,
        alpha_ci=(float(min(lo, est.alpha)), float(max(hi, est.alpha))),
        ci_method="bootstrap",
        n_bootstrap=n_bootstrap,
    )


# --------------------------------------------------------------------------- streaming


class CovarianceAccumulator:
    """Streams batches into a d×d float64 second-moment matrix on the data's device.

    Memory is O(d²) whatever the number of samples. Centring uses the first batch's mean as
    a shift (the shifted-data algorithm), so large means do not cancel catastrophically.
    Batches may be tensors, numpy arrays, or ``(x, y, ...)`` tuples (``x`` is used); each
    is flattened to ``(batch, -1)``.

    The interval of :meth:`estimate` is the parametric bootstrap of the module docstring
    (it needs only the eigenvalues, n and d), with the fit-range test.

    Example:
        >>> import torch
        >>> acc = CovarianceAccumulator()
        >>> g = torch.Generator().manual_seed(0)
        >>> scale = torch.arange(1, 101, dtype=torch.float64) ** -1.0
        >>> for _ in range(10):
        ...     acc.update(torch.randn(500, 100, generator=g, dtype=torch.float64) * scale)
        >>> est = acc.estimate()
        >>> acc.n_samples, round(est.alpha, 1), est.ci_method, est.range_test
        (5000, 2.0, 'parametric-bootstrap', 'pass')
    """

    def __init__(self, *, center: bool = True) -> None:
        self.center = center
        self.n_samples = 0
        self._shift: Tensor | None = None
        self._sum: Tensor | None = None
        self._outer: Tensor | None = None

    @property
    def n_features(self) -> int:
        return 0 if self._outer is None else int(self._outer.shape[0])

    def update(self, batch: Any) -> None:
        """Add one batch of rows."""
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if not isinstance(batch, Tensor):
            raise ValueError(f"Expected a batch to be a tensor or array but got {type(batch)}.")
        x = batch.detach().reshape(batch.shape[0], -1).to(torch.float64)
        if x.shape[0] == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError("Expected every batch to be finite but one holds NaN or inf.")
        if self._outer is None:
            d = x.shape[1]
            self._shift = x.mean(dim=0) if self.center else torch.zeros(d, dtype=torch.float64, device=x.device)
            self._sum = torch.zeros(d, dtype=torch.float64, device=x.device)
            self._outer = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        elif x.shape[1] != self._outer.shape[0]:
            raise ValueError(f"Expected batches with {self._outer.shape[0]} features but got {x.shape[1]}.")
        assert self._shift is not None and self._sum is not None
        y = x - self._shift
        self._sum += y.sum(dim=0)
        self._outer.addmm_(y.T, y)
        self.n_samples += x.shape[0]

    def covariance(self) -> Tensor:
        """The d×d covariance (``center=True``) or second moment, float64."""
        if self._outer is None or self.n_samples == 0:
            raise ValueError("Expected at least one batch but got none.")
        assert self._sum is not None and self._shift is not None
        n = self.n_samples
        mean_y = self._sum / n
        if self.center:
            return self._outer / n - torch.outer(mean_y, mean_y)
        return self._outer / n

    def estimate(
        self,
        *,
        fit_range: str | tuple[int, int] | None = "auto",
        warn: bool = True,
        n_bootstrap: int | None = None,
        seed: int = 0,
        ci_method: str = "parametric-bootstrap",
    ) -> AlphaEstimate:
        """α from the accumulated matrix, with the interval of :func:`estimate_alpha`.

        ``ci_method`` is ``"parametric-bootstrap"`` (default) or ``"regression-se"``; rows
        cannot be resampled from a stream. ``n_bootstrap=None`` picks B against the cost of
        accumulating the matrix (rule 7 of the module docstring).
        """
        _check_interval_args(ci_method, n_bootstrap)
        if ci_method == "bootstrap":
            raise ValueError(
                "Expected argument `ci_method` to be 'parametric-bootstrap' or 'regression-se' for streamed data "
                "(rows cannot be resampled) but got 'bootstrap'."
            )
        cov = self.covariance()
        n, d = self.n_samples, self.n_features
        if n < 3 or d < 3:
            raise ValueError(f"Expected at least 3 samples and 3 features but got {n} and {d}.")
        eigs = _eigenvalues(cov)
        est = _fit_estimate(eigs, n, d, center=self.center, fit_range=fit_range)
        est = _with_interval(
            est,
            m=_rank(eigs, n, d, self.center),
            center=self.center,
            ci_method=ci_method,
            n_bootstrap=n_bootstrap,
            seed=seed,
            point_cost=_point_cost(n, d, streaming=True),
        )
        if warn:
            _warn_if_poor(est)
        return est


def estimate_alpha_streaming(
    batches: Iterable[Any],
    *,
    center: bool = True,
    fit_range: str | tuple[int, int] | None = "auto",
    max_batches: int | None = None,
    warn: bool = True,
    n_bootstrap: int | None = None,
    seed: int = 0,
    ci_method: str = "parametric-bootstrap",
) -> AlphaEstimate:
    """α from a DataLoader or any iterable of batches, in O(d²) memory.

    Example:
        >>> import torch
        >>> data = torch.utils.data.TensorDataset(torch.randn(300, 20, dtype=torch.float64))
        >>> est = estimate_alpha_streaming(torch.utils.data.DataLoader(data, batch_size=64), warn=False)
        >>> est.n_samples, est.ci_method
        (300, 'parametric-bootstrap')
    """
    _check_interval_args(ci_method, n_bootstrap)
    acc = CovarianceAccumulator(center=center)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        acc.update(batch)
    return acc.estimate(fit_range=fit_range, warn=warn, n_bootstrap=n_bootstrap, seed=seed, ci_method=ci_method)


# --------------------------------------------------------------------------- layer inputs

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_input_alphas(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    max_batches: int = 8,
    conv_mode: str = "channels",
    min_features: int = 8,
    warn: bool = False,
    n_bootstrap: int | None = None,
    seed: int = 0,
    ci_method: str = "parametric-bootstrap",
) -> dict[str, AlphaEstimate]:
    """α of the inputs of every ``nn.Linear`` / ``nn.Conv{1,2,3}d`` layer of ``model``.

    Forward hooks accumulate each layer's input covariance (:class:`CovarianceAccumulator`)
    over at most ``max_batches`` batches, under ``torch.no_grad`` with the model in eval
    mode; the hooks are removed and the training mode restored afterwards, and no weight
    changes. For a Linear layer a sample is one input vector (leading dims flattened). For
    a convolution, ``conv_mode="channels"`` (default) takes each spatial position's channel
    vector as a sample (d = in_channels); ``conv_mode="patches"`` (Conv2d only) takes the
    unfolded receptive-field patch (d = in_channels · kernel area), which is what the
    layer's weight matrix actually multiplies. Layers with fewer than ``min_features``
    input features are left out.

    Batches are tensors or ``(x, ...)`` tuples; ``model(x)`` is called on each. Each
    layer's interval is the parametric bootstrap of :meth:`CovarianceAccumulator.estimate`
    (``n_bootstrap``, ``seed``, ``ci_method`` are passed on).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
        >>> out = layer_input_alphas(net, [torch.randn(200, 30) for _ in range(3)])
        >>> sorted(out), out["0"].n_samples, net.training
        (['0', '2'], 600, True)
    """
    _check_interval_args(ci_method, n_bootstrap)
    check_choice("conv_mode", conv_mode, ("channels", "patches"))
    accs: dict[str, CovarianceAccumulator] = {}
    handles = []

    def make_hook(name: str, module: nn.Module):
        def hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
            x = inputs[0]
            if isinstance(mod, nn.Linear):
                rows = x.reshape(-1, x.shape[-1])
            elif conv_mode == "patches" and isinstance(mod, nn.Conv2d):
                patches = torch.nn.functional.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # type: ignore[arg-type]
                rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            else:
                rows = x.movedim(1, -1).reshape(-1, x.shape[1])
            accs.setdefault(name, CovarianceAccumulator()).update(rows)

        return hook

    was_training = model.training
    try:
        for name, module in model.named_modules():
            if isinstance(module, _LAYER_TYPES):
                handles.append(module.register_forward_pre_hook(make_hook(name or "<root>", module)))
        model.eval()
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out: dict[str, AlphaEstimate] = {}
    for name, acc in accs.items():
        if acc.n_features < min_features or acc.n_samples < 3:
            continue
        try:
            est = acc.estimate(warn=False, n_bootstrap=n_bootstrap, seed=seed, ci_method=ci_method)
        except ValueError:
            continue
        if warn:
            _warn_if_poor(est, where=f"layer {name}", stacklevel=2)
        out[name] = est
    return out


# --------------------------------------------------------------------------- plot


def plot_spectrum(estimate: AlphaEstimate, path: str | None = None, ax: Any = None) -> Any:
    """Spectrum on log-log axes with the fitted line and the fit range shaded.

    Needs matplotlib (``pip install normguard[report]``). Returns the figure; saves it to
    ``path`` if given.
    """
    try:
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_spectrum needs matplotlib: install it with `pip install normguard[report]`.") from exc
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4))
    else:
        fig = ax.figure
    eigs = estimate.eigenvalues
    positive = eigs > 0
    idx = np.arange(1, eigs.size + 1)
    ax.loglog(idx[positive], eigs[positive], ".", ms=3, color="0.3", label="eigenvalues")
    first, last = estimate.fit_range
    ax.axvspan(first, last, color="tab:blue", alpha=0.12, label="fit range")
    line_x = np.array([1, idx[positive][-1] if positive.any() else 1], dtype=float)
    slope = estimate.alpha if math.isnan(estimate.alpha_uncorrected) else estimate.alpha_uncorrected
    ax.loglog(
        line_x,
        np.exp(estimate.intercept) * line_x ** (-slope),
        "-",
        color="tab:red",
        label=(
            f"α = {estimate.alpha:.2f} [{estimate.alpha_ci[0]:.2f}, {estimate.alpha_ci[1]:.2f}], R² = {estimate.r2:.3f}"
        ),
    )
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue λ_i")
    ax.set_title(f"covariance spectrum (n = {estimate.n_samples}, d = {estimate.n_features})")
    ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
