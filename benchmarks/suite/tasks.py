"""The suite's tasks: data with a known noise floor, a model, a loss and a metric.

Every task is built from a seed alone (generated or bundled data, no download) and runs in
a few seconds on one CPU thread. Classification tasks carry symmetric label noise at rate η
in the training *and* validation labels; the test labels stay clean. Their noise floor is
``normguard.label_noise_floor(η, C)``. The regression task's floor is its noise variance σ².

====================  =========================  ==============================  =====  ======
task                  data (train / val / test)  model (parameters)              batch  epochs
====================  =========================  ==============================  =====  ======
``cnn_digits``        8×8 digits as 1×8×8,       2 conv (8, 16) + 2 linear        64     100
                      1000 / 300 / 497           (≈ 18 k)
``mlp_tabular``       make_classification: 20    MLP 20-128-128-10 (≈ 20 k)       64     100
                      features (8 informative,
                      4 redundant), 10 classes,
                      1000 / 500 / 2000
``regression``        the paper's power-law      ReLU MLP 450-64-1 (≈ 29 k)       32     60
                      data, α = 1.5, d = 450,
                      300 / 300 / 2000
``bert_majority``     length-16 sequences over   BertForSequenceClassification    128    100
                      12 tokens; label = the     from a config: 2 layers,
                      most frequent of tokens    hidden 32, 2 heads (≈ 19 k)
                      0–3; 600 / 300 / 1000
``bert_majority_hf``  as ``bert_majority``       the same BERT (same initial      128    100
                                                 weights), in a
                                                 ``transformers.Trainer``
====================  =========================  ==============================  =====  ======

``bert_majority_hf`` is run by ``hf_harness.py`` (a ``transformers.Trainer``, Hugging Face's
arms), every other task by ``harness.py`` (a Lightning ``Trainer``).
Noise levels: η ∈ {0, 0.15, 0.35} for classification, σ² ∈ {1.0, 0.1} for the regression.
Seconds per run (one thread, Lightning's per-step overhead included) are in the report's
``s/run`` column; they were measured on a shared, loaded machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import normguard as ng
from normguard.demos import tiny_bert


@dataclass
class TaskData:
    """Tensors of one task instance and what the harness needs to know about them."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int  # 0 for regression
    floor: float  # noise floor of the training loss


@dataclass(frozen=True)
class TaskSpec:
    """A task family: builds data and model for (noise, seed)."""

    name: str
    kind: str  # "classification" | "regression"
    noises: tuple[float, ...]  # η for classification, σ² for regression
    epochs: int
    batch_size: int
    build_data: Callable[[float, int], TaskData]
    build_model: Callable[[TaskData], nn.Module]
    small: dict[str, int] = field(default_factory=dict)  # overrides for the tiny test version
    framework: str = "lightning"  # "transformers": run by suite/hf_harness.py in a transformers.Trainer
    sgd_lr: float = 0.05  # grid 2's SGD setup: peak learning rate (after warmup)
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None  # training batches only

    @property
    def metric(self) -> str:
        return "acc" if self.kind == "classification" else "mse"

    @property
    def mode(self) -> str:
        return "max" if self.kind == "classification" else "min"


NOISE_KINDS = ("uniform", "other", "pair")


