"""The paper's asymptotics for near-interpolators, and exact ridge near-interpolators.

Setting (Wang, Sonthalia & Hu, AISTATS 2024): x = Σ^(1/2) z with
Σ = diag(i^(−α)), d = n/γ, y = xᵀβ* + ε with noise variance σ². With κ the effective
regularisation parameter (κ > κ_crit):

- 𝓘(κ) = (1/γ) ₂F₁(1, 1/α; 1 + 1/α; −κ γ^(−α)) = ∫₀^(1/γ) dx / (1 + κ x^α)
- 𝓙(κ) = (1/γ) ₂F₁(2, 1/α; 1 + 1/α; −κ γ^(−α)) = ∫₀^(1/γ) dx / (1 + κ x^α)²
- 𝓘(κ_crit) = 1; ridge penalty ϱ = r · n^(−α) with r = 𝓡(κ) = κ (1 − 𝓘(κ))
- 𝓔_train(κ) = σ² (1 − 𝓘)² / (1 − 𝓙),   𝓔_test(κ) = σ² / (1 − 𝓙)
- ‖β_τ‖² ≈ σ² n^α 𝓝(κ),  𝓝(κ) = [∫₀^(1/γ) x^α / (1 + κ x^α)² dx] / (1 − 𝓙(κ))
  (the integral equals (𝓘 − 𝓙)/κ, which is how it is computed).

Errors are in the units of y² (they scale with σ²); κ, r and 𝓝 do not depend on σ².
``𝓔_train⁻¹`` is solved with ``scipy.optimize.brentq`` over log κ, bracketed between κ_crit
(training error 0) and a κ grown until the training error exceeds τ.

Example:
    >>> p = predict(alpha=1.5, gamma=2 / 3, tau=0.2)
    >>> p.kappa > p.kappa_crit, round(p.train_error, 6)
    (True, 0.2)
    >>> 1.0 < p.test_error < p.interpolation_test_error
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    from scipy import optimize, special
except ImportError as exc:  # scipy is an optional extra
    raise ImportError(
        "normguard.science.theory needs scipy, which is not installed: pip install 'normguard[science]'"
    ) from exc

from normguard.science.datasets import PaperData, paper_data
from normguard.validation import check_finite, check_matrix, check_number, check_vector

__all__ = [
    "I_integral",
    "J_integral",
    "NearInterpolator",
    "PaperData",
    "Prediction",
    "kappa_crit",
    "kappa_from_train_error",
    "min_norm_near_interpolator",
    "norm_constant",
    "paper_data",
    "predict",
    "ridge_r",
    "test_error",
    "tradeoff_curve",
    "train_error",
]


# --------------------------------------------------------------------------- checks


def _check_alpha(alpha: Any) -> float:
    return check_number("alpha", alpha, low=1, low_open=True)


def _check_gamma(gamma: Any) -> float:
    return check_number("gamma", gamma, low=0, high=1, low_open=True, high_open=True)


def _check_sigma2(sigma2: Any) -> float:
    return check_number("sigma2", sigma2, low=0, low_open=True)


def _check_tau(tau: Any, sigma2: float) -> float:
    return check_number(
        "tau", tau, low=0, high=sigma2, low_open=True, high_open=True, note="sigma2, the noise variance"
    )


# --------------------------------------------------------------------------- 𝓘, 𝓙 and friends


def I_integral(kappa: float, alpha: float, gamma: float) -> float:
    """𝓘(κ) = ∫₀^(1/γ) dx / (1 + κ x^α), via ``scipy.special.hyp2f1``.

    Example:
        >>> round(I_integral(0.0, 2.0, 0.5), 12)
        2.0
    """
    alpha, gamma = _check_alpha(alpha), _check_gamma(gamma)
    kappa = check_number("kappa", kappa, low=0)
    z = -kappa * gamma ** (-alpha)
    return float(special.hyp2f1(1.0, 1.0 / alpha, 1.0 + 1.0 / alpha, z)) / gamma


def J_integral(kappa: float, alpha: float, gamma: float) -> float:
    """𝓙(κ) = ∫₀^(1/γ) dx / (1 + κ x^α)², via ``scipy.special.hyp2f1``.

    Example:
        >>> J_integral(1.0, 2.0, 0.5) < I_integral(1.0, 2.0, 0.5)
        True
    """
    alpha, gamma = _check_alpha(alpha), _check_gamma(gamma)
    kappa = check_number("kappa", kappa, low=0)
    z = -kappa * gamma ** (-alpha)
    return float(special.hyp2f1(2.0, 1.0 / alpha, 1.0 + 1.0 / alpha, z)) / gamma


def kappa_crit(alpha: float, gamma: float) -> float:
    """κ_crit, the root of 𝓘(κ) = 1 (ridgeless interpolation), by brentq in log κ.

    Example:
        >>> k = kappa_crit(2.0, 2 / 3)
        >>> round(I_integral(k, 2.0, 2 / 3), 10)
        1.0
    """
    alpha, gamma = _check_alpha(alpha), _check_gamma(gamma)

    def f(log_k: float) -> float:
        return I_integral(math.exp(log_k), alpha, gamma) - 1.0

    lo, hi = -30.0, 0.0
    while f(hi) > 0:
        hi += 5.0
        if hi > 200:  # pragma: no cover - 𝓘 → 0 as κ → ∞, so this is unreachable
            raise RuntimeError("could not bracket kappa_crit")
    return math.exp(optimize.brentq(f, lo, hi, xtol=1e-14, rtol=1e-14))


def ridge_r(kappa: float, alpha: float, gamma: float) -> float:
    """𝓡(κ) = κ (1 − 𝓘(κ)); the ridge penalty is ϱ = r · n^(−α)."""
    return kappa * (1.0 - I_integral(kappa, alpha, gamma))


def train_error(kappa: float, alpha: float, gamma: float, sigma2: float = 1.0) -> float:
    """𝓔_train(κ) = σ² (1 − 𝓘)² / (1 − 𝓙).

    Example:
        >>> a, g = 2.0, 2 / 3
        >>> round(train_error(kappa_crit(a, g), a, g), 12)
        0.0
    """
    sigma2 = _check_sigma2(sigma2)
    i, j = I_integral(kappa, alpha, gamma), J_integral(kappa, alpha, gamma)
    return sigma2 * (1.0 - i) ** 2 / (1.0 - j)


def test_error(kappa: float, alpha: float, gamma: float, sigma2: float = 1.0) -> float:
    """𝓔_test(κ) = σ² / (1 − 𝓙) (includes the noise: σ² is the floor)."""
    sigma2 = _check_sigma2(sigma2)
    return sigma2 / (1.0 - J_integral(kappa, alpha, gamma))


test_error.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def norm_constant(kappa: float, alpha: float, gamma: float) -> float:
    """𝓝(κ) = [∫₀^(1/γ) x^α / (1 + κ x^α)² dx] / (1 − 𝓙(κ)); the integral is (𝓘 − 𝓙)/κ.

    Example:
        >>> from scipy import integrate
        >>> a, g, k = 1.5, 2 / 3, 3.0
        >>> num = integrate.quad(lambda x: x**a / (1 + k * x**a) ** 2, 0, 1 / g)[0]
        >>> bool(abs(norm_constant(k, a, g) - num / (1 - J_integral(k, a, g))) < 1e-8)
        True
    """
    kappa = check_number("kappa", kappa, low=0, low_open=True)
    i, j = I_integral(kappa, alpha, gamma), J_integral(kappa, alpha, gamma)
    return ((i - j) / kappa) / (1.0 - j)


def kappa_from_train_error(tau: float, alpha: float, gamma: float, sigma2: float = 1.0) -> float:
    """𝓔_train⁻¹(τ): the κ > κ_crit with 𝓔_train(κ) = τ, by brentq over log κ.

    Example:
        >>> k = kappa_from_train_error(0.999, 2.5, 2 / 3)
        >>> round(train_error(k, 2.5, 2 / 3), 9)
        0.999
    """
    alpha, gamma, sigma2 = _check_alpha(alpha), _check_gamma(gamma), _check_sigma2(sigma2)
    tau = _check_tau(tau, sigma2)
    target = tau / sigma2
    kc = kappa_crit(alpha, gamma)

    def f(log_k: float) -> float:
        return train_error(math.exp(log_k), alpha, gamma) - target

    lo = math.log(kc)
    step = 1.0
    hi = lo + step
    while f(hi) < 0:
        lo, step = hi, step * 2.0
        hi = lo + step
        if hi > 700:
            raise ValueError(f"Could not solve the training error for tau = {tau!r}: too close to sigma2.")
    return math.exp(optimize.brentq(f, lo, hi, xtol=1e-13, rtol=1e-13))


def tradeoff_curve(alpha: float, gamma: float, taus: Any, sigma2: float = 1.0) -> np.ndarray:
    """Test error 𝓔_test(𝓔_train⁻¹(τ)) for each τ in ``taus`` (units of σ²·1).

    Example:
        >>> curve = tradeoff_curve(1.5, 2 / 3, [0.1, 0.5, 0.9])
        >>> bool(np.all(np.diff(curve) < 0)), bool(np.all(curve > 1))
        (True, True)
    """
    taus = np.atleast_1d(np.asarray(taus, dtype=float))
    return np.array([test_error(kappa_from_train_error(t, alpha, gamma, sigma2), alpha, gamma, sigma2) for t in taus])


@dataclass(frozen=True)
class Prediction:
    """What the asymptotic theory predicts at one (α, γ, τ, σ²)."""

    alpha: float
    gamma: float
    tau: float
    sigma2: float
    kappa: float
    kappa_crit: float
    ridge_r: float
    train_error: float
    test_error: float
    norm_constant: float
    interpolation_test_error: float

    def expected_norm_sq(self, n: int) -> float:
        """The predicted squared norm σ² n^α 𝓝(κ) of the min-norm τ-near-interpolator."""
        return self.sigma2 * float(n) ** self.alpha * self.norm_constant

    def ridge_penalty(self, n: int) -> float:
        """The predicted ridge penalty ϱ = r n^(−α)."""
        return self.ridge_r * float(n) ** (-self.alpha)

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def predict(alpha: float, gamma: float, tau: float, sigma2: float = 1.0) -> Prediction:
    """All the theory's numbers at one τ.

    Example:
        >>> p = predict(2.0, 2 / 3, 0.5, sigma2=4.0)
        >>> round(p.train_error, 9), p.test_error > 4.0
        (0.5, True)
    """
    alpha, gamma, sigma2 = _check_alpha(alpha), _check_gamma(gamma), _check_sigma2(sigma2)
    tau = _check_tau(tau, sigma2)
    kc = kappa_crit(alpha, gamma)
    k = kappa_from_train_error(tau, alpha, gamma, sigma2)
    return Prediction(
        alpha=alpha,
        gamma=gamma,
        tau=tau,
        sigma2=sigma2,
        kappa=k,
        kappa_crit=kc,
        ridge_r=ridge_r(k, alpha, gamma),
        train_error=train_error(k, alpha, gamma, sigma2),
        test_error=test_error(k, alpha, gamma, sigma2),
        norm_constant=norm_constant(k, alpha, gamma),
        interpolation_test_error=sigma2 / (1.0 - J_integral(kc, alpha, gamma)),
    )


# --------------------------------------------------------------------------- ridge near-interpolators


@dataclass(frozen=True, eq=False)
class NearInterpolator:
    """The minimum-norm τ-near-interpolator: β (numpy), its ridge penalty and errors."""

    beta: np.ndarray
    ridge: float
    train_error: float
    norm_sq: float
    least_squares_error: float


class _RidgePath:
    """Eigendecomposition once (dual n×n if n < d, primal d×d otherwise); any ϱ is cheap."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        n, d = X.shape
        self.X, self.y, self.n = X, y, n
        self.dual = n < d
        if self.dual:
            s, U = torch.linalg.eigh(X @ X.T / n)
            self.basis = U
            self.coef = U.T @ y  # c
        else:
            s, V = torch.linalg.eigh(X.T @ X / n)
            self.basis = V
            self.coef = V.T @ (X.T @ y) / n  # b
        s = s.clamp_min(0.0)
        tol = float(s.max()) * max(n, d) * float(torch.finfo(torch.float64).eps) * 10
        self.s = s
        self.keep = s > tol
        if self.dual:
            self.ls_error = float((self.coef[~self.keep] ** 2).sum()) / n
        else:
            beta_ls = self.basis[:, self.keep] @ (self.coef[self.keep] / s[self.keep])
            self.ls_error = float(((y - X @ beta_ls) ** 2).mean())
        self.null_error = float((y**2).mean())
        self.s_max = max(float(s.max()), 1e-300)

    def error(self, rho: float) -> float:
        s, c = self.s, self.coef
        if self.dual:
            return float(((rho / (s + rho)) ** 2 * c**2).sum()) / self.n
        k = self.keep
        return self.ls_error + float((c[k] ** 2 * rho**2 / (s[k] * (s[k] + rho) ** 2)).sum())

    def beta(self, rho: float) -> torch.Tensor:
        if self.dual:
            return self.X.T @ (self.basis @ (self.coef / (self.s + rho))) / self.n
        return self.basis @ (self.coef / (self.s + rho))


