"""The noise floor: the lowest loss a model can reach on fresh data, known or estimated.

A model that fits noisy targets exactly has learnt the noise. On fresh data no model does
better, on average, than the noise floor: for cross-entropy on labels that were corrupted
independently of the input it is the conditional entropy H(noisy label | clean label); for
the squared error it is the noise variance σ². A training loss under the floor is the model
memorising its training set.

Known noise
    :func:`label_noise_floor` computes the cross-entropy floor from a noise rate and a noise
    model (both common "symmetric" definitions) or from a class-conditional transition matrix.

Unknown noise
    :func:`estimate_noise_floor` estimates it from held-out (validation) predictions and the
    (noisy) labels; :class:`NoiseFloorEstimator` accumulates them batch by batch on the device.
    Classification follows confident learning (Northcutt, Jiang & Chuang, *Confident
    Learning: Estimating Uncertainty in Dataset Labels*, JAIR 2021), written from the paper:

    1. per class j, a threshold t_j = the mean predicted probability of class j over the
       examples labelled j;
    2. the confident joint C[i, j] counts the examples labelled i whose probability of class j
       reaches t_j (the most probable such class when several do; an example with no class
       at its threshold is not counted);
    3. each row is rescaled to the number of examples labelled i, and the whole to a joint
       distribution Q(noisy = i, true = j);
    4. the transition matrix T[j, i] = P(noisy = i | true = j) = Q[i, j] / Σ_i Q[i, j], the
       prior of the true class P(true = j) = Σ_i Q[i, j], and the floor
       H(noisy | true) = −Σ_j P(true = j) Σ_i T[j, i] log T[j, i].

    The plug-in entropy of step 4 is low on few examples (a row of T seen through n_j examples
    loses about (m_j − 1)/(2 n_j) nats, m_j its non-empty cells): the Miller–Madow term adds
    it back. The interval is a bootstrap over examples (200 resamples by default, vectorised,
    one fixed seed: the same data give the same interval): the resamples' 2.5 / 97.5 %
    percentiles, shifted by the estimate minus their median (resamples repeat examples, which
    pulls their floors low). On synthetic logits (well-separated, labels corrupted by a known
    matrix) it held the true floor in 12–14 of 15 data sets of 500–2000 examples per noise kind.

    Regression: σ̂² = the mean squared validation residual, with a normal-approximation (central
    limit) interval on the mean of the per-sample squared residuals.

How far to trust the estimate
    Both estimates read the noise through the model. Errors of the model on examples whose label
    is right look like label noise, so a weak model gives a floor that is too high: early in
    training, and again, by a few percent, once the model has started to memorise and lost
    accuracy on held-out data. On an MLP trained on 8x8 digits (797 validation images, 3 seeds,
    ``benchmarks/RESULTS_noise_floor.md``) the estimate after the first epoch was 16–130 % above
    the true floor (0.25–0.72 nats on clean labels); the estimate taken at the epoch of the best
    validation loss was within −6 % to +3 % (median) of it for symmetric noise of 15–40 % under
    both definitions, 4–10 % high for pairs of classes flipped at 15–40 %, and 0.01–0.02 nats on
    clean labels. A guard should use the estimate from its best validation so far, not the
    latest one, and none from the first epochs. The interval reflects the sampling of the
    validation set only, not the model's bias. The regression estimate is the validation MSE
    itself, σ² plus the model's own squared error: never below σ² on average, and as far above
    it as the model is from the truth (11 % to 48 % at the best validation in the same benchmark).

Cost
    Classification keeps N x C outputs (on their device, until the estimate) and the bootstrap
    makes 200 passes over them on the CPU, vectorised. Measured on one thread of a shared, busy
    2-core machine: 0.25 s for 1000 examples of 10 classes, 2 s for 10 000 x 10, 5 s for
    50 000 x 10, 20 s for 10 000 x 100 (``num_bootstrap`` trades the interval's precision for
    time; 0 skips it). It is meant for classifiers with up to a few hundred classes, not for
    language-model vocabularies.

Example:
    >>> round(label_noise_floor(0.3, 10), 4)
    1.1765
    >>> round(label_noise_floor(0.4, 10, noise_model="other"), 3)
    1.552
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "FloorEstimate",
    "NoiseFloorEstimator",
    "estimate_noise_floor",
    "estimate_transition_matrix",
    "hf_noise_floor_metrics",
    "label_noise_floor",
]

Task = Literal["classification", "regression"]
_TASKS = ("classification", "regression")
_BOOTSTRAP_ELEMENTS = 4_000_000  # (resamples x examples x classes) per vectorised chunk


@dataclass(frozen=True)
class FloorEstimate:
    """An estimated noise floor with its interval (plain floats: ``dataclasses.asdict`` is JSON-able).

    Attributes:
        value: the estimate: cross-entropy in nats (classification) or mean squared error in
            the targets' units squared (regression).
        low: lower end of the interval (``confidence`` level, 95 % by default).
        high: upper end of the interval.
        n: number of examples used (classification: labelled examples, ignored labels left
            out; regression: samples, each possibly a vector).
        kind: ``"classification"`` or ``"regression"``.
    """

    value: float
    low: float
    high: float
    n: int
    kind: str


# ----------------------------------------------------------------------------- known noise


def _probability_vector(values: Any, name: str, size: int) -> np.ndarray:
    try:
        vector = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Expected argument `{name}` to be a sequence of {size} numbers but got {values!r}.") from exc
    if vector.shape != (size,):
        raise ValueError(f"Expected argument `{name}` to have shape ({size},) but got {vector.shape}.")
    if not np.all(np.isfinite(vector)) or np.any(vector < 0) or abs(vector.sum() - 1.0) > 1e-6:
        raise ValueError(f"Expected argument `{name}` to be non-negative and to sum to 1 but got {vector.tolist()}.")
    return vector


def _transition_matrix(transition: Any) -> np.ndarray:
    try:
        matrix = np.asarray(
            transition.detach().cpu() if isinstance(transition, torch.Tensor) else transition, dtype=np.float64
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Expected argument `transition` to be a C x C matrix of numbers but got {transition!r}."
        ) from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"Expected argument `transition` to be a square C x C matrix, C >= 2, but got {matrix.shape}.")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("Expected argument `transition` to hold finite non-negative probabilities T[clean, noisy].")
    sums = matrix.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-6):
        raise ValueError(
            "Expected argument `transition` to be row-stochastic (each row T[clean, :] sums to 1) "
            f"but its row sums are {np.round(sums, 6).tolist()}."
        )
    return matrix


def _conditional_entropy(transition: np.ndarray, prior: np.ndarray) -> float:
    """H(noisy | clean) = −Σ_j prior_j Σ_i T[j, i] log T[j, i], with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(transition > 0, transition * np.log(transition), 0.0)
    floor = float(-(prior * terms.sum(axis=1)).sum())
    return floor if floor > 0 else 0.0  # never -0.0 (clean labels)


