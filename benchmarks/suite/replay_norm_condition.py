"""Replay the saved unguarded (``none``) traces through ``NearInterpolationDetector`` and report
how often its norm conditions — ``norm_growing`` and ``drifted`` — hold before / after each run's
validation optimum, clean vs noisy, over all runs and per task.

Run: ``python benchmarks/suite/replay_norm_condition.py [norm|norm_decayed]`` — ``norm`` is the
total norm the detector is fed in normguard (every parameter), ``norm_decayed`` the norm of the
≥ 2-D weights only (what the paper calls the weight norm). ``drifted`` is fed the drift share
‖w − w_best‖ / ‖w − w₀‖ from the distances the harness records each epoch.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from normguard.detector import NearInterpolationDetector

RESULTS = Path(__file__).resolve().parents[1] / "results" / "suite"
CONDITIONS = ("norm_growing", "drifted")


def _held(run: dict[str, Any], key: str) -> dict[str, dict[str, list[bool]]]:
    """Per condition, whether it held at each decision before / after the run's validation optimum."""
    trace, mode = run["trace"], run["mode"]
    values = [row["val_metric"] for row in trace]
    best = (max if mode == "max" else min)(range(len(values)), key=values.__getitem__)
    detector = NearInterpolationDetector(noise_floor=None)
    detector.mode = mode
    held: dict[str, dict[str, list[bool]]] = {c: {"before": [], "after": []} for c in CONDITIONS}
    for i, row in enumerate(trace):
        travelled = row.get("dist_init")
        verdict = detector.update(
            (row["epoch"] + 1) * run["steps_per_epoch"],
            total_norm=row[key],
            train_loss=row["train_loss"],
            val_loss=row["val_loss"],
            val_metric=row["val_metric"],
            drift=row["dist_best"] / travelled if travelled else None,
        )
        for name in CONDITIONS:
            condition = verdict.conditions.get(name)
            if condition is not None:
                held[name]["after" if i > best else "before"].append(bool(condition))
    return held


def main(key: str = "norm") -> dict[str, dict[str, dict[str, float]]]:
    """{condition: {"clean"/"noisy" or "task clean/noisy": {"before"/"after": % of decisions}}} (means over runs)."""
    rates: dict[str, dict[str, dict[str, list[float]]]] = {c: {} for c in CONDITIONS}
    from suite.analysis import load_runs

    for run in load_runs(RESULTS, "none"):
        group = "clean" if run["noise"] == 0 and run["kind"] == "classification" else "noisy"
        for name, parts in _held(run, key).items():
            for where in (group, f"{run['task']} {group}"):
                for part, flags in parts.items():
                    if flags:
                        rates[name].setdefault(where, {}).setdefault(part, []).append(sum(flags) / len(flags))
    out = {
        name: {g: {p: 100 * statistics.mean(v) for p, v in parts.items()} for g, parts in groups.items()}
        for name, groups in rates.items()
    }
    print(f"fed {key!r}: % of decisions where the condition held (mean over runs), before / after the optimum")
    print("| runs | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for group in sorted(out[CONDITIONS[0]], key=lambda g: (" " in g, g)):
        cells = [
            " / ".join(f"{out[c].get(group, {}).get(p, float('nan')):.0f} %" for p in ("before", "after"))
            for c in CONDITIONS
        ]
        print(f"| {group} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["norm"]))
