"""Eigendecay exponent α of a data matrix or of a layer's inputs, with an interval and a plot.

If the covariance eigenvalues of the data decay as a power law, λ_i ~ i^(−α), the paper
behind normguard (THEORY.md) says every near-interpolator's squared weight norm grows at
least like n^α, and a larger α gives a worse trade-off between training and test error.
This module measures α.

How α is measured (the rule, exactly):

1. Centre the rows (``center=True``) and form the smaller of the d×d covariance XᵀX/n and
   the n×n Gram matrix XXᵀ/n (they share their non-zero eigenvalues) with one symmetric
   rank-k update (BLAS ``?syrk`` on the CPU, a matmul on other devices), then take its
   eigenvalues with ``torch.linalg.eigvalsh``, sorted descending. The product and the
   eigenvalues are float64, except for float32 data whose product exceeds 10¹⁰
   multiply-adds (n · d · min(n, d)): those start in float32 throughout, which halves the
   time of both steps (for n = 20 000, d = 4 096 the eigenvalues over the fit range agree
   with the float64 route to ~1e-5 relative, far inside the sampling error). If the
   float32 eigenvalues then fall below numerical zero (rule 2) before index
   ``min(n − 1, d)`` — a steep or rank-deficient spectrum, whose tail float32 cannot
   resolve — the product and eigenvalues are redone in float64, so the rank and the fit
   range never rest on float32 rounding (``precision=`` overrides this).
2. ``m`` = the number of eigenvalues above numerical zero, at most ``min(n − 1, d)`` when
   centred. Numerical zero is λ ≤ λ₁ · max(n, d) · 100 · ε₆₄ (ε₆₄ ≈ 2.2e-16) for float64
   products, and λ ≤ λ₁ · 4 · ε₃₂ ≈ λ₁ · 4.8e-7 for float32 ones: a float32 product and
   eigensolver resolve nothing much below λ₁ · 1e-7 (the "zeros" of rank-deficient float32
   data measured at λ₁ · 1e-8 to 8.5e-8 by that route, near λ₁ · 1e-15 by the float64 one).
3. Fit range ("auto"), 1-based and inclusive: ``first = max(2, ceil(0.01 m))`` (the top
   eigenvalue is an outlier in most real data); ``last = floor(f · m)`` with ``f = 0.5`` when
   n ≥ 5 d (the sample spectrum is accurate far down) and ``f = 0.1`` otherwise (sample
   eigenvalues near index n are inflated by the mass of the tail); ``last`` is raised to
   ``first + 7`` where possible, and never exceeds ``m``.
4. Ordinary least squares of log λ_i on log i over that range; α is minus the slope.

Interval (``alpha_ci``, 95 %): by default a bootstrap over samples — resample the rows
with replacement, recompute the eigenvalues, refit over the *same* index range, and take
the 2.5 % and 97.5 % percentiles, shifted so that the replicates' mean sits on the point
estimate (resampling with replacement duplicates rows, which biases the replicates' α by
about the interval's width; the shift removes that bias). One replicate costs about as much as the point estimate
(a Gram product and an ``eigvalsh``), so ``n_bootstrap=None`` picks the number of
replicates from a budget (200 for small data, down to 20) and falls back to the
regression's 95 % t-interval (``ci_method == "regression-se"``) when even 20 replicates
would cost more than about 4·10¹⁰ flops. The regression interval ignores sampling noise
and the correlation of neighbouring eigenvalues: treat it as a fit-quality interval only.
The streaming form (:class:`CovarianceAccumulator`) always uses the regression interval.

A warning is issued when the spectrum is not a power law (R² < 0.9) or α ≤ 1.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(2000, 200, generator=g, dtype=torch.float64)
    >>> X = X * torch.arange(1, 201, dtype=torch.float64) ** -1.0   # λ_i = i^-2
    >>> est = estimate_alpha(X, n_bootstrap=20, seed=0)
    >>> round(est.alpha, 1), est.fit_range
    (2.0, (2, 100))
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy import stats
from scipy.linalg import blas
from torch import Tensor, nn

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
        alpha: rank-ordered eigendecay exponent (the α of THEORY.md).
        alpha_ci: (low, high), 95 % interval; how it was made is in ``ci_method``.
        r2: coefficient of determination of the log-log fit over ``fit_range``.
        fit_range: (first, last), 1-based inclusive eigenvalue indices used by the fit.
        eigenvalues: all eigenvalues, descending (numpy float64).
        n_samples, n_features: the data's shape.
        intercept: the fit's intercept (natural log).
        ci_method: ``"bootstrap"`` or ``"regression-se"``.
        n_bootstrap: replicates used (0 for the regression interval).
        precision: ``"float32"`` or ``"float64"``, the arithmetic of the product and the
            eigenvalues behind the estimate (see rule 1 of the module docstring).
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
        """The JSON-friendly summary (no eigenvalues)."""
        return {
            "alpha": self.alpha,
            "alpha_ci": [self.alpha_ci[0], self.alpha_ci[1]],
            "r2": self.r2,
            "fit_range": [self.fit_range[0], self.fit_range[1]],
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "ci_method": self.ci_method,
            "n_bootstrap": self.n_bootstrap,
            "precision": self.precision,
        }


# --------------------------------------------------------------------------- helpers


def _as_matrix(X: Any, name: str = "X") -> Tensor:
    """A 2-d floating tensor (float32 or float64), checked for shape and NaNs."""
    if isinstance(X, np.ndarray):
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"Expected argument `{name}` to be numeric but got dtype {X.dtype}.")
        X = torch.from_numpy(np.ascontiguousarray(X))
    elif not isinstance(X, Tensor):
        raise ValueError(f"Expected argument `{name}` to be a torch tensor or numpy array but got {type(X)}.")
    X = X.detach()
    if X.ndim != 2:
        raise ValueError(
            f"Expected argument `{name}` to be a 2-d matrix (n samples × d features) but got shape {tuple(X.shape)}."
        )
    if X.shape[0] < 3 or X.shape[1] < 3:
        raise ValueError(
            f"Expected argument `{name}` to have at least 3 rows and 3 columns but got shape {tuple(X.shape)}."
        )
    if X.dtype not in (torch.float32, torch.float64):
        X = X.to(torch.float64)
    # A NaN or inf anywhere makes its column's sum non-finite; the sums are one cheap pass
    # (a full isfinite mask costs several times more), checked exactly only if they fail.
    if not bool(torch.isfinite(X.sum(dim=0)).all()) and not bool(torch.isfinite(X).all()):
        raise ValueError(f"Expected argument `{name}` to be finite but it holds NaN or inf.")
    return X


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


def _eigenvalues(matrix: Tensor) -> np.ndarray:
    """Eigenvalues, descending, in the matrix's own precision (lower triangle read)."""
    vals = torch.linalg.eigvalsh(matrix, UPLO="L")
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


