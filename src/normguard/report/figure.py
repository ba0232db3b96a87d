"""The report figure: the runs side by side on one shared x-axis (needs matplotlib:
``pip install 'normguard[report]'``).

Each run gets a column of panels, each panel with its own y-axis, and every column the
same x-axis (the step, or the epoch the framework logged), so a run stopped at step 160
is drawn as short as it was next to one of 2000 steps. At most :data:`MAX_COLUMNS` columns
side by side (the PNG stays under ~1600 px wide, legible at 100 % zoom); more runs wrap
into rows. Top to bottom:

1. the events, one row per kind (detector fired, weight decay, stop, restore, non-finite
   values), so events at the same step never hide each other;
2. training and validation loss with the noise floor (a baseline run without normguard:
   the losses its framework logged, e.g. Lightning's ``train_loss`` / ``val_loss`` or
   Hugging Face's ``train/loss`` / ``eval/loss``);
3. the total weight norm;
4. the weight decay in effect per param group, with the point a weight-decay action
   engaged (only when some run logged a weight decay);
5. the norm's growth exponent d log‖w‖ / d log(step);
6. the validation − training gap;
7. the layers whose norm changed most (``grew ×3.2``, ``shrank ×0.67``);
8. one strip per detector condition: a filled cell at each decision where it held;

and a dashed vertical line per event through panels 2–8 (events of one step side by side;
a weight-decay controller's many small changes get one line, where it engaged).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from normguard import tags
from normguard.detector import Condition
from normguard.events import EventKind
from normguard.report.runs import RunData, Series
from normguard.report.summary import describe_change, layer_changes

__all__ = [
    "COLUMN_WIDTH_IN",
    "DPI",
    "MAX_COLUMNS",
    "PANELS",
    "event_rows",
    "make_figure",
    "panels_for",
    "plot_report",
]

XAxis = Literal["step", "epoch"]
X_AXES = ("step", "epoch")

#: kind -> (colour, short label), in the order of the figure's event rows (most important first)
EVENT_STYLE: dict[str, tuple[str, str]] = {
    EventKind.DETECTOR_FIRED.value: ("tab:red", "fired"),
    EventKind.WEIGHT_DECAY_CHANGED.value: ("tab:orange", "weight decay"),
    EventKind.ACTION_ESCALATED.value: ("tab:purple", "escalated"),
    EventKind.STOP.value: ("black", "stop"),
    EventKind.RESTORE.value: ("tab:green", "restore"),
    EventKind.RESTORE_SKIPPED.value: ("tab:gray", "restore skipped"),
    EventKind.NONFINITE_LOSS.value: ("magenta", "non-finite loss"),
    EventKind.NONFINITE_WEIGHTS.value: ("magenta", "non-finite weights"),
    EventKind.NONFINITE_VAL_LOSS.value: ("magenta", "non-finite val loss"),
    EventKind.DIVERGING_LOSS.value: ("tab:brown", "diverging"),
}
_CONDITIONS = [c.value for c in Condition]
#: points between the vertical lines of events that share a step
EVENT_LINE_SPACING_PT = 2.5

#: every panel of a column, top to bottom, with its relative height
PANEL_HEIGHTS = {
    "events": 1.1,
    "loss": 2.8,
    "norm": 2.0,
    "weight_decay": 1.6,
    "growth": 1.4,
    "gap": 1.8,
    "layers": 2.3,
    "conditions": 1.2,
}
PANELS = tuple(PANEL_HEIGHTS)
#: width of one column in inches (the panel plus its legend, outside to the right)
COLUMN_WIDTH_IN = 7.2
#: inches of height per unit of :data:`PANEL_HEIGHTS`
HEIGHT_UNIT_IN = 1.0
#: columns side by side before the runs wrap into another row
MAX_COLUMNS = 2
#: pixels per inch of the PNG: 2 columns are 2 × 7.2 × 110 = 1584 px wide
DPI = 110
_LABEL_CHARS = 36


def _require_matplotlib() -> Any:
    """matplotlib's ``Figure`` class (used without pyplot: no global state, no GUI backend)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report figure needs matplotlib: pip install 'normguard[report]'") from exc
    return Figure


def _plain(*texts: Any) -> None:
    """Names are text, never math: a ``$`` in a layer or run name is drawn as a ``$``
    (matplotlib would parse ``$…$`` as math text, and fail on an unknown symbol)."""
    for text in texts:
        text.set_parse_math(False)
        text.set_usetex(False)


