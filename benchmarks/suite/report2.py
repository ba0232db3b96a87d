"""Grid 2's tables (issue 23): test metric per arm, the controller's hold on the floor, the estimate's error.

Every number is computed from the saved results (``suite/store.py``) of ``suite/grid2.py``.

Controller measurements, per guarded run, against the **true** floor f of its noise kind:

* the training loss L_t at optimizer step t is the mean of the per-step (mini-batch) training
  losses over the last epoch's worth of steps (a trailing window of ``steps_per_epoch`` steps):
  the mini-batch losses themselves scatter by ±20–40 % around it, which no controller can
  remove; the table also shows the share computed on the raw mini-batch losses;
* *engaged* = the first step at which the ``hold_floor`` action reports itself engaged;
* *share < 0.9 f* = fraction of the steps after engagement with L_t < 0.9 f;
* *deepest* = min L_t / f after engagement; *highest* = max L_t / f after the later of the
  engagement and the first step with L_t < f (the first crossing).

The estimate's relative error = (estimate − f) / f, for the estimate in effect at the end of
training and the last one before engagement.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from .analysis import fmt, med

RESULTS_SUITE2 = Path(__file__).resolve().parents[1] / "RESULTS_suite2.md"
GUARDED = ("hold_known", "hold_estimate")
ARMS = ("none", "early_stopping", "hold_known", "hold_estimate")
Key = tuple[str, str, str, int, str]  # task, noise kind, optimizer, seed, arm


def load(root: Path) -> dict[Key, dict[str, Any]]:
    """Grid 2's saved results keyed (task, noise kind, optimizer, seed, arm)."""
    return {
        (r["task"], r["noise_kind"], r["optimizer"], r["seed"], r["arm"]): r
        for r in store.load(root)
        if r.get("grid") == 2
    }


def step_losses(run: dict[str, Any]) -> np.ndarray:
    """Every optimizer step's training loss, in order."""
    return np.array([v for rec in run["trace"] for v in rec.get("step_loss", [])], dtype=float)


