import numpy as np
import pytest
import torch

from normguard.pilot import (
    fit_exponent,
    linear_pilot,
    model_pilot,
    paper_generator,
    weight_norm_sq,
)


@pytest.mark.parametrize("alpha", [1.5, 2.5])
def test_linear_pilot_exponent_close_to_alpha(alpha):
    res = linear_pilot(paper_generator(alpha), None, 0.2, sizes=[100, 160, 250, 400, 630], n_seeds=8)
    assert abs(res.exponent - alpha) < 0.3
    assert res.exponent_ci[0] < res.exponent < res.exponent_ci[1]
    assert abs(res.alpha - alpha) < 0.2
    assert res.norms_sq_all.shape == (5, 8) and np.all(np.diff(res.norms_sq) > 0)


def test_linear_pilot_fixed_data_and_unreachable_sizes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 40))
    y = rng.normal(size=300)
    with pytest.warns(UserWarning, match="not reached"):
        res = linear_pilot(X, y, 0.3, sizes=[10, 20, 30, 300], n_seeds=3)
    assert res.sizes == [10, 20, 30]


def test_fit_exponent_exact():
    sizes = [10, 20, 40]
    norms = np.array([[s**1.7 * f for f in (0.9, 1.0, 1.1)] for s in sizes])
    slope, ci, r2, _ = fit_exponent(sizes, norms)
    assert slope == pytest.approx(1.7) and r2 == pytest.approx(1.0)
    assert ci[0] == pytest.approx(1.7) and ci[1] == pytest.approx(1.7)


def test_weight_norm_excludes_biases():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    expected = sum(float((m.weight.detach() ** 2).sum()) for m in net)
    assert weight_norm_sq(net) == pytest.approx(expected, rel=1e-6)


def mlp(d):
    return torch.nn.Sequential(torch.nn.Linear(d, 100), torch.nn.ReLU(), torch.nn.Linear(100, 1))


def test_model_pilot_norm_growth_with_alpha():
    """At CI scale (n ≤ 400) we check what reproduces robustly: the MLP's norm grows with n
    at a rate below α, and is larger for larger α at every size. (Whether the *exponent*
    grows with α needs n up to 5000: examples/paper_mlp.py.)"""
    torch.set_num_threads(2)
    runs = {a: model_pilot(mlp, paper_generator(a), None, 0.2, sizes=[100, 200, 400], seeds=(0, 1)) for a in (1.5, 2.5)}
    for a, res in runs.items():
        assert 0.3 < res.exponent < a
        assert np.all(res.steps < 2000)
    assert np.all(np.array(runs[2.5].norms_sq) > np.array(runs[1.5].norms_sq))
