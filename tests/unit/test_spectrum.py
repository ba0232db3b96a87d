import warnings

import numpy as np
import pytest
import torch

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
    assert est.r2 > 0.95 and est.ci_method == "bootstrap"
    first, last = est.fit_range
    assert 2 <= first < last <= min(shape)
    assert np.all(np.diff(est.eigenvalues) <= 0)


def test_numpy_float32_and_streaming_agree():
    X = power_law(3000, 200, 2.0, dtype=torch.float32)
    a = estimate_alpha(X.numpy(), n_bootstrap=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=256)
    b = estimate_alpha_streaming(loader)
    assert a.ci_method == b.ci_method == "regression-se"
    assert abs(a.alpha - b.alpha) < 1e-3 and a.fit_range == b.fit_range
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