def _short(name: str) -> str:
    """A name for a legend: long ones keep their end (the distinctive part)."""
    return name if len(name) <= _LABEL_CHARS else "…" + name[-(_LABEL_CHARS - 1) :]


def _legend(ax: Any, **kwargs: Any) -> None:
    """The legend outside the panel, on its right: it never covers data. Its labels are text."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", **kwargs)
    _plain(*legend.get_texts(), legend.get_title())


def _positive(*series: Series | None) -> bool:
    values = [s.values[np.isfinite(s.values)] for s in series if s is not None and len(s)]
    return bool(values) and all((v > 0).all() for v in values) and any(v.size for v in values)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} logged", transform=ax.transAxes, ha="center", va="center", color="gray")


def _event_style(kind: str) -> tuple[str, str]:
    return EVENT_STYLE.get(kind, ("tab:gray", kind))


def event_rows(run: RunData) -> list[str]:
    """The event kinds of a run in the order of the figure's event rows (most important first)."""
    present = {e.name for e in run.events}
    return [k for k in EVENT_STYLE if k in present] + sorted(present - set(EVENT_STYLE))


def panels_for(runs: Mapping[str, RunData]) -> tuple[str, ...]:
    """The panels drawn: all of :data:`PANELS`, the weight decay only when some run logged one."""
    decay = any(run.weight_decays for run in runs.values())
    return tuple(p for p in PANELS if p != "weight_decay" or decay)


class _Column:
    """One run's column: its axes by panel and its x coordinates (step or epoch)."""

    def __init__(self, fig: Any, axes: Sequence[Any], panels: Sequence[str], run: RunData, x: XAxis) -> None:
        self.fig, self.run, self.x = fig, run, x
        self.ax = dict(zip(panels, axes))

    def xs(self, steps: Any) -> np.ndarray:
        steps = np.asarray(steps)
        return self.run.epochs(steps) if self.x == "epoch" else steps.astype(np.float64)

    def plot(self, panel: str, series: Series | None, **kwargs: Any) -> bool:
        if series is None or not len(series):
            return False
        self.ax[panel].plot(self.xs(series.steps), series.values, **kwargs)
        return True