def noise_transition(kind: str, rate: float, classes: int) -> Tensor:
    """T[clean, noisy] of a label-noise kind at ``rate`` (float64).

    ``uniform``: with probability ``rate`` the label is redrawn from all C classes (it may stay);
    ``other``: moved to one of the C − 1 other classes; ``pair``: class k → k + 1 mod C.

    Example:
        >>> noise_transition("pair", 0.3, 3)
        tensor([[0.7000, 0.3000, 0.0000],
                [0.0000, 0.7000, 0.3000],
                [0.3000, 0.0000, 0.7000]], dtype=torch.float64)
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"Expected argument `kind` to be one of {NOISE_KINDS} but got {kind!r}.")
    eye = torch.eye(classes, dtype=torch.float64)
    if kind == "uniform":
        return (1 - rate) * eye + rate / classes
    if kind == "other":
        return (1 - rate) * eye + rate * (1 - eye) / (classes - 1)
    return (1 - rate) * eye + rate * eye.roll(1, dims=1)


def label_floor(kind: str, rate: float, classes: int) -> float:
    """Cross-entropy floor H(noisy label | clean label) of a noise kind, with uniform clean classes.

    ``uniform`` is ``normguard.label_noise_floor(rate, classes)`` (the suite's original floor).

    Example:
        >>> [round(label_floor(k, 0.3, 10), 4) for k in ("uniform", "other", "pair")]
        [1.1765, 1.27, 0.6109]
    """
    if kind == "uniform" or rate == 0:
        return ng.label_noise_floor(rate, classes)
    t = noise_transition(kind, rate, classes)
    h = -(t * torch.where(t > 0, t.log(), torch.zeros_like(t))).sum(1)
    return float(h.mean())


def _flip(labels: Tensor, rate: float, classes: int, g: torch.Generator, kind: str = "uniform") -> Tensor:
    """Label noise: each label is changed with probability ``rate`` as ``kind`` says (see
    :func:`noise_transition`); ``uniform`` draws the random numbers the original suite drew."""
    labels = labels.clone()
    if rate > 0:
        flip = torch.rand(len(labels), generator=g) < rate
        n = int(flip.sum())
        if kind == "uniform":
            labels[flip] = torch.randint(0, classes, (n,), generator=g)
        elif kind == "other":
            labels[flip] = (labels[flip] + torch.randint(1, classes, (n,), generator=g)) % classes
        elif kind == "pair":
            labels[flip] = (labels[flip] + 1) % classes
        else:
            raise ValueError(f"Expected argument `kind` to be one of {NOISE_KINDS} but got {kind!r}.")
    return labels


def _split(
    x: Tensor, y: Tensor, sizes: tuple[int, int, int], eta: float, classes: int, seed: int, kind: str = "uniform"
) -> TaskData:
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(len(y), generator=g)
    a, b, c = sizes
    tr, va, te = perm[:a], perm[a : a + b], perm[a + b : a + b + c]
    return TaskData(
        x[tr],
        _flip(y[tr], eta, classes, g, kind),
        x[va],
        _flip(y[va], eta, classes, g, kind),
        x[te],
        y[te],
        classes,
        label_floor(kind, eta, classes),
    )


# ---------------------------------------------------------------------- (a) CNN on digits
def digits_data(
    eta: float, seed: int, kind: str = "uniform", sizes: tuple[int, int, int] = (1000, 300, 497)
) -> TaskData:
    """scikit-learn's bundled 8×8 digits as 1×8×8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    x_all, y_all = load_digits(return_X_y=True)
    x = torch.tensor(x_all / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y_all, dtype=torch.long)
    return _split(x, y, sizes, eta, 10, seed, kind)


def digits_small_data(eta: float, seed: int, kind: str = "uniform") -> TaskData:
    """:func:`digits_data` with 400 training rows (300 validation, 497 test): grid 2's BatchNorm CNN."""
    return digits_data(eta, seed, kind, (400, 300, 497))


def digits_cnn(data: TaskData) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


# ---------------------------------------------------------------------- (e) CNN with BatchNorm, augmented
def shift_augment(x: Tensor, g: torch.Generator, max_shift: int = 1) -> Tensor:
    """Random translations of a batch of images by up to ``max_shift`` pixels each way (zero fill).

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
        >>> y = shift_augment(x, torch.Generator().manual_seed(0))
        >>> y.shape, bool((y.sum((1, 2, 3)) <= x.sum((1, 2, 3))).all())
        (torch.Size([8, 1, 4, 4]), True)
    """
    n, _, h, w = x.shape
    k = 2 * max_shift + 1
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, k, (n,), generator=g)
    dx = torch.randint(0, k, (n,), generator=g)
    out = torch.empty_like(x)
    for i in range(k):
        for j in range(k):
            sel = (dy == i) & (dx == j)
            if bool(sel.any()):
                out[sel] = padded[sel, :, i : i + h, j : j + w]
    return out