def label_noise_floor(
    noise_rate: float | None = None,
    num_classes: int | None = None,
    *,
    noise_model: Literal["uniform", "other"] = "uniform",
    transition: Any = None,
    class_prior: Any = None,
) -> float:
    """Cross-entropy noise floor H(noisy label | clean label) in nats, for a known noise process.

    Args:
        noise_rate: the share η of labels that were corrupted, in [0, 1) (not with ``transition``).
        num_classes: the number of classes C >= 2 (optional with ``transition``; checked if given).
        noise_model: what happens to a corrupted label. ``"uniform"`` (default): it is redrawn
            uniformly from all C classes, so it keeps its class with probability 1 − η + η/C.
            ``"other"``: it moves to a uniformly random *other* class, so it keeps its class
            with probability 1 − η. A rate η under ``"uniform"`` is the rate η (C − 1)/C under
            ``"other"``.
        transition: a C x C row-stochastic matrix T[clean, noisy] = P(noisy | clean) for
            class-conditional noise (for example pairs of classes swapped at 30 %).
        class_prior: P(clean class), length C (default uniform). The floor is the average of each
            clean class's entropy over this prior; with symmetric noise every class has the same
            entropy, so the prior matters only with ``transition``.

    Returns:
        The floor in nats (0.0 for clean labels).

    Example:
        >>> round(label_noise_floor(0.4, 10), 3), round(label_noise_floor(0.4, 10, noise_model="other"), 3)
        (1.444, 1.552)
        >>> pairs = [[0.7, 0.3, 0.0, 0.0], [0.3, 0.7, 0.0, 0.0], [0.0, 0.0, 0.7, 0.3], [0.0, 0.0, 0.3, 0.7]]
        >>> round(label_noise_floor(transition=pairs), 4)  # the binary entropy of 0.3
        0.6109
    """
    if transition is not None:
        if noise_rate is not None:
            raise ValueError(
                "Expected either argument `noise_rate` (with `num_classes` and `noise_model`) or argument "
                "`transition`, not both."
            )
        if noise_model != "uniform":
            raise ValueError(
                f"Argument `noise_model` ({noise_model!r}) does not apply with argument `transition`: "
                "the matrix is the noise model."
            )
        matrix = _transition_matrix(transition)
        size = matrix.shape[0]
        if num_classes is not None and num_classes != size:
            raise ValueError(
                f"Expected argument `num_classes` ({num_classes}) to equal the size of `transition` ({size})."
            )
        prior = (
            np.full(size, 1.0 / size) if class_prior is None else _probability_vector(class_prior, "class_prior", size)
        )
        return _conditional_entropy(matrix, prior)

    if noise_rate is None:
        raise ValueError("Expected argument `noise_rate` (a float in [0, 1)) or argument `transition` but got neither.")
    if num_classes is None or isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"Expected argument `num_classes` to be an integer >= 2 but got {num_classes}.")
    if isinstance(noise_rate, bool) or not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"Expected argument `noise_rate` to be in [0, 1) but got {noise_rate}.")
    if noise_model not in ("uniform", "other"):
        raise ValueError(f"Expected argument `noise_model` to be 'uniform' or 'other' but got {noise_model!r}.")
    classes = int(num_classes)
    if class_prior is not None:
        _probability_vector(class_prior, "class_prior", classes)  # checked; symmetric noise ignores it
    if noise_model == "uniform":
        keep = 1.0 - noise_rate + noise_rate / classes
        flip = noise_rate / classes
    else:
        keep = 1.0 - noise_rate
        flip = noise_rate / (classes - 1)
    floor = -keep * math.log(keep)
    if flip > 0:
        floor -= (classes - 1) * flip * math.log(flip)
    return floor if floor > 0 else 0.0  # never -0.0 (η = 0)