def _draw_events(col: _Column) -> None:
    """The events panel: a marker per event in its kind's row and a dashed line per event
    through the other panels, the lines of one step side by side (``EVENT_LINE_SPACING_PT``
    apart), never on top of each other. Weight-decay changes get a marker and a line where
    the action engaged, and small ticks for the rest. Artists carry ``gid``
    ``event-marker:<kind>:<step>`` / ``event-line:<kind>:<step>`` /
    ``event-tick:weight_decay_changed:<step>``."""
    from matplotlib.transforms import offset_copy

    ax, run = col.ax["events"], col.run
    rows = event_rows(run)
    engaged = set(run.engaged_steps())
    decay = EventKind.WEIGHT_DECAY_CHANGED.value
    by_step: dict[int, list[str]] = {}
    ticks: list[int] = []
    for event in run.events:
        if event.name == decay and event.step not in engaged:
            ticks.append(event.step)
            continue
        kinds = by_step.setdefault(event.step, [])
        if event.name not in kinds:
            kinds.append(event.name)
    if ticks:
        steps = sorted(set(ticks))
        ax.plot(
            col.xs(steps),
            [rows.index(decay)] * len(steps),
            marker="|",
            markersize=7,
            linestyle="none",
            color=_event_style(decay)[0],
            alpha=0.7,
        )
        ax.lines[-1].set_gid(f"event-tick:{decay}:{len(steps)}")
    others = [a for p, a in col.ax.items() if p != "events"]
    for step, kinds in by_step.items():
        kinds.sort(key=rows.index)
        x = float(col.xs([step])[0])
        for i, kind in enumerate(kinds):
            colour, _ = _event_style(kind)
            ax.plot([x], [rows.index(kind)], marker="v", markersize=9, linestyle="none", color=colour)
            ax.lines[-1].set_gid(f"event-marker:{kind}:{step}")
            shift = (i - (len(kinds) - 1) / 2) * EVENT_LINE_SPACING_PT
            for panel in others:
                line = panel.axvline(x, color=colour, linestyle=(0, (2, 1.5)), linewidth=1.3, alpha=0.9)
                line.set_transform(offset_copy(line.get_transform(), fig=col.fig, x=shift, units="points"))
                line.set_zorder(4 if kind == EventKind.DETECTOR_FIRED.value else 3)
                line.set_gid(f"event-line:{kind}:{step}")
    labels = []
    for kind in rows:
        label = _event_style(kind)[1]
        if kind == decay:
            n = sum(e.name == decay for e in run.events)
            label = f"{label} ({n} change{'s' if n != 1 else ''})" if n > 1 else label
        labels.append(label)
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    for label, kind in zip(ax.get_yticklabels(), rows):
        label.set_color(_event_style(kind)[0])
        _plain(label)
    ax.set_ylim(max(len(rows), 1) - 0.4, -0.6)  # the first kind on top
    ax.grid(axis="y", color="0.92")
    if not rows:
        text = "no events" if run.has_normguard_data else "no normguard events (a baseline)"
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def _draw_loss(col: _Column) -> None:
    ax, run = col.ax["loss"], col.run
    train, val, floor = run.train_loss(), run.val_loss(), run.series(tags.NOISE_FLOOR)
    own = run.has_normguard_data
    train_label = "train loss" if run.train_loss_tag == tags.TRAIN_LOSS else f"train loss ({run.train_loss_tag})"
    val_label = "validation loss" if run.val_loss_tag == tags.VAL_LOSS else f"validation loss ({run.val_loss_tag})"
    drew = col.plot("loss", train, color="tab:blue", label=train_label)
    drew |= col.plot("loss", val, color="tab:orange", marker=".", label=val_label)
    drew |= col.plot("loss", floor, color="gray", linestyle="--", drawstyle="steps-post", label="noise floor")
    if val is not None and np.isfinite(val.values).any():
        best = int(np.nanargmin(np.where(np.isfinite(val.values), val.values, np.nan)))
        ax.plot(
            col.xs(val.steps[best : best + 1]),
            val.values[best : best + 1],
            "*",
            color="tab:green",
            markersize=11,
            label="best validation",
        )
    if drew:
        if _positive(train, val, floor):
            ax.set_yscale("log")
        _legend(ax, title=None if own else "the framework's own losses", title_fontsize="small")
    else:
        _no_data(ax, "loss")
    ax.set_ylabel("loss")


def _draw_norm(col: _Column) -> None:
    """The total norm, and the norm of the weights a restore put back (what the run ended with)."""
    ax, run = col.ax["norm"], col.run
    total = run.series(tags.TOTAL_NORM)
    if col.plot("norm", total, color="tab:green", label="total norm ‖w‖"):
        restored = run.restored_step()
        if restored is not None and total is not None and total.at(restored) is not None:
            ax.plot(
                col.xs([restored]),
                [total.at(restored)],
                "o",
                markersize=9,
                markerfacecolor="none",
                markeredgewidth=2,
                color="tab:green",
                label=f"restored (step {restored})",
            )
        _legend(ax)
    else:
        _no_data(ax, "weight norm" if run.has_normguard_data else "normguard data (baseline): no norm")
    ax.set_ylabel("weight norm")


def _draw_weight_decay(col: _Column) -> None:
    """The weight decay in effect per group (a step line: one value between checks), and where
    the action engaged."""
    ax, run = col.ax["weight_decay"], col.run
    decays = run.weight_decays
    engaged = run.engaged_steps()
    for suffix, series in sorted(decays.items()):
        col.plot("weight_decay", series, drawstyle="steps-post", label=f"λ {suffix.replace('_', ' ')}")
        for step in engaged:
            index = int(np.searchsorted(series.steps, step))
            if index < len(series):
                ax.plot(
                    col.xs(series.steps[index : index + 1]),
                    series.values[index : index + 1],
                    "o",
                    color="tab:orange",
                    markersize=7,
                    label=f"engaged (step {step})",
                )
    if decays:
        _legend(ax, title="weight decay in effect", title_fontsize="small")
    else:
        _no_data(ax, "weight decay")
    ax.set_ylabel("weight\ndecay λ")