def digits_bn_cnn(data: TaskData) -> nn.Module:
    """Three bias-free 3×3 convolutions, each followed by BatchNorm (so the function does not
    depend on their weight norms), global average pooling and a linear head (≈ 6 k parameters)."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 8),
        *block(8, 16),
        nn.MaxPool2d(2),
        *block(16, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


# ---------------------------------------------------------------------- (b) MLP on tabular
def tabular_data(eta: float, seed: int, kind: str = "uniform") -> TaskData:
    """``make_classification``: 20 features (8 informative, 4 redundant), 10 classes, 2 clusters each."""
    from sklearn.datasets import make_classification

    x_np, y_np = make_classification(
        n_samples=3500,
        n_features=20,
        n_informative=8,
        n_redundant=4,
        n_classes=10,
        n_clusters_per_class=2,
        class_sep=2.5,
        flip_y=0.0,
        random_state=seed,
    )
    x = torch.tensor(x_np, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    return _split(x, torch.tensor(y_np, dtype=torch.long), (1000, 500, 2000), eta, 10, seed, kind)


def tabular_mlp(data: TaskData) -> nn.Module:
    d = data.x_train.shape[1]
    return nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


# ---------------------------------------------------------------------- (c) the paper's regression
def power_law_regression(
    n: int, alpha: float, *, gamma: float = 2 / 3, sigma2: float = 1.0, n_val: int | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """The paper's linear setting: x = Σ^½ z, Σ = diag(i^-α), d = n / γ, y = xᵀβ* + ε, ε ~ N(0, σ²),
    β* ~ N(0, 10/d · I); 2000 test rows.

    The generator the suite's saved traces were made with (normguard 0.1's
    ``normguard.tasks.power_law_regression``, torch RNG). The package's
    ``normguard.science.datasets.power_law_regression`` draws the same distribution with
    numpy's RNG, i.e. other samples; the suite keeps its own copy so that every saved
    trace stays reproducible.
    """
    g = torch.Generator().manual_seed(seed)
    d = max(1, round(n / gamma))
    scale = torch.arange(1, d + 1, dtype=torch.float64).pow(-alpha / 2)
    beta = torch.randn(d, generator=g, dtype=torch.float64) * math.sqrt(10.0 / d)
    out = {}
    for split, size in (("train", n), ("val", n_val or max(n // 2, 50)), ("test", 2000)):
        x = torch.randn(size, d, generator=g, dtype=torch.float64) * scale
        y = x @ beta + math.sqrt(sigma2) * torch.randn(size, generator=g, dtype=torch.float64)
        out[f"x_{split}"], out[f"y_{split}"] = x.float(), y.float()
    return out


def regression_data(sigma2: float, seed: int) -> TaskData:
    """:func:`power_law_regression` (α = 1.5, n = 300, d = 450); floor σ²."""
    d = power_law_regression(300, 1.5, sigma2=sigma2, n_val=300, seed=seed)
    return TaskData(d["x_train"], d["y_train"], d["x_val"], d["y_val"], d["x_test"], d["y_test"], 0, float(sigma2))


def regression_mlp(data: TaskData) -> nn.Module:
    """A shallow ReLU MLP (the paper's shallow-network experiment, one hidden layer of 64)."""
    return nn.Sequential(nn.Linear(data.x_train.shape[1], 64), nn.ReLU(), nn.Linear(64, 1), nn.Flatten(0))


# ---------------------------------------------------------------------- (d) tiny BERT
SEQ_LEN, VOCAB, MAJ_CLASSES = 16, 12, 4


def majority_data(eta: float, seed: int, kind: str = "uniform") -> TaskData:
    """Token sequences; label = which of tokens 0..3 occurs most often (ties: the smallest)."""
    g = torch.Generator().manual_seed(20_000 + seed)
    n = 2300
    x = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=g)
    counts = torch.stack([(x == c).sum(1) for c in range(MAJ_CLASSES)], 1)
    y = counts.argmax(1)  # first maximum on ties
    return _split(x, y, (600, 300, 1000), eta, MAJ_CLASSES, seed, kind)


