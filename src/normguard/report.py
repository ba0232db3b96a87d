"""Figures and summaries from normguard's TensorBoard event files.

:func:`load_runs` reads every run under a log directory (a run is a directory holding
``events.out.tfevents.*`` files with ``normguard/`` tags, named by its path relative to
the log directory, ``"."`` for the directory itself, as TensorBoard names them);
:func:`summarize` turns one run into a JSON-friendly dict; :func:`plot_report` draws one
figure with the runs side by side (needs matplotlib: ``pip install 'normguard[report]'``).

Each run's column shows, on one time axis (training steps):

1. training and validation loss with the noise floor;
2. the total weight norm and its growth exponent d log‖w‖ / d log(step);
3. the validation − training gap;
4. the fastest-growing layers (largest growth of log norm over the run);
5. one strip per detector condition: a filled cell at each decision where it held;

and every event (detector fired, weight decay changed, stop, restore, non-finite values)
as a labelled vertical line through all panels.

Example:
    >>> import tempfile
    >>> from normguard import tags
    >>> from normguard.events import Event, EventKind
    >>> from normguard.sinks import SummaryWriterSink
    >>> with tempfile.TemporaryDirectory() as d:
    ...     sink = SummaryWriterSink(d)
    ...     for step, norm in [(10, 1.0), (20, 2.0), (30, 4.0)]:
    ...         sink.scalars(step, {tags.TOTAL_NORM: norm, tags.TRAIN_LOSS: 1.0 / norm})
    ...     sink.scalars(30, {tags.event_tag("stop"): 1.0})
    ...     sink.events(30, [Event(30, EventKind.STOP, "stopping: signature")])
    ...     sink.close()
    ...     runs = load_runs(d)
    >>> list(runs)
    ['.']
    >>> s = summarize(runs["."])
    >>> s["final_norm"], s["final_train_loss"], s["events"]
    (4.0, 0.25, [{'step': 30, 'kind': 'stop', 'message': 'stopping: signature'}])
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normguard import tags
from normguard.detector import Condition
from normguard.events import EventKind, events_from_json

__all__ = ["LoggedEvent", "RunData", "Series", "load_runs", "plot_report", "report_html", "summarize"]

EVENT_FILE_MARKER = "tfevents"
_EVENT_LINE = re.compile(r"^step (-?\d+) \[([^\]]+)\] (.*)$", re.DOTALL)
_RESTORED = re.compile(r"restored the weights of step (\d+)")  # event text of logs before normguard 0.2
#: event kinds that are normguard acting on training (the rest are observations)
ACTION_KINDS = (
    EventKind.WEIGHT_DECAY_CHANGED.value,
    EventKind.ACTION_ESCALATED.value,
    EventKind.STOP.value,
    EventKind.RESTORE.value,
    EventKind.RESTORE_SKIPPED.value,
)
_EVENT_STYLE: dict[str, tuple[str, str]] = {  # kind -> (colour, short label)
    EventKind.DETECTOR_FIRED.value: ("tab:red", "fired"),
    EventKind.WEIGHT_DECAY_CHANGED.value: ("tab:orange", "weight decay"),
    EventKind.ACTION_ESCALATED.value: ("tab:purple", "escalated"),
    EventKind.STOP.value: ("black", "stop"),
    EventKind.RESTORE.value: ("tab:green", "restore"),
    EventKind.RESTORE_SKIPPED.value: ("tab:gray", "restore skipped"),
    EventKind.NONFINITE_LOSS.value: ("magenta", "non-finite loss"),
    EventKind.NONFINITE_WEIGHTS.value: ("magenta", "non-finite weights"),
    EventKind.DIVERGING_LOSS.value: ("tab:brown", "diverging"),
}
_CONDITIONS = [c.value for c in Condition]


@dataclass(frozen=True)
class Series:
    """One scalar tag: steps (ascending, one value per step: the last one written) and values."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    def last(self) -> float | None:
        """The last finite value, or ``None``."""
        finite = np.isfinite(self.values)
        return float(self.values[finite][-1]) if finite.any() else None

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, float]]) -> Series:
        """Build from (step, value) pairs in write order; a repeated step keeps its last value.

        Example:
            >>> s = Series.from_pairs([(10, 1.0), (20, 2.0), (10, 1.5)])
            >>> s.steps.tolist(), s.values.tolist()
            ([10, 20], [1.5, 2.0])
        """
        by_step: dict[int, float] = {}
        for step, value in pairs:
            by_step[int(step)] = float(value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        return cls(steps, np.array([by_step[s] for s in steps.tolist()], dtype=np.float64))


@dataclass(frozen=True)
class LoggedEvent:
    """One event read back from the logs (``kind`` is an :class:`~normguard.EventKind` value)."""

    step: int
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "kind": self.kind, "message": self.message}


