"""Replay the saved unguarded (``none``) traces through ``NearInterpolationDetector`` with each
kind of noise floor — known, ``"auto"`` and none (the defaults), and the earlier default rules
and alternatives that were tried — and compare the stop it would have made
with EarlyStopping(patience=10) + best checkpoint, replayed on the same traces.

The detector only sees host floats once per check, so feeding it a trace's per-epoch
training loss, validation loss and metric, total norm and drift share (‖w − w_best‖ /
‖w − w₀‖, from the distances the harness records) is what ``NormGuardCallback`` does at
each validation (the suite checks once per epoch; the harness's w₀ is the initial weights,
the guard's the weights at its first check). A stop restores the best validation
metric up to the stop, as ``action="stop"`` with ``monitor=`` does. The known-floor replay
is checked against the real ``stop`` arm where its result is saved (same stop epoch).

Run: ``python benchmarks/suite/replay_detector.py [--no-write]`` (seconds; no training).
The table replaces the ``detector_replay`` block of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from _common import header, write_section  # noqa: E402

from normguard.detector import NearInterpolationDetector  # noqa: E402
from suite import analysis  # noqa: E402
from suite.report import load_results  # noqa: E402

RESULTS = BENCH / "results" / "suite"
Condition = Callable[[dict[str, Any]], bool]
# rules tried and measured that are not normguard's defaults: each a list of (condition on a
# verdict's conditions, decisions in a row it must hold); the first to reach its count fires
ALTERNATIVES: dict[str, tuple[tuple[Condition, int], ...]] = {
    "known, below_floor ∧ val_stalled at 6 only (the default before near_floor)": (
        (lambda c: bool(c["below_floor"]) and bool(c["val_stalled"]), 6),
    ),
    "known, below_floor ∧ val_stalled at 6, or near_floor ∧ val_stalled held at all of 10": (
        (lambda c: bool(c["below_floor"]) and bool(c["val_stalled"]), 6),
        (lambda c: bool(c["near_floor"]) and bool(c["val_stalled"]), 10),
    ),
    "known, val_stalled ∧ (below_floor ∨ gap_widening) at 6": (
        (lambda c: bool(c["val_stalled"]) and (bool(c["below_floor"]) or bool(c["gap_widening"])), 6),
    ),
    "known, val_stalled ∧ (below_floor ∨ (gap_widening ∧ norm_growing)) at 6": (
        (
            lambda c: (
                bool(c["val_stalled"])
                and (bool(c["below_floor"]) or (bool(c["gap_widening"]) and bool(c["norm_growing"])))
            ),
            6,
        ),
    ),
    "known, near_floor ∧ val_stalled at 6": ((lambda c: bool(c["near_floor"]) and bool(c["val_stalled"]), 6),),
    "auto, at patience 6 (the default before)": (
        (lambda c: all(bool(c[k]) for k in ("below_floor", "val_stalled", "norm_growing", "gap_widening")), 6),
    ),
    "auto, norm_growing in place of the drifted gate (the default before drift)": (
        (lambda c: all(bool(c[k]) for k in ("below_floor", "val_stalled", "norm_growing", "gap_widening")), 10),
    ),
    "none, norm_growing in place of the drifted gate (the default before drift)": (
        (lambda c: all(bool(c[k]) for k in ("val_stalled", "norm_growing", "gap_widening")), 10),
    ),
    "none, no norm condition (val_stalled ∧ gap_widening at 10)": (
        (lambda c: all(bool(c[k]) for k in ("val_stalled", "gap_widening")), 10),
    ),
}
# the detector's own rules with other settings: detector keyword arguments
DETECTOR_ALTERNATIVES: dict[str, dict[str, Any]] = {
    f"known, floor_patience {k}{' (the default before)' if k == 6 else ''}": {"floor_patience": k}
    for k in (5, 6, 8, 10)
}
SETTINGS: tuple[str, ...] = ("known", "auto", "none", *DETECTOR_ALTERNATIVES, *ALTERNATIVES)
REAL_ARMS = {"known": "stop", "auto": "stop_auto"}  # settings also run for real: the arm that did


def replay(run: dict[str, Any], setting: str) -> int | None:
    """The epoch at which the detector (or an alternative: rules over its conditions, each held
    at its count of decisions in a row) fires on this trace, or None."""
    floor = setting.split(",")[0]
    noise_floor: float | str | None = {"known": run["floor"], "auto": "auto", "none": None}[floor]
    detector = NearInterpolationDetector(noise_floor=noise_floor, **DETECTOR_ALTERNATIVES.get(setting, {}))
    detector.mode = run["mode"]
    rules = ALTERNATIVES.get(setting)
    streaks = [0] * len(rules or ())
    for row in run["trace"]:
        verdict = detector.update(
            row["epoch"] * run["steps_per_epoch"],
            total_norm=row["norm"],
            train_loss=row["train_loss"],
            val_loss=row["val_loss"],
            val_metric=row["val_metric"],
            drift=drift_share(row),
        )
        if rules is not None:
            streaks = [n + 1 if held(verdict.conditions) else 0 for n, (held, _) in zip(streaks, rules)]
            if any(n == patience for n, (_, patience) in zip(streaks, rules)):
                return int(row["epoch"])
        elif verdict.fired:
            return int(row["epoch"])
    return None


def drift_share(row: dict[str, Any]) -> float | None:
    """‖w − w_best‖ / ‖w − w₀‖ of one trace row (the harness records both distances each epoch)."""
    travelled = row.get("dist_init")
    return row["dist_best"] / travelled if travelled and "dist_best" in row else None


def _gain(run: dict[str, Any], value: float, reference: float) -> float:
    return value - reference if run["kind"] == "classification" else 100.0 * (reference - value) / reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; RESULTS.md untouched")
    args = parser.parse_args(argv)
    runs = analysis.load_runs(RESULTS, "none")
    saved = load_results(RESULTS)
    stats: dict[str, dict[str, list[Any]]] = {
        f: {"epochs": [], "gain": [], "clean": [], "noisy_fired": []} for f in SETTINGS
    }
    mismatches: dict[str, list[str]] = {setting: [] for setting in REAL_ARMS}
    checked = dict.fromkeys(REAL_ARMS, 0)
    later: list[str] = []  # known floor: the runs it stopped after EarlyStopping
    for run in runs:
        es_stop = analysis.early_stopping_epoch(run, 10)
        es_test = analysis.restore_at(run, es_stop)[1]
        clean = run["kind"] == "classification" and run["noise"] == 0
        for floor in SETTINGS:
            fired = replay(run, floor)
            s = stats[floor]
            stop = fired if fired is not None else len(run["trace"])
            if floor in REAL_ARMS:
                real = saved.get((run["task"], run["noise"], run["seed"], REAL_ARMS[floor]))
                if real is not None:
                    checked[floor] += 1
                    if real["epochs_trained"] != stop:
                        mismatches[floor].append(analysis.legacy_name(real).split("/")[1])
            if clean:
                # a false alarm: fired, and the run reached a better validation metric later
                s["clean"].append(fired is not None and report_improves_later(run, fired))
                continue
            s["noisy_fired"].append(fired is not None)
            test = analysis.restore_at(run, stop)[1] if fired is not None else run["final_test_metric"]
            s["epochs"].append(stop - es_stop)
            s["gain"].append(_gain(run, test, es_test))
            if floor == "known" and stop > es_stop:
                later.append(
                    f"{run['task']} {run['noise']:g} seed {run['seed']}: {stop - es_stop:+d} epochs, "
                    f"{s['gain'][-1]:+.1f}"
                )
    lines = [
        "Each floor setting replayed on the suite's unguarded traces (Lightning and Hugging Face tasks). "
        "Gain = test metric of the restored weights − EarlyStopping's (accuracy points, or % of the MSE "
        "for the regression; positive = better). A false alarm fires on clean labels with a better "
        "validation metric still to come.",
        "",
        "| floor (rule: the default for that floor unless named) "
        "| noisy: fired | noisy: stop − ES stop, median (range) | noisy: gain, median | "
        "noisy: worse than ES by > 0.5 | noisy: later than ES | clean: false alarms |",
        "|---|---|---|---|---|---|---|",
    ]
    for floor in SETTINGS:
        s = stats[floor]
        lines.append(
            f"| {floor} | {sum(s['noisy_fired'])}/{len(s['noisy_fired'])} | "
            f"{statistics.median(s['epochs']):+g} ({min(s['epochs']):+d} … {max(s['epochs']):+d}) | "
            f"{statistics.median(s['gain']):+.2f} | {sum(g < -0.5 for g in s['gain'])}/{len(s['gain'])} | "
            f"{sum(e > 0 for e in s['epochs'])}/{len(s['epochs'])} | {sum(s['clean'])}/{len(s['clean'])} |"
        )
    check = " ".join(
        f"{setting.capitalize()}-floor replay vs the {checked[setting]} saved runs of the real `{arm}` arm: "
        + (
            "same stop epoch in every run."
            if not mismatches[setting]
            else f"different stop epoch in {', '.join(mismatches[setting])}."
        )
        for setting, arm in REAL_ARMS.items()
    )
    late = "Known floor, the runs it stopped after EarlyStopping (epochs later, gain): " + "; ".join(later) + "."
    body = header("Detector replayed on the unguarded traces") + "\n" + "\n".join(lines)
    body += "\n\n" + check + "\n\n" + late + "\n\n" + real_auto_summary() + "\n"
    print(body)
    if not args.no_write:
        write_section("detector_replay", body)
    return 0


def real_auto_summary() -> str:
    """The real `stop_auto` arm's results against the real `early_stopping` arm (same seeds)."""
    clean = false_alarms = 0
    gains: list[float] = []
    differences: list[int] = []
    never = 0
    saved = load_results(RESULTS)
    for arm in analysis.load_runs(RESULTS, "stop_auto"):
        key = (arm["task"], arm["noise"], arm["seed"])
        es = saved[(*key, "early_stopping")]
        fired = arm["epochs_trained"] < arm["budget"]
        if arm["kind"] == "classification" and arm["noise"] == 0:
            none = saved[(*key, "none")]
            clean += 1
            false_alarms += fired and report_improves_later(none, arm["epochs_trained"])
            continue
        gains.append(_gain(arm, arm["final_test_metric"], es["final_test_metric"]))
        differences.append(arm["epochs_trained"] - es["epochs_trained"])
        never += not fired
    if not gains:
        return "No saved runs of the real `stop_auto` arm."
    return (
        f"Real `stop_auto` arm ({clean + len(gains)} runs): {false_alarms} false alarms on {clean} clean runs; on "
        f"{len(gains)} noisy runs median gain over the real `early_stopping` arm {statistics.median(gains):+.2f}, "
        f"{sum(g < -0.5 for g in gains)} worse by > 0.5, {sum(d > 0 for d in differences)} stopped later "
        f"(median difference {statistics.median(differences):+g} epochs), {never} never fired."
    )


def report_improves_later(run: dict[str, Any], epoch: int) -> bool:
    from suite.report import improves_later

    return improves_later(run, epoch)


if __name__ == "__main__":
    raise SystemExit(main())
