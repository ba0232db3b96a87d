"""Offline analysis of the ``none`` arm's traces: candidate detector conditions and stopping rules.

Every candidate condition is a function ``trace → list[bool | None]`` (one entry per epoch;
``None`` while it cannot be evaluated). Its **hit rate** in a segment of a run is the fraction
of evaluable epochs of that segment where it holds; the tables average that over runs.
Segments are split at the run's validation-metric optimum ``e*`` (the first epoch of the
best validation accuracy, or lowest validation MSE): *before* is ``e < e*``, *after* is
``e > e*``. A condition that separates memorising from learning holds *after* ``e*`` on
noisy runs and rarely on clean runs (or before ``e*``).

Stopping rules are replayed the same way: a rule stops at the first epoch where its
condition has held at ``k`` consecutive epochs, and restores the best-validation-metric
weights seen up to then; the test metric of that restore is read off the trace (the runs
are deterministic, so the ``early_stopping`` arm's real result is a check of the replay).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from normguard.detector import theil_sen

W = 6  # window (epochs) of every slope, as the detector's default window of 6 checks
Trace = list[dict[str, Any]]
ConditionFn = Callable[[dict[str, Any]], list[bool | None]]


# ---------------------------------------------------------------------- helpers
def series(run: dict[str, Any], key: str) -> np.ndarray:
    return np.array([r[key] for r in run["trace"]], dtype=float)


def best_epoch(run: dict[str, Any]) -> int:
    """1-based epoch of the first best validation metric."""
    v = series(run, "val_metric")
    i = int(np.argmax(v)) if run["mode"] == "max" else int(np.argmin(v))
    return i + 1


def _better(run: dict[str, Any], a: float, b: float) -> bool:
    return a > b if run["mode"] == "max" else a < b


def _slope(y: np.ndarray, x: np.ndarray | None = None) -> tuple[float, float]:
    x = np.arange(len(y), dtype=float) if x is None else x
    return theil_sen(x, y)


def _windowed(values: np.ndarray, fn: Callable[[np.ndarray, int], bool | None], start: int = W) -> list[bool | None]:
    """``fn(values[e-W+1 : e+1], e)`` for each epoch index e ≥ start-1; None before."""
    out: list[bool | None] = []
    for e in range(len(values)):
        out.append(None if e + 1 < start else fn(values[e + 1 - W : e + 1], e))
    return out


def _rising(y: np.ndarray, x: np.ndarray | None = None, threshold: float = 0.0, confidence: float = 0.75) -> bool:
    s, pos = _slope(y, x)
    return bool(s > threshold and pos >= confidence)


def _growth_exponents(run: dict[str, Any], key: str) -> list[float | None]:
    """Theil–Sen slope of log(norm) against log(epoch) over the last W epochs."""
    y = np.log(series(run, key))
    x = np.log(np.arange(1, len(y) + 1, dtype=float))
    return [None if e + 1 < W else _slope(y[e + 1 - W : e + 1], x[e + 1 - W : e + 1])[0] for e in range(len(y))]


def _rates(run: dict[str, Any], key: str) -> list[float | None]:
    """Theil–Sen slope of log(value) per epoch over the last W epochs."""
    y = np.log(np.maximum(series(run, key), 1e-12))
    return [None if e + 1 < W else _slope(y[e + 1 - W : e + 1])[0] for e in range(len(y))]


# ---------------------------------------------------------------------- candidate conditions
def c_norm_growing(run: dict[str, Any], key: str = "norm") -> list[bool | None]:
    """normguard 0.1's ``norm_growing``: growth exponent of ‖w‖ vs log step > 0.02, 75 % rising pairs."""
    y = np.log(series(run, key))
    x = np.log(np.arange(1, len(y) + 1, dtype=float))
    return [
        None if e + 1 < W else _rising(y[e + 1 - W : e + 1], x[e + 1 - W : e + 1], threshold=0.02)
        for e in range(len(y))
    ]


def c_accelerating(run: dict[str, Any], key: str = "norm") -> list[bool | None]:
    """Per-epoch growth rate of log‖w‖ now > 1.1 × the same rate one window earlier."""
    r = _rates(run, key)
    return [None if e < 2 * W - 1 or r[e - W] is None else bool(r[e] > 1.1 * r[e - W]) for e in range(len(r))]  # type: ignore[operator]


