"""The suite's markdown table: per task × noise × arm, from the saved results."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from normguard.detector import Condition

from . import store
from .analysis import best_epoch, fmt, med, series, still_improving
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
        "| task | noise | arm | test (median) | per seed | epochs (median; per seed) | action − e* (per seed) "
        "| false alarms (clean): any / ≥ 0.5 pt | s/run |",
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
                alarms = strict = 0
                for r in runs:
                    ref = results.get((task, noise, r["seed"], "none"), r)
                    star = best_epoch(ref)
                    fired = action_epoch(r)
                    offsets.append("–" if fired is None else f"{fired - star:+d}")
                    if spec.kind == "classification" and noise == 0 and fired is not None:
                        alarms += still_improving(ref, fired)
                        strict += improves_later(ref, fired)
                digits = 1 if spec.kind == "classification" else 3
                metric = [r["final_test_metric"] for r in runs]
                noise_label = f"η={noise:g}" if spec.kind == "classification" else f"σ²={noise:g}"
                clean = spec.kind == "classification" and noise == 0
                partial = f" ({len(runs)} of {seeds} seeds)" if len(runs) < seeds else ""
                lines.append(
                    f"| {task} ({_unit(task)}) | {noise_label} | {arm} | {fmt(med(metric), digits)}{partial} | "
                    f"{', '.join(fmt(m, digits) for m in metric)} | "
                    f"{fmt(med([r['epochs_trained'] for r in runs]), 0)}; "
                    f"{', '.join(str(r['epochs_trained']) for r in runs)} | {', '.join(offsets)} | "
                    f"{f'{strict}/{len(runs)} / {alarms}/{len(runs)}' if clean else '–'} | "
                    f"{fmt(med([r['seconds'] for r in runs]), 1)} |"
                )
    return "\n".join(lines)


def missing_runs(
    results: dict[tuple[str, float, int, str], dict[str, Any]], tasks: list[str], arms: list[str], seeds: int
) -> str:
    """Markdown list of the (task, noise, arm) cells that lack some seeds' saved results ('' if none)."""
    lines = []
    for arm in arms:
        for task in tasks:
            for noise in TASKS[task].noises:
                absent = [s for s in range(seeds) if (task, noise, s, arm) not in results]
                if absent:
                    lines.append(f"- `{arm}` on {task} at noise {noise:g}: seeds {', '.join(map(str, absent))} not run")
    return "\n".join(lines)


def improves_later(run: dict[str, Any], epoch: int) -> bool:
    """True if a later epoch of ``run`` has a strictly better validation metric than every epoch up to ``epoch``."""
    v = series(run, "val_metric")
    before, after = v[:epoch], v[epoch:]
    if len(after) == 0:
        return False
    return bool(after.max() > before.max()) if run["mode"] == "max" else bool(after.min() < before.min())


# ---------------------------------------------------------------------- detector conditions
CONDITION_NAMES = tuple(c.value for c in Condition)  # the detector's own, in its order
NOT_DECIDED = ("recorded", "non_finite")


