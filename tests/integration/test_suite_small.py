"""Tiny versions of the benchmark suite's tasks through its harness (benchmarks/suite/).

Structural facts of every task's trace, and directions that must hold: without intervention
the training loss of a 35 %-noise task goes under the noise floor, EarlyStopping's restored
weights beat its own last epoch on a memorising run, and replaying EarlyStopping on the
``none`` trace reproduces the real arm (the offline analysis rests on that); and the normguard
arms' directions (``stop`` no later than EarlyStopping at equal accuracy, ``hold_floor`` better
than no intervention, clean labels untouched). The full suite
is slow and is not run by pytest unless ``NORMGUARD_FULL_SUITE=1``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

from normguard.monitor import ENDED_WORSE_BY

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from suite import analysis, hf_harness  # noqa: E402
from suite.harness import ARMS, ArmUnavailable, run  # noqa: E402
from suite.tasks import TASKS  # noqa: E402


@pytest.fixture(autouse=True)
def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "normguard"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_task_runs_and_traces(task: str, tmp_path: Path) -> None:
    spec = TASKS[task]
    hf = spec.framework == "transformers"
    if task.startswith("bert_majority"):
        pytest.importorskip("transformers")
    noise = spec.noises[-1]
    runner = hf_harness.run if hf else run
    r = runner(task, noise, 0, "none", epochs=3, root=tmp_path)
    assert r["epochs_trained"] == 3 and len(r["trace"]) == 3
    assert [t["epoch"] for t in r["trace"]] == [1, 2, 3]
    assert r["final_test_metric"] == r["trace"][-1]["test_metric"]
    for t in r["trace"]:
        assert all(math.isfinite(t[k]) for k in ("train_loss", "val_loss", "val_metric", "test_metric", "norm"))
        assert 0 < t["norm_decayed"] <= t["norm"] * (1 + 1e-5)
        assert t["dist_init"] > 0 and t["dist_best"] >= 0 and t["layers"]
        # the Trainer's AdamW leaves biases and LayerNorm weights undecayed (its own param group)
        assert t["weight_decay"] == ([0.01, 0.0] if hf else [0.01])
    best = analysis.best_epoch(r)
    assert r["trace"][best - 1]["dist_best"] == 0.0
    assert (tmp_path / f"{task}.jsonl.xz").exists()  # one compressed file per task
    again = runner(task, noise, 0, "none", epochs=3, root=tmp_path)  # reused from disk
    assert again["trace"] == r["trace"]


def test_hf_task_starts_from_the_lightning_task_weights_and_restores_as_configured(tmp_path: Path) -> None:
    """``bert_majority_hf`` trains the Lightning task's model (same initial weights); Hugging Face's
    ``load_best_model_at_end`` ends on the first best validation epoch, and ``hold_floor`` (default
    ``restore_best_at_end="engaged_or_worse"``) puts the best weights back in a run it never
    regularised once that run ended more than 2 % below its best validation score."""
    pytest.importorskip("transformers")
    from suite.tasks import majority_bert

    data = TASKS["bert_majority"].build_data(0.35, 2)
    torch.manual_seed(2)
    lightning_model = majority_bert(data).bert
    torch.manual_seed(2)
    hf_model = TASKS["bert_majority_hf"].build_model(data)
    assert all(torch.equal(v, hf_model.state_dict()[k]) for k, v in lightning_model.state_dict().items())

    # seed 2 at 35 % noise: validation accuracy best at epoch 10 of 11 (saved trace of the suite)
    es = hf_harness.run("bert_majority_hf", 0.35, 2, "early_stopping", epochs=11, root=tmp_path)
    best = analysis.best_epoch(es)
    assert best < es["epochs_trained"], "the validation metric peaked at the last epoch: nothing to restore"
    assert es["final_test_metric"] == es["trace"][best - 1]["test_metric"] != es["trace"][-1]["test_metric"]
    assert es["restored_checkpoint"]

    hold = hf_harness.run("bert_majority_hf", 0.35, 2, "hold_floor_restore", epochs=11, root=tmp_path)
    assert [t["val_metric"] for t in hold["trace"]] == [t["val_metric"] for t in es["trace"]]
    assert min(t["train_loss"] for t in hold["trace"]) > hold["floor"]  # so the controller never engaged
    assert "weight_decay_changed" not in kinds(hold)
    scores = [t["val_metric"] for t in hold["trace"]]
    ended_worse = scores[-1] < max(scores) * (1 - ENDED_WORSE_BY)
    assert ended_worse, "the saved trace ends within 2 % of its best: this test would not reach the restore"
    assert "restore" in kinds(hold)
    assert hold["final_test_metric"] == hold["trace"][best - 1]["test_metric"] != hold["trace"][-1]["test_metric"]


def test_no_intervention_on_35_percent_noise_goes_under_the_floor(tmp_path: Path) -> None:
    r = run("mlp_tabular", 0.35, 0, "none", epochs=TASKS["mlp_tabular"].small["epochs"], root=tmp_path)
    assert r["floor"] > 0
    crossing = analysis.floor_crossing(r)
    assert crossing is not None, "the training loss never went under the noise floor"
    train = analysis.series(r, "train_loss")
    assert train[-1] < r["floor"]
    # memorising: the validation loss ends above its minimum
    val = analysis.series(r, "val_loss")
    assert val[-1] > val.min()


def test_early_stopping_restores_better_than_its_last_epoch_and_replay_matches(tmp_path: Path) -> None:
    epochs = TASKS["regression"].small["epochs"]
    none = run("regression", 1.0, 0, "none", epochs=epochs, root=tmp_path)
    es = run("regression", 1.0, 0, "early_stopping", epochs=epochs, root=tmp_path)
    assert es["restored_checkpoint"]
    assert es["epochs_trained"] < epochs, "EarlyStopping did not stop on a memorising run"
    # test MSE: the restored weights are no worse than the last trained epoch's
    assert es["final_test_metric"] <= es["trace"][-1]["test_metric"]
    # the run is deterministic: the ES trace is a prefix of the none trace, and the replay agrees
    n = es["epochs_trained"]
    assert [t["val_metric"] for t in es["trace"]] == [t["val_metric"] for t in none["trace"][:n]]
    assert analysis.early_stopping_epoch(none, 10) == n
    assert analysis.restore_at(none, n)[1] == pytest.approx(es["final_test_metric"], abs=1e-4)


def test_normguard_arms_run_or_skip_clearly(tmp_path: Path) -> None:
    for name, arm in ARMS.items():
        if not arm.normguard:
            continue
        try:
            r = run("regression", 1.0, 0, name, epochs=12, root=tmp_path)
        except ArmUnavailable as exc:
            assert "rejected" in str(exc) or "unavailable" in str(exc)
            continue
        assert 1 <= r["epochs_trained"] <= 12
        assert all(e["kind"] for e in r["events"])


def test_conditions_on_scripted_traces() -> None:
    """Memorising (train↓, val↑, norm accelerating) vs learning (both ↓, norm decelerating)."""
    epochs = range(1, 31)

    def trace(memorise: bool) -> dict:
        recs = []
        for e in epochs:
            late = max(0, e - 12)
            recs.append(
                {
                    "epoch": e,
                    "train_loss": 2.0 / e if not memorise else 2.0 / e - 0.01 * late,
                    "val_loss": 2.0 / e + (0.05 * late if memorise else 0.0),
                    "val_metric": min(90.0, 50 + 3 * e) if not memorise else 50 + 3 * min(e, 12) - 0.5 * late,
                    "norm": 10 * e**0.1 * math.exp(0.002 * late**2 if memorise else 0.0),
                    "dist_best": 0.0 if not memorise or e <= 12 else 0.3 * late,
                    "dist_init": 1 + 0.1 * e,
                }
            )
        return {"trace": recs, "mode": "max", "floor": 1.0 if memorise else 0.0}

    clean, noisy = trace(False), trace(True)
    assert analysis.best_epoch(noisy) == 12
    assert not any(analysis.c_diverging(clean)[12:])
    assert all(analysis.c_diverging(noisy)[20:])
    assert all(analysis.c_accelerating(noisy)[20:])
    assert not any(v for v in analysis.c_accelerating(clean) if v is not None)
    assert analysis.first_streak([None, True, False, True, True, True], 3) == 6


# ---------------------------------------------------------------------- the normguard arms' direction
# Directions the full suite measured (benchmarks/RESULTS.md, "Benchmark suite"), at the small epoch
# budget, with margins well inside what these small runs showed: on a memorising run ``stop`` stops
# no later than EarlyStopping and keeps its accuracy, ``hold_floor`` beats no intervention, and on
# clean labels neither acts.
def small(task: str, noise: float, arm: str, tmp_path: Path) -> dict:
    return run(task, noise, 0, arm, epochs=TASKS[task].small["epochs"], root=tmp_path)


def kinds(result: dict) -> set[str]:
    return {e["kind"] for e in result["events"]}


@pytest.mark.slow
def test_memorising_classifier_stop_and_hold_floor(tmp_path: Path) -> None:
    budget = TASKS["mlp_tabular"].small["epochs"]
    none = small("mlp_tabular", 0.35, "none", tmp_path)
    es = small("mlp_tabular", 0.35, "early_stopping", tmp_path)
    stop = small("mlp_tabular", 0.35, "stop", tmp_path)
    hold = small("mlp_tabular", 0.35, "hold_floor", tmp_path)

    # stop: fires, restores the best weights, no later than EarlyStopping(patience=10), equal accuracy
    assert stop["epochs_trained"] < budget and "restore" in kinds(stop)
    assert stop["epochs_trained"] <= es["epochs_trained"]
    assert stop["final_test_metric"] >= es["final_test_metric"] - 0.5
    assert stop["final_test_metric"] >= none["final_test_metric"] + 3.0
    # the same with the floor estimated ("auto"): it needs the gap and the norm as well
    auto = small("mlp_tabular", 0.35, "stop_auto", tmp_path)
    assert auto["epochs_trained"] < budget and "restore" in kinds(auto)
    assert auto["final_test_metric"] >= es["final_test_metric"] - 0.5

    # hold_floor: trains the whole budget, raises the decay, and its last weights beat no intervention's
    assert hold["epochs_trained"] == budget
    raised = [e["data"]["new"] for e in hold["events"] if e["kind"] == "weight_decay_changed" and "new" in e["data"]]
    assert raised and max(raised) > 0.01
    assert hold["final_test_metric"] >= none["final_test_metric"] + 3.0


@pytest.mark.slow
def test_clean_labels_known_floor_never_acts_and_auto_never_stops_an_improving_run(tmp_path: Path) -> None:
    budget = TASKS["mlp_tabular"].small["epochs"]
    none = small("mlp_tabular", 0.0, "none", tmp_path)
    for arm in ("stop", "hold_floor"):  # the known floor of clean labels is 0: never crossed
        result = small("mlp_tabular", 0.0, arm, tmp_path)
        assert result["epochs_trained"] == budget, arm
        assert "weight_decay_changed" not in kinds(result) and "detector_fired" not in kinds(result), arm
        # nothing acted, so the run is the unguarded one
        assert [t["val_metric"] for t in result["trace"]] == [t["val_metric"] for t in none["trace"]], arm
    # "auto" estimates the floor, so it can fire on clean labels; it must not stop a run whose
    # validation accuracy would still rise by half a point or more
    auto = small("mlp_tabular", 0.0, "stop_auto", tmp_path)
    stopped = auto["epochs_trained"]
    val = [t["val_metric"] for t in none["trace"]]
    assert max(val[stopped:], default=-1.0) < max(val[:stopped]) + 0.5


@pytest.mark.slow
def test_regression_hold_floor_beats_no_intervention(tmp_path: Path) -> None:
    none = small("regression", 1.0, "none", tmp_path)
    hold = small("regression", 1.0, "hold_floor", tmp_path)
    assert hold["final_test_metric"] < none["final_test_metric"]
    decay = [t["weight_decay"][0] for t in hold["trace"]]
    assert max(decay) > decay[0]


@pytest.mark.skipif(os.environ.get("NORMGUARD_FULL_SUITE") != "1", reason="the full suite is slow (minutes)")
def test_full_suite(tmp_path: Path) -> None:  # pragma: no cover - manual
    import importlib.util

    spec = importlib.util.spec_from_file_location("suite_cli", BENCH / "suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--no-write"]) == 0