# ----------------------------------------------------------------------------- inputs


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"Expected argument `{name}` to be a tensor or an array but got {type(value).__name__}."
        ) from exc


def _is_integer(tensor: torch.Tensor) -> bool:
    return not tensor.dtype.is_floating_point and not tensor.dtype.is_complex


def _infer_task(outputs: torch.Tensor, targets: torch.Tensor, task: str | None) -> Task:
    """The task from dtypes and shapes only (no values: no host sync)."""
    if task is not None and task not in _TASKS:
        raise ValueError(f"Expected argument `task` to be None, 'classification' or 'regression' but got {task!r}.")
    if not outputs.dtype.is_floating_point:
        raise ValueError(
            f"Expected argument `outputs` to be floating point (logits, probabilities or predictions) "
            f"but got dtype {outputs.dtype}."
        )
    if outputs.ndim == 0 or outputs.shape[0] != (targets.shape[0] if targets.ndim else -1):
        raise ValueError(
            f"Expected arguments `outputs` and `targets` to share their first (example) dimension but got shapes "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}."
        )
    per_class = outputs.ndim == targets.ndim + 1 and outputs.shape[:-1] == targets.shape
    same = outputs.shape == targets.shape
    if task == "classification":
        if per_class and outputs.shape[-1] >= 2:
            return "classification"
        if same:  # one logit per example: binary
            return "classification"
        raise ValueError(
            "With task='classification', expected argument `outputs` of shape (N, C) (or (..., C)) with C >= 2 and "
            f"argument `targets` of shape (N,) (or (...)) but got {tuple(outputs.shape)} and {tuple(targets.shape)}."
        )
    if task == "regression":
        if same or (per_class and outputs.shape[-1] == 1):
            return "regression"
        raise ValueError(
            "With task='regression', expected arguments `outputs` and `targets` of the same shape (or outputs with "
            f"a trailing dimension of 1) but got {tuple(outputs.shape)} and {tuple(targets.shape)}."
        )
    if _is_integer(targets):
        if per_class and outputs.shape[-1] >= 2:
            return "classification"
        raise ValueError(
            f"Cannot infer the task from `outputs` of shape {tuple(outputs.shape)} and integer `targets` of shape "
            f"{tuple(targets.shape)}: classification needs outputs (N, C) with C >= 2 for targets (N,). Pass "
            "task='classification' (one logit per example: binary) or task='regression'."
        )
    if same or (per_class and outputs.shape[-1] == 1):
        return "regression"
    if per_class:
        raise ValueError(
            f"Cannot infer the task: `outputs` {tuple(outputs.shape)} look like per-class logits but `targets` are "
            f"floating point ({targets.dtype}). Pass task='classification' if they are class indices (or cast them to "
            "an integer dtype)."
        )
    raise ValueError(
        f"Cannot infer the task from `outputs` of shape {tuple(outputs.shape)} and `targets` of shape "
        f"{tuple(targets.shape)}: expected (N, C) logits with integer targets (N,), or predictions and float targets "
        "of the same shape."
    )


