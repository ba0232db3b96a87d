"""The suite's markdown table: per task × noise × arm, from the saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .analysis import best_epoch, fmt, med, still_improving
from .harness import RESULTS_DIR, trace_path
from .tasks import TASKS

FIRE_KINDS = ("detector_fired", "stop", "weight_decay_changed")


def action_epoch(run: dict[str, Any]) -> int | None:
    """Epoch of the arm's first intervention: EarlyStopping's stop, or normguard's first event."""
    if run["arm"] == "early_stopping":
        return run["epochs_trained"] if run["epochs_trained"] < run["budget"] else None
    epochs = [e["epoch"] for e in run["events"] if e["kind"] in FIRE_KINDS]
    return round(min(epochs)) if epochs else None


def stop_epoch(run: dict[str, Any]) -> int | None:
    """Epoch at which training was stopped early (None: full budget)."""
    return run["epochs_trained"] if run["epochs_trained"] < run["budget"] else None


def _unit(task: str) -> str:
    return "acc %" if TASKS[task].kind == "classification" else "MSE"


def table(
    results: dict[tuple[str, float, int, str], dict[str, Any]],
    tasks: list[str],
    arms: list[str],
    seeds: int,
) -> str:
    """Markdown table of median final test metric, epochs, action epoch − e*, false alarms, per-seed values."""
    lines = [
        "| task | noise | arm | test (median) | per seed | epochs (median) | action − e* (per seed) "
        "| false alarms (clean) | s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        spec = TASKS[task]
        for noise in spec.noises:
            for arm in arms:
                runs = [results.get((task, noise, s, arm)) for s in range(seeds)]
                runs = [r for r in runs if r is not None]
                if not runs:
                    continue
                offsets: list[str] = []
                alarms = 0
                for r in runs:
                    ref = results.get((task, noise, r["seed"], "none"), r)
                    star = best_epoch(ref)
                    fired = action_epoch(r)
                    offsets.append("–" if fired is None else f"{fired - star:+d}")
                    stopped = stop_epoch(r)
                    if spec.kind == "classification" and noise == 0 and stopped is not None:
                        alarms += still_improving(ref, stopped)
                digits = 1 if spec.kind == "classification" else 3
                metric = [r["final_test_metric"] for r in runs]
                noise_label = f"η={noise:g}" if spec.kind == "classification" else f"σ²={noise:g}"
                clean = spec.kind == "classification" and noise == 0
                lines.append(
                    f"| {task} ({_unit(task)}) | {noise_label} | {arm} | {fmt(med(metric), digits)} | "
                    f"{', '.join(fmt(m, digits) for m in metric)} | "
                    f"{fmt(med([r['epochs_trained'] for r in runs]), 0)} | {', '.join(offsets)} | "
                    f"{f'{alarms}/{len(runs)}' if clean else '–'} | {fmt(med([r['seconds'] for r in runs]), 1)} |"
                )
    return "\n".join(lines)


def load_results(root: Path = RESULTS_DIR) -> dict[tuple[str, float, int, str], dict[str, Any]]:
    import json

    out = {}
    for path in root.glob("*/*.json"):
        r = json.loads(path.read_text())
        out[(r["task"], r["noise"], r["seed"], r["arm"])] = r
    return out


__all__ = ["action_epoch", "load_results", "stop_epoch", "table", "trace_path"]