@dataclass
class RunData:
    """Everything normguard logged for one run: its scalars by tag and its events in order."""

    name: str
    path: str
    scalars: dict[str, Series] = field(default_factory=dict)
    events: list[LoggedEvent] = field(default_factory=list)

    def series(self, tag: str) -> Series | None:
        return self.scalars.get(tag)

    def group(self, prefix: str) -> dict[str, Series]:
        """The tags under ``prefix/``, keyed by the rest of the tag."""
        start = prefix + "/"
        return {tag[len(start) :]: s for tag, s in self.scalars.items() if tag.startswith(start)}

    @property
    def layers(self) -> dict[str, Series]:
        return self.group(tags.LAYER_NORM)

    @property
    def conditions(self) -> dict[str, Series]:
        """Condition strips (0/1 per decision); the streak count is left out."""
        return {k: v for k, v in self.group(tags.CONDITION).items() if k != "streak"}

    @property
    def last_step(self) -> int | None:
        steps = [int(s.steps[-1]) for s in self.scalars.values() if len(s)]
        return max(steps) if steps else None


def _event_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if any(EVENT_FILE_MARKER in f for f in filenames):
            found.append(Path(dirpath))
    return sorted(found)


def _read_run(name: str, path: Path) -> RunData | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    available = acc.Tags()
    prefix = tags.PREFIX + "/"
    scalars = {
        tag: Series.from_pairs((e.step, e.value) for e in acc.Scalars(tag))
        for tag in available.get("scalars", [])
        if tag.startswith(prefix)
    }
    if not scalars:
        return None
    events = _read_events(acc, available.get("tensors", []))
    # an event scalar without its text line (a sink that drops text) still counts
    seen = {(e.step, e.kind) for e in events}
    for kind, series in RunData(name, str(path), scalars).group(tags.EVENT).items():
        for step in series.steps.tolist():
            if (step, kind) not in seen:
                events.append(LoggedEvent(step, kind, ""))
    events.sort(key=lambda e: e.step)  # stable: write order within a step
    return RunData(name=name, path=str(path), scalars=scalars, events=events)


def _tag_is(tag: str, wanted: str) -> bool:
    return tag == wanted or tag.startswith(wanted + "/")


def _read_events(acc: Any, tensor_tags: Sequence[str]) -> list[LoggedEvent]:
    """Structured events from ``normguard/events_json``; from the text lines for logs written
    before normguard 0.2 (which had no JSON)."""
    json_tags = [t for t in tensor_tags if _tag_is(t, tags.EVENTS_JSON)]
    events: list[LoggedEvent] = []
    if json_tags:
        for tag in json_tags:
            for tensor_event in acc.Tensors(tag):
                for raw in tensor_event.tensor_proto.string_val:
                    try:
                        items = events_from_json(raw.decode("utf-8", "replace"))
                    except ValueError:
                        continue
                    events.extend(LoggedEvent(e.step, e.kind.value, e.message, dict(e.data)) for e in items)
        return events
    for tag in tensor_tags:
        if not _tag_is(tag, tags.EVENTS_TEXT):
            continue
        for tensor_event in acc.Tensors(tag):
            for raw in tensor_event.tensor_proto.string_val:  # one entry per step, a line per event
                text = raw.decode("utf-8", "replace")
                events.extend(_parse_event(line, tensor_event.step) for line in text.splitlines() if line.strip())
    return events