def _warn_if_poor(alpha: float, r2: float, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if r2 < 0.9:
        warnings.warn(
            f"{prefix}the eigenvalue spectrum is not a power law over the fit range "
            f"(R² = {r2:.3f} < 0.9); alpha = {alpha:.3g} is not meaningful.",
            stacklevel=3,
        )
    if alpha <= 1:
        warnings.warn(
            f"{prefix}alpha = {alpha:.3g} <= 1: the spectrum decays too slowly for the "
            "power-law theory (which needs alpha > 1).",
            stacklevel=3,
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


# --------------------------------------------------------------------------- in memory


def estimate_alpha(
    X: Any,
    *,
    center: bool = True,
    fit_range: str | tuple[int, int] | None = "auto",
    n_bootstrap: int | None = None,
    seed: int = 0,
    warn: bool = True,
    precision: str = "auto",
) -> AlphaEstimate:
    """Estimate the eigendecay exponent α of the rows of ``X`` (n samples × d features).

    Args:
        X: data matrix, torch tensor (any device) or numpy array.
        center: subtract the column means first (covariance rather than second moment).
        fit_range: ``"auto"``/``None`` (the documented rule, see the module docstring) or
            ``(first, last)``, 1-based inclusive eigenvalue indices.
        n_bootstrap: bootstrap replicates for ``alpha_ci``; ``0`` for the regression
            interval; ``None`` picks from a compute budget (see the module docstring).
        seed: seed of the bootstrap's resampling.
        warn: warn when the spectrum is not a power law (R² < 0.9) or α ≤ 1.
        precision: ``"auto"`` (rule 1 of the module docstring: float32 for large float32
            data, redone in float64 when float32 cannot resolve the tail), ``"float64"``
            (always exact), or ``"float32"`` (always fast; for float32 data, a steep or
            rank-deficient spectrum is then fitted over a shorter head).

    Example:
        >>> from sklearn.datasets import load_digits
        >>> est = estimate_alpha(load_digits().data, n_bootstrap=50, warn=False)
        >>> est.n_samples, est.n_features, est.alpha_ci[0] <= est.alpha <= est.alpha_ci[1]
        (1797, 64, True)
    """
    if n_bootstrap is not None and n_bootstrap < 0:
        raise ValueError(f"Expected argument `n_bootstrap` to be >= 0 or None but got {n_bootstrap}.")
    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"Expected argument `precision` to be 'auto', 'float32' or 'float64' but got {precision!r}.")
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
    first, last = est.fit_range

    if n_bootstrap is None:
        small = min(n, d)
        cost = 2.0 * n * d * small + 10.0 * small**3
        n_bootstrap = int(min(200, _BOOTSTRAP_BUDGET_FLOPS // max(cost, 1.0)))
        if n_bootstrap < 20:
            n_bootstrap = 0
    reps = []
    if n_bootstrap > 0:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for _ in range(n_bootstrap):
            rows = torch.randint(0, n, (n,), generator=gen).to(X.device)
            Xb = X.index_select(0, rows)
            Xb = _center(Xb) if center else Xb
            eb = _spectrum(Xb, dtype)
            if np.all(eb[first - 1 : last] > 0):
                reps.append(fit_power_law(eb, first, last)[0])
    if len(reps) >= 2:
        lo, hi = np.percentile(reps, [2.5, 97.5]) - np.mean(reps) + est.alpha
        est = replace(
            est,
            alpha_ci=(float(min(lo, est.alpha)), float(max(hi, est.alpha))),
            ci_method="bootstrap",
            n_bootstrap=n_bootstrap,
        )
    if warn:
        _warn_if_poor(est.alpha, est.r2)
    return est


# --------------------------------------------------------------------------- streaming


class CovarianceAccumulator:
    """Streams batches into a d×d float64 second-moment matrix on the data's device.

    Memory is O(d²) whatever the number of samples. Centring uses the first batch's mean as
    a shift (the shifted-data algorithm), so large means do not cancel catastrophically.
    Batches may be tensors, numpy arrays, or ``(x, y, ...)`` tuples (``x`` is used); each
    is flattened to ``(batch, -1)``.

    The interval of :meth:`estimate` is the regression's 95 % t-interval
    (``ci_method == "regression-se"``): it reflects the fit's quality, not sampling noise.

    Example:
        >>> import torch
        >>> acc = CovarianceAccumulator()
        >>> g = torch.Generator().manual_seed(0)
        >>> scale = torch.arange(1, 101, dtype=torch.float64) ** -1.0
        >>> for _ in range(10):
        ...     acc.update(torch.randn(500, 100, generator=g, dtype=torch.float64) * scale)
        >>> acc.n_samples, round(acc.estimate().alpha, 1)
        (5000, 2.0)
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

    def estimate(self, *, fit_range: str | tuple[int, int] | None = "auto", warn: bool = True) -> AlphaEstimate:
        """α from the accumulated matrix (interval: regression 95 % t-interval)."""
        cov = self.covariance()
        n, d = self.n_samples, self.n_features
        if n < 3 or d < 3:
            raise ValueError(f"Expected at least 3 samples and 3 features but got {n} and {d}.")
        est = _fit_estimate(_eigenvalues(cov), n, d, center=self.center, fit_range=fit_range)
        if warn:
            _warn_if_poor(est.alpha, est.r2)
        return est


def estimate_alpha_streaming(
    batches: Iterable[Any],
    *,
    center: bool = True,
    fit_range: str | tuple[int, int] | None = "auto",
    max_batches: int | None = None,
    warn: bool = True,
) -> AlphaEstimate:
    """α from a DataLoader or any iterable of batches, in O(d²) memory.

    Example:
        >>> import torch
        >>> data = torch.utils.data.TensorDataset(torch.randn(300, 20, dtype=torch.float64))
        >>> est = estimate_alpha_streaming(torch.utils.data.DataLoader(data, batch_size=64), warn=False)
        >>> est.n_samples, est.ci_method
        (300, 'regression-se')
    """
    acc = CovarianceAccumulator(center=center)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        acc.update(batch)
    return acc.estimate(fit_range=fit_range, warn=warn)


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

    Batches are tensors or ``(x, ...)`` tuples; ``model(x)`` is called on each.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
        >>> out = layer_input_alphas(net, [torch.randn(200, 30) for _ in range(3)])
        >>> sorted(out), out["0"].n_samples, net.training
        (['0', '2'], 600, True)
    """
    if conv_mode not in ("channels", "patches"):
        raise ValueError(f"Expected argument `conv_mode` to be 'channels' or 'patches' but got {conv_mode!r}.")
    accs: dict[str, CovarianceAccumulator] = {}
    handles = []

    def make_hook(name: str, module: nn.Module):
        def hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
            x = inputs[0]
            if isinstance(mod, nn.Linear):
                rows = x.reshape(-1, x.shape[-1])
            elif conv_mode == "patches" and isinstance(mod, nn.Conv2d):
                patches = torch.nn.functional.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
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
            est = acc.estimate(warn=False)
        except ValueError:
            continue
        if warn:
            _warn_if_poor(est.alpha, est.r2, where=f"layer {name}")
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
    ax.loglog(
        line_x,
        np.exp(estimate.intercept) * line_x ** (-estimate.alpha),
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
