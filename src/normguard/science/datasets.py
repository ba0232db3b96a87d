"""Data with a known noise floor: the paper's synthetic regression, and noisy digits.

One generator of the paper's setting (Wang, Sonthalia & Hu, AISTATS 2024) serves the theory, the pilots, the demo,
the tests and the benchmarks:

* :func:`paper_data` — one draw, float64 numpy: x = Σ^½ z with Σ = diag(i^-α),
  d = round(n / γ), y = xᵀβ* + ε, ε ~ N(0, σ²), β* ~ N(0, signal/d · I). With the
  default signal there is almost none, so the best test MSE is about σ²: any training MSE
  under σ² is fitted noise. :meth:`PaperData.draw` gives fresh rows of the same problem.
* :func:`power_law_regression` — train/val/test splits of that draw as float32 tensors.
* :func:`noisy_digits` — scikit-learn's bundled 8×8 digits (no download) with symmetric
  label noise in the training and validation labels; the test labels stay clean. The
  cross-entropy noise floor is :func:`normguard.label_noise_floor` (η, 10).

Example:
    >>> data = power_law_regression(n=50, alpha=1.5, seed=0)
    >>> tuple(data["x_train"].shape), tuple(data["y_test"].shape)
    ((50, 75), (2000,))
    >>> bool(torch.equal(data["x_train"], torch.from_numpy(paper_data(50, 1.5, seed=0).X).float()))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from normguard.validation import check_int, check_number

__all__ = ["PaperData", "noisy_digits", "paper_data", "power_law_regression"]


@dataclass(frozen=True, eq=False)
class PaperData:
    """One draw of the paper's setting; ``X`` is n × d (rows are samples), float64."""

    X: np.ndarray
    y: np.ndarray
    beta_star: np.ndarray
    eigenvalues: np.ndarray
    sigma2: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)

    def draw(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` fresh rows (X, y) of the same problem, from the draw's own random stream."""
        m = check_int("m", m, 1)
        X = self.rng.standard_normal((m, self.eigenvalues.size)) * np.sqrt(self.eigenvalues)
        y = X @ self.beta_star + self.rng.standard_normal(m) * math.sqrt(self.sigma2)
        return X, y

    def test_error(self, beta: Any) -> float:
        """Exact expected test error σ² + (β − β*)ᵀ Σ (β − β*) (Σ is diagonal)."""
        diff = np.asarray(beta, dtype=np.float64) - self.beta_star
        return float(self.sigma2 + np.sum(self.eigenvalues * diff**2))


PaperData.test_error.__test__ = False  # type: ignore[attr-defined]


def paper_data(
    n: int,
    alpha: float,
    gamma: float = 2 / 3,
    sigma2: float = 1.0,
    seed: int = 0,
    signal: float = 10.0,
) -> PaperData:
    """Draw the paper's setting: d = round(n/γ), Σ = diag(i^−α), β* ~ N(0, signal/d · I).

    Example:
        >>> data = paper_data(100, alpha=2.0, seed=1)
        >>> data.X.shape, data.y.shape
        ((100, 150), (100,))
    """
    n = check_int("n", n, 2)
    alpha = check_number("alpha", alpha, low=0.0, low_open=True)
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    sigma2 = check_number("sigma2", sigma2, low=0.0)
    signal = check_number("signal", signal, low=0.0)
    d = max(1, round(n / gamma))
    rng = np.random.default_rng(seed)
    eig = np.arange(1, d + 1, dtype=np.float64) ** (-alpha)
    X = rng.standard_normal((n, d)) * np.sqrt(eig)
    beta_star = rng.standard_normal(d) * math.sqrt(signal / d)
    y = X @ beta_star + rng.standard_normal(n) * math.sqrt(sigma2)
    return PaperData(X=X, y=y, beta_star=beta_star, eigenvalues=eig, sigma2=sigma2, rng=rng)


def power_law_regression(
    n: int,
    alpha: float,
    *,
    gamma: float = 2 / 3,
    sigma2: float = 1.0,
    n_val: int | None = None,
    n_test: int = 2000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Train/val/test splits of :func:`paper_data` as float32 tensors (``x_*``, ``y_*``).

    The training rows are exactly ``paper_data(n, alpha, gamma, sigma2, seed)``; validation
    (``n_val``, default max(n // 2, 50) rows) and test rows are fresh draws of the same problem.
    """
    data = paper_data(n, alpha, gamma=gamma, sigma2=sigma2, seed=seed)
    out = {"x_train": torch.from_numpy(data.X).float(), "y_train": torch.from_numpy(data.y).float()}
    n_val = max(n // 2, 50) if n_val is None else check_int("n_val", n_val, 1)
    for split, size in (("val", n_val), ("test", check_int("n_test", n_test, 1))):
        X, y = data.draw(size)
        out[f"x_{split}"], out[f"y_{split}"] = torch.from_numpy(X).float(), torch.from_numpy(y).float()
    return out


def noisy_digits(noise_rate: float, *, seed: int = 0, n_train: int = 1000, n_val: int = 300) -> dict[str, torch.Tensor]:
    """Digits split into train/val/test, with label noise at ``noise_rate`` in train and val."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the dev extra
        raise ImportError("noisy_digits needs scikit-learn, which is not installed: pip install scikit-learn") from exc
    noise_rate = check_number("noise_rate", noise_rate, low=0.0, high=1.0, high_open=True)
    x_all, y_all = load_digits(return_X_y=True)
    x = torch.tensor(x_all / 16.0, dtype=torch.float32)
    y = torch.tensor(y_all, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    parts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    out = {}
    for split, index in parts.items():
        labels = y[index].clone()
        if split != "test" and noise_rate > 0:
            flip = torch.rand(len(labels), generator=g) < noise_rate
            labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
        out[f"x_{split}"], out[f"y_{split}"] = x[index], labels
    return out