def _parse_event(line: str, step: int) -> LoggedEvent:
    match = _EVENT_LINE.match(line.strip())
    if match is None:
        return LoggedEvent(int(step), "unknown", line.strip())
    return LoggedEvent(int(match.group(1)), match.group(2), match.group(3))


def load_runs(logdir: str | os.PathLike[str]) -> dict[str, RunData]:
    """Read every run with normguard data under ``logdir`` (sorted by run name).

    Raises ``FileNotFoundError`` if ``logdir`` does not exist and ``ValueError`` if it
    holds no normguard data. Directories with event files but no ``normguard/`` tags (a
    framework's own logs) are skipped.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     load_runs(d)
        Traceback (most recent call last):
        ...
        ValueError: no normguard data in ... (no TensorBoard event files with normguard/ tags)
    """
    root = Path(logdir)
    if not root.exists():
        raise FileNotFoundError(f"log directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory")
    runs: dict[str, RunData] = {}
    for path in _event_dirs(root):
        name = path.relative_to(root).as_posix()
        run = _read_run(name, path)
        if run is not None:
            runs[name] = run
    if not runs:
        raise ValueError(f"no normguard data in {str(root)!r} (no TensorBoard event files with normguard/ tags)")
    return runs


def layer_growth(run: RunData) -> list[tuple[str, float]]:
    """Layers sorted by the growth of their log norm, log(last / first positive), largest first.

    Example:
        >>> run = RunData("r", "", {tags.layer_tag("a"): Series.from_pairs([(1, 1.0), (2, 2.0)]),
        ...                         tags.layer_tag("b"): Series.from_pairs([(1, 1.0), (2, 8.0)])})
        >>> [(name, round(g, 3)) for name, g in layer_growth(run)]
        [('b', 2.079), ('a', 0.693)]
    """
    out = []
    for layer, series in run.layers.items():
        ok = np.isfinite(series.values) & (series.values > 0)
        if ok.sum() >= 2:
            values = series.values[ok]
            out.append((layer, float(math.log(values[-1] / values[0]))))
    return sorted(out, key=lambda x: -x[1])


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarize(run: RunData, top_k: int = 5) -> dict[str, Any]:
    """A JSON-friendly summary of one run (``None`` where a value was never logged).

    Keys: ``run``, ``path``, ``last_step``, ``checks`` (number of norm checks),
    ``final_norm`` (at the last check: before a restore), ``max_growth_exponent`` and its
    step, ``first_fired_step``, ``restored_to_step`` and ``norm_after_restore`` (the logged
    norm at the step whose weights were restored, when the run restored any),
    ``events`` (every event: step, kind, message), ``actions_taken`` (the action kinds
    among them), ``final_train_loss``, ``final_val_loss``, ``best_val_loss`` and its step,
    ``noise_floor``, ``final_gap``, ``weight_decay`` (final value per param group) and
    ``fastest_layers`` (top ``top_k`` by growth of log norm).

    Example:
        >>> run = RunData("r", "", {tags.GROWTH_EXPONENT: Series.from_pairs([(10, 0.5), (20, 1.5), (30, 1.0)])},
        ...               [LoggedEvent(20, "detector_fired", "signature")])
        >>> s = summarize(run)
        >>> s["max_growth_exponent"], s["max_growth_exponent_step"], s["first_fired_step"], s["final_norm"]
        (1.5, 20, 20, None)
    """

    def last(tag: str) -> float | None:
        series = run.series(tag)
        return None if series is None else series.last()

    growth = run.series(tags.GROWTH_EXPONENT)
    max_growth = max_growth_step = None
    if growth is not None and np.isfinite(growth.values).any():
        i = int(np.nanargmax(np.where(np.isfinite(growth.values), growth.values, np.nan)))
        max_growth, max_growth_step = float(growth.values[i]), int(growth.steps[i])
    val = run.series(tags.VAL_LOSS)
    best_val = best_val_step = None
    if val is not None and np.isfinite(val.values).any():
        i = int(np.nanargmin(np.where(np.isfinite(val.values), val.values, np.nan)))
        best_val, best_val_step = float(val.values[i]), int(val.steps[i])
    total = run.series(tags.TOTAL_NORM)
    restored_step = norm_after_restore = None
    for e in run.events:
        if e.kind != EventKind.RESTORE.value:
            continue
        if "best_step" in e.data:
            restored_step = int(e.data["best_step"])
        elif (match := _RESTORED.search(e.message)) is not None:  # logs written before normguard 0.2
            restored_step = int(match.group(1))
    if restored_step is not None and total is not None and restored_step in total.steps:
        norm_after_restore = _finite_or_none(float(total.values[total.steps.tolist().index(restored_step)]))
    fired = [e.step for e in run.events if e.kind == EventKind.DETECTOR_FIRED.value]
    actions = []
    for e in run.events:
        if e.kind in ACTION_KINDS and e.kind not in actions:
            actions.append(e.kind)
    return {
        "run": run.name,
        "path": run.path,
        "last_step": run.last_step,
        "checks": 0 if total is None else len(total),
        "final_norm": _finite_or_none(last(tags.TOTAL_NORM)),
        "max_growth_exponent": max_growth,
        "max_growth_exponent_step": max_growth_step,
        "first_fired_step": fired[0] if fired else None,
        "restored_to_step": restored_step,
        "norm_after_restore": norm_after_restore,
        "events": [e.to_dict() for e in run.events],
        "actions_taken": actions,
        "final_train_loss": _finite_or_none(last(tags.TRAIN_LOSS)),
        "final_val_loss": _finite_or_none(last(tags.VAL_LOSS)),
        "best_val_loss": best_val,
        "best_val_step": best_val_step,
        "noise_floor": _finite_or_none(last(tags.NOISE_FLOOR)),
        "final_gap": _finite_or_none(last(tags.GAP)),
        "weight_decay": {k: s.last() for k, s in sorted(run.group(tags.WEIGHT_DECAY).items())},
        "fastest_layers": [{"layer": k, "log_growth": g} for k, g in layer_growth(run)[:top_k]],
    }


