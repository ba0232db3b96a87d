"""The noise floor: known (label_noise_floor) and estimated (confident learning, validation MSE).

The estimator is checked on synthetic logits whose labels were corrupted by a known transition
matrix T[clean, noisy]: each example's logits point at its clean class (a well-trained model),
its label is drawn from T's row. Tolerances (stated, measured on these seeds):

* T recovered within 0.05 in every entry (10 000 examples, 10 classes);
* the floor within ±10 % of H(noisy | clean) for symmetric noise of 15 % or more (both
  definitions) and for pairs flipped at 30 %;
* clean labels: a floor under 0.01 nats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from normguard.noise_floor import (
    FloorEstimate,
    NoiseFloorEstimator,
    estimate_noise_floor,
    estimate_transition_matrix,
    hf_noise_floor_metrics,
    label_noise_floor,
)

C = 10


# ----------------------------------------------------------------------------- helpers


def symmetric(rate: float, model: str, classes: int = C) -> np.ndarray:
    if model == "uniform":
        matrix = np.full((classes, classes), rate / classes)
        np.fill_diagonal(matrix, 1 - rate + rate / classes)
    else:
        matrix = np.full((classes, classes), rate / (classes - 1))
        np.fill_diagonal(matrix, 1 - rate)
    return matrix


def pair_flips(rate: float, classes: int = C) -> np.ndarray:
    matrix = np.eye(classes) * (1 - rate)
    for k in range(0, classes, 2):
        matrix[k, k + 1] = matrix[k + 1, k] = rate
    return matrix


def synthetic(
    transition: np.ndarray, n: int, seed: int, scale: float = 6.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, noisy labels, clean labels): logits scale·onehot(clean) + N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    classes = transition.shape[0]
    clean = torch.randint(0, classes, (n,), generator=gen)
    logits = scale * torch.nn.functional.one_hot(clean, classes) + torch.randn(n, classes, generator=gen)
    noisy = torch.multinomial(torch.as_tensor(transition)[clean], 1, generator=gen).squeeze(1)
    return logits, noisy, clean


READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[Counter[str]]:
    """Count calls of every Tensor method that moves a value to the host."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str):  # type: ignore[no-untyped-def]
        original = originals[name]

        def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


# ----------------------------------------------------------------------------- label_noise_floor


def test_both_symmetric_conventions_against_hand_computed_values() -> None:
    # "uniform", 40 %, 10 classes: keep 0.6 + 0.04 = 0.64, each other class 0.04.
    uniform = -(0.64 * math.log(0.64)) - 9 * 0.04 * math.log(0.04)
    # "other": keep 0.6, each other class 0.4 / 9.
    other = -(0.6 * math.log(0.6)) - 0.4 * math.log(0.4 / 9)
    assert uniform == pytest.approx(1.44442, abs=1e-5)
    assert other == pytest.approx(1.55190, abs=1e-5)
    assert label_noise_floor(0.4, 10) == pytest.approx(uniform, rel=1e-12)
    assert label_noise_floor(0.4, 10, noise_model="uniform") == pytest.approx(uniform, rel=1e-12)
    assert label_noise_floor(0.4, 10, noise_model="other") == pytest.approx(other, rel=1e-12)
    assert round(label_noise_floor(0.3, 10), 4) == 1.1765  # unchanged default
    # 2 classes, "other" at 30 %: the binary entropy of 0.3; "uniform" at 60 % is the same process.
    binary = -(0.3 * math.log(0.3)) - 0.7 * math.log(0.7)
    assert label_noise_floor(0.3, 2, noise_model="other") == pytest.approx(binary)
    assert label_noise_floor(0.6, 2) == pytest.approx(binary)


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.8])
def test_uniform_rate_is_the_other_rate_times_c_minus_1_over_c(rate: float) -> None:
    assert label_noise_floor(rate, 7) == pytest.approx(label_noise_floor(rate * 6 / 7, 7, noise_model="other"))


def test_transition_matrix_gives_the_same_floor_as_the_rate() -> None:
    for model in ("uniform", "other"):
        assert label_noise_floor(transition=symmetric(0.4, model)) == pytest.approx(
            label_noise_floor(0.4, 10, noise_model=model)  # type: ignore[arg-type]
        )
    binary = -(0.3 * math.log(0.3)) - 0.7 * math.log(0.7)
    assert label_noise_floor(transition=pair_flips(0.3)) == pytest.approx(binary)
    assert label_noise_floor(transition=torch.tensor(pair_flips(0.3)), num_classes=10) == pytest.approx(binary)
    assert label_noise_floor(transition=np.eye(4)) == 0.0


