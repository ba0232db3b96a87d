"""Small embedded tasks with a known noise floor, for the demo, the tests and the benchmarks.

* :func:`power_law_regression` — the paper's linear setting (THEORY.md): x = Σ^½ z with
  Σ = diag(i^-α), d = n / γ, y = xᵀβ* + ε, ε ~ N(0, σ²), β* ~ N(0, 10/d · I). Almost no
  signal, so the best test MSE is about σ²: any training MSE under σ² is fitted noise.
* :func:`noisy_digits` — scikit-learn's bundled 8×8 digits (no download) with symmetric
  label noise in the training and validation labels; the test labels stay clean. The
  cross-entropy noise floor is :func:`normguard.label_noise_floor` (η, 10).

Example:
    >>> data = power_law_regression(n=50, alpha=1.5, seed=0)
    >>> tuple(data["x_train"].shape), tuple(data["y_test"].shape)
    ((50, 75), (2000,))
"""

from __future__ import annotations

import math

import torch

__all__ = ["noisy_digits", "power_law_regression"]


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
    """Train/val/test splits of the paper's setting as float32 tensors (``x_*``, ``y_*``)."""
    if n < 1 or not alpha > 0 or not gamma > 0 or not sigma2 >= 0:
        raise ValueError(f"Expected n >= 1, alpha > 0, gamma > 0, sigma2 >= 0 but got {n}, {alpha}, {gamma}, {sigma2}.")
    g = torch.Generator().manual_seed(seed)
    d = max(1, round(n / gamma))
    scale = torch.arange(1, d + 1, dtype=torch.float64).pow(-alpha / 2)
    beta = torch.randn(d, generator=g, dtype=torch.float64) * math.sqrt(10.0 / d)
    out = {}
    for split, size in (("train", n), ("val", n_val or max(n // 2, 50)), ("test", n_test)):
        x = torch.randn(size, d, generator=g, dtype=torch.float64) * scale
        y = x @ beta + math.sqrt(sigma2) * torch.randn(size, generator=g, dtype=torch.float64)
        out[f"x_{split}"], out[f"y_{split}"] = x.float(), y.float()
    return out


def noisy_digits(noise_rate: float, *, seed: int = 0, n_train: int = 1000, n_val: int = 300) -> dict[str, torch.Tensor]:
    """Digits split into train/val/test, with label noise at ``noise_rate`` in train and val."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the dev extra
        raise ImportError("noisy_digits needs scikit-learn: pip install 'normguard[dev]'") from exc
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"Expected argument `noise_rate` to be in [0, 1) but got {noise_rate}.")
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
