"""Tables for FINDINGS.md, computed from the saved ``none`` traces (and the real EarlyStopping runs)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import (
    CONDITIONS,
    best_epoch,
    c_below_floor,
    c_diverging,
    c_val_stalled,
    early_stopping_epoch,
    first_streak,
    floor_crossing,
    fmt,
    hit_table,
    load_runs,
    med,
    per_task_after,
    restore_at,
    series,
    still_improving,
)
from .harness import RESULTS_DIR

FINDINGS = Path(__file__).resolve().parent / "FINDINGS.md"
Rule = Callable[[dict[str, Any]], int | None]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def hit_rate_section(runs: list[dict[str, Any]]) -> str:
    rows = hit_table(runs)
    n_clean = sum(r["floor"] <= 0 for r in runs)
    lines = [
        f"Runs: {len(runs)} `none` traces ({n_clean} clean, {len(runs) - n_clean} noisy: label noise 15/35 % "
        "and the regression at σ² = 1 and 0.1). Cell = mean over runs of the fraction of evaluable "
        "epochs where the condition holds; e* = the run's validation-metric optimum. Window W = 6 epochs.",
        "",
        "| condition | clean, before e* | clean, after e* | noisy, before e* | noisy, after e* | "
        "noisy after − clean after |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sep = None
        if r["noisy_after"] is not None and r["clean_after"] is not None:
            sep = r["noisy_after"] - r["clean_after"]
        lines.append(
            f"| {r['condition']} | {_pct(r['clean_before'])} | {_pct(r['clean_after'])} | "
            f"{_pct(r['noisy_before'])} | {_pct(r['noisy_after'])} | "
            f"{'–' if sep is None else f'{100 * sep:+.0f}'} |"
        )
    return "\n".join(lines)


def per_task_section(runs: list[dict[str, Any]], names: list[str]) -> str:
    rows = per_task_after(runs, names)
    lines = ["| task | noise | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['task']} | {r['noise']:g} | " + " | ".join(_pct(r[n]) for n in names) + " |")
    return "\n".join(lines)


def floor_section(runs: list[dict[str, Any]], es_runs: dict[tuple[str, float, int], dict[str, Any]]) -> str:
    """When the epoch-mean training loss first goes under the floor, against e* and EarlyStopping(10)."""
    lines = [
        "| task | noise | e* (val) | test optimum epoch | floor crossing | crossing − e* | ES(10) stop | "
        "crossing − ES stop | test @ ES restore | test @ restore at crossing | test @ last epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keyed: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in runs:
        if run["floor"] > 0:
            keyed.setdefault((run["task"], run["noise"]), []).append(run)
    for (task, noise), group in sorted(keyed.items()):
        cells: dict[str, list[str]] = {k: [] for k in ("star", "topt", "cross", "dc", "es", "dces", "tes", "tc", "tl")}
        digits = 1 if group[0]["kind"] == "classification" else 3
        for run in sorted(group, key=lambda r: r["seed"]):
            star = best_epoch(run)
            test = series(run, "test_metric")
            topt = int(np.argmax(test) if run["mode"] == "max" else np.argmin(test)) + 1
            cross = floor_crossing(run)
            es = early_stopping_epoch(run, 10)
            real = es_runs.get((task, noise, run["seed"]))
            es_test = real["final_test_metric"] if real else restore_at(run, es)[1]
            cells["star"].append(str(star))
            cells["topt"].append(str(topt))
            cells["cross"].append("never" if cross is None else str(cross))
            cells["dc"].append("–" if cross is None else f"{cross - star:+d}")
            cells["es"].append(str(es))
            cells["dces"].append("–" if cross is None else f"{cross - es:+d}")
            cells["tes"].append(fmt(es_test, digits))
            cells["tc"].append("–" if cross is None else fmt(restore_at(run, cross)[1], digits))
            cells["tl"].append(fmt(float(test[-1]), digits))
        lines.append(f"| {task} | {noise:g} | " + " | ".join(", ".join(v) for v in cells.values()) + " |")
    return "\n".join(lines)


def _streak_rule(fn: Callable[[dict[str, Any]], list[bool | None]], k: int) -> Rule:
    return lambda run: first_streak(fn(run), k)


def _and(*fns: Callable[[dict[str, Any]], list[bool | None]]) -> Callable[[dict[str, Any]], list[bool | None]]:
    def both(run: dict[str, Any]) -> list[bool | None]:
        cols = [f(run) for f in fns]
        return [all(bool(c[e]) for c in cols) for e in range(len(cols[0]))]

    return both


RULES: dict[str, Rule] = {
    "EarlyStopping(val metric, patience 10)": lambda r: early_stopping_epoch(r, 10),
    "EarlyStopping(val loss, patience 10)": lambda r: early_stopping_epoch(r, 10, "val_loss"),
    "EarlyStopping(val metric, patience 3)": lambda r: early_stopping_epoch(r, 3),
    "below_floor, 1 epoch": _streak_rule(c_below_floor, 1),
    "below_floor, 3 epochs": _streak_rule(c_below_floor, 3),
    "below_floor ∧ val_metric_stalled(6), 1": _streak_rule(_and(c_below_floor, c_val_stalled), 1),
    "below_floor ∧ diverging, 3": _streak_rule(_and(c_below_floor, c_diverging), 3),
    "0.1 signature (floor ∧ norm_growing ∧ gap_widening), 3": _streak_rule(
        _and(c_below_floor, CONDITIONS["norm_growing (0.1)"], CONDITIONS["gap_widening"]), 3
    ),
    "diverging, 3 (no floor)": _streak_rule(c_diverging, 3),
    "drift_outpaces_init, 3 (no floor)": _streak_rule(CONDITIONS["drift_outpaces_init"], 3),
    "drift_share > 0.1, 1 (no floor)": _streak_rule(CONDITIONS["drift_share > 0.1"], 1),
    "drift_share > 0.2, 1 (no floor)": _streak_rule(CONDITIONS["drift_share > 0.2"], 1),
    "exponent_rebound, 3 (no floor)": _streak_rule(CONDITIONS["growth_exponent_rebound (×1.2 of run min)"], 3),
    "below_floor ∧ exponent_rebound, 3": _streak_rule(
        _and(c_below_floor, CONDITIONS["growth_exponent_rebound (×1.2 of run min)"]), 3
    ),
    "below_floor ∧ drift_share > 0.1, 1": _streak_rule(_and(c_below_floor, CONDITIONS["drift_share > 0.1"]), 1),
}


def rules_section(runs: list[dict[str, Any]]) -> str:
    """Replay each stopping rule; compare with EarlyStopping(val metric, patience 10) on the same run."""
    lines = [
        "| rule | noisy: fired | noisy: stop − ES(10) stop, median | noisy: test − ES(10) test, median / mean "
        "(classification, points) | noisy: better / worse than ES(10) | clean: fired | clean: fired while still "
        "improving |",
        "|---|---|---|---|---|---|---|",
    ]
    ref = RULES["EarlyStopping(val metric, patience 10)"]
    for name, rule in RULES.items():
        fired_noisy = fired_clean = alarms = worse = better = 0
        n_noisy = n_clean = 0
        dstop: list[float] = []
        dtest: list[float] = []
        for run in runs:
            stop = rule(run)
            budget = len(run["trace"])
            if stop is not None and stop >= budget:
                stop = None
            es = ref(run)
            if run["floor"] <= 0:
                n_clean += 1
                if stop is not None:
                    fired_clean += 1
                    alarms += still_improving(run, stop)
                continue
            n_noisy += 1
            test = restore_at(run, stop)[1] if stop is not None else float(run["trace"][-1]["test_metric"])
            es_test = restore_at(run, es)[1]
            if stop is not None:
                fired_noisy += 1
                dstop.append(stop - es)
            if run["mode"] == "max":
                dtest.append(test - es_test)
                better += test > es_test + 0.5
                worse += test < es_test - 0.5
            else:
                better += test < 0.99 * es_test
                worse += test > 1.01 * es_test
        mean = float(np.mean(dtest)) if dtest else None
        lines.append(
            f"| {name} | {fired_noisy}/{n_noisy} | {fmt(med(dstop), 0)} | {fmt(med(dtest), 2)} / {fmt(mean, 2)} | "
            f"{better} / {worse} | {fired_clean}/{n_clean} | {alarms}/{n_clean} |"
        )
    lines.append(
        "\nBetter / worse: by more than 0.5 accuracy points, or 1 % of the test MSE (regression runs count here "
        "too). A rule that never fires keeps the last epoch's weights."
    )
    return "\n".join(lines)


def replay_check(runs: list[dict[str, Any]], es_runs: dict[tuple[str, float, int], dict[str, Any]]) -> str:
    """Does replaying EarlyStopping on the `none` trace reproduce the real `early_stopping` arm?"""
    same_stop = same_test = n = 0
    for run in runs:
        real = es_runs.get((run["task"], run["noise"], run["seed"]))
        if real is None:
            continue
        n += 1
        es = early_stopping_epoch(run, 10)
        same_stop += es == real["epochs_trained"]
        same_test += abs(restore_at(run, es)[1] - real["final_test_metric"]) < 1e-3
    return (
        f"Replay check: EarlyStopping(patience 10) replayed on the `none` traces gives the real "
        f"`early_stopping` arm's stop epoch in {same_stop}/{n} runs and its restored test metric in {same_test}/{n}."
    )


def build(root: Path = RESULTS_DIR, tasks: list[str] | None = None) -> str:
    runs = load_runs(root, "none", tasks)
    es_runs = {(r["task"], r["noise"], r["seed"]): r for r in load_runs(root, "early_stopping", tasks)}
    key = [
        "norm_growing (0.1)",
        "growth_exponent_rebound (×1.2 of run min)",
        "decayed_exponent_rebound (×1.2 of run min)",
        "layers_exponent_rising (≥ half)",
        "drift_share > 0.2",
        "gap_widening",
        "train↓ val↑ (diverging)",
    ]
    parts = [
        "### Hit rates of candidate conditions (none arm)",
        hit_rate_section(runs),
        "### Per task × noise: hit rate after e*",
        per_task_section(runs, key),
        "### Known floor: when the epoch-mean training loss first goes under it (none arm, per seed)",
        floor_section(runs, es_runs),
        "### Stopping rules replayed on the none traces (restore = best val metric up to the stop)",
        rules_section(runs),
        replay_check(runs, es_runs),
    ]
    return "\n\n".join(parts) + "\n"


def write(body: str, path: Path = FINDINGS) -> None:
    """Replace the generated block of FINDINGS.md (between its markers); prose around it stays."""
    begin, end = "<!-- BEGIN generated -->", "<!-- END generated -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Detector findings\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
