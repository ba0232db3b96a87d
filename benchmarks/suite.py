"""The normguard benchmark suite (issue 11): tasks × label noise × seeds × arms, with per-epoch traces.

Each run trains in a real Lightning ``Trainer`` (AdamW lr 1e-3, torch's default weight decay
0.01, logger=False, 1 CPU thread; the task ``bert_majority_hf`` in a ``transformers.Trainer``,
``benchmarks/suite/hf_harness.py``, with the arms that file lists) and saves its result and
per-epoch trace as JSON under ``benchmarks/results/suite/<task>/`` (reused on the next call
unless ``--force``). The table goes to stdout and to the ``suite`` section of
``benchmarks/RESULTS.md``.

Run: ``python benchmarks/suite.py [--tasks cnn_digits,mlp_tabular,regression,bert_majority,bert_majority_hf]
[--seeds 3] [--arms none,early_stopping,stop,...] [--findings] [--force] [--no-run]``

Grid 2 (issue 23: noise kinds × optimizers, the BatchNorm CNN, the known and the estimated
floor; ``suite/grid2.py``): ``python benchmarks/suite.py --grid 2 [--tasks ...] [--arms ...]
[--seeds 3] [--shard 0/2] [--no-run]``; its tables go to ``benchmarks/RESULTS_suite2.md``.

Saved results live in one xz-compressed JSON-lines file per task (``suite/store.py``); with
``--no-run`` every table is rebuilt from them (``--findings`` adds FINDINGS.md's).

``--findings`` also rebuilds the generated tables of ``benchmarks/suite/FINDINGS.md`` from the
saved ``none`` traces. Arms whose normguard options the installed version lacks are skipped
with a message. Tasks and arms: ``benchmarks/suite/tasks.py`` and ``benchmarks/suite/harness.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, write_section
from suite import findings, grid2, hf_harness, report2
from suite.harness import ARMS, RESULTS_DIR, ArmUnavailable, run
from suite.report import (
    condition_table,
    condition_task_table,
    load_results,
    missing_runs,
    table,
    targets_table,
)
from suite.tasks import TASKS

DEFAULT_ARMS = "none,early_stopping,stop,hold_floor,hold_floor_restore,escalation"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "normguard", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--grid", type=int, choices=(1, 2), default=1, help="1: the original suite; 2: issue 23's")
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", default=None)
    parser.add_argument("--shard", default="0/1", help="grid 2: run only shard i of n (i/n; see grid2.shard)")
    parser.add_argument(
        "--reverse", action="store_true", help="grid 2: take the shard's jobs last first (a second runner)"
    )
    parser.add_argument("--force", action="store_true", help="re-run even when a saved result exists")
    parser.add_argument("--findings", action="store_true", help="rebuild the tables of suite/FINDINGS.md")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md untouched")
    parser.add_argument(
        "--no-run", action="store_true", help="train nothing: tabulate the saved results (missing runs stay missing)"
    )
    args = parser.parse_args(argv)
    quiet()
    torch.set_num_threads(1)
    if args.grid == 2:
        return main_grid2(args)
    tasks = (args.tasks or ",".join(TASKS)).split(",")
    arms = (args.arms or DEFAULT_ARMS).split(",")
    for name in tasks + arms:
        if name not in TASKS and name not in ARMS:
            parser.error(f"unknown task or arm {name!r}; tasks: {sorted(TASKS)}, arms: {sorted(ARMS)}")
    skipped: dict[str, str] = {}
    for arm in arms:
        for task in tasks:
            for noise in TASKS[task].noises:
                for seed in range(args.seeds):
                    hf = TASKS[task].framework == "transformers"
                    if arm in skipped or args.no_run or (hf and arm not in hf_harness.HF_ARMS):
                        continue
                    try:
                        r = (hf_harness.run if hf else run)(task, noise, seed, arm, force=args.force)
                    except ArmUnavailable as exc:
                        skipped[arm] = str(exc)
                        print(f"[skip arm {arm}: {exc}]", flush=True)
                        continue
                    print(
                        f"{task:14s} noise={noise:<5g} seed={seed} {arm:20s} epochs={r['epochs_trained']:4d} "
                        f"test={r['final_test_metric']:.4g} ({r['seconds']:.1f} s)",
                        flush=True,
                    )
    results = {k: v for k, v in load_results(RESULTS_DIR).items() if k[0] in tasks and k[2] < args.seeds}
    ran = [a for a in arms if a not in skipped]
    body = table(results, tasks, ran, args.seeds)
    hf_tasks = [t for t in tasks if TASKS[t].framework == "transformers"]
    missing = "\n".join(
        m
        for m in (
            missing_runs(results, [t for t in tasks if t not in hf_tasks], ran, args.seeds),
            missing_runs(results, hf_tasks, [a for a in ran if a in hf_harness.HF_ARMS], args.seeds),
        )
        if m
    )
    if missing:
        body += "\n\nNot run (no saved result; the medians above use the seeds that ran):\n\n" + missing
    guarded = [a for a in ran if ARMS[a].normguard]
    if guarded:
        body += (
            "\n\n### Issue 11's targets: each noisy cell against EarlyStopping\n\n"
            "Gain = arm − EarlyStopping in accuracy points, or for the regression (EarlyStopping's MSE − arm's MSE) "
            "as % of EarlyStopping's MSE: positive = better than EarlyStopping. Per-seed gains pair the same seed.\n\n"
            + targets_table(results, tasks, args.seeds)
            + "\n\n### Detector conditions: hit rates from the NormGuardCallback's verdicts\n\n"
            "Cell = mean over runs of the fraction of the detector's validation decisions (one per epoch) at which "
            "the condition held, before / after the run's own validation-metric optimum e* (decisions where a "
            "condition could not be evaluated yet are left out; e* itself is in neither). Clean = 0 % label noise "
            "(floor 0); noisy = label noise 15/35 % and the regression (σ² = 1, 0.1). `val_stalled` (no new best "
            "at this validation) holds after e* by definition; its information is in the before-e* column.\n\n"
            + condition_table({k: v for k, v in results.items() if k[0] not in hf_tasks}, guarded)
        )
        for arm in ("stop", "hold_floor"):
            if arm in guarded:
                body += f"\n\nPer task × noise, arm `{arm}` (mean over seeds), before / after e*:\n\n"
                body += condition_task_table(results, arm, tasks)
    notes = "".join(f"\n- skipped arm `{a}` (installed normguard lacks it): {why}" for a, why in skipped.items())
    legend = (
        "\nTest metric: clean test accuracy % (classification; label noise η in train and validation) or "
        "test MSE (regression, noise σ²). e* = the `none` run's validation-metric optimum (same seed); "
        "action = EarlyStopping's stop or normguard's first event (the detector firing, a stop, or "
        "`hold_floor` engaging when the training loss first goes under the floor). Arms: `none` (full budget, "
        "last weights); `early_stopping` = EarlyStopping(monitor=val metric, patience=10) + the best "
        "ModelCheckpoint; `stop` = NormGuardCallback(action='stop', known floor, monitor=val metric); "
        "`hold_floor` = HoldNoiseFloor(restore_best_at_end=False): the last weights (the default of "
        "action='hold_floor' when these runs were made); `hold_floor_restore` = HoldNoiseFloor() with its "
        "default restore_best_at_end='engaged' (the best-validation weights at the end if the controller "
        "engaged; chosen from this table: with True, always, the clean runs lost a median 0.2 points); "
        "`stop` and `escalation` (= action=['weight_decay', 'stop']) use the detector's default rules for a "
        "known floor (see README, The detector). "
        "A false alarm is an intervention on clean labels after which the `none` run of the same seed "
        "still reached a better validation metric: 'any' = strictly better at a later epoch, '≥ 0.5 pt' = "
        "better by at least 0.5 points. "
        "s/run was measured on 2 shared cores with other jobs running (load 4–7, two runs at once): read it "
        "as relative cost only. Traces: `benchmarks/results/suite/`; detector research: "
        "`benchmarks/suite/FINDINGS.md`. "
        "`bert_majority_hf` = `bert_majority` (same data, model config, initial weights, budget, batch, lr, "
        "evaluation each epoch, known floor) trained by a `transformers.Trainer` (`benchmarks/suite/hf_harness.py`): "
        "AdamW with Hugging Face's default decay handling (biases and LayerNorm at weight decay 0), constant lr, no "
        "clipping, the Trainer's shuffling; arms `none`; `early_stopping` = HF's EarlyStoppingCallback("
        "early_stopping_patience=10) + load_best_model_at_end=True (metric: validation accuracy); `stop` and "
        "`hold_floor_restore` = NormGuardTrainerCallback(action='stop' / 'hold_floor' with its default restore, "
        "known floor, monitor='eval_acc'). The pooled condition hit rates below are from the Lightning tasks only.\n"
    )
    print(body)
    if skipped:
        print(notes)
    if not args.no_write:
        write_section("suite", header("benchmark suite (issue 11)") + legend + notes + "\n\n" + body)
    if args.findings:
        findings.write(findings.build(RESULTS_DIR, tasks))
        print(f"[wrote {findings.FINDINGS}]")
    return 0


def main_grid2(args: argparse.Namespace) -> int:
    """Grid 2: run the (sharded) jobs not saved yet, then write the tables from everything saved."""
    tasks = (args.tasks or ",".join(grid2.EPOCHS)).split(",")
    arms = (args.arms or ",".join(grid2.ARMS2)).split(",")
    for name in tasks:
        if name not in grid2.EPOCHS:
            raise SystemExit(f"unknown grid-2 task {name!r}; tasks: {sorted(grid2.EPOCHS)}")
    for name in arms:
        if name not in grid2.ARMS2:
            raise SystemExit(f"unknown grid-2 arm {name!r}; arms: {list(grid2.ARMS2)}")
    index, count = (int(v) for v in args.shard.split("/"))
    skipped: dict[str, str] = {}
    if not args.no_run:
        todo = grid2.shard(grid2.jobs(tasks, args.seeds, arms), index, count)
        for job in reversed(todo) if args.reverse else todo:
            if job.arm in skipped:
                continue
            try:
                r = grid2.run_job(job, force=args.force)
            except ArmUnavailable as exc:
                skipped[job.arm] = str(exc)
                print(f"[skip arm {job.arm}: {exc}]", flush=True)
                continue
            print(
                f"{job} epochs={r['epochs_trained']:3d} test={r['final_test_metric']:.4g} "
                f"engaged={r.get('engaged_step')} ({r['seconds']:.1f} s)",
                flush=True,
            )
    body = report2.build(grid2.ROOT, seeds=args.seeds)
    print(body)
    if not args.no_write:
        report2.write(body)
        print(f"[wrote {report2.RESULTS_SUITE2}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