def c_rate_rebound(run: dict[str, Any], key: str = "norm") -> list[bool | None]:
    """Per-epoch growth rate of log‖w‖ > 1.5 × the lowest rate the run has shown so far (after 2 windows)."""
    r = _rates(run, key)
    out: list[bool | None] = []
    low = math.inf
    for e, v in enumerate(r):
        if v is None or e < 2 * W - 1:
            out.append(None)
            if v is not None:
                low = min(low, v)
            continue
        out.append(bool(v > 1.5 * max(low, 1e-9)))
        low = min(low, v)
    return out


def c_layers_accelerating(run: dict[str, Any]) -> list[bool | None]:
    """At least half of the layers' log-norm growth rates exceed 1.1 × their rate a window earlier."""
    names = list(run["trace"][0]["layers"])
    rates = []
    for n in names:
        y = np.log(np.maximum([r["layers"].get(n, np.nan) for r in run["trace"]], 1e-12))
        rates.append([None if e + 1 < W else _slope(y[e + 1 - W : e + 1])[0] for e in range(len(y))])
    out: list[bool | None] = []
    for e in range(len(run["trace"])):
        if e < 2 * W - 1:
            out.append(None)
            continue
        votes = [r[e] > 1.1 * r[e - W] for r in rates if r[e] is not None and r[e - W] is not None]
        out.append(bool(np.mean(votes) >= 0.5) if votes else None)
    return out


def c_layers_growing(run: dict[str, Any]) -> list[bool | None]:
    """At least half of the layers have a growth exponent (log-log) above 0.02."""
    names = list(run["trace"][0]["layers"])
    x = np.log(np.arange(1, len(run["trace"]) + 1, dtype=float))
    ys = [np.log(np.maximum([r["layers"].get(n, np.nan) for r in run["trace"]], 1e-12)) for n in names]
    out: list[bool | None] = []
    for e in range(len(x)):
        if e + 1 < W:
            out.append(None)
            continue
        votes = [_slope(y[e + 1 - W : e + 1], x[e + 1 - W : e + 1])[0] > 0.02 for y in ys]
        out.append(bool(np.mean(votes) >= 0.5))
    return out


def c_exponent_rising(run: dict[str, Any], key: str = "norm", factor: float = 1.05) -> list[bool | None]:
    """Growth exponent g = d log‖w‖ / d log t over the last W epochs > ``factor`` × g one window earlier.

    Steady training has g roughly constant or falling (‖w‖ ~ t^g, the growth slowing); fitting
    noise makes g rise: the norm grows faster than the run's own earlier power law.
    """
    g = _growth_exponents(run, key)
    return [
        None if e < 2 * W - 1 or g[e] is None or g[e - W] is None else bool(g[e] > factor * g[e - W])  # type: ignore[operator]
        for e in range(len(g))
    ]


def c_exponent_rebound(run: dict[str, Any], key: str = "norm", factor: float = 1.2) -> list[bool | None]:
    """Growth exponent now > ``factor`` × the lowest exponent the run has shown so far (from the second window)."""
    g = _growth_exponents(run, key)
    out: list[bool | None] = []
    low = math.inf
    for e, v in enumerate(g):
        if v is None or e < 2 * W - 1:
            out.append(None)
        else:
            out.append(bool(v > factor * max(low, 1e-9)))
        if v is not None and e >= W - 1:
            low = min(low, v)
    return out


def c_layers_exponent_rising(run: dict[str, Any], factor: float = 1.05) -> list[bool | None]:
    """At least half of the layers' growth exponents exceed ``factor`` × their exponent a window earlier."""
    names = list(run["trace"][0]["layers"])
    x = np.log(np.arange(1, len(run["trace"]) + 1, dtype=float))
    gs = []
    for n in names:
        y = np.log(np.maximum([r["layers"].get(n, np.nan) for r in run["trace"]], 1e-12))
        gs.append([None if e + 1 < W else _slope(y[e + 1 - W : e + 1], x[e + 1 - W : e + 1])[0] for e in range(len(y))])
    out: list[bool | None] = []
    for e in range(len(x)):
        if e < 2 * W - 1:
            out.append(None)
            continue
        votes = [g[e] > factor * g[e - W] for g in gs if g[e] is not None and g[e - W] is not None and g[e - W] > 0]
        out.append(bool(np.mean(votes) >= 0.5) if votes else None)
    return out


def c_drift_share(run: dict[str, Any], share: float = 0.2) -> list[bool | None]:
    """Distance from the best-validation weights > ``share`` × distance from init: a large part of the
    path travelled has been travelled since the last validation improvement."""
    d, i = series(run, "dist_best"), series(run, "dist_init")
    return [bool(a > share * b) if b > 0 else None for a, b in zip(d, i)]


