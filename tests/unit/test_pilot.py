import numpy as np
import pytest
import torch

from normguard.science.pilot import (
    fit_exponent,
    linear_pilot,
    model_pilot,
    paper_generator,
    paper_mlp,
    per_sample_weight_decay,
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


@pytest.mark.study
def test_model_pilot_reproduces_the_papers_shallow_network_direction():
    """The paper's MLPs (scikit-learn's init and per-sample L2, as the authors ran them), at CI
    scale: the norm exponent is below α, larger for larger α (intervals apart), smaller for
    the deeper net, and the norms are larger for larger α. The n = 200…5000 grid is
    examples/paper_mlp.py."""
    torch.set_num_threads(2)
    res = {
        (depth, a): model_pilot(
            paper_mlp(depth),
            paper_generator(a),
            None,
            0.2,
            sizes=[100, 200, 400],
            seeds=(0, 1),
            weight_decay=per_sample_weight_decay(1e-4),
        )
        for depth in (1, 5)
        for a in (1.5, 2.5)
    }
    for (depth, a), r in res.items():
        assert np.all(r.steps < 2000), (depth, a)  # every run reached tau
        assert 0.0 < r.exponent < a
    for depth in (1, 5):
        low, high = res[(depth, 1.5)], res[(depth, 2.5)]
        assert high.exponent_ci[0] > low.exponent_ci[1], depth
        assert high.norms_sq[-1] > 1.1 * low.norms_sq[-1], depth
    assert np.all(np.array(res[(1, 2.5)].norms_sq) > 2 * np.array(res[(1, 1.5)].norms_sq))
    for a in (1.5, 2.5):
        assert res[(5, a)].exponent < res[(1, a)].exponent


def test_paper_mlp_init_and_penalty():
    net = paper_mlp(depth=1, width=50)(200)
    bound = (6 / 250) ** 0.5
    weight, bias = net[0].weight.detach(), net[0].bias.detach()
    assert float(weight.abs().max()) <= bound and float(bias.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.9 * bound  # uniform over the whole interval
    assert per_sample_weight_decay(1e-4)(500) == pytest.approx(4e-7)
    with pytest.raises(ValueError, match="depth"):
        paper_mlp(depth=0)
    with pytest.raises(ValueError, match="alpha"):
        per_sample_weight_decay(-1.0)
