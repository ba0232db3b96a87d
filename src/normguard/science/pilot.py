"""Norm-scaling pilots: how fast does the weight norm of a τ-near-interpolator grow with n?

The paper (Wang, Sonthalia & Hu, AISTATS 2024) predicts ‖β‖² ~ n^α for linear near-interpolators when the data's
covariance eigenvalues decay as i^(−α) and d grows with n (d = n/γ). A pilot measures the
growth exponent directly: fit near-interpolators on growing subsets, record the squared
norm, and regress log‖β‖² on log n.

What a pilot on *your* data measures. On a fixed dataset d is fixed while n grows, unlike
the paper's proportional regime. While n stays well below d and the least-squares floor
stays well below τ, the measured exponent is the local growth rate that the theory's n^α
describes; as n approaches d (the interpolation threshold) the norm rises faster, and once
the least-squares training error of a subset exceeds τ no β reaches τ at all (those sizes
are dropped, with a warning). So read the exponent as the growth rate over the measured
sizes: a large value means that driving training error down to τ on more of this data
costs norm quickly — near-interpolation is risky here. To reproduce the paper's setting,
pass a generator ``(n, seed) -> (X, y)`` (for example :func:`paper_generator`) instead of
a fixed matrix, so that each size draws fresh data with d = n/γ.

Interval: ``exponent_ci`` is a 95 % percentile bootstrap over seeds (resample the seeds'
runs with replacement, take the per-size medians again, refit the slope).

Progress: both pilots draw a progress bar with a time estimate on stderr when it is a
terminal (``progress=None``, the default); ``progress=False`` hides it, ``True`` forces it.
Needs scipy (``pip install 'normguard[science]'``).

Example:
    >>> res = linear_pilot(paper_generator(alpha=2.0), None, tau=0.2,
    ...                    sizes=[50, 100, 200], n_seeds=3, seed=0)
    >>> res.sizes, 1.0 < res.exponent < 3.5
    ([50, 100, 200], True)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from normguard.norms import NormEngine
from normguard.progress import progress as progress_bar
from normguard.science.datasets import paper_data
from normguard.science.theory import min_norm_near_interpolator
from normguard.validation import check_finite, check_int, check_matrix, check_number, check_vector

__all__ = [
    "PilotResult",
    "fit_exponent",
    "linear_pilot",
    "model_pilot",
    "paper_generator",
    "paper_mlp",
    "per_sample_weight_decay",
    "weight_norm_sq",
    "weight_parameters",
]

DataGenerator = Callable[[int, int], tuple[Any, Any]]


@dataclass(frozen=True, eq=False)
class PilotResult:
    """A measured norm-scaling exponent.

    Attributes:
        exponent: slope of log(median ‖β‖²) against log n.
        exponent_ci: 95 % bootstrap-over-seeds interval.
        alpha: the data's eigendecay exponent (:func:`normguard.science.spectrum.estimate_alpha`;
            for a generator, of the largest size's first draw); NaN if it failed.
        sizes: the subset sizes kept in the fit.
        norms_sq: median squared norm per size.
        norms_sq_all: every run, shape (sizes, seeds); NaN where the run did not reach τ.
        r2: R² of the log-log fit.
        tau: the target training error.
        alpha_ci: the interval of ``alpha``.
        kind: ``"linear"`` or ``"model"``.
        steps: for model pilots, the training steps per run (sizes × seeds).
    """

    exponent: float
    exponent_ci: tuple[float, float]
    alpha: float
    sizes: list[int]
    norms_sq: list[float]
    norms_sq_all: np.ndarray
    r2: float
    tau: float
    alpha_ci: tuple[float, float] = (math.nan, math.nan)
    kind: str = "linear"
    steps: np.ndarray | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "exponent": self.exponent,
            "exponent_ci": [self.exponent_ci[0], self.exponent_ci[1]],
            "alpha": self.alpha,
            "alpha_ci": [self.alpha_ci[0], self.alpha_ci[1]],
            "sizes": list(self.sizes),
            "norms_sq": list(self.norms_sq),
            "r2": self.r2,
            "tau": self.tau,
            "kind": self.kind,
        }


def paper_generator(alpha: float, gamma: float = 2 / 3, sigma2: float = 1.0, signal: float = 10.0) -> DataGenerator:
    """A ``(n, seed) -> (X, y)`` generator of the paper's setting (d = n/γ).

    Example:
        >>> X, y = paper_generator(1.5)(30, 0)
        >>> X.shape, y.shape
        ((30, 45), (30,))
    """

    def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        data = paper_data(n, alpha, gamma=gamma, sigma2=sigma2, seed=seed, signal=signal)
        return data.X, data.y

    return make


def fit_exponent(
    sizes: Sequence[int], norms_all: np.ndarray, n_bootstrap: int = 500, seed: int = 0
) -> tuple[float, tuple[float, float], float, np.ndarray]:
    """Slope of log(median over seeds) vs log n, its bootstrap-over-seeds CI, R², medians.

    Example:
        >>> sizes = [10, 20, 40, 80]
        >>> norms = np.array([[s**2.0, 1.1 * s**2.0] for s in sizes])
        >>> round(fit_exponent(sizes, norms)[0], 6)
        2.0
    """
    norms_all = np.asarray(norms_all, dtype=np.float64)
    logn = np.log(np.asarray(sizes, dtype=np.float64))
    med = np.nanmedian(norms_all, axis=1)
    slope, intercept = np.polyfit(logn, np.log(med), 1)
    pred = slope * logn + intercept
    ss_res = float(np.sum((np.log(med) - pred) ** 2))
    ss_tot = float(np.sum((np.log(med) - np.log(med).mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    n_seeds = norms_all.shape[1]
    rng = np.random.default_rng(seed)
    reps = []
    if n_seeds >= 2:
        for _ in range(n_bootstrap):
            cols = rng.integers(0, n_seeds, n_seeds)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m = np.nanmedian(norms_all[:, cols], axis=1)
            if np.all(np.isfinite(m)) and np.all(m > 0):
                reps.append(np.polyfit(logn, np.log(m), 1)[0])
    if len(reps) >= 2:
        lo, hi = np.percentile(reps, [2.5, 97.5])
        ci = (float(lo), float(hi))
    else:
        ci = (float(slope), float(slope))
    return float(slope), ci, r2, med


def _default_sizes(n: int, sizes: int | Sequence[int] | None) -> list[int]:
    if sizes is None:
        sizes = 6
    if isinstance(sizes, (int, np.integer)):
        count = check_int("sizes", sizes, 3)
        low = max(10, n // 10)
        grid = np.unique(np.round(np.geomspace(low, n, count)).astype(int))
        return [int(v) for v in grid]
    out = sorted({int(v) for v in sizes})
    if len(out) < 3 or out[0] < 2:
        raise ValueError(f"Expected argument `sizes` to hold >= 3 distinct sizes >= 2 but got {sizes!r}.")
    return out


def _finish(
    sizes: list[int],
    norms: np.ndarray,
    tau: float,
    alpha_est: Any,
    kind: str,
    seed: int,
    steps: np.ndarray | None = None,
) -> PilotResult:
    keep = np.array([np.sum(np.isfinite(row)) * 2 > row.size for row in norms])
    if not keep.all():
        dropped = [s for s, k in zip(sizes, keep) if not k]
        warnings.warn(
            f"tau = {tau:g} was not reached at sizes {dropped} in most seeds; they are left out of the fit.",
            stacklevel=3,
        )
    kept_sizes = [s for s, k in zip(sizes, keep) if k]
    if len(kept_sizes) < 3:
        raise ValueError(
            f"Expected tau = {tau:g} to be reachable at >= 3 sizes but it was at {kept_sizes}; "
            "choose a larger tau (above the least-squares training error) or smaller sizes."
        )
    norms_kept = norms[keep]
    exponent, ci, r2, med = fit_exponent(kept_sizes, norms_kept, seed=seed)
    alpha = float(alpha_est.alpha) if alpha_est is not None else math.nan
    alpha_ci = tuple(alpha_est.alpha_ci) if alpha_est is not None else (math.nan, math.nan)
    return PilotResult(
        exponent=exponent,
        exponent_ci=ci,
        alpha=alpha,
        sizes=kept_sizes,
        norms_sq=[float(v) for v in med],
        norms_sq_all=norms_kept,
        r2=r2,
        tau=float(tau),
        alpha_ci=(float(alpha_ci[0]), float(alpha_ci[1])),
        kind=kind,
        steps=None if steps is None else steps[keep],
    )


def _alpha_or_none(X: Any) -> Any:
    from normguard.science.spectrum import estimate_alpha  # scipy: after theory's import named the extra

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return estimate_alpha(X, warn=False)
    except ValueError:
        return None


def _as_numpy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    Xn = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    yn = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    Xn = check_finite("X", check_matrix("X", Xn).astype(np.float64))
    yn = check_finite("y", check_vector("y", yn, Xn.shape[0]).astype(np.float64))
    return Xn, yn


def _draw(X: Any, y: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if callable(X):
        return _as_numpy(*X(n, seed))
    rng = np.random.default_rng(seed)
    rows = rng.choice(X.shape[0], size=n, replace=False)
    return X[rows], y[rows]


def linear_pilot(
    X: np.ndarray | torch.Tensor | DataGenerator,
    y: Any,
    tau: float,
    sizes: int | Sequence[int] | None = None,
    n_seeds: int = 8,
    seed: int = 0,
    progress: bool | None = None,
) -> PilotResult:
    """Measured growth exponent of the minimum-norm τ-near-interpolator's ‖β‖² with n.

    Args:
        X: n × d data, or a generator ``(n, seed) -> (X, y)`` (then ``y`` is ignored).
        y: targets (length n); τ is in the units of y's squared error.
        tau: target training mean squared error.
        sizes: subset sizes; an int asks for that many geometric sizes from max(10, n/10)
            to n (default 6); required for a generator.
        n_seeds: subsets (or draws) per size; the fit uses the median over them.
        seed: base seed (subset ``j`` of every size uses ``seed + j``).
        progress: a progress bar on stderr: ``None`` when stderr is a terminal, ``True``
            always, ``False`` never.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> Xd, yd = load_digits(return_X_y=True)
        >>> res = linear_pilot(Xd, (yd - yd.mean()) / yd.std(), tau=0.05,
        ...                    sizes=[20, 30, 45], n_seeds=4)
        >>> res.sizes, res.norms_sq[0] < res.norms_sq[-1]
        ([20, 30, 45], True)
    """
    n_seeds = check_int("n_seeds", n_seeds, 1)
    if callable(X):
        if sizes is None or isinstance(sizes, (int, np.integer)):
            raise ValueError("Expected argument `sizes` to be a list of sizes when X is a generator.")
        size_list = _default_sizes(0, sizes)
        alpha_est = _alpha_or_none(X(size_list[-1], seed)[0])
        source: Any = X
        data_y: Any = None
    else:
        Xn, yn = _as_numpy(X, y)
        size_list = _default_sizes(Xn.shape[0], sizes)
        if size_list[-1] > Xn.shape[0]:
            raise ValueError(
                f"Expected every size to be <= the number of samples {Xn.shape[0]} but got {size_list[-1]}."
            )
        alpha_est = _alpha_or_none(Xn)
        source, data_y = Xn, yn
    norms = np.full((len(size_list), n_seeds), np.nan)
    # a fit costs more the larger its subset: the bar counts samples fitted, so its estimate holds
    with progress_bar(sum(size_list) * n_seeds, "linear pilot", unit="sample", enabled=progress) as bar:
        for i, n in enumerate(size_list):
            for j in range(n_seeds):
                bar.set_description(f"linear pilot n={n} ({i * n_seeds + j + 1}/{len(size_list) * n_seeds})")
                Xs, ys = _draw(source, data_y, n, seed + j)
                with contextlib.suppress(ValueError):  # τ unreachable: stays NaN
                    norms[i, j] = min_norm_near_interpolator(Xs, ys, tau).norm_sq
                bar.update(n)
    return _finish(size_list, norms, tau, alpha_est, "linear", seed)


# --------------------------------------------------------------------------- model pilot


def paper_mlp(depth: int = 1, width: int = 100) -> Callable[[int], nn.Module]:
    """A ``d -> model`` factory of the paper's ReLU MLPs, initialised as the authors' code.

    ``depth`` hidden ReLU layers of ``width`` units and a linear output. The paper's networks
    are scikit-learn ``MLPRegressor``s, which draw every weight *and* bias of a layer from
    U(−b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot-uniform); this factory does the
    same, so the norms start where theirs do.

    Example:
        >>> net = paper_mlp(depth=2, width=8)(5)
        >>> [tuple(p.shape) for p in weight_parameters(net)]
        [(8, 5), (8, 8), (1, 8)]
    """
    depth, width = check_int("depth", depth, 1), check_int("width", width, 1)

    def make(d: int) -> nn.Module:
        layers: list[nn.Module] = []
        fan_in = d
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        model = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in model:
                if isinstance(layer, nn.Linear):
                    bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
                    layer.weight.uniform_(-bound, bound)
                    layer.bias.uniform_(-bound, bound)
        return model

    return make


def per_sample_weight_decay(alpha: float = 1e-4) -> Callable[[int], float]:
    """Adam weight decay for an L2 penalty written per sample, as scikit-learn's MLP writes it.

    scikit-learn minimises ½·MSE + alpha/(2n)·‖W‖²; for the MSE that is a decay of 2·alpha/n.
    The paper's "L2 penalty 1e-4" is this ``alpha``: pass the result as ``weight_decay`` of
    :func:`model_pilot`. (Adam's decay also reaches the biases, which scikit-learn leaves
    unpenalised; at 2·alpha/n ≈ 1e-7 that difference is negligible.)

    Example:
        >>> per_sample_weight_decay(1e-4)(400)
        5e-07
    """
    alpha = check_number("alpha", alpha, low=0.0)
    return lambda n: 2.0 * alpha / n


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices/kernels of ``model`` (parameters with ≥ 2 dims): no biases, no norms.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        >>> [tuple(p.shape) for p in weight_parameters(net)]
        [(4, 3), (1, 4)]
    """
    return [p for p in model.parameters() if p.ndim >= 2]