def _probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """(N, C) float64 class probabilities from logits, log-probabilities or probabilities."""
    outputs = outputs.to(torch.float64)
    if outputs.shape[1] == 1:  # one logit: binary
        positive = torch.sigmoid(outputs[:, 0])
        return torch.stack([1.0 - positive, positive], dim=1)
    if (outputs.min() >= 0) and (outputs.max() <= 1) and torch.allclose(outputs.sum(1), outputs.new_ones(1), atol=1e-3):
        return outputs  # already probabilities
    return torch.softmax(outputs, dim=1)


def _flatten(outputs: torch.Tensor, targets: torch.Tensor, kind: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples along dim 0 (views, no sync): classification (M, C) and (M,) (binary, one logit:
    (M,) and (M,)), every position of a sequence an example; regression (N, D) and (N, D)."""
    if kind == "classification":
        if outputs.shape == targets.shape:
            return outputs.reshape(-1), targets.reshape(-1)
        return outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    n = targets.shape[0]
    return outputs.reshape(targets.shape).reshape(n, -1), targets.reshape(n, -1)


# ----------------------------------------------------------------------------- classification


def _confident_joint(probs: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Calibrated joint Q[b, i, j] = P(noisy = i, true = j) for each row b of example weights (B, N).

    ``weights`` counts how often each example appears in a resample (all ones for the data as
    they are). Steps 1–3 of the module doc.
    """
    n_classes = probs.shape[1]
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(probs.dtype)  # (N, C)
    label_counts = weights @ onehot  # (B, C): examples labelled j
    sums = weights @ (probs * onehot)  # (B, C)
    thresholds = torch.where(label_counts > 0, sums / label_counts.clamp(min=1e-300), torch.inf)
    # The (B, C, N) pass in float32, examples innermost (twice as fast as (B, N, C) here): the
    # probability of the most probable class at its threshold, 0 where none is.
    probs_t = probs.to(torch.float32).T.contiguous().unsqueeze(0)  # (1, C, N)
    at_threshold = probs_t * (probs_t >= thresholds.to(torch.float32).unsqueeze(2))
    top, best = at_threshold.max(dim=1)  # (B, N)
    counted = weights * (top > 0).to(weights.dtype)
    joint = torch.zeros(weights.shape[0], n_classes * n_classes, dtype=probs.dtype)
    joint.scatter_add_(1, labels.unsqueeze(0) * n_classes + best, counted)
    joint = joint.view(-1, n_classes, n_classes)  # [b, noisy i, true j]
    rows = joint.sum(dim=2, keepdim=True)
    # Calibrate each row to the number of examples labelled i; a label with examples but none
    # counted confidently is taken as clean (its mass on the diagonal).
    diagonal = torch.diag_embed(label_counts)
    calibrated = torch.where(rows > 0, joint / rows.clamp(min=1e-300) * label_counts.unsqueeze(2), diagonal)
    return calibrated / calibrated.sum(dim=(1, 2), keepdim=True)


def _floor_from_joint(joint: torch.Tensor, n: int) -> torch.Tensor:
    """H(noisy | true) from Q[b, noisy, true], per b, with the Miller–Madow correction.

    The plug-in entropy of a distribution seen through n_j samples is low by about
    (m_j − 1)/(2 n_j) (m_j: cells seen); with n_j = n P(true = j) the correction sums to
    Σ_j (m_j − 1)/(2n). Clean labels (one cell per class) get none.
    """
    true_prior = joint.sum(dim=1, keepdim=True)  # (B, 1, C)
    ratio = joint / true_prior.clamp(min=1e-300)
    terms = torch.where(joint > 0, joint * torch.log(ratio.clamp(min=1e-300)), 0.0)
    cells = (joint > 0).sum(dim=1)  # (B, C)
    correction = (cells - 1).clamp(min=0).sum(dim=1).to(joint.dtype) / (2 * n)
    return (-terms.sum(dim=(1, 2))).clamp(min=0.0) + correction + 0.0  # + 0.0: never -0.0


def _classification_inputs(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Host (N, C) probabilities and (N,) int64 labels, ignored labels (< 0) left out; values checked."""
    one_logit = outputs.shape == targets.shape  # binary, one logit per example
    outputs = outputs.reshape(-1, 1) if one_logit else outputs.reshape(-1, outputs.shape[-1])
    targets = targets.reshape(-1)
    if targets.dtype.is_floating_point and not (
        torch.all(torch.isfinite(targets)) and torch.all(targets == torch.round(targets))
    ):
        raise ValueError("Expected argument `targets` to hold class indices (whole numbers) for classification.")
    labels = targets.to(torch.int64)
    keep = labels >= 0  # negative labels (-100: Hugging Face's ignore index) are not examples
    outputs, labels = outputs[keep], labels[keep]
    if labels.numel() == 0:
        raise ValueError("Expected argument `targets` to hold at least one label >= 0 but got none.")
    if not torch.all(torch.isfinite(outputs)):
        raise ValueError(
            f"Expected argument `outputs` to be finite but got {int((~torch.isfinite(outputs)).sum())} NaN/inf values."
        )
    n_classes = max(outputs.shape[1], 2)
    if int(labels.max()) >= n_classes:
        raise ValueError(f"Expected argument `targets` to be class indices < {n_classes} but got {int(labels.max())}.")
    return _probabilities(outputs), labels


def estimate_transition_matrix(outputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident-learning estimate of the label noise (module doc, steps 1–4).

    Args:
        outputs: held-out logits (N, C) (log-probabilities or probabilities also work).
        targets: the (noisy) integer labels (N,); negative labels are ignored.

    Returns:
        ``(T, prior)``: T[true, noisy] = P(noisy label | true class), C x C, and P(true class), C
        (float64 CPU tensors). A class with no estimated examples has a zero prior and a row of
        zeros in T.

    Example:
        >>> import torch
        >>> logits = 5.0 * torch.eye(3).repeat(20, 1)  # 60 confident examples, 20 per class
        >>> labels = torch.arange(3).repeat(20)
        >>> T, prior = estimate_transition_matrix(logits, labels)
        >>> torch.allclose(T, torch.eye(3, dtype=T.dtype)), prior.tolist()
        (True, [0.3333333333333333, 0.3333333333333333, 0.3333333333333333])
    """
    outputs_t, targets_t = _as_tensor(outputs, "outputs"), _as_tensor(targets, "targets")
    _infer_task(outputs_t, targets_t, "classification")
    probs, labels = _classification_inputs(outputs_t.cpu(), targets_t.cpu())
    joint = _confident_joint(probs, labels, probs.new_ones(1, labels.numel()))[0]
    prior = joint.sum(dim=0)
    transition = (joint / prior.clamp(min=1e-300)).T
    return transition, prior


def _bootstrap_weights(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    draws = torch.randint(0, n, (count, n), generator=generator)
    return torch.zeros(count, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(count, n, dtype=torch.float64))


def _classification_floor(
    probs: torch.Tensor, labels: torch.Tensor, confidence: float, num_bootstrap: int, seed: int
) -> FloorEstimate:
    n = labels.numel()
    value = float(_floor_from_joint(_confident_joint(probs, labels, probs.new_ones(1, n)), n)[0])
    low = high = value
    if num_bootstrap > 0:
        generator = torch.Generator().manual_seed(seed)
        chunk = max(1, _BOOTSTRAP_ELEMENTS // (n * probs.shape[1]))
        floors = []
        for start in range(0, num_bootstrap, chunk):
            weights = _bootstrap_weights(n, min(chunk, num_bootstrap - start), generator)
            floors.append(_floor_from_joint(_confident_joint(probs, labels, weights), n))
        alpha = (1.0 - confidence) / 2
        ends = torch.quantile(torch.cat(floors), torch.tensor([alpha, 0.5, 1.0 - alpha], dtype=torch.float64))
        # Resamples repeat examples and lose rare cells of the joint: their floors sit low by a
        # few percent (more with few examples). The interval keeps their spread around the
        # estimate itself (percentile interval shifted by estimate − resamples' median).
        shift = value - float(ends[1])
        low, high = max(float(ends[0]) + shift, 0.0), max(float(ends[2]) + shift, value)
    return FloorEstimate(value=value, low=low, high=high, n=n, kind="classification")


# ----------------------------------------------------------------------------- regression


def _regression_floor(outputs: torch.Tensor, targets: torch.Tensor, confidence: float) -> FloorEstimate:
    outputs = outputs.to(torch.float64).reshape(targets.shape)
    targets = targets.to(torch.float64)
    if not torch.all(torch.isfinite(outputs)):
        raise ValueError("Expected argument `outputs` to be finite for regression.")
    if not torch.all(torch.isfinite(targets)):
        raise ValueError("Expected argument `targets` to be finite for regression.")
    squared = (outputs - targets).pow(2).reshape(targets.shape[0], -1).mean(dim=1)  # per sample
    n = squared.numel()
    value = float(squared.mean())
    if n > 1:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * float(squared.std()) / math.sqrt(n)
        low, high = max(value - half, 0.0), value + half
    else:
        low, high = 0.0, math.inf
    return FloorEstimate(value=value, low=low, high=high, n=n, kind="regression")


# ----------------------------------------------------------------------------- public estimate


def _check_options(confidence: float, num_bootstrap: int) -> None:
    if isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        raise ValueError(f"Expected argument `confidence` to be in (0, 1) but got {confidence}.")
    if isinstance(num_bootstrap, bool) or int(num_bootstrap) != num_bootstrap or num_bootstrap < 0:
        raise ValueError(f"Expected argument `num_bootstrap` to be an integer >= 0 but got {num_bootstrap}.")


def _estimate(
    outputs: torch.Tensor, targets: torch.Tensor, task: Task, confidence: float, num_bootstrap: int, seed: int
) -> FloorEstimate:
    """The estimate from host tensors whose task is known."""
    if targets.numel() == 0:
        raise ValueError("Expected arguments `outputs` and `targets` to hold at least one example but got none.")
    if task == "regression":
        return _regression_floor(outputs, targets, confidence)
    probs, labels = _classification_inputs(outputs, targets)
    return _classification_floor(probs, labels, confidence, int(num_bootstrap), seed)


def estimate_noise_floor(
    outputs: Any,
    targets: Any,
    *,
    task: Task | None = None,
    confidence: float = 0.95,
    num_bootstrap: int = 200,
    seed: int = 0,
) -> FloorEstimate:
    """Estimate the noise floor from held-out predictions and their (noisy) targets.

    Args:
        outputs: classification: logits (N, C) (log-probabilities or probabilities also work;
            ``(..., C)`` is flattened); regression: predictions of the targets' shape (a trailing
            dimension of 1 is allowed). Tensors on any device, numpy arrays or lists.
        targets: classification: integer labels (N,) (negative labels, such as Hugging Face's
            -100, are ignored); regression: float targets.
        task: ``"classification"``, ``"regression"`` or None: inferred from dtypes and shapes
            (integer targets with (N, C) outputs: classification; float targets of the outputs'
            shape: regression; anything else is an error asking for ``task=``).
            ``task="classification"`` with one logit per example reads it as binary.
        confidence: the interval's level.
        num_bootstrap: classification: resamples of the percentile bootstrap (0: no interval,
            low = high = value).
        seed: the bootstrap's seed (fixed: the same data give the same interval).

    Returns:
        A :class:`FloorEstimate`. See the module doc for the method and its bias: the estimate
        reads the noise through the model, so a weak model overstates it.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> clean = torch.randint(0, 4, (2000,), generator=g)
        >>> logits = 6.0 * torch.nn.functional.one_hot(clean, 4) + torch.randn(2000, 4, generator=g)
        >>> noisy = torch.where(torch.rand(2000, generator=g) < 0.3, torch.randint(0, 4, (2000,), generator=g), clean)
        >>> est = estimate_noise_floor(logits, noisy)
        >>> round(label_noise_floor(0.3, 4), 3), round(est.value, 3), est.low < est.value < est.high
        (0.78, 0.768, True)
    """
    _check_options(confidence, num_bootstrap)
    outputs_t, targets_t = _as_tensor(outputs, "outputs"), _as_tensor(targets, "targets")
    kind = _infer_task(outputs_t, targets_t, task)
    return _estimate(outputs_t.cpu(), targets_t.cpu(), kind, confidence, int(num_bootstrap), seed)


class NoiseFloorEstimator:
    """Accumulates validation outputs and targets on their device; :meth:`compute` estimates the floor.

    :meth:`update` only keeps detached references (no device→host transfer, no copy of values);
    :meth:`compute` concatenates them and moves them to the host in one transfer, then runs
    :func:`estimate_noise_floor`. It keeps every output: N x C numbers for classification.

    Args:
        task, confidence, num_bootstrap, seed: as in :func:`estimate_noise_floor`; the task is
            fixed by the first batch when None.

    Example:
        >>> import torch
        >>> est = NoiseFloorEstimator()
        >>> for _ in range(3):
        ...     est.update(5.0 * torch.eye(4), torch.arange(4))
        >>> floor = est.compute()
        >>> floor.kind, floor.n, floor.value
        ('classification', 12, 0.0)
        >>> est.reset()
    """

    def __init__(
        self, *, task: Task | None = None, confidence: float = 0.95, num_bootstrap: int = 200, seed: int = 0
    ) -> None:
        _check_options(confidence, num_bootstrap)
        if task is not None and task not in _TASKS:
            raise ValueError(f"Expected argument `task` to be None, 'classification' or 'regression' but got {task!r}.")
        self.task: Task | None = task
        self.confidence = confidence
        self.num_bootstrap = int(num_bootstrap)
        self.seed = seed
        self._kind: Task | None = None
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep one batch (checked by dtype and shape only: no host sync)."""
        outputs_t, targets_t = _as_tensor(outputs, "outputs"), _as_tensor(targets, "targets")
        kind = _infer_task(outputs_t, targets_t, self.task if self._kind is None else self._kind)
        outputs_t, targets_t = _flatten(outputs_t, targets_t, kind)
        if self._outputs:
            first_o, first_t = self._outputs[0], self._targets[0]
            if outputs_t.shape[1:] != first_o.shape[1:] or targets_t.shape[1:] != first_t.shape[1:]:
                raise ValueError(
                    f"Expected every batch's `outputs` and `targets` to match the first batch's (per example: "
                    f"{tuple(first_o.shape[1:])} and {tuple(first_t.shape[1:])}) but got {tuple(outputs_t.shape)} "
                    f"and {tuple(targets_t.shape)}."
                )
            if outputs_t.device != first_o.device or targets_t.device != first_t.device:
                raise ValueError(
                    f"Expected every batch on the first batch's devices ({first_o.device}, {first_t.device}) "
                    f"but got {outputs_t.device}, {targets_t.device}."
                )
        self._kind = kind
        self._outputs.append(outputs_t)
        self._targets.append(targets_t)

    @property
    def num_batches(self) -> int:
        """Batches kept since the last :meth:`reset`."""
        return len(self._outputs)

    def compute(self) -> FloorEstimate:
        """The estimate from every batch since the last :meth:`reset` (one device→host transfer)."""
        if not self._outputs or self._kind is None:
            raise RuntimeError("NoiseFloorEstimator.compute() needs at least one update() since the last reset().")
        outputs, targets = _gather_to_host(self._outputs, self._targets)
        return _estimate(outputs, targets, self._kind, self.confidence, self.num_bootstrap, self.seed)

    def reset(self) -> None:
        """Forget every batch (the task is fixed again by the next one unless given)."""
        self._outputs.clear()
        self._targets.clear()
        self._kind = None


def _gather_to_host(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batches on their device and move them to the host in one transfer.

    Outputs and targets travel as one matrix in a common floating dtype (float64 when the
    targets are integers: labels stay exact) and get their own dtypes and shapes back on the host.
    """
    out = torch.cat([o.reshape(o.shape[0], -1) for o in outputs])
    tgt = torch.cat([t.reshape(t.shape[0], -1) for t in targets])
    common = torch.promote_types(out.dtype, tgt.dtype) if tgt.dtype.is_floating_point else torch.float64
    both = torch.cat([out.to(common), tgt.to(common)], dim=1).cpu()  # the one transfer
    host_out = both[:, : out.shape[1]].to(out.dtype).reshape(out.shape[0], *outputs[0].shape[1:])
    host_tgt = both[:, out.shape[1] :].to(tgt.dtype).reshape(tgt.shape[0], *targets[0].shape[1:])
    return host_out, host_tgt


# ----------------------------------------------------------------------------- Hugging Face


def _first(value: Any) -> Any:
    while isinstance(value, tuple) and value:  # (logits, hidden_states, ...): the logits
        value = value[0]
    return value


def hf_noise_floor_metrics(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for a Hugging Face ``Trainer``: the estimated floor and its interval.

    Takes an ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair). When ``predictions``
    is a tuple (a model that also returns hidden states), its first element is the logits.
    Returns ``{"noise_floor", "noise_floor_low", "noise_floor_high"}`` (the Trainer logs them
    as ``eval_noise_floor``, ...). To keep your own metrics, merge: ``{**mine(p),
    **hf_noise_floor_metrics(p)}``.

    Example:
        >>> import numpy as np
        >>> logits, labels = 5.0 * np.eye(3, dtype=np.float32).repeat(4, axis=0), np.arange(3).repeat(4)
        >>> hf_noise_floor_metrics((logits, labels))
        {'noise_floor': 0.0, 'noise_floor_low': 0.0, 'noise_floor_high': 0.0}
    """
    if isinstance(eval_pred, Mapping):
        predictions, labels = eval_pred.get("predictions"), eval_pred.get("label_ids")
    elif hasattr(eval_pred, "predictions"):
        predictions, labels = eval_pred.predictions, getattr(eval_pred, "label_ids", None)
    elif isinstance(eval_pred, (tuple, list)) and len(eval_pred) >= 2:
        predictions, labels = eval_pred[0], eval_pred[1]
    else:
        raise ValueError(
            f"Expected argument `eval_pred` to be an EvalPrediction or a (predictions, label_ids) pair but got "
            f"{type(eval_pred).__name__}."
        )
    if predictions is None or labels is None:
        raise ValueError(
            "Expected argument `eval_pred` to carry both predictions and label_ids (the Trainer needs labels in the "
            "evaluation dataset, and `prediction_loss_only=False`)."
        )
    estimate = estimate_noise_floor(_first(predictions), _first(labels))
    return {"noise_floor": estimate.value, "noise_floor_low": estimate.low, "noise_floor_high": estimate.high}
