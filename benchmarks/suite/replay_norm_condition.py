"""Replay the saved unguarded (``none``) traces through ``NearInterpolationDetector`` and report
how often ``norm_growing`` holds before / after each run's validation optimum, clean vs noisy.

Run: ``python benchmarks/suite/replay_norm_condition.py [norm|norm_decayed]`` — ``norm`` is the
total norm the detector is fed in normguard (every parameter), ``norm_decayed`` the norm of the
≥ 2-D weights only (what the paper calls the weight norm).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from normguard.detector import NearInterpolationDetector

RESULTS = Path(__file__).resolve().parents[1] / "results" / "suite"


def main(key: str = "norm") -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, list[float]]] = {g: {"before": [], "after": []} for g in ("clean", "noisy")}
    for path in sorted(RESULTS.glob("*/*_none.json")):
        run = json.loads(path.read_text())
        trace, mode = run["trace"], run["mode"]
        values = [row["val_metric"] for row in trace]
        best = (max if mode == "max" else min)(range(len(values)), key=values.__getitem__)
        detector = NearInterpolationDetector(noise_floor=None)
        detector.mode = mode
        held: dict[str, list[bool]] = {"before": [], "after": []}
        for i, row in enumerate(trace):
            verdict = detector.update(
                (row["epoch"] + 1) * run["steps_per_epoch"],
                total_norm=row[key],
                train_loss=row["train_loss"],
                val_loss=row["val_loss"],
                val_metric=row["val_metric"],
            )
            condition = verdict.conditions.get("norm_growing")
            if condition is not None:
                held["after" if i > best else "before"].append(bool(condition))
        group = "clean" if run["noise"] == 0 and run["kind"] == "classification" else "noisy"
        for part, flags in held.items():
            if flags:
                rates[group][part].append(sum(flags) / len(flags))
    out = {g: {p: 100 * statistics.mean(v) for p, v in parts.items() if v} for g, parts in rates.items()}
    print(f"norm_growing fed {key!r}: % of decisions (mean over runs)")
    for group, parts in out.items():
        print(f"  {group}: " + ", ".join(f"{p} the optimum {v:.0f} %" for p, v in parts.items()))
    return out


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["norm"]))