def weight_norm_sq(model: nn.Module) -> float:
    """Σ_layers ‖W_ℓ‖_F² over the weight matrices, via normguard's :class:`NormEngine`.

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> _ = torch.nn.init.ones_(lin.weight)
        >>> weight_norm_sq(lin)
        4.0
    """
    holder = nn.ParameterList(weight_parameters(model))  # same Parameter objects, no copy
    return float(NormEngine(holder, include_frozen=True).compute().total.square())


def _train_until(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    tau: float,
    max_steps: int,
    lr: float,
    weight_decay: float,
) -> tuple[int, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_value = math.inf
    for step in range(max_steps + 1):
        pred = model(X).reshape(-1)
        loss = torch.nn.functional.mse_loss(pred, y)
        loss_value = float(loss.detach())
        if loss_value < tau or step == max_steps:
            return step, loss_value
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return max_steps, loss_value  # pragma: no cover


def model_pilot(
    model_factory: Callable[[int], nn.Module],
    X: np.ndarray | torch.Tensor | DataGenerator,
    y: Any,
    tau: float,
    sizes: Sequence[int],
    max_steps: int = 2000,
    lr: float = 1e-3,
    weight_decay: float | Callable[[int], float] = 0.0,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool | None = None,
) -> PilotResult:
    """Measured growth exponent of a trained model's weight norm Σ‖W‖_F² with n.

    For each size and seed a fresh model ``model_factory(n_features)`` (torch seeded with
    the seed first) is trained with Adam (full batch, MSE, L2 ``weight_decay``) until the
    training MSE first drops below ``tau`` (at most ``max_steps`` steps); then the squared
    norm of its weight matrices (biases excluded) is recorded. Runs that never reach τ are
    NaN and left out of the medians (sizes where most runs fail are dropped).

    ``weight_decay`` is Adam's (coupled) L2 coefficient, or a function of the subset size
    ``n`` returning it. Under Adam a fixed coefficient is not a fixed penalty: it shrinks
    every weight whose loss gradient is smaller than ``weight_decay · w`` at about ``lr`` per
    step, and for data with a fast-decaying spectrum (large α) that is most weights on the
    small directions, whose number grows with n — a fixed 1e-4 visibly bends the measured
    exponent down. A penalty written per sample, as scikit-learn's MLP writes its ``alpha``
    (``alpha / (2n) · ‖W‖²`` on top of half the MSE), is ``weight_decay=lambda n: 2 * alpha / n``.

    ``X`` may be a generator ``(n, seed) -> (X, y)``, as in :func:`linear_pilot`.

    A model pilot can take minutes: with ``progress=None`` (the default) a bar on stderr
    counts the runs and estimates the time left when stderr is a terminal; ``True`` always
    draws it, ``False`` never.

    Example:
        >>> factory = lambda d: torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(),
        ...                                         torch.nn.Linear(32, 1))
        >>> res = model_pilot(factory, paper_generator(2.0), None, tau=0.2,
        ...                   sizes=[20, 40, 80], lr=1e-2, seeds=(0,))
        >>> res.kind, len(res.sizes)
        ('model', 3)
    """
    size_list = _default_sizes(0, list(sizes))
    seeds = list(seeds)
    if not seeds:
        raise ValueError("Expected argument `seeds` to hold at least one seed but got none.")
    if callable(X):
        source: Any = X
        data_y: Any = None
        alpha_est = _alpha_or_none(X(size_list[-1], seeds[0])[0])
    else:
        source, data_y = _as_numpy(X, y)
        if size_list[-1] > source.shape[0]:
            raise ValueError(
                f"Expected every size to be <= the number of samples {source.shape[0]} but got {size_list[-1]}."
            )
        alpha_est = _alpha_or_none(source)
    norms = np.full((len(size_list), len(seeds)), np.nan)
    steps = np.zeros((len(size_list), len(seeds)), dtype=int)
    # a run costs more the larger its subset: the bar counts samples trained, so its estimate holds
    with progress_bar(sum(size_list) * len(seeds), "model pilot", unit="sample", enabled=progress) as bar:
        for i, n in enumerate(size_list):
            for j, s in enumerate(seeds):
                bar.set_description(f"model pilot n={n} ({i * len(seeds) + j + 1}/{len(size_list) * len(seeds)})")
                Xs, ys = _draw(source, data_y, n, s)
                Xt = torch.as_tensor(Xs, dtype=torch.float32)
                yt = torch.as_tensor(ys, dtype=torch.float32)
                torch.manual_seed(s)
                model = model_factory(Xt.shape[1])
                decay = float(weight_decay(n)) if callable(weight_decay) else float(weight_decay)
                step, loss = _train_until(model, Xt, yt, tau, max_steps, lr, decay)
                steps[i, j] = step
                if loss < tau:
                    norms[i, j] = weight_norm_sq(model)
                bar.update(n)
    return _finish(size_list, norms, tau, alpha_est, "model", seeds[0], steps)