def c_drift_from_best(run: dict[str, Any]) -> list[bool | None]:
    """Distance from the best-validation weights rising over the window, and no new best in it."""
    d = series(run, "dist_best")
    return _windowed(d, lambda y, e: bool(y[0] > 0 and _rising(y)))


def c_drift_outpaces(run: dict[str, Any]) -> list[bool | None]:
    """Distance from the best weights grows faster than the distance from init (drift is not progress)."""
    d, i = series(run, "dist_best"), series(run, "dist_init")
    return _windowed(
        d, lambda y, e: bool(y[0] > 0 and _slope(y)[0] > _slope(i[e + 1 - W : e + 1])[0] > 0) if y[0] > 0 else False
    )


def c_below_floor(run: dict[str, Any]) -> list[bool | None]:
    """Mean training loss of the epoch < floor (the floor is 0 on clean labels: never)."""
    return [bool(v < run["floor"]) for v in series(run, "train_loss")]


def c_gap_widening(run: dict[str, Any]) -> list[bool | None]:
    """val − train loss rising over the window (75 % of pairs) and above 0.1 × floor."""
    gap = series(run, "val_loss") - series(run, "train_loss")
    return _windowed(gap, lambda y, e: bool(_rising(y) and y[-1] > 0.1 * run["floor"]))


def c_diverging(run: dict[str, Any]) -> list[bool | None]:
    """Training loss falling while validation loss rises (Theil–Sen slopes over the window, opposite signs)."""
    t, v = series(run, "train_loss"), series(run, "val_loss")
    return _windowed(t, lambda y, e: bool(_slope(y)[0] < 0 and _rising(v[e + 1 - W : e + 1])))


def c_norm_price(run: dict[str, Any]) -> list[bool | None]:
    """Norm bought per unit of fit rising: Δlog‖w_decayed‖ / Δ(−log train loss) over the window
    exceeds that of the window before by 1.5× (memorising noise costs more norm per loss)."""
    n = np.log(series(run, "norm_decayed"))
    t = -np.log(np.maximum(series(run, "train_loss"), 1e-12))
    out: list[bool | None] = []
    for e in range(len(n)):
        if e < 2 * W - 1:
            out.append(None)
            continue
        a, b = slice(e + 1 - W, e + 1), slice(e + 1 - 2 * W, e + 1 - W)
        dn, dt = n[a][-1] - n[a][0], t[a][-1] - t[a][0]
        dn0, dt0 = n[b][-1] - n[b][0], t[b][-1] - t[b][0]
        if dt <= 0 or dt0 <= 0:
            out.append(None)
            continue
        out.append(bool(dn / dt > 1.5 * dn0 / dt0))
    return out


def c_val_stalled(run: dict[str, Any]) -> list[bool | None]:
    """Reference (EarlyStopping's evidence): no new best validation metric in the last W epochs."""
    v = series(run, "val_metric")
    out: list[bool | None] = []
    best, since = None, 0
    for x in v:
        if best is None or _better(run, x, best):
            best, since = x, 0
        else:
            since += 1
        out.append(since >= W)
    return out


CONDITIONS: dict[str, ConditionFn] = {
    "norm_growing (0.1)": c_norm_growing,
    "decayed_norm_growing": lambda r: c_norm_growing(r, "norm_decayed"),
    "norm_accelerating": c_accelerating,
    "decayed_norm_accelerating": lambda r: c_accelerating(r, "norm_decayed"),
    "norm_rate_rebound": c_rate_rebound,
    "growth_exponent_rising (×1.05)": c_exponent_rising,
    "decayed_exponent_rising (×1.05)": lambda r: c_exponent_rising(r, "norm_decayed"),
    "growth_exponent_rebound (×1.2 of run min)": c_exponent_rebound,
    "decayed_exponent_rebound (×1.2 of run min)": lambda r: c_exponent_rebound(r, "norm_decayed"),
    "layers_exponent_rising (≥ half)": c_layers_exponent_rising,
    "layers_growing (≥ half)": c_layers_growing,
    "layers_accelerating (≥ half)": c_layers_accelerating,
    "drift_from_best": c_drift_from_best,
    "drift_outpaces_init": c_drift_outpaces,
    "drift_share > 0.1": lambda r: c_drift_share(r, 0.1),
    "drift_share > 0.2": c_drift_share,
    "below_floor": c_below_floor,
    "gap_widening": c_gap_widening,
    "train↓ val↑ (diverging)": c_diverging,
    "norm_price_rising": c_norm_price,
    "val_metric_stalled (ref.)": c_val_stalled,
}


