"""Grid 2 of the suite (issue 23): label-noise kinds × optimizers × tasks × seeds × arms.

Every run is a real Lightning ``Trainer`` through :func:`suite.harness.run` and records, on top
of the original trace, every optimizer step's training loss and (normguard arms) the floor in
effect and the controller's state after each validation (``suite/harness.py``).

==============  ============================================================================
axis            values
==============  ============================================================================
task            ``mlp_tabular`` (40 epochs), ``cnn_bn_digits`` (30 epochs; a CNN whose three
                convolutions feed BatchNorm, trained on shifted 8×8 digits, 400 training
                rows, batch 32), ``cnn_digits`` (40 epochs): budgets cut from the original suite's
                100 to fit the shared machine
noise kind      ``clean``; ``uniform`` (30 %: label redrawn from all C classes), ``other``
                (30 %: moved to a random other class), ``pair`` (30 %: class k → k + 1 mod C),
                in the training and validation labels; the test labels stay clean
optimizer       ``adamw`` (lr 1e-3, decay 0.01, constant), ``sgd`` (momentum 0.9, decay 5e-4,
                peak lr 0.05, or 0.1 for ``cnn_bn_digits``, 5 % linear warmup, cosine to 0)
arm             ``none``; ``early_stopping`` (EarlyStopping(patience=10) + best checkpoint);
                ``hold_known`` (``NormGuardCallback(noise_floor=<true floor>,
                action="hold_floor", monitor=val metric)``); ``hold_estimate``
                (``noise_floor="estimate"``, a ``NoiseFloorMetric`` updated in
                ``validation_step``); normguard checks every 4 optimizer steps
seed            0, 1, 2
==============  ============================================================================

Results: ``benchmarks/results/suite2/<task>.jsonl.xz`` (:mod:`suite.store`); tables:
:mod:`suite.report2`. Jobs run seed by seed, so a cut-short grid still covers every cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import RESULTS_DIR, run
from .tasks import ALL_TASKS, TaskSpec

ROOT = RESULTS_DIR.parent / "suite2"
EPOCHS: dict[str, int] = {"mlp_tabular": 40, "cnn_bn_digits": 30, "cnn_digits": 40}
CELLS: tuple[tuple[str, float], ...] = (("clean", 0.0), ("uniform", 0.3), ("other", 0.3), ("pair", 0.3))
OPTIMIZERS = ("adamw", "sgd")
ARMS2 = ("none", "early_stopping", "hold_known", "hold_estimate")
CHECK_EVERY = 4


@dataclass(frozen=True)
class Job:
    """One run of grid 2."""

    task: str
    kind: str
    rate: float
    optimizer: str
    seed: int
    arm: str

    def __str__(self) -> str:
        return f"{self.task:13s} {self.kind:7s} {self.optimizer:5s} seed={self.seed} {self.arm:14s}"


def spec_of(task: str) -> TaskSpec:
    """The task as grid 2 trains it (its epochs budget)."""
    return dataclasses.replace(ALL_TASKS[task], epochs=EPOCHS[task])


def jobs(tasks: list[str], seeds: int, arms: list[str]) -> list[Job]:
    """Every job, seed-major (all cells of seed 0 first), then task, noise kind, optimizer, arm."""
    return [
        Job(task, kind, rate, opt, seed, arm)
        for seed in range(seeds)
        for task in tasks
        for kind, rate in CELLS
        for opt in OPTIMIZERS
        for arm in arms
    ]


def shard(all_jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count``: every arm of one (seed, task, noise kind, optimizer)
    goes to the same shard, and those groups alternate between shards (balanced costs)."""
    groups: dict[tuple[Any, ...], int] = {}
    for job in all_jobs:
        groups.setdefault((job.seed, job.task, job.kind, job.optimizer), len(groups))
    return [j for j in all_jobs if groups[(j.seed, j.task, j.kind, j.optimizer)] % count == index]


def run_job(job: Job, *, root: Path | None = ROOT, force: bool = False, epochs: int | None = None) -> dict[str, Any]:
    """Train (or load the saved result of) one job."""
    spec = spec_of(job.task)
    return run(
        job.task,
        job.rate,
        job.seed,
        job.arm,
        epochs=epochs or spec.epochs,
        root=root,
        force=force,
        noise_kind=job.kind,
        optimizer=job.optimizer,
        check_every=CHECK_EVERY,
        spec=spec,
    )


__all__ = [
    "ARMS2",
    "CELLS",
    "CHECK_EVERY",
    "EPOCHS",
    "OPTIMIZERS",
    "ROOT",
    "Job",
    "jobs",
    "run_job",
    "shard",
    "spec_of",
]