# ---------------------------------------------------------------------------- figure


def _require_matplotlib() -> Any:
    """matplotlib's ``Figure`` class (used without pyplot: no global state, no GUI backend)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the report figure needs matplotlib: pip install 'normguard[report]'") from exc
    return Figure


def _plot(ax: Any, series: Series | None, **kwargs: Any) -> bool:
    if series is None or not len(series):
        return False
    ax.plot(series.steps, series.values, **kwargs)
    return True


def _positive(*series: Series | None) -> bool:
    values = [s.values[np.isfinite(s.values)] for s in series if s is not None and len(s)]
    return bool(values) and all((v > 0).all() for v in values) and any(v.size for v in values)


def _cell_widths(steps: np.ndarray) -> np.ndarray:
    """0.8 of the distance to the nearer neighbouring decision: cells never overlap."""
    if len(steps) < 2:
        return np.ones(len(steps))
    gaps = np.diff(steps).astype(float)
    return 0.8 * np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} logged", transform=ax.transAxes, ha="center", va="center", color="gray")


def _draw_column(axes: Sequence[Any], run: RunData, top_k: int) -> set[str]:
    ax_loss, ax_norm, ax_gap, ax_layers, ax_cond = axes
    # 1. losses and the noise floor
    train, val, floor = run.series(tags.TRAIN_LOSS), run.series(tags.VAL_LOSS), run.series(tags.NOISE_FLOOR)
    drew = _plot(ax_loss, train, color="tab:blue", label="train loss")
    drew |= _plot(ax_loss, val, color="tab:orange", marker=".", label="validation loss")
    drew |= _plot(ax_loss, floor, color="gray", linestyle="--", drawstyle="steps-post", label="noise floor")
    if val is not None and np.isfinite(val.values).any():
        best = int(np.nanargmin(np.where(np.isfinite(val.values), val.values, np.nan)))
        ax_loss.plot(val.steps[best], val.values[best], "*", color="tab:green", markersize=10, label="best validation")
    if drew:
        if _positive(train, val, floor):
            ax_loss.set_yscale("log")
        ax_loss.legend(loc="lower left", fontsize="x-small")
    else:
        _no_data(ax_loss, "loss")
    ax_loss.set_ylabel("loss")
    # 2. total norm and its growth exponent
    if _plot(ax_norm, run.series(tags.TOTAL_NORM), color="tab:green", label="total norm ‖w‖"):
        ax_norm.legend(loc="upper left", fontsize="x-small")
    else:
        _no_data(ax_norm, "norm")
    ax_norm.set_ylabel("weight norm")
    growth = run.series(tags.GROWTH_EXPONENT)
    if growth is not None and len(growth):
        twin = ax_norm.twinx()
        twin.plot(growth.steps, growth.values, color="tab:purple", linewidth=1, alpha=0.8)
        twin.set_ylabel("growth exponent\nd log‖w‖ / d log step", color="tab:purple", fontsize="x-small")
        twin.tick_params(axis="y", colors="tab:purple", labelsize="x-small")
    # 3. the gap
    gap = run.series(tags.GAP)
    if _plot(ax_gap, gap, color="tab:red", marker=".", label="validation − train"):
        ax_gap.axhline(0.0, color="gray", linewidth=0.8)
        ax_gap.legend(loc="upper left", fontsize="x-small")
    else:
        _no_data(ax_gap, "gap")
    ax_gap.set_ylabel("gap")
    # 4. the fastest-growing layers
    ranked = layer_growth(run)[:top_k]
    for layer, g in ranked:
        series = run.layers[layer]
        ax_layers.plot(series.steps, series.values, label=f"{layer} (×{math.exp(g):.3g})")
    if ranked:
        if _positive(*(run.layers[k] for k, _ in ranked)):
            ax_layers.set_yscale("log")
        ax_layers.legend(loc="upper left", fontsize="x-small", title="fastest-growing layers", title_fontsize="x-small")
    else:
        _no_data(ax_layers, "per-layer norm")
    ax_layers.set_ylabel("layer norm")
    # 5. conditions: one strip each, filled where the condition held
    conditions = run.conditions
    names = [c for c in _CONDITIONS if c in conditions] + sorted(set(conditions) - set(_CONDITIONS))
    for row, name in enumerate(names):
        series = conditions[name]
        if len(series) == 0:
            continue
        widths = _cell_widths(series.steps)
        for keep, colour in ((series.values > 0.5, "tab:red"), (series.values <= 0.5, "0.85")):
            cells = [(s - w / 2, w) for s, w in zip(series.steps[keep], widths[keep])]
            ax_cond.broken_barh(cells, (row - 0.4, 0.8), color=colour)
    ax_cond.set_yticks(range(len(names)), names, fontsize="x-small")
    ax_cond.set_ylim(-0.6, max(len(names), 1) - 0.4)
    if not names:
        _no_data(ax_cond, "detector decision")
    ax_cond.set_xlabel("step")
    # every event, through all panels
    kinds: set[str] = set()
    by_step: dict[int, list[str]] = {}
    for event in run.events:
        colour, label = _EVENT_STYLE.get(event.kind, ("tab:gray", event.kind))
        kinds.add(event.kind)
        for ax in axes:
            ax.axvline(event.step, color=colour, linestyle=":", linewidth=1.2, alpha=0.9)
        labels = by_step.setdefault(event.step, [])
        if label not in labels:
            labels.append(label)
    for step, labels in by_step.items():
        ax_loss.annotate(
            ", ".join(labels),
            xy=(step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize="x-small",
        )
    return kinds


def plot_report(runs: Mapping[str, RunData], out_path: str | os.PathLike[str], top_k: int = 5) -> Path:
    """Draw the report figure, one column per run, and save it (``.png``, ``.svg``, ``.pdf``
    or ``.html``: a self-contained page with the PNG embedded and the summary table).

    Returns the path written. Needs matplotlib (``pip install 'normguard[report]'``).

    Example:
        >>> import tempfile, os
        >>> run = RunData("demo", "", {tags.TOTAL_NORM: Series.from_pairs([(10, 1.0), (20, 3.0)])},
        ...               [LoggedEvent(20, "stop", "stopping")])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = plot_report({"demo": run}, os.path.join(d, "r.png"))
        ...     path.name, path.stat().st_size > 0
        ('r.png', True)
    """
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf", ".html", ".htm"):
        raise ValueError(f"Expected an output path ending in .png, .svg, .pdf or .html but got {str(out)!r}.")
    if not runs:
        raise ValueError("Expected at least one run to plot but got none.")
    fig = _figure(runs, top_k)
    if suffix in (".html", ".htm"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        out.write_text(report_html(runs, buffer.getvalue(), top_k=top_k), encoding="utf-8")
    else:
        fig.savefig(out, dpi=110)
    return out


def _figure(runs: Mapping[str, RunData], top_k: int) -> Any:
    figure_class = _require_matplotlib()
    from matplotlib.lines import Line2D

    ncols = len(runs)
    fig = figure_class(figsize=(max(7.0, 6.0 * ncols), 14.0))
    axes = fig.subplots(
        5,
        ncols,
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2.5, 2, 2.5, 1.2]},
    )
    kinds: set[str] = set()
    for col, run in enumerate(runs.values()):
        kinds |= _draw_column(axes[:, col], run, top_k)
        s = summarize(run, top_k)
        fired = "not fired" if s["first_fired_step"] is None else f"fired at step {s['first_fired_step']}"
        axes[0, col].set_title(f"{run.name}\n{fired}", fontsize="medium")
    # the same y range along a row, so runs compare at a glance
    for row in range(4):
        ylims = [axes[row, c].get_ylim() for c in range(ncols) if axes[row, c].lines]
        scales = {axes[row, c].get_yscale() for c in range(ncols) if axes[row, c].lines}
        if len(ylims) > 1 and len(scales) == 1:
            lo, hi = min(y[0] for y in ylims), max(y[1] for y in ylims)
            for c in range(ncols):
                if axes[row, c].lines:
                    axes[row, c].set_ylim(lo, hi)
    if kinds:
        order = [k for k in _EVENT_STYLE if k in kinds] + sorted(kinds - set(_EVENT_STYLE))
        handles = [Line2D([], [], color=_EVENT_STYLE.get(k, ("tab:gray", k))[0], linestyle=":", label=k) for k in order]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize="small", title="events")
    fig.suptitle("normguard report", fontsize="large")
    fig.tight_layout(rect=(0, 0.05 if kinds else 0, 1, 0.97))
    return fig


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_html(runs: Mapping[str, RunData], png: bytes, top_k: int = 5) -> str:
    """A self-contained HTML page: the figure (PNG, base64-embedded) and the summary table.

    Example:
        >>> run = RunData("a<b", "", {tags.TOTAL_NORM: Series.from_pairs([(1, 2.0)])})
        >>> page = report_html({"a<b": run}, b"png")
        >>> "data:image/png;base64,cG5n" in page, "a&lt;b" in page
        (True, True)
    """
    summaries = [summarize(r, top_k) for r in runs.values()]
    columns = [
        ("run", "run"),
        ("last step", "last_step"),
        ("final norm", "final_norm"),
        ("max growth exponent", "max_growth_exponent"),
        ("first fired at step", "first_fired_step"),
        ("actions taken", "actions_taken"),
        ("restored to step", "restored_to_step"),
        ("norm after restore", "norm_after_restore"),
        ("final train loss", "final_train_loss"),
        ("final val loss", "final_val_loss"),
        ("best val loss", "best_val_loss"),
        ("noise floor", "noise_floor"),
    ]
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in columns)
    rows = []
    for s in summaries:
        cells = []
        for _, key in columns:
            value = s[key]
            text = ", ".join(value) if isinstance(value, list) else _fmt(value)
            cells.append(f"<td>{html.escape(text or '–')}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    event_rows = [
        f"<tr><td>{html.escape(s['run'])}</td><td>{e['step']}</td><td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(e['message'])}</td></tr>"
        for s in summaries
        for e in s["events"]
    ]
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>normguard report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>normguard report</h1>
<h2>Summary</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Figure</h2>
<img alt="normguard report figure" src="data:image/png;base64,{image}">
<h2>Events</h2>
<table><thead><tr><th>run</th><th>step</th><th>kind</th><th>message</th></tr></thead><tbody>
{chr(10).join(event_rows) if event_rows else '<tr><td colspan="4">no events</td></tr>'}
</tbody></table>
</body></html>
"""