def majority_hf_bert(data: TaskData) -> nn.Module:
    """The task's ``BertForSequenceClassification`` itself (``normguard.demos.tiny_bert``, no dropout):
    what a ``transformers.Trainer`` trains (``benchmarks/suite/hf_harness.py``)."""
    return tiny_bert(data.classes, vocab_size=VOCAB, seq_len=SEQ_LEN, dropout=0.0, type_vocab_size=1)


class BertClassifier(nn.Module):
    """The task's tiny BERT (:func:`majority_hf_bert`) for Lightning: ``forward(tokens)`` returns logits."""

    def __init__(self, data: TaskData) -> None:
        super().__init__()
        self.bert = majority_hf_bert(data)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.bert(input_ids=tokens).logits


def majority_bert(data: TaskData) -> nn.Module:
    return BertClassifier(data)


# ---------------------------------------------------------------------- registry
def mse(out: Tensor, y: Tensor) -> Tensor:
    return (out - y).pow(2).mean()


def loss_fn(spec: TaskSpec) -> Callable[[Tensor, Tensor], Tensor]:
    return nn.functional.cross_entropy if spec.kind == "classification" else mse


def metric_value(spec: TaskSpec, out: Tensor, y: Tensor) -> float:
    """Accuracy in % (classification) or MSE (regression)."""
    if spec.kind == "classification":
        return 100.0 * (out.argmax(1) == y).float().mean().item()
    return mse(out, y).item()


TASKS: dict[str, TaskSpec] = {
    "cnn_digits": TaskSpec(
        "cnn_digits", "classification", (0.0, 0.15, 0.35), 100, 64, digits_data, digits_cnn, {"epochs": 40}
    ),
    "mlp_tabular": TaskSpec(
        "mlp_tabular", "classification", (0.0, 0.15, 0.35), 100, 64, tabular_data, tabular_mlp, {"epochs": 40}
    ),
    "regression": TaskSpec(
        "regression", "regression", (1.0, 0.1), 60, 32, regression_data, regression_mlp, {"epochs": 25}
    ),
    "bert_majority": TaskSpec(
        "bert_majority", "classification", (0.0, 0.15, 0.35), 100, 128, majority_data, majority_bert, {"epochs": 30}
    ),
    "bert_majority_hf": TaskSpec(
        "bert_majority_hf",
        "classification",
        (0.0, 0.15, 0.35),
        100,
        128,
        majority_data,
        majority_hf_bert,
        {"epochs": 30},
        framework="transformers",
    ),
}

# Tasks of grid 2 only (``suite/grid2.py``); kept out of TASKS so the original suite's tables stay as they are.
EXTRA_TASKS: dict[str, TaskSpec] = {
    "cnn_bn_digits": TaskSpec(
        "cnn_bn_digits",
        "classification",
        (0.0, 0.3),
        30,
        32,
        digits_small_data,
        digits_bn_cnn,
        {"epochs": 15},
        sgd_lr=0.1,
        augment=shift_augment,
    ),
}
ALL_TASKS: dict[str, TaskSpec] = {**TASKS, **EXTRA_TASKS}


def build_data(spec: TaskSpec, noise: float, seed: int, kind: str = "uniform") -> TaskData:
    """``spec.build_data(noise, seed)``, with a label-noise ``kind`` other than ``"uniform"`` passed on
    (``"clean"``: no noise, ``noise`` must be 0)."""
    if kind == "clean":
        if noise != 0:
            raise ValueError(f"Expected argument `noise` to be 0 for clean labels but got {noise}.")
        kind = "uniform"
    if kind == "uniform":
        return spec.build_data(noise, seed)
    if spec.kind != "classification":
        raise ValueError(f"Expected a classification task for noise kind {kind!r} but {spec.name!r} is a regression.")
    return spec.build_data(noise, seed, kind)  # type: ignore[call-arg]


__all__ = [
    "ALL_TASKS",
    "EXTRA_TASKS",
    "NOISE_KINDS",
    "TASKS",
    "TaskData",
    "TaskSpec",
    "build_data",
    "label_floor",
    "loss_fn",
    "metric_value",
    "noise_transition",
]