def decisions(run: dict[str, Any]) -> dict[int, dict[str, bool | None]]:
    """The detector's conditions at each epoch's validation decision, from the recorded verdicts.

    Checks run every epoch (``every_n_train_steps`` = steps per epoch): a train check at the
    epoch's last step, then the validation decision at the same step. The last decided
    verdict at a step is that validation decision.
    """
    spe = run["steps_per_epoch"]
    out: dict[int, dict[str, bool | None]] = {}
    for v in run.get("verdicts", []):
        if v["reason"] not in NOT_DECIDED:
            out[v["step"] // spe] = v["conditions"]
    return out


def condition_rates(run: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per condition: fraction of decisions where it held, before and after the run's own e*
    (decisions where it could not be evaluated are left out)."""
    star = best_epoch(run)
    by_epoch = decisions(run)
    out: dict[str, dict[str, float | None]] = {}
    for name in CONDITION_NAMES:
        seg: dict[str, list[bool]] = {"before": [], "after": []}
        for epoch, conds in by_epoch.items():
            value = conds.get(name)
            if value is None or epoch == star:
                continue
            seg["before" if epoch < star else "after"].append(bool(value))
        out[name] = {k: (sum(v) / len(v) if v else None) for k, v in seg.items()}
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def condition_table(results: dict[tuple[str, float, int, str], dict[str, Any]], arms: list[str]) -> str:
    """Hit rate of each detector condition (from the callback's verdicts), clean vs noisy, before/after e*."""
    lines = [
        "| arm | condition | clean, before e* | clean, after e* | noisy, before e* | noisy, after e* "
        "| runs (clean/noisy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        runs = [r for k, r in sorted(results.items()) if k[3] == arm and r.get("verdicts")]
        if not runs:
            continue
        rates = [(r["floor"] <= 0, condition_rates(r)) for r in runs]
        n_clean = sum(c for c, _ in rates)
        for name in CONDITION_NAMES:
            cells = []
            for clean in (True, False):
                for segment in ("before", "after"):
                    values = [x[name][segment] for c, x in rates if c == clean]
                    cells.append(_pct(_mean([v for v in values if v is not None])))
            lines.append(f"| {arm} | {name} | {' | '.join(cells)} | {n_clean}/{len(runs) - n_clean} |")
    return "\n".join(lines)


def condition_task_table(results: dict[tuple[str, float, int, str], dict[str, Any]], arm: str, tasks: list[str]) -> str:
    """Per task × noise (mean over seeds): each condition's hit rate before / after e*."""
    lines = [
        "| task | noise | " + " | ".join(f"{n}: before / after" for n in CONDITION_NAMES) + " |",
        "|---|---|" + "---|" * len(CONDITION_NAMES),
    ]
    for task in tasks:
        for noise in TASKS[task].noises:
            runs = [r for k, r in sorted(results.items()) if k[0] == task and k[1] == noise and k[3] == arm]
            runs = [r for r in runs if r.get("verdicts")]
            if not runs:
                continue
            rates = [condition_rates(r) for r in runs]
            cells = []
            for name in CONDITION_NAMES:
                b = _mean([x[name]["before"] for x in rates if x[name]["before"] is not None])
                a = _mean([x[name]["after"] for x in rates if x[name]["after"] is not None])
                cells.append(f"{_pct(b)} / {_pct(a)}")
            lines.append(f"| {task} | {noise:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- issue 11's targets
def _gain(kind: str, arm: float, ref: float) -> float:
    """How much better ``arm`` is than ``ref``: accuracy points, or % of the reference MSE (positive = better)."""
    return arm - ref if kind == "classification" else 100.0 * (ref - arm) / ref


def targets_table(results: dict[tuple[str, float, int, str], dict[str, Any]], tasks: list[str], seeds: int) -> str:
    """Each noisy cell: the arms' median test metric against EarlyStopping's, median and per-seed gains, epochs."""
    arms = ("stop", "hold_floor", "hold_floor_restore", "escalation")
    lines = [
        "| task | noise | ES median (epochs) | arm | median (epochs) | gain of medians | per-seed gains | "
        "epochs − ES epochs: median of pairs (per seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        spec = TASKS[task]
        for noise in spec.noises:
            if noise == 0:
                continue
            es = [results.get((task, noise, s, "early_stopping")) for s in range(seeds)]
            if any(r is None for r in es):
                continue
            es_med = med([r["final_test_metric"] for r in es])  # type: ignore[index]
            es_ep = med([r["epochs_trained"] for r in es])  # type: ignore[index]
            digits = 1 if spec.kind == "classification" else 3
            for arm in arms:
                runs = [results.get((task, noise, s, arm)) for s in range(seeds)]
                if any(r is None for r in runs):
                    continue
                metric = [r["final_test_metric"] for r in runs]  # type: ignore[index]
                gains = [_gain(spec.kind, m, e["final_test_metric"]) for m, e in zip(metric, es)]  # type: ignore[index]
                epochs = [r["epochs_trained"] - e["epochs_trained"] for r, e in zip(runs, es)]  # type: ignore[index]
                unit = " pt" if spec.kind == "classification" else " %"
                lines.append(
                    f"| {task} | {noise:g} | {fmt(es_med, digits)} ({fmt(es_ep, 0)}) | {arm} | "
                    f"{fmt(med(metric), digits)} ({fmt(med([r['epochs_trained'] for r in runs]), 0)}) | "  # type: ignore[index]
                    f"{_gain(spec.kind, med(metric), es_med):+.2f}{unit} | "  # type: ignore[arg-type]
                    f"{', '.join(f'{g:+.2f}' for g in gains)} | "
                    f"{med(epochs):+g} ({', '.join(f'{d:+d}' for d in epochs)}) |"
                )
    return "\n".join(lines)


def load_results(root: Path = RESULTS_DIR) -> dict[tuple[str, float, int, str], dict[str, Any]]:
    """Every saved result of the original suite under ``root``, keyed (task, noise, seed, arm)."""
    out = {}
    for r in store.load(root):
        out[(r["task"], r["noise"], r["seed"], r["arm"])] = r
    return out


__all__ = [
    "action_epoch",
    "condition_table",
    "condition_task_table",
    "decisions",
    "load_results",
    "missing_runs",
    "stop_epoch",
    "table",
    "targets_table",
    "trace_path",
]
