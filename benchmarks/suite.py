"""The normguard benchmark suite (issue 11): tasks × label noise × seeds × arms, with per-epoch traces.

Each run trains in a real Lightning ``Trainer`` (AdamW lr 1e-3, torch's default weight decay
0.01, logger=False, 1 CPU thread) and saves its result and per-epoch trace as JSON under
``benchmarks/results/suite/<task>/`` (reused on the next call unless ``--force``). The
table goes to stdout and to the ``suite`` section of ``benchmarks/RESULTS.md``.

Run: ``python benchmarks/suite.py [--tasks cnn_digits,mlp_tabular,regression,bert_majority]
[--seeds 3] [--arms none,early_stopping,stop,...] [--findings]``

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
from suite import findings
from suite.harness import ARMS, RESULTS_DIR, ArmUnavailable, run
from suite.report import load_results, table
from suite.tasks import TASKS

DEFAULT_ARMS = "none,early_stopping,stop,stop_val_loss,hold_floor,hold_floor_restore,escalation"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "normguard", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", default=DEFAULT_ARMS)
    parser.add_argument("--force", action="store_true", help="re-run even when a saved result exists")
    parser.add_argument("--findings", action="store_true", help="rebuild the tables of suite/FINDINGS.md")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md untouched")
    args = parser.parse_args(argv)
    quiet()
    torch.set_num_threads(1)
    tasks = args.tasks.split(",")
    arms = args.arms.split(",")
    for name in tasks + arms:
        if name not in TASKS and name not in ARMS:
            parser.error(f"unknown task or arm {name!r}; tasks: {sorted(TASKS)}, arms: {sorted(ARMS)}")
    skipped: dict[str, str] = {}
    for arm in arms:
        for task in tasks:
            for noise in TASKS[task].noises:
                for seed in range(args.seeds):
                    if arm in skipped:
                        continue
                    try:
                        r = run(task, noise, seed, arm, force=args.force)
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
    body = table(results, tasks, [a for a in arms if a not in skipped], args.seeds)
    notes = "".join(f"\n- skipped arm `{a}` (installed normguard lacks it): {why}" for a, why in skipped.items())
    legend = (
        "\nTest metric: clean test accuracy % (classification; label noise η in train and validation) or "
        "test MSE (regression, noise σ²). e* = the `none` run's validation-metric optimum (same seed); "
        "action = EarlyStopping's stop or normguard's first event. `stop_val_loss` = normguard 0.1's "
        "`action='stop'` with the known floor (best judged by val_loss). A false alarm is a stop on clean "
        "labels after which the full run's validation metric still improved by ≥ 0.5 points. "
        "s/run was measured on 2 shared cores under a load of about 7 (several runs at once): read it as "
        "relative cost only. Traces: `benchmarks/results/suite/`; detector research: "
        "`benchmarks/suite/FINDINGS.md`.\n"
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


if __name__ == "__main__":
    raise SystemExit(main())