def smoothed(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(step numbers, trailing one-epoch mean of the step losses at those steps); step n = after n updates."""
    raw = step_losses(run)
    k = max(1, int(run["steps_per_epoch"]))
    if len(raw) < k:
        return np.zeros(0, dtype=int), np.zeros(0)
    ma = np.convolve(raw, np.ones(k) / k, mode="valid")
    return np.arange(k, len(raw) + 1), ma


def controller(run: dict[str, Any]) -> dict[str, Any] | None:
    """The controller measurements of one guarded run (None when it never engaged or has no true floor)."""
    floor, engaged = run["floor"], run.get("engaged_step")
    if engaged is None or floor <= 0:
        return None
    steps, ma = smoothed(run)
    after = steps > engaged
    if not after.any():
        return None
    ratio = ma / floor
    below = np.nonzero(ma < floor)[0]
    start = max(int(steps[below[0]]) if len(below) else 10**12, engaged)
    late = steps > start
    raw = step_losses(run)
    return {
        "engaged_epoch": engaged / run["steps_per_epoch"],
        "share": float(np.mean(ratio[after] < 0.9)),
        "share_raw": float(np.mean(raw[engaged:] < 0.9 * floor)) if len(raw) > engaged else None,
        "deepest": float(ratio[after].min()),
        "highest": float(ratio[late].max()) if late.any() else None,
    }


def estimates(run: dict[str, Any]) -> tuple[float | None, float | None]:
    """(the floor in effect at the end, the last floor recorded before the engagement step)."""
    floors = [(rec["epoch"], rec.get("floor")) for rec in run["trace"]]
    final = next((f for _, f in reversed(floors) if f is not None), None)
    engaged = run.get("engaged_step")
    before = None
    if engaged is not None:
        spe = run["steps_per_epoch"]
        for epoch, f in floors:
            if epoch * spe <= engaged and f is not None:
                before = f
    return final, before


def rel(value: float | None, true: float) -> float | None:
    return None if value is None or true <= 0 else (value - true) / true


def hindsight(run: dict[str, Any]) -> float:
    """The best clean test metric of any epoch of the run (an oracle no rule has)."""
    return max(t["test_metric"] for t in run["trace"])


def _cells(results: dict[Key, dict[str, Any]]) -> list[tuple[str, str, str]]:
    from .grid2 import CELLS, EPOCHS, OPTIMIZERS

    present = {(k[0], k[1], k[2]) for k in results}
    return [(t, kind, opt) for t in EPOCHS for kind, _ in CELLS for opt in OPTIMIZERS if (t, kind, opt) in present]


def _runs(results: dict[Key, dict[str, Any]], cell: tuple[str, str, str], arm: str, seeds: int) -> list[dict]:
    return [r for s in range(seeds) if (r := results.get((*cell, s, arm))) is not None]


def _paired(results: dict[Key, dict[str, Any]], cell: tuple[str, str, str], arm: str, ref: str, seeds: int):
    out = []
    for s in range(seeds):
        a, b = results.get((*cell, s, arm)), results.get((*cell, s, ref))
        if a is not None and b is not None:
            out.append(a["final_test_metric"] - b["final_test_metric"])
    return out


def _signed(values: Iterable[float | None], digits: int = 1) -> str:
    return ", ".join("–" if v is None else f"{v:+.{digits}f}" for v in values)


def _m(runs: list[dict[str, Any]]) -> float | None:
    return med([r["final_test_metric"] for r in runs])


def test_table(results: dict[Key, dict[str, Any]], seeds: int) -> str:
    lines = [
        "| task | noise | opt | floor | none | none, hindsight-best epoch | early_stopping | hold_known | "
        "hold_estimate | known − ES | estimate − ES | known − none | estimate − none | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in _cells(results):
        runs = {a: _runs(results, cell, a, seeds) for a in ARMS}
        floor = next((r["floor"] for rs in runs.values() for r in rs), 0.0)
        m = {a: _m(rs) for a, rs in runs.items()}

        def diff(a: str, b: str, m: dict = m, cell: tuple = cell) -> str:
            if m[a] is None or m[b] is None:
                return "–"
            return f"{m[a] - m[b]:+.1f} ({_signed(_paired(results, cell, a, b, seeds))})"

        hs = med([hindsight(r) for r in runs["none"]])
        lines.append(
            f"| {cell[0]} | {cell[1]} | {cell[2]} | {floor:.3f} | {fmt(m['none'], 1)} | {fmt(hs, 1)} | "
            f"{fmt(m['early_stopping'], 1)} | {fmt(m['hold_known'], 1)} | {fmt(m['hold_estimate'], 1)} | "
            f"{diff('hold_known', 'early_stopping')} | {diff('hold_estimate', 'early_stopping')} | "
            f"{diff('hold_known', 'none')} | {diff('hold_estimate', 'none')} | "
            f"{'/'.join(str(len(runs[a])) for a in ARMS)} |"
        )
    return "\n".join(lines)


def controller_table(results: dict[Key, dict[str, Any]], seeds: int) -> str:
    lines = [
        "| task | noise | opt | arm | engaged (runs) | engaged at epoch (per seed) | share < 0.9 f (per seed) | "
        "share < 0.9 f, raw steps | deepest L/f (per seed) | highest L/f after first crossing (per seed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in _cells(results):
        if cell[1] == "clean":
            continue
        for arm in GUARDED:
            runs = _runs(results, cell, arm, seeds)
            if not runs:
                continue
            ms = [controller(r) for r in runs]
            got = [c for c in ms if c is not None]

            def col(key: str, digits: int = 2, pct: bool = False, ms: list = ms) -> str:
                vals = [None if c is None else c[key] for c in ms]
                if pct:
                    return ", ".join("–" if v is None else f"{100 * v:.0f} %" for v in vals)
                return ", ".join("–" if v is None else f"{v:.{digits}f}" for v in vals)

            lines.append(
                f"| {cell[0]} | {cell[1]} | {cell[2]} | {arm} | {len(got)}/{len(runs)} | {col('engaged_epoch', 1)} | "
                f"{col('share', pct=True)} | {col('share_raw', pct=True)} | {col('deepest')} | {col('highest')} |"
            )
    return "\n".join(lines)


def estimate_table(results: dict[Key, dict[str, Any]], seeds: int) -> str:
    lines = [
        "| task | noise | opt | true floor | estimate at the end (per seed) | relative error at the end | "
        "estimate before engaging | relative error before engaging |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in _cells(results):
        runs = _runs(results, cell, "hold_estimate", seeds)
        if not runs:
            continue
        floor = runs[0]["floor"]
        est = [estimates(r) for r in runs]
        lines.append(
            f"| {cell[0]} | {cell[1]} | {cell[2]} | {floor:.3f} | "
            f"{', '.join(fmt(e[0], 3) for e in est)} | "
            f"{', '.join('–' if (v := rel(e[0], floor)) is None else f'{100 * v:+.0f} %' for e in est)} | "
            f"{', '.join(fmt(e[1], 3) for e in est)} | "
            f"{', '.join('–' if (v := rel(e[1], floor)) is None else f'{100 * v:+.0f} %' for e in est)} |"
        )
    return "\n".join(lines)


def _improves_after(none: dict[str, Any], epoch: float) -> bool:
    """The unguarded run's validation metric still rises by ≥ 0.5 points after ``epoch``."""
    v = [t["val_metric"] for t in none["trace"]]
    cut = int(np.ceil(epoch))
    return bool(v[cut:] and max(v[cut:]) >= max(v[:cut] or [-1e9]) + 0.5)


def clean_table(results: dict[Key, dict[str, Any]], seeds: int) -> str:
    lines = [
        "| task | opt | arm | test − none (per seed) | engaged (runs) | engaged at epoch | engaged while the "
        "unguarded run's validation accuracy still rose ≥ 0.5 pt |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in _cells(results):
        if cell[1] != "clean":
            continue
        for arm in GUARDED:
            runs = _runs(results, cell, arm, seeds)
            if not runs:
                continue
            eng = [r.get("engaged_step") for r in runs]
            epochs = [None if e is None else e / r["steps_per_epoch"] for e, r in zip(eng, runs)]
            early = 0
            for r, e in zip(runs, epochs):
                none = results.get((*cell, r["seed"], "none"))
                if e is not None and none is not None:
                    early += _improves_after(none, e)
            lines.append(
                f"| {cell[0]} | {cell[2]} | {arm} | {_signed(_paired(results, cell, arm, 'none', seeds))} | "
                f"{sum(e is not None for e in eng)}/{len(runs)} | "
                f"{', '.join('–' if e is None else f'{e:.1f}' for e in epochs)} | {early} |"
            )
    return "\n".join(lines)


def targets(results: dict[Key, dict[str, Any]], seeds: int) -> str:
    """Issue 23's targets, each with where it is met and by how much it is missed."""
    out: list[str] = []
    cells = _cells(results)
    noisy = [c for c in cells if c[1] != "clean"]

    def m(cell: tuple[str, str, str], arm: str) -> float | None:
        return _m(_runs(results, cell, arm, seeds))

    def gap_list(arm: str, ref: str, need: float, where: list[tuple[str, str, str]], hind: bool = False) -> str:
        met, missed, absent = 0, [], 0
        for cell in where:
            a = m(cell, arm)
            b = med([hindsight(r) for r in _runs(results, cell, "none", seeds)]) if hind else m(cell, ref)
            if a is None or b is None:
                absent += 1
                continue
            if a - b >= need - 1e-9:
                met += 1
            else:
                missed.append(f"{'/'.join(cell)} {a - b:+.1f} (short by {need - (a - b):.1f})")
        text = f"met in {met} of {met + len(missed)} cells"
        if missed:
            text += "; missed: " + "; ".join(missed)
        if absent:
            text += f"; {absent} cells not run"
        return text

    out.append(
        "- **Unknown noise, ≥ EarlyStopping + 1 on the noisy cells (median):** "
        + gap_list("hold_estimate", "early_stopping", 1.0, noisy)
    )
    out.append(
        "- **Unknown noise, ≥ EarlyStopping − 0.5 in every cell:** "
        + gap_list("hold_estimate", "early_stopping", -0.5, cells)
    )
    clean = [c for c in cells if c[1] == "clean"]
    for arm in GUARDED:
        worst = []
        for cell in clean:
            d = _paired(results, cell, arm, "none", seeds)
            a, b = m(cell, arm), m(cell, "none")
            if a is not None and b is not None:
                worst.append((cell, a - b, min(d) if d else None))
        if worst:
            ok = sum(abs(w[1]) <= 0.5 for w in worst)
            not_worse = sum(w[1] >= -0.5 for w in worst)
            out.append(
                f"- **Clean cells within 0.5 of `none` ({arm}, median):** within ±0.5 in {ok} of {len(worst)} "
                f"cells, no more than 0.5 below in {not_worse} of {len(worst)}; "
                + "; ".join(f"{'/'.join(c)} {d:+.1f} (worst seed {fmt(s, 1)})" for c, d, s in worst)
            )
            runs = [r for cell in clean for r in _runs(results, cell, arm, seeds)]
            early = 0
            engaged = 0
            for r in runs:
                e = r.get("engaged_step")
                none = results.get((r["task"], r["noise_kind"], r["optimizer"], r["seed"], "none"))
                if e is not None:
                    engaged += 1
                    early += none is not None and _improves_after(none, e / r["steps_per_epoch"])
            out.append(
                f"- **Clean labels, no engagement while validation still improves ({arm}):** engaged in {engaged} "
                f"of {len(runs)} clean runs, {early} of them while the unguarded run's validation accuracy still "
                "rose by ≥ 0.5 points afterwards."
            )
    out.append(
        "- **Known floor, ≥ EarlyStopping + 1 in every noisy cell (median):** "
        + gap_list("hold_known", "early_stopping", 1.0, noisy)
    )
    out.append(
        "- **Known floor, median at or above the hindsight-best epoch of `none` (median over seeds of each "
        "run's best test epoch):** " + gap_list("hold_known", "none", 0.0, noisy, hind=True)
    )
    errs = []
    for cell in noisy:
        if cell[1] in ("uniform", "other"):
            for r in _runs(results, cell, "hold_estimate", seeds):
                e = rel(estimates(r)[0], r["floor"])
                if e is not None:
                    errs.append((cell, r["seed"], e))
    if errs:
        inside = sum(abs(e) <= 0.10 for _, _, e in errs)
        worst = sorted(errs, key=lambda x: -abs(x[2]))[:5]
        out.append(
            f"- **Estimated floor within ±10 % of the true floor (symmetric noise, 30 %; the estimate at the end):** "
            f"{inside} of {len(errs)} runs; median |error| {100 * statistics.median(abs(e) for _, _, e in errs):.0f} %"
            "; largest: " + "; ".join(f"{'/'.join(c)} seed {s} {100 * e:+.0f} %" for c, s, e in worst)
        )
    for arm in GUARDED:
        ms = [
            (cell, r["seed"], c)
            for cell in noisy
            for r in _runs(results, cell, arm, seeds)
            if (c := controller(r)) is not None
        ]
        if not ms:
            continue
        n = len(ms)
        share = [c["share"] for _, _, c in ms]
        deep = [c["deepest"] for _, _, c in ms]
        high = [c["highest"] for _, _, c in ms if c["highest"] is not None]
        out.append(
            f"- **Controller ({arm}, {n} engaged noisy runs):** share of steps < 0.9 f ≤ 10 % in "
            f"{sum(s <= 0.10 for s in share)} of {n} (median {100 * statistics.median(share):.0f} %, worst "
            f"{100 * max(share):.0f} %); never under 0.8 f in {sum(d >= 0.8 for d in deep)} of {n} (deepest "
            f"{min(deep):.2f} f); never over 1.3 f after the first crossing in "
            f"{sum(h <= 1.3 for h in high)} of {len(high)} that crossed "
            f"(highest {max(high, default=float('nan')):.2f} f)."
        )
    return "\n".join(out)


def build(root: Path, seeds: int = 3) -> str:
    results = load(root)
    if not results:
        return "No grid-2 results saved yet."
    n = len(results)
    secs = sum(r["seconds"] for r in results.values())
    parts = [
        f"{n} runs saved ({secs / 60:.0f} min of training time, summed over runs).",
        "### Clean test accuracy (%) per cell: medians over seeds",
        "Deltas: difference of the medians, then the per-seed paired differences in brackets. "
        "`seeds` = runs saved for none / early_stopping / hold_known / hold_estimate.",
        test_table(results, seeds),
        "### Issue 23's targets",
        targets(results, seeds),
        "### The controller's hold on the true floor (noisy cells, guarded runs)",
        controller_table(results, seeds),
        "### The estimated floor (arm hold_estimate)",
        estimate_table(results, seeds),
        "### Clean labels",
        clean_table(results, seeds),
    ]
    return "\n\n".join(parts) + "\n"


BEGIN, END = "<!-- BEGIN suite2 -->", "<!-- END suite2 -->"


def write(body: str, command: str = "python benchmarks/suite.py --grid 2") -> None:
    """Put the command, the machine line and the tables between RESULTS_suite2.md's markers
    (the text outside them is kept; a new file gets the grid's description above them)."""
    import sys

    sys.path.insert(0, str(RESULTS_SUITE2.parent))
    from _common import header

    from . import grid2

    block = f"{BEGIN}\n{header(f'`{command}`')}\n{body}{END}\n"
    old = RESULTS_SUITE2.read_text() if RESULTS_SUITE2.exists() else ""
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) + 1 :]
    else:
        grid = (grid2.__doc__ or "").split("\n\n", 1)[1].rsplit("\n\nResults:", 1)[0]
        how = (__doc__ or "").split("\n\n", 1)[1]
        text = f"# Benchmark suite, grid 2 (issue 23)\n\n{grid}\n\n{how}\n{block}"
    RESULTS_SUITE2.write_text(text)


__all__ = ["build", "controller", "estimates", "load", "smoothed", "step_losses", "write"]