# ---------------------------------------------------------------------- loading
def legacy_name(run: dict[str, Any]) -> str:
    """The file name the run had when each result was its own JSON file (the order tables were built in)."""
    return f"{run['task']}/{run['task']}_n{run['noise']:g}_s{run['seed']}_{run['arm']}.json"


def load_runs(root: Path, arm: str = "none", tasks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The saved results of one arm under ``root`` (``suite.store``), in the order of their old file names."""
    from . import store

    runs = [r for r in store.load(root) if r.get("arm") == arm and (tasks is None or r["task"] in tasks)]
    return sorted(runs, key=legacy_name)


def group_of(run: dict[str, Any]) -> str:
    return "clean" if run["floor"] <= 0 else "noisy"


# ---------------------------------------------------------------------- hit rates
def hit_rates(run: dict[str, Any], values: list[bool | None]) -> dict[str, float | None]:
    """Fraction of evaluable epochs where the condition holds, before and after e*."""
    star = best_epoch(run)
    before = [v for e, v in enumerate(values, start=1) if e < star and v is not None]
    after = [v for e, v in enumerate(values, start=1) if e > star and v is not None]
    return {
        "before": float(np.mean(before)) if before else None,
        "after": float(np.mean(after)) if after else None,
    }


def hit_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per condition: mean hit rate over runs for clean/noisy × before/after."""
    rows = []
    for name, fn in CONDITIONS.items():
        cells: dict[str, list[float]] = {}
        for run in runs:
            rates = hit_rates(run, fn(run))
            for seg, v in rates.items():
                if v is not None:
                    cells.setdefault(f"{group_of(run)}_{seg}", []).append(v)
        row: dict[str, Any] = {"condition": name}
        for key in ("clean_before", "clean_after", "noisy_before", "noisy_after"):
            row[key] = float(np.mean(cells[key])) if cells.get(key) else None
            row[key + "_n"] = len(cells.get(key, []))
        rows.append(row)
    return rows


def per_task_after(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Hit rate after e* per task × noise for the chosen conditions (mean over seeds)."""
    keyed: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in runs:
        keyed.setdefault((run["task"], run["noise"]), []).append(run)
    rows = []
    for (task, noise), group in sorted(keyed.items()):
        row: dict[str, Any] = {"task": task, "noise": noise}
        for name in names:
            vals = [hit_rates(r, CONDITIONS[name](r))["after"] for r in group]
            vals = [v for v in vals if v is not None]
            row[name] = float(np.mean(vals)) if vals else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- stopping rules, replayed
def first_streak(values: list[bool | None], k: int) -> int | None:
    """1-based epoch where ``values`` has held at ``k`` consecutive epochs for the first time."""
    streak = 0
    for e, v in enumerate(values, start=1):
        streak = streak + 1 if v else 0
        if streak >= k:
            return e
    return None


def restore_at(run: dict[str, Any], stop: int) -> tuple[int, float]:
    """(epoch, test metric) of the best validation metric within epochs 1..stop."""
    v = series(run, "val_metric")[:stop]
    i = int(np.argmax(v)) if run["mode"] == "max" else int(np.argmin(v))
    return i + 1, float(run["trace"][i]["test_metric"])


def early_stopping_epoch(run: dict[str, Any], patience: int = 10, key: str = "val_metric") -> int:
    """Stop epoch of Lightning's EarlyStopping (strict improvement, min_delta 0) replayed on a trace."""
    v = series(run, key)
    mode = run["mode"] if key == "val_metric" else "min"
    best, wait = None, 0
    for e, x in enumerate(v, start=1):
        if best is None or (x > best if mode == "max" else x < best):
            best, wait = x, 0
        else:
            wait += 1
            if wait >= patience:
                return e
    return len(v)


def still_improving(run: dict[str, Any], stop: int) -> bool:
    """True if the full run later beats the best validation metric seen by ``stop`` by a margin
    (0.5 accuracy points; 1 % of the MSE)."""
    v = series(run, "val_metric")
    before, after = v[:stop], v[stop:]
    if len(after) == 0:
        return False
    if run["mode"] == "max":
        return bool(after.max() >= before.max() + 0.5)
    return bool(after.min() <= 0.99 * before.min())


def floor_crossing(run: dict[str, Any]) -> int | None:
    """First epoch whose mean training loss is under the floor (None on clean labels or never)."""
    if run["floor"] <= 0:
        return None
    for e, v in enumerate(series(run, "train_loss"), start=1):
        if v < run["floor"]:
            return e
    return None


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
