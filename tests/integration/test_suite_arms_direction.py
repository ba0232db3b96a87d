"""Small versions of the benchmark suite's normguard arms: the direction of each result.

Each run is a real Lightning ``Trainer`` through the suite's harness (``benchmarks/suite``)
at the task's small epoch budget (seconds each). The directions asserted are the ones the
full suite measured (``benchmarks/RESULTS.md``, "Benchmark suite"), with margins well inside
what these small runs showed: on a memorising run ``stop`` stops no later than EarlyStopping
and keeps its accuracy, ``hold_floor`` beats no intervention, and on clean labels neither
acts.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from suite.harness import run  # noqa: E402
from suite.tasks import TASKS  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "normguard"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)


def small(task: str, noise: float, arm: str, tmp_path: Path) -> dict:
    return run(task, noise, 0, arm, epochs=TASKS[task].small["epochs"], root=tmp_path)


def kinds(result: dict) -> set[str]:
    return {e["kind"] for e in result["events"]}


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

    # hold_floor: trains the whole budget, raises the decay, and its last weights beat no intervention's
    assert hold["epochs_trained"] == budget
    raised = [e["data"]["new"] for e in hold["events"] if e["kind"] == "weight_decay_changed" and "new" in e["data"]]
    assert raised and max(raised) > 0.01
    assert hold["final_test_metric"] >= none["final_test_metric"] + 3.0


def test_clean_labels_neither_stop_nor_hold_floor_acts(tmp_path: Path) -> None:
    budget = TASKS["mlp_tabular"].small["epochs"]
    none = small("mlp_tabular", 0.0, "none", tmp_path)
    for arm in ("stop", "hold_floor"):
        result = small("mlp_tabular", 0.0, arm, tmp_path)
        assert result["epochs_trained"] == budget, arm
        assert "weight_decay_changed" not in kinds(result) and "detector_fired" not in kinds(result), arm
        # nothing acted, so the run is the unguarded one
        assert [t["val_metric"] for t in result["trace"]] == [t["val_metric"] for t in none["trace"]], arm


def test_regression_hold_floor_beats_no_intervention(tmp_path: Path) -> None:
    none = small("regression", 1.0, "none", tmp_path)
    hold = small("regression", 1.0, "hold_floor", tmp_path)
    assert hold["final_test_metric"] < none["final_test_metric"]
    decay = [t["weight_decay"][0] for t in hold["trace"]]
    assert max(decay) > decay[0]