def test_class_prior_weights_each_clean_class() -> None:
    matrix = [[1.0, 0.0], [0.3, 0.7]]  # class 0 clean, class 1 flipped at 30 %
    binary = -(0.3 * math.log(0.3)) - 0.7 * math.log(0.7)
    assert label_noise_floor(transition=matrix) == pytest.approx(binary / 2)
    assert label_noise_floor(transition=matrix, class_prior=[0.75, 0.25]) == pytest.approx(binary / 4)
    # Symmetric noise: every class has the same entropy, so the prior changes nothing.
    prior = np.arange(1, 11) / 55
    assert label_noise_floor(0.2, 10, class_prior=prior) == pytest.approx(label_noise_floor(0.2, 10))


def test_clean_labels_give_plus_zero() -> None:
    for value in (label_noise_floor(0.0, 10), label_noise_floor(0.0, 3, noise_model="other")):
        assert value == 0.0 and math.copysign(1.0, value) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"noise_rate": 1.0, "num_classes": 10}, "noise_rate"),
        ({"noise_rate": -0.1, "num_classes": 10}, "noise_rate"),
        ({"noise_rate": 0.2, "num_classes": 1}, "num_classes"),
        ({"noise_rate": 0.2, "num_classes": 2.5}, "num_classes"),
        ({"noise_rate": 0.2}, "num_classes"),
        ({"noise_rate": 0.2, "num_classes": 10, "noise_model": "symmetric"}, "noise_model"),
        ({}, "noise_rate"),
        ({"transition": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}, "transition"),
        ({"transition": [[0.5, 0.6], [0.0, 1.0]]}, "transition"),
        ({"transition": [[1.2, -0.2], [0.0, 1.0]]}, "transition"),
        ({"transition": [[float("nan"), 1.0], [0.0, 1.0]]}, "transition"),
        ({"transition": "pairs"}, "transition"),
        ({"transition": np.eye(3), "noise_rate": 0.2}, "noise_rate"),
        ({"transition": np.eye(3), "noise_model": "other"}, "noise_model"),
        ({"transition": np.eye(3), "num_classes": 4}, "num_classes"),
        ({"transition": np.eye(3), "class_prior": [0.5, 0.5]}, "class_prior"),
        ({"transition": np.eye(3), "class_prior": [0.5, 0.6, -0.1]}, "class_prior"),
        ({"noise_rate": 0.2, "num_classes": 3, "class_prior": [0.2, 0.2, 0.2]}, "class_prior"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=f"`{argument}`"):
        label_noise_floor(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the estimator on synthetic logits


CASES = [
    ("uniform 15%", symmetric(0.15, "uniform")),
    ("uniform 20%", symmetric(0.20, "uniform")),
    ("uniform 40%", symmetric(0.40, "uniform")),
    ("other 15%", symmetric(0.15, "other")),
    ("other 20%", symmetric(0.20, "other")),
    ("other 40%", symmetric(0.40, "other")),
    ("pairs 30%", pair_flips(0.30)),
]


@pytest.mark.parametrize(("name", "transition"), CASES, ids=[name for name, _ in CASES])
def test_estimator_recovers_the_transition_matrix_and_the_floor(name: str, transition: np.ndarray) -> None:
    logits, noisy, _ = synthetic(transition, 10_000, seed=1)
    estimated, prior = estimate_transition_matrix(logits, noisy)
    assert np.abs(estimated.numpy() - transition).max() < 0.05, name
    assert prior.sum().item() == pytest.approx(1.0)
    assert np.abs(prior.numpy() - 0.1).max() < 0.02
    truth = label_noise_floor(transition=transition)
    estimate = estimate_noise_floor(logits, noisy, num_bootstrap=0)
    assert estimate.kind == "classification" and estimate.n == 10_000
    assert estimate.value == pytest.approx(truth, rel=0.10), name


def test_clean_labels_give_a_floor_near_zero() -> None:
    logits, labels, _ = synthetic(np.eye(C), 10_000, seed=2)
    estimated, _ = estimate_transition_matrix(logits, labels)
    assert np.abs(estimated.numpy() - np.eye(C)).max() < 0.01
    estimate = estimate_noise_floor(logits, labels)
    assert 0.0 <= estimate.low <= estimate.value <= estimate.high < 0.01


def test_a_weak_model_overstates_the_floor() -> None:
    """Errors of the model look like label noise: blurred logits on clean labels read as noisy."""
    sharp = estimate_noise_floor(*synthetic(np.eye(C), 4000, seed=3, scale=6.0)[:2], num_bootstrap=0)
    blurred = estimate_noise_floor(*synthetic(np.eye(C), 4000, seed=3, scale=2.0)[:2], num_bootstrap=0)
    assert sharp.value < 0.01 < 0.3 < blurred.value


def test_interval_is_deterministic_holds_the_estimate_and_usually_the_truth() -> None:
    transition = symmetric(0.2, "other")
    truth = label_noise_floor(transition=transition)
    held = 0
    for seed in range(10):
        logits, noisy, _ = synthetic(transition, 1000, seed=100 + seed)
        estimate = estimate_noise_floor(logits, noisy)
        assert estimate.low <= estimate.value <= estimate.high
        held += estimate.low <= truth <= estimate.high
    assert held >= 8  # a 95 % interval; 10 of 10 on these seeds
    logits, noisy, _ = synthetic(transition, 1000, seed=7)
    first = estimate_noise_floor(logits, noisy)
    assert estimate_noise_floor(logits, noisy) == first
    assert estimate_noise_floor(logits, noisy, seed=1) != first
    assert estimate_noise_floor(logits, noisy, confidence=0.5).high < first.high
    wide = estimate_noise_floor(logits, noisy, num_bootstrap=0)
    assert wide.low == wide.value == wide.high == first.value


def test_floor_estimate_is_json_able() -> None:
    logits, noisy, _ = synthetic(pair_flips(0.3), 500, seed=4)
    estimate = estimate_noise_floor(logits, noisy)
    assert isinstance(estimate, FloorEstimate)
    data = json.loads(json.dumps(dataclasses.asdict(estimate)))
    assert data["kind"] == "classification" and data["n"] == 500
    assert all(isinstance(data[key], float) for key in ("value", "low", "high"))


def test_inputs_as_probabilities_log_probabilities_numpy_and_with_ignored_labels() -> None:
    logits, noisy, _ = synthetic(symmetric(0.3, "uniform"), 2000, seed=5)
    base = estimate_noise_floor(logits, noisy)
    assert estimate_noise_floor(torch.softmax(logits, 1), noisy) == pytest.approx(base)
    assert estimate_noise_floor(torch.log_softmax(logits, 1), noisy) == pytest.approx(base)
    assert estimate_noise_floor(logits.numpy(), noisy.numpy()) == base
    assert estimate_noise_floor(logits.double(), noisy.to(torch.int32)) == base
    # -100 (Hugging Face's ignore index) is not an example.
    padded = estimate_noise_floor(torch.cat([logits, torch.randn(50, C)]), torch.cat([noisy, torch.full((50,), -100)]))
    assert padded == base
    # (batch, sequence, classes) logits with (batch, sequence) labels: every position an example.
    assert estimate_noise_floor(logits.view(100, 20, C), noisy.view(100, 20)) == base
    # Float class indices with an explicit task.
    assert estimate_noise_floor(logits, noisy.double(), task="classification") == base


def test_binary_with_one_logit_per_example() -> None:
    transition = np.array([[0.8, 0.2], [0.2, 0.8]])
    logits, noisy, _ = synthetic(transition, 4000, seed=6)
    one_logit = logits[:, 1] - logits[:, 0]  # the same model, as one logit (sigmoid)
    two = estimate_noise_floor(logits, noisy, num_bootstrap=0)
    one = estimate_noise_floor(one_logit, noisy, task="classification", num_bootstrap=0)
    assert one.value == pytest.approx(two.value)
    assert one.value == pytest.approx(label_noise_floor(transition=transition), rel=0.1)


@pytest.mark.parametrize(
    ("outputs", "targets", "kwargs", "message"),
    [
        (torch.randn(8, 3), torch.rand(8), {}, "task='classification'"),
        (torch.randn(8), torch.randint(0, 2, (8,)), {}, "task="),
        (torch.randint(0, 3, (8, 3)), torch.randint(0, 3, (8,)), {}, "`outputs`"),
        (torch.randn(8, 3), torch.randint(0, 3, (7,)), {}, "first"),
        (torch.randn(8, 3), torch.randint(0, 3, (8,)), {"task": "segmentation"}, "`task`"),
        (torch.randn(8, 3), torch.randint(0, 3, (8,)), {"task": "regression"}, "task='regression'"),
        (torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0]), {}, "`targets`"),
        (torch.randn(8, 3), torch.full((8,), -100), {}, "`targets`"),
        (torch.full((8, 3), float("nan")), torch.randint(0, 3, (8,)), {}, "`outputs`"),
        (torch.randn(8, 3), torch.rand(8) * 3, {"task": "classification"}, "`targets`"),
        (torch.randn(8, 3), torch.randint(0, 3, (8,)), {"confidence": 1.0}, "`confidence`"),
        (torch.randn(8, 3), torch.randint(0, 3, (8,)), {"num_bootstrap": -1}, "`num_bootstrap`"),
        (torch.randn(8), torch.full((8,), float("inf")), {}, "`targets`"),
        (torch.randn(0, 3), torch.randint(0, 3, (0,)), {}, "at least one"),
        ("logits", torch.randint(0, 3, (8,)), {}, "`outputs`"),
    ],
)
def test_bad_inputs_are_named(outputs: object, targets: torch.Tensor, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        estimate_noise_floor(outputs, targets, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- regression


def test_regression_estimate_is_the_validation_mse_biased_up_by_the_model_error() -> None:
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(20_000, generator=gen)
    targets = signal + 0.5 * torch.randn(20_000, generator=gen)  # σ² = 0.25
    exact = estimate_noise_floor(signal, targets)
    assert exact.kind == "regression" and exact.n == 20_000
    assert exact.value == pytest.approx(0.25, rel=0.05)
    assert exact.low < 0.25 < exact.high
    # A model off by 0.3 everywhere: σ² + 0.09 (the estimate cannot tell the two apart).
    assert estimate_noise_floor(signal + 0.3, targets).value == pytest.approx(0.34, rel=0.05)
    # (N, 1) predictions with (N,) targets; (N, D) with (N, D): the mean over every element.
    assert estimate_noise_floor(signal.unsqueeze(1), targets) == exact
    both = estimate_noise_floor(torch.stack([signal, signal], 1), torch.stack([targets, signal], 1))
    assert both.value == pytest.approx(exact.value / 2) and both.n == 20_000


def test_regression_bad_inputs() -> None:
    with pytest.raises(ValueError, match="`outputs`"):
        estimate_noise_floor(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="task='regression'"):
        estimate_noise_floor(torch.randn(8, 2), torch.randn(8, 3), task="regression")
    one = estimate_noise_floor(torch.tensor([1.0]), torch.tensor([3.0]))
    assert (one.value, one.low, one.high) == (4.0, 0.0, math.inf)


# ----------------------------------------------------------------------------- NoiseFloorEstimator


def test_estimator_batches_equal_the_one_shot_estimate_and_update_never_reads_the_host() -> None:
    logits, noisy, _ = synthetic(pair_flips(0.3), 3000, seed=8)
    estimator = NoiseFloorEstimator()
    with count_host_reads() as counts:
        for batch_logits, batch_labels in zip(logits.split(256), noisy.split(256)):
            estimator.update(batch_logits, batch_labels)
    assert sum(counts.values()) == 0
    assert estimator.num_batches == 12
    with count_host_reads() as counts:
        result = estimator.compute()
    assert counts["cpu"] == 1  # one transfer of outputs and targets together
    assert result == estimate_noise_floor(logits, noisy)
    assert estimator.compute() == result  # compute does not consume the batches
    estimator.reset()
    assert estimator.num_batches == 0
    with pytest.raises(RuntimeError, match="update"):
        estimator.compute()


def test_estimator_regression_sequences_and_batch_checks() -> None:
    gen = torch.Generator().manual_seed(9)
    predictions, targets = torch.randn(300, 2, generator=gen), torch.randn(300, 2, generator=gen)
    estimator = NoiseFloorEstimator()
    for p, t in zip(predictions.split(64), targets.split(64)):
        estimator.update(p, t)
    assert estimator.compute() == estimate_noise_floor(predictions, targets)
    with pytest.raises(ValueError, match="first batch"):
        estimator.update(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="task="):  # now fixed to regression
        estimator.update(torch.randn(4, 2), torch.randint(0, 2, (4,)))
    # Sequences of different lengths, -100 padding: every labelled position is an example.
    estimator = NoiseFloorEstimator()
    logits, labels, _ = synthetic(symmetric(0.3, "other", 5), 600, seed=10)
    short, long = (
        (logits[:200].view(10, 20, 5), labels[:200].view(10, 20)),
        (logits[200:].view(10, 40, 5), labels[200:]),
    )
    estimator.update(*short)
    estimator.update(long[0], torch.where(torch.arange(400) % 40 < 35, long[1], -100).view(10, 40))
    kept = torch.arange(400) % 40 < 35
    expected = estimate_noise_floor(
        torch.cat([logits[:200], logits[200:][kept]]), torch.cat([labels[:200], labels[200:][kept]])
    )
    assert estimator.compute() == expected
    with pytest.raises(ValueError, match="`task`"):
        NoiseFloorEstimator(task="ranking")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- torchmetrics


def test_noise_floor_metric_matches_the_one_shot_estimate() -> None:
    pytest.importorskip("torchmetrics")
    from normguard.noise_metric import NoiseFloorMetric

    logits, noisy, _ = synthetic(symmetric(0.2, "uniform"), 2000, seed=11)
    metric = NoiseFloorMetric()
    with count_host_reads() as counts:
        for batch_logits, batch_labels in zip(logits.split(300), noisy.split(300)):
            assert metric(batch_logits, batch_labels) is None  # forward only updates
    assert sum(counts.values()) == 0
    expected = estimate_noise_floor(logits, noisy)
    assert metric.estimate() == expected
    values = metric.compute()
    assert {k: v.item() for k, v in values.items()} == {
        "value": expected.value,
        "low": expected.low,
        "high": expected.high,
        "n": 2000,
    }
    metric.reset()
    metric.update(logits[:500], noisy[:500])
    assert metric.estimate() == estimate_noise_floor(logits[:500], noisy[:500])
    regression = NoiseFloorMetric(task="regression")
    regression.update(torch.zeros(10, 1), torch.ones(10))
    assert regression.estimate().kind == "regression" and regression.estimate().value == 1.0
    assert regression.kind == "regression" and metric.kind == "classification"


def test_noise_floor_metric_in_a_one_process_distributed_run(tmp_path: Path) -> None:
    """States are gathered through torch.distributed (gloo, world size 1) before the estimate."""
    pytest.importorskip("torchmetrics")
    import torch.distributed as dist

    from normguard.noise_metric import NoiseFloorMetric

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        logits, noisy, _ = synthetic(pair_flips(0.3), 1000, seed=12)
        metric = NoiseFloorMetric()
        for batch_logits, batch_labels in zip(logits.split(128), noisy.split(128)):
            metric.update(batch_logits, batch_labels)
        assert metric.estimate() == estimate_noise_floor(logits, noisy)
        assert isinstance(metric.outputs, list) and len(metric.outputs) == 8  # unsynced again after compute
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_noise_floor_metrics_on_an_eval_prediction() -> None:
    transformers = pytest.importorskip("transformers")
    logits, noisy, _ = synthetic(symmetric(0.3, "uniform"), 1500, seed=13)
    expected = estimate_noise_floor(logits, noisy)
    keys = {"noise_floor": expected.value, "noise_floor_low": expected.low, "noise_floor_high": expected.high}
    hidden = np.zeros((1500, 4), dtype=np.float32)
    for predictions in (logits.numpy(), (logits.numpy(), hidden)):  # a tuple: the logits come first
        eval_pred = transformers.EvalPrediction(predictions=predictions, label_ids=noisy.numpy())
        metrics = hf_noise_floor_metrics(eval_pred)
        assert metrics == pytest.approx(keys)
        assert all(type(v) is float for v in metrics.values())
    assert hf_noise_floor_metrics((logits.numpy(), noisy.numpy())) == pytest.approx(keys)
    # A regression head (num_labels=1): predictions (N, 1), float labels (N,).
    reg = hf_noise_floor_metrics(transformers.EvalPrediction(np.zeros((4, 1), np.float32), np.ones(4, np.float32)))
    assert reg["noise_floor"] == 1.0
    with pytest.raises(ValueError, match="label_ids"):
        hf_noise_floor_metrics(transformers.EvalPrediction(predictions=logits.numpy(), label_ids=None))
    with pytest.raises(ValueError, match="`eval_pred`"):
        hf_noise_floor_metrics(logits.numpy())


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_estimator_loads_neither_torchmetrics_nor_scipy() -> None:
    code = "import sys, normguard.noise_floor; print(sorted({'torchmetrics', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
