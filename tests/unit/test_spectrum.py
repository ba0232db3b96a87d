import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from normguard.science.spectrum import (
    CovarianceAccumulator,
    estimate_alpha,
    estimate_alpha_streaming,
    layer_input_alphas,
    plot_spectrum,
)


def power_law(n, d, alpha, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, d + 1, dtype=torch.float64) ** (-alpha / 2)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 3.0).to(dtype)


@pytest.mark.parametrize("alpha", [1.3, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(1500, 250), (300, 900)])
def test_recovers_alpha(alpha, shape):
    est = estimate_alpha(power_law(*shape, alpha), n_bootstrap=10, seed=1)
    assert abs(est.alpha - alpha) < 0.15
    assert est.alpha_ci[0] <= est.alpha <= est.alpha_ci[1]
    assert est.r2 > 0.95 and est.ci_method == "parametric-bootstrap" and est.n_bootstrap == 10
    assert est.alpha == pytest.approx(est.alpha_uncorrected - est.bias) and est.range_test == "pass"
    first, last = est.fit_range
    assert 2 <= first < last <= min(shape)
    assert np.all(np.diff(est.eigenvalues) <= 0)


def test_numpy_float32_and_streaming_agree():
    X = power_law(3000, 200, 2.0, dtype=torch.float32)
    a = estimate_alpha(X.numpy(), n_bootstrap=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=256)
    b = estimate_alpha_streaming(loader, ci_method="regression-se")
    assert a.ci_method == b.ci_method == "regression-se"
    assert abs(a.alpha - b.alpha) < 1e-3 and a.fit_range == b.fit_range
    # the streamed default interval is the same parametric bootstrap as the in-memory one
    c = estimate_alpha_streaming(loader, n_bootstrap=20, seed=3)
    d = estimate_alpha(X.numpy(), n_bootstrap=20, seed=3, precision="float64")
    assert c.ci_method == d.ci_method == "parametric-bootstrap" and c.n_bootstrap == d.n_bootstrap == 20
    assert c.alpha_ci == pytest.approx(d.alpha_ci, abs=1e-3) and c.bias == pytest.approx(d.bias, abs=1e-3)
    assert b.n_samples == 3000 and b.n_features == 200


def test_accumulator_matches_numpy_covariance():
    X = power_law(500, 20, 1.5, seed=3)
    acc = CovarianceAccumulator()
    for chunk in X.split(97):
        acc.update(chunk)
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(X.numpy().T, bias=True), atol=1e-10)
    with pytest.raises(ValueError, match="features"):
        acc.update(torch.randn(4, 21))


def test_density_tail_exponent_and_digits():
    from sklearn.datasets import load_digits

    est = estimate_alpha(load_digits().data, n_bootstrap=40)
    assert est.n_features == 64 and est.alpha > 1
    assert est.density_tail_exponent() == pytest.approx(1 + 1 / est.alpha)


def test_warns_on_flat_spectrum():
    X = torch.randn(2000, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(UserWarning, match="alpha"):
        est = estimate_alpha(X, n_bootstrap=0)
    assert est.alpha < 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-d"):
        estimate_alpha(np.ones(10))
    X = np.random.default_rng(0).normal(size=(50, 10))
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="finite"):
        estimate_alpha(X)
    with pytest.raises(ValueError, match="fit_range"):
        estimate_alpha(power_law(200, 50, 2.0), fit_range=(5, 4))