def _draw_growth_and_gap(col: _Column) -> None:
    ax = col.ax["growth"]
    if col.plot("growth", col.run.series(tags.GROWTH_EXPONENT), color="tab:purple", label="d log‖w‖ / d log step"):
        ax.axhline(0.0, color="gray", linewidth=0.8)
        _legend(ax, title="growth exponent", title_fontsize="small")
    else:
        _no_data(ax, "growth exponent")
    ax.set_ylabel("growth\nexponent")
    ax = col.ax["gap"]
    if col.plot("gap", col.run.series(tags.GAP), color="tab:red", marker=".", label="validation − train"):
        ax.axhline(0.0, color="gray", linewidth=0.8)
        _legend(ax)
    else:
        _no_data(ax, "gap")
    ax.set_ylabel("gap")


def _draw_layers(col: _Column, top_k: int) -> None:
    ax, run = col.ax["layers"], col.run
    ranked = layer_changes(run, top_k)
    for layer, g in ranked:
        col.plot("layers", run.layers[layer], label=f"{_short(layer)}: {describe_change(g)}")
    if ranked:
        if _positive(*(run.layers[k] for k, _ in ranked)):
            ax.set_yscale("log")
        _legend(ax, title="largest layer-norm changes\n(last / first)", title_fontsize="small")
    else:
        _no_data(ax, "per-layer norm")
    ax.set_ylabel("layer norm")


def _cell_widths(xs: np.ndarray) -> np.ndarray:
    """0.8 of the distance to the nearer neighbouring decision: cells never overlap."""
    if len(xs) < 2:
        return np.ones(len(xs))
    gaps = np.diff(xs).astype(float)
    return 0.8 * np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])


def _draw_conditions(col: _Column) -> None:
    """One strip per condition, filled where the condition held."""
    ax, conditions = col.ax["conditions"], col.run.conditions
    names = [c for c in _CONDITIONS if c in conditions] + sorted(set(conditions) - set(_CONDITIONS))
    for row, name in enumerate(names):
        series = conditions[name]
        if len(series) == 0:
            continue
        xs = col.xs(series.steps)
        widths = _cell_widths(xs)
        for keep, colour in ((series.values > 0.5, "tab:red"), (series.values <= 0.5, "0.85")):
            cells = [(x - w / 2, w) for x, w in zip(xs[keep], widths[keep])]
            ax.broken_barh(cells, (row - 0.4, 0.8), color=colour)
    ax.set_yticks(range(len(names)), names, fontsize="small")
    _plain(*ax.get_yticklabels())
    ax.set_ylim(max(len(names), 1) - 0.4, -0.6)
    if not names:
        _no_data(ax, "detector decision")


def _title(run: RunData) -> str:
    """The run's name, and what happened to it in words that hold: "restored the weights of
    step N" only after a restore that changed them."""
    if not run.has_normguard_data:
        tags_used = " / ".join(t for t in (run.train_loss_tag, run.val_loss_tag) if t)
        return f"{run.name}\nbaseline without normguard (losses: {tags_used})"
    fired = [e.step for e in run.events if e.kind is EventKind.DETECTOR_FIRED]
    parts = [f"fired at step {fired[0]}" if fired else "not fired"]
    if run.last_step is not None:
        parts.append(f"{run.last_step} steps")
    engaged = run.engaged_steps()
    if engaged:
        parts.append(f"weight decay engaged at step {engaged[0]}")
    restored = run.restored_step()
    if restored is not None:
        parts.append(f"restored the weights of step {restored}")
    elif run.kept_last_weights():
        parts.append("kept the last weights")
    if run.warnings:
        parts.append("DAMAGED LOG: incomplete")
    return f"{run.name}\n{', '.join(parts)}"


def _x_range(runs: Mapping[str, RunData], x: XAxis) -> tuple[float, float]:
    """The shared x-axis: from 0 to the furthest any run got."""
    ends = []
    for run in runs.values():
        last = run.last_step
        if last is not None:
            ends.append(float(run.epochs(np.array([last]))[0]) if x == "epoch" else float(last))
    right = max(ends, default=1.0)
    return 0.0, (right if right > 0 else 1.0) * 1.02


def _check_x(runs: Mapping[str, RunData], x: str) -> XAxis:
    if x not in X_AXES:
        raise ValueError(f"Expected argument `x` to be 'step' or 'epoch' but got {x!r}.")
    if x == "epoch":
        missing = [name for name, run in runs.items() if run.epoch_tag is None]
        if missing:
            raise ValueError(
                f"Expected every run to have logged its epoch for x='epoch' but {', '.join(map(repr, missing))} "
                "logged none (Lightning logs `epoch`, Hugging Face `train/epoch`): use x='step'"
            )
    return "epoch" if x == "epoch" else "step"