def min_norm_near_interpolator(X: Any, y: Any, tau: float) -> NearInterpolator:
    """Ridge solution β_ϱ = (XᵀX/n + ϱI)⁻¹ Xᵀy/n with ϱ chosen so the training MSE equals τ.

    It is the minimum-norm β among all with training error ≤ τ. One eigendecomposition (of
    the n×n Gram matrix when n < d, of XᵀX/n otherwise), then ``brentq`` over log ϱ.

    Raises:
        ValueError: if τ ≥ mean(y²) (β = 0 already qualifies) or τ ≤ the least-squares
            minimum (no β reaches it).

    Example:
        >>> data = paper_data(200, alpha=1.5, seed=0)
        >>> fit = min_norm_near_interpolator(data.X, data.y, tau=0.2)
        >>> round(fit.train_error, 8), fit.ridge > 0
        (0.2, True)
    """
    Xt = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(torch.float64)
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(torch.float64)
    check_finite("X", check_matrix("X", Xt))
    yt = check_finite("y", check_vector("y", yt, Xt.shape[0]))
    tau = check_number("tau", tau, low=0, low_open=True)
    path = _RidgePath(Xt, yt)
    if not tau < path.null_error:
        raise ValueError(
            f"Expected argument `tau` to be below mean(y²) = {path.null_error:.6g} "
            f"(the training error of β = 0) but got {tau!r}."
        )
    if not tau > path.ls_error * (1 + 1e-9) + 1e-15:
        raise ValueError(
            f"Expected argument `tau` to be above the least-squares minimum training error "
            f"{path.ls_error:.6g} but got {tau!r}."
        )

    def f(log_rho: float) -> float:
        return path.error(math.exp(log_rho)) - tau

    lo = math.log(path.s_max) - 30.0
    hi = math.log(path.s_max) + 10.0
    while f(lo) > 0:
        lo -= 10.0
        if lo < -700:
            raise ValueError(f"Expected argument `tau` to be reachable but got {tau!r}.")
    while f(hi) < 0:
        hi += 10.0
    rho = math.exp(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))
    beta = path.beta(rho)
    err = float(((yt - Xt @ beta) ** 2).mean())
    return NearInterpolator(
        beta=beta.cpu().numpy(),
        ridge=rho,
        train_error=err,
        norm_sq=float((beta**2).sum()),
        least_squares_error=path.ls_error,
    )