def test_layer_input_alphas_restores_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 10)
    )
    before = [p.clone() for p in net.parameters()]
    batches = [(torch.randn(8, 3, 8, 8), torch.zeros(8)) for _ in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = layer_input_alphas(net, batches, max_batches=3, conv_mode="patches")
        channels = layer_input_alphas(net, batches, max_batches=2, min_features=3)
    assert set(out) == {"0", "3"}
    assert out["0"].n_features == 27 and out["0"].n_samples == 3 * 8 * 36
    assert out["3"].n_features == 576 and out["3"].n_samples == 24
    assert channels["0"].n_features == 3 and channels["0"].n_samples == 2 * 8 * 64
    assert net.training
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(not m._forward_pre_hooks for m in net.modules())


def test_plot_spectrum(tmp_path):
    est = estimate_alpha(power_law(500, 100, 2.0), n_bootstrap=0)
    path = tmp_path / "s.png"
    fig = plot_spectrum(est, path=str(path))
    assert path.stat().st_size > 1000 and len(fig.axes) == 1


@pytest.mark.parametrize("shape", [(700, 90), (90, 700)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_product_matches_float64_reference(shape, dtype):
    from normguard.science import spectrum

    X = power_law(*shape, 1.5, seed=2, dtype=dtype)
    ref = X.double().T @ X.double() if shape[0] >= shape[1] else X.double() @ X.double().T
    ref = torch.tril(ref / shape[0])
    for product in (torch.float64, dtype):  # float64 product (chunked for float32 data), then X's own
        got = torch.tril(spectrum._smaller_gram(X, product).double())
        tol = 1e-12 if product == torch.float64 else 1e-5
        assert got.shape == ref.shape
        assert float((got - ref).abs().max()) <= tol * float(ref.abs().max())


def rank_deficient_float32(n=1500, d=400, r=150, seed=5):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    Z = torch.randn(n, r, generator=g, dtype=torch.float64) * torch.arange(1, r + 1, dtype=torch.float64) ** -0.75
    return (Z @ basis[:r]).float()


def test_float32_route_threshold_keeps_the_true_rank():
    """float32 product and eigvalsh: rounding "zeros" of rank-deficient data stay below the threshold."""
    X = rank_deficient_float32()
    exact = estimate_alpha(X, n_bootstrap=0, precision="float64")
    fast = estimate_alpha(X, n_bootstrap=0, precision="float32")
    # both routes see rank r = 150: the auto range ends at 10 % of it, not of d = 400
    assert exact.fit_range == fast.fit_range == (2, 15)
    assert abs(fast.alpha - exact.alpha) < 1e-3 and abs(exact.alpha - 1.5) < 0.2


def test_auto_precision_switches_to_float64_when_float32_cannot_resolve_the_tail(monkeypatch):
    from normguard.science import spectrum

    monkeypatch.setattr(spectrum, "_FLOAT32_PRODUCT_MACS", 0)  # every float32 input takes the float32 route
    assert spectrum._product_dtype(torch.zeros(10, 10)) == torch.float32
    steep = power_law(3000, 300, 3.0, dtype=torch.float32)  # λ_300 / λ_1 ≈ 4e-8: below float32's reach
    exact = estimate_alpha(steep, n_bootstrap=0, precision="float64")
    short = estimate_alpha(steep, n_bootstrap=0, precision="float32")
    auto = estimate_alpha(steep, n_bootstrap=0)
    assert auto.fit_range == exact.fit_range and auto.alpha == pytest.approx(exact.alpha, abs=1e-9)
    assert (auto.precision, short.precision, exact.precision) == ("float64", "float32", "float64")
    assert short.fit_range[1] < exact.fit_range[1]  # float32 alone fits a shorter head
    assert abs(short.alpha - 3.0) < 0.3
    shallow = power_law(3000, 300, 1.5, dtype=torch.float32)  # resolvable: float32 all the way
    fast = estimate_alpha(shallow, n_bootstrap=0)
    ref = estimate_alpha(shallow, n_bootstrap=0, precision="float64")
    assert fast.fit_range == ref.fit_range and abs(fast.alpha - ref.alpha) < 1e-4
    assert fast.precision == "float32" and fast.to_dict()["precision"] == "float32"
    with pytest.raises(ValueError, match="precision"):
        estimate_alpha(shallow, precision="half")


def test_tensor_that_requires_grad_and_a_transposed_view():
    X = power_law(600, 40, 2.0, seed=6)
    ref = estimate_alpha(X, n_bootstrap=0)
    leaf = X.clone().requires_grad_(True)
    assert estimate_alpha(leaf, n_bootstrap=0).alpha == pytest.approx(ref.alpha, abs=1e-12)
    view = X.T.contiguous().T  # same values, column-major strides
    assert estimate_alpha(view, n_bootstrap=0).alpha == pytest.approx(ref.alpha, abs=1e-12)


def test_huge_finite_values_are_not_called_nan():
    X = power_law(400, 30, 2.0, seed=4, dtype=torch.float32) * 1e37  # column sums overflow float32
    est = estimate_alpha(X, n_bootstrap=0, warn=False)
    assert np.isfinite(est.alpha)
    X[7, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        estimate_alpha(X)


# --------------------------------------------------------------------------- parametric bootstrap (issue 16)


def test_coverage_of_the_default_interval_on_small_power_laws():
    """40 data sets at d = 100 with known α: the 95 % interval covers α in at least 85 %."""
    covered, total = 0, 0
    for alpha, n in ((1.3, 200), (2.0, 50), (1.6, 500), (2.4, 100)):
        for seed in range(10):
            est = estimate_alpha(power_law(n, 100, alpha, seed=seed), n_bootstrap=20, seed=seed, warn=False)
            covered += est.alpha_ci[0] <= alpha <= est.alpha_ci[1]
            total += 1
    assert total == 40 and covered / total >= 0.85


@pytest.mark.parametrize("n_rows", [60, 20])  # Wishart (n ≥ p) and Gram (n < p) routes
def test_simulator_matches_direct_simulation_with_a_rotation(n_rows):
    from scipy import stats

    from normguard.science.spectrum import simulate_sample_eigenvalues

    p, draws = 30, 400
    lam = np.arange(1, p + 1, dtype=float) ** -1.5
    rng = np.random.default_rng(0)
    fast = np.array([simulate_sample_eigenvalues(lam, n_rows, rng) for _ in range(draws)])
    direct = []
    for _ in range(draws):
        rotation, _ = np.linalg.qr(rng.standard_normal((p, p)))  # a random population eigenbasis
        X = rng.standard_normal((n_rows, p)) * np.sqrt(lam) @ rotation.T
        direct.append(np.sort(np.linalg.eigvalsh(X.T @ X / n_rows))[::-1][: min(n_rows, p)])
    direct = np.array(direct)
    assert fast.shape == direct.shape == (draws, min(n_rows, p))
    for i in (0, 4, 9, min(n_rows, p) - 1):
        assert stats.ks_2samp(fast[:, i], direct[:, i]).pvalue > 1e-3, i
        assert fast[:, i].mean() == pytest.approx(direct[:, i].mean(), rel=0.1)


def test_range_test_accepts_a_power_law_and_rejects_a_flat_head():
    g = torch.Generator().manual_seed(0)
    i = torch.arange(1, 301, dtype=torch.float64)
    pure = torch.randn(1500, 300, generator=g, dtype=torch.float64) * i**-0.75
    flat = torch.randn(1500, 300, generator=g, dtype=torch.float64) * torch.clamp(i, min=12) ** -0.75
    ok = estimate_alpha(pure, n_bootstrap=30, seed=1)
    assert ok.range_test == "pass" and ok.range_widening == 0.0 and ok.range_statistic <= ok.range_threshold
    with pytest.warns(UserWarning, match="not a power law over the fit range"):
        bad = estimate_alpha(flat, n_bootstrap=30, seed=1)
    assert bad.range_test == "fail" and bad.range_statistic > bad.range_threshold
    # the uncorrected fit is reported; the interval spans it and the corrected fit and is
    # widened by the sub-ranges' disagreement beyond what sampling explains
    assert bad.alpha == bad.alpha_uncorrected != bad.alpha_corrected
    half = (bad.alpha_ci[1] - bad.alpha_ci[0] - abs(bad.alpha - bad.alpha_corrected)) / 2
    sampling = stats.t.ppf(0.975, bad.n_bootstrap - 1) * bad.alpha_se * math.sqrt(1 + 1 / bad.n_bootstrap)
    assert bad.range_widening > 0 and half == pytest.approx(sampling + bad.range_widening, rel=1e-9)
    assert (
        bad.alpha_ci[0] < min(bad.alpha, bad.alpha_corrected) <= max(bad.alpha, bad.alpha_corrected) < bad.alpha_ci[1]
    )
    # the flat head's population slope over the fit range is inside the widened interval
    first, last = bad.fit_range
    x = np.log(np.arange(first, last + 1, dtype=float))
    y = np.log(np.clip(np.arange(first, last + 1, dtype=float), 12, None) ** -1.5)
    slope = -np.polyfit(x, y, 1)[0]
    assert bad.alpha_ci[0] <= slope <= bad.alpha_ci[1]


def test_bias_correction_moves_toward_the_truth_when_n_is_below_d():
    X = power_law(150, 600, 1.2, seed=2)  # sample eigenvalues near n are inflated: the raw fit is biased low
    est = estimate_alpha(X, n_bootstrap=30, seed=0)
    assert est.bias < 0 and abs(est.alpha - 1.2) < abs(est.alpha_uncorrected - 1.2)


def test_too_few_samples_give_a_warning_and_no_interval():
    X = np.random.default_rng(0).normal(size=(3, 20000))
    with pytest.raises(ValueError, match="rank < 3"):
        estimate_alpha(X)  # centred: only 2 eigenvalues
    with pytest.warns(UserWarning, match="too small for a fit"):
        est = estimate_alpha(X, center=False)
    assert est.ci_method == "none" and np.isnan(est.alpha_ci).all() and est.to_dict()["alpha_ci"] == [None, None]
    with pytest.warns(UserWarning, match="only 5 eigenvalues in the fit range"):
        estimate_alpha(power_law(2000, 60, 2.0), fit_range=(2, 6), n_bootstrap=10)


def test_interval_methods_by_name_and_bad_arguments():
    X = power_law(400, 40, 1.8, seed=7)
    assert estimate_alpha(X, ci_method="bootstrap", n_bootstrap=20).ci_method == "bootstrap"
    assert estimate_alpha(X, ci_method="regression-se").ci_method == "regression-se"
    assert estimate_alpha(X, n_bootstrap=0).ci_method == "regression-se"
    est = estimate_alpha(X)
    assert est.ci_method == "parametric-bootstrap" and 10 <= est.n_bootstrap <= 100
    keys = {"alpha_uncorrected", "alpha_corrected", "bias", "alpha_se", "range_test", "n_bootstrap", "ci_method"}
    assert keys <= set(est.to_dict())
    with pytest.raises(ValueError, match="ci_method"):
        estimate_alpha(X, ci_method="jackknife")
    with pytest.raises(ValueError, match="n_bootstrap"):
        estimate_alpha(X, n_bootstrap=1)
    with pytest.raises(ValueError, match="ci_method"):
        CovarianceAccumulator().estimate(ci_method="bootstrap")
    with pytest.raises(ValueError, match="`X` to be real"):
        estimate_alpha(X.numpy() + 1j)
    with pytest.raises(ValueError, match="`X` to be real"):
        estimate_alpha(torch.complex(X, X))


def test_layer_input_alphas_use_the_parametric_interval():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(40, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
    scale = torch.arange(1, 41, dtype=torch.float32) ** -0.75
    out = layer_input_alphas(net, [torch.randn(500, 40) * scale for _ in range(2)], n_bootstrap=15, seed=1)
    assert out["0"].ci_method == "parametric-bootstrap" and out["0"].n_bootstrap == 15
    assert out["0"].alpha_ci[0] <= 1.5 <= out["0"].alpha_ci[1]