def make_figure(
    runs: Mapping[str, RunData],
    top_k: int = 5,
    x: XAxis = "step",
    *,
    max_columns: int = MAX_COLUMNS,
    x_range: tuple[float, float] | None = None,
    title: bool = True,
) -> Any:
    """The report figure (a matplotlib ``Figure``): a column per run, at most ``max_columns``
    side by side, every panel with its own y-axis and all on one x-axis (``x_range``, by
    default from 0 to the furthest run). ``fig.normguard_axes[run][panel]`` is each axes."""
    figure_class = _require_matplotlib()
    axis = _check_x(runs, x)
    if not runs:
        raise ValueError("Expected at least one run to plot but got none.")
    panels = panels_for(runs)
    heights = [PANEL_HEIGHTS[p] for p in panels]
    cols = min(len(runs), max_columns)
    rows = math.ceil(len(runs) / cols)
    height = (sum(heights) * HEIGHT_UNIT_IN + 0.6) * rows + (0.4 if title else 0.0)
    fig = figure_class(figsize=(COLUMN_WIDTH_IN * cols, height), layout="constrained")
    subfigs = fig.subfigures(rows, cols, squeeze=False, hspace=0.02, wspace=0.01)
    limits = x_range if x_range is not None else _x_range(runs, axis)
    fig.normguard_axes = {}
    for index, (name, run) in enumerate(runs.items()):
        sub = subfigs[index // cols, index % cols]
        axes = sub.subplots(len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights})
        col = _Column(fig, list(np.atleast_1d(axes)), panels, run, axis)
        _draw_loss(col)
        _draw_norm(col)
        if "weight_decay" in col.ax:
            _draw_weight_decay(col)
        _draw_growth_and_gap(col)
        _draw_layers(col, top_k)
        _draw_conditions(col)
        _draw_events(col)  # last: their lines go through the panels drawn above
        col.ax[panels[-1]].set_xlim(*limits)
        col.ax[panels[-1]].set_xlabel(axis)
        _plain(col.ax[panels[0]].set_title(_title(run), fontsize="medium"))
        fig.normguard_axes[name] = col.ax
    if title:
        fig.suptitle("normguard report", fontsize="large")
    return fig


def plot_report(
    runs: Mapping[str, RunData],
    out_path: str | os.PathLike[str],
    top_k: int = 5,
    x: XAxis = "step",
    *,
    max_columns: int = MAX_COLUMNS,
) -> Path:
    """Draw the report figure and save it (``.png``, ``.svg``, ``.pdf`` or ``.html``: a
    self-contained page with one figure per run, each on the shared x-axis and shown at its
    design size, the summary table and every event). ``x`` is ``"step"`` or ``"epoch"``
    (the epoch each run's framework logged).

    Returns the path written. Needs matplotlib (``pip install 'normguard[report]'``).

    Example:
        >>> import tempfile, os
        >>> from normguard.events import Event
        >>> run = RunData("demo", "", {tags.TOTAL_NORM: Series.from_pairs([(10, 1.0), (20, 3.0)])},
        ...               [Event(20, EventKind.STOP, "stopping")])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = plot_report({"demo": run}, os.path.join(d, "r.png"))
        ...     path.name, path.stat().st_size > 0
        ('r.png', True)
    """
    import io

    from normguard.report.page import HTML_CSS_DPI, report_html

    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf", ".html", ".htm"):
        raise ValueError(f"Expected an output path ending in .png, .svg, .pdf or .html but got {str(out)!r}.")
    if not runs:
        raise ValueError("Expected at least one run to plot but got none.")
    axis = _check_x(runs, x)
    if suffix in (".html", ".htm"):
        shared = _x_range(runs, axis)
        figures = {}
        for name, run in runs.items():
            buffer = io.BytesIO()
            fig = make_figure({name: run}, top_k, axis, x_range=shared, title=False)
            fig.savefig(buffer, format="png", dpi=2 * HTML_CSS_DPI)
            figures[name] = buffer.getvalue()
        out.write_text(report_html(runs, figures, top_k=top_k), encoding="utf-8")
    else:
        make_figure(runs, top_k, axis, max_columns=max_columns).savefig(out, dpi=DPI)
    return out
