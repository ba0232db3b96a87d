import math

import numpy as np
import pytest
from scipy import integrate

from normguard.science import theory as T

G = 2 / 3


@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.5, 4.0])
@pytest.mark.parametrize("kappa", [1e-3, 0.7, 30.0, 1e5])
def test_hypergeometric_matches_quadrature(alpha, kappa):
    i = integrate.quad(lambda x: 1 / (1 + kappa * x**alpha), 0, 1 / G, limit=200)[0]
    j = integrate.quad(lambda x: 1 / (1 + kappa * x**alpha) ** 2, 0, 1 / G, limit=200)[0]
    assert T.I_integral(kappa, alpha, G) == pytest.approx(i, rel=1e-7)
    assert T.J_integral(kappa, alpha, G) == pytest.approx(j, rel=1e-7)


@pytest.mark.parametrize("alpha", [1.5, 2.5])
def test_limits_of_tradeoff(alpha):
    kc = T.kappa_crit(alpha, G)
    assert T.I_integral(kc, alpha, G) == pytest.approx(1.0, abs=1e-10)
    interp = 1 / (1 - T.J_integral(kc, alpha, G))
    assert math.isfinite(interp) and interp > 1
    assert T.predict(alpha, G, 1e-10).test_error == pytest.approx(interp, rel=1e-3)
    assert T.predict(alpha, G, 1 - 1e-7).test_error == pytest.approx(1.0, abs=1e-5)
    for tau in (1e-6, 0.3, 0.9, 1 - 1e-9):
        assert T.train_error(T.kappa_from_train_error(tau, alpha, G), alpha, G) == pytest.approx(tau, rel=1e-8)


def test_larger_alpha_worse_and_sigma2_scaling():
    taus = np.linspace(0.05, 0.95, 10)
    c15, c25 = T.tradeoff_curve(1.5, G, taus), T.tradeoff_curve(2.5, G, taus)
    assert np.all(c25 > c15) and np.all(np.diff(c15) < 0)
    p1, p4 = T.predict(2.0, G, 0.3), T.predict(2.0, G, 1.2, sigma2=4.0)
    assert p4.test_error == pytest.approx(4 * p1.test_error, rel=1e-9)
    assert p4.kappa == pytest.approx(p1.kappa, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.0, "gamma": 0.5, "tau": 0.2}, "`alpha` to be a finite number > 1"),
        ({"alpha": 2.0, "gamma": 1.0, "tau": 0.2}, "`gamma`"),
        ({"alpha": 2.0, "gamma": 0.5, "tau": 1.0}, "`tau`"),
        ({"alpha": 2.0, "gamma": 0.5, "tau": 0.0}, "`tau`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.predict(**kwargs)


@pytest.mark.parametrize("alpha", [1.5, 2.5])
def test_monte_carlo_agrees_with_theory(alpha):
    n, tau = 800, 0.2
    p = T.predict(alpha, G, tau)
    test, norm, ridge = [], [], []
    for seed in range(4):
        data = T.paper_data(n, alpha, seed=seed, signal=0.0)
        fit = T.min_norm_near_interpolator(data.X, data.y, tau)
        assert fit.train_error == pytest.approx(tau, rel=1e-6)
        test.append(data.test_error(fit.beta))
        norm.append(fit.norm_sq)
        ridge.append(fit.ridge)
    assert np.mean(test) == pytest.approx(p.test_error, rel=0.06)
    assert np.mean(norm) == pytest.approx(p.expected_norm_sq(n), rel=0.08)
    assert np.mean(ridge) == pytest.approx(p.ridge_penalty(n), rel=0.08)


def test_near_interpolator_primal_dual_and_errors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20))
    y = X @ rng.normal(size=20) + rng.normal(size=60)
    fit = T.min_norm_near_interpolator(X, y, tau=1.5)
    ref = np.linalg.solve(X.T @ X / 60 + fit.ridge * np.eye(20), X.T @ y / 60)
    np.testing.assert_allclose(fit.beta, ref, rtol=1e-8)
    assert fit.train_error == pytest.approx(1.5, rel=1e-8) and fit.least_squares_error < 1.5
    dual = T.min_norm_near_interpolator(X[:10], y[:10], tau=0.1)  # n < d: the dual path
    assert dual.train_error == pytest.approx(0.1, rel=1e-8)
    with pytest.raises(ValueError, match="mean"):
        T.min_norm_near_interpolator(X, y, tau=float(np.mean(y**2)) + 1)
    with pytest.raises(ValueError, match="least-squares"):
        T.min_norm_near_interpolator(X, y, tau=fit.least_squares_error / 2)
