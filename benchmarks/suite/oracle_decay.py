"""How much can *any* weight decay gain over EarlyStopping on the suite's regression task?

``hold_floor`` chooses a decoupled weight decay while training. Before blaming the controller
for tying EarlyStopping on the paper's regression (issue 11's target is +1 point), this study
asks the question for every controller at once: train the same task with a *fixed* decoupled
weight decay λ from a grid (AdamW, lr 1e-3, the suite's 60 epochs), and keep the better of two
outcomes chosen in hindsight — the last weights, or the weights of the best validation MSE.
If even the best λ of the grid, picked per seed by its *test* MSE (an oracle no controller
has), does not beat EarlyStopping(patience=10) + best checkpoint by the target, no schedule of
weight decay will on this task.

Run: ``python benchmarks/suite/oracle_decay.py [--no-write]`` (~3 min on one core). Traces go
to ``benchmarks/results/oracle_decay/``; the table replaces the ``decay_oracle`` block of
``benchmarks/RESULTS.md``. EarlyStopping is replayed on the λ = 0.01 trace (the suite's
``none`` arm: torch's default decay), which reproduces the real arm exactly (see
``tests/integration/test_suite_small.py``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from _common import header, write_section  # noqa: E402

from suite import analysis  # noqa: E402
from suite.harness import ARMS, Arm, run  # noqa: E402

ROOT = BENCH / "results" / "oracle_decay"
DECAYS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
SIGMAS = (1.0, 0.1)
SEEDS = (0, 1, 2)


def fixed_decay_arm(decay: float) -> str:
    """Register (once) and name an arm that trains with a fixed decoupled weight decay and no callback."""
    name = f"fixed_decay_{decay:g}"
    if name not in ARMS:
        ARMS[name] = Arm(name, lambda ctx: [], f"AdamW(weight_decay={decay:g}), no callback", weight_decay=decay)
    return name


def outcomes(result: dict[str, Any]) -> tuple[float, float]:
    """(test MSE of the last weights, test MSE of the best-validation weights)."""
    best = analysis.best_epoch(result)
    return result["final_test_metric"], result["trace"][best - 1]["test_metric"]


def gain(reference: float, value: float) -> float:
    """Reduction of the test MSE relative to ``reference``, in % (positive = better)."""
    return 100.0 * (reference - value) / reference


def study() -> list[dict[str, Any]]:
    rows = []
    for sigma2 in SIGMAS:
        for seed in SEEDS:
            runs = {lam: run("regression", sigma2, seed, fixed_decay_arm(lam), root=ROOT) for lam in DECAYS}
            stop = analysis.early_stopping_epoch(runs[0.01], 10)
            es = analysis.restore_at(runs[0.01], stop)[1]
            per_decay = {lam: outcomes(r) for lam, r in runs.items()}
            oracle_lam, (oracle_last, oracle_best) = min(per_decay.items(), key=lambda kv: min(kv[1]))
            rows.append(
                {
                    "sigma2": sigma2,
                    "seed": seed,
                    "es": es,
                    "per_decay": per_decay,
                    "oracle_decay": oracle_lam,
                    "oracle": min(oracle_last, oracle_best),
                }
            )
            print(f"σ²={sigma2:g} seed {seed}: ES {es:.4f}, oracle λ={oracle_lam:g} {rows[-1]['oracle']:.4f}")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "Test MSE (median over seeds 0–2) of the last / best-validation weights for each fixed "
        "decoupled weight decay λ, and its gain over EarlyStopping(patience=10) + best checkpoint "
        "(% of EarlyStopping's test MSE; positive = better; the better of the two outcomes per seed).",
        "",
        "| σ² | λ | test MSE: last weights | test MSE: best-val weights | gain vs ES, median (per seed) |",
        "|---|---|---|---|---|",
    ]
    for sigma2 in SIGMAS:
        mine = [r for r in rows if r["sigma2"] == sigma2]
        for lam in DECAYS:
            last = statistics.median(r["per_decay"][lam][0] for r in mine)
            best = statistics.median(r["per_decay"][lam][1] for r in mine)
            gains = [gain(r["es"], min(r["per_decay"][lam])) for r in mine]
            per_seed = ", ".join(f"{g:+.1f}" for g in gains)
            lines.append(
                f"| {sigma2:g} | {lam:g} | {last:.4f} | {best:.4f} | {statistics.median(gains):+.1f} % ({per_seed}) |"
            )
    lines += ["", "Oracle (per seed, the λ and outcome with the lowest *test* MSE — not available to any rule):", ""]
    lines += [
        "| σ² | seed | ES test MSE | oracle λ | oracle test MSE | oracle gain vs ES |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sigma2']:g} | {r['seed']} | {r['es']:.4f} | {r['oracle_decay']:g} | {r['oracle']:.4f} | "
            f"{gain(r['es'], r['oracle']):+.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; RESULTS.md untouched")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    body = header("Regression: what a fixed weight decay can gain over EarlyStopping") + "\n" + table(study())
    print(body)
    if not args.no_write:
        write_section("decay_oracle", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
