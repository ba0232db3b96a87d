"""Figures and summaries from normguard's TensorBoard event files.

:func:`load_runs` reads every run under a log directory (a run is a directory holding
``events.out.tfevents.*`` files with normguard's tags, named by its path relative to the
log directory, ``"."`` for the directory itself, as TensorBoard names them), checking
every record: a truncated or corrupted file is read as far as it can be and named in
:attr:`RunData.warnings` (and a :class:`DamagedLogWarning`). :func:`summarize` turns one
run into a JSON-friendly dict; :func:`plot_report` draws the runs side by side (needs
matplotlib: ``pip install 'normguard[report]'``).

Each run's column shows, on one step axis and each panel with its own y-axis:

1. the events, one row per kind (detector fired, weight decay changed, stop, restore,
   non-finite values), so events at the same step never hide each other;
2. training and validation loss with the noise floor;
3. the total weight norm;
4. its growth exponent d log‖w‖ / d log(step);
5. the validation − training gap;
6. the fastest-growing layers (largest growth of log norm over the run);
7. one strip per detector condition: a filled cell at each decision where it held;

and a dotted vertical line per event through panels 2–7 (events of one step side by side).

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
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normguard import tags
from normguard.detector import Condition
from normguard.events import EventKind, events_from_json

__all__ = [
    "DamagedLogWarning",
    "LoggedEvent",
    "RunData",
    "Series",
    "load_runs",
    "plot_report",
    "report_html",
    "summarize",
]

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
#: kind -> (colour, short label), in the order of the figure's event rows (most important first)
_EVENT_STYLE: dict[str, tuple[str, str]] = {
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


class DamagedLogWarning(UserWarning):
    """An event file is truncated or corrupted: the run was read only as far as it could be."""


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

    def final(self) -> float | None:
        """The value at the last step, finite or not (``None`` if empty)."""
        return float(self.values[-1]) if len(self) else None

    def at(self, step: int) -> float | None:
        """The value logged at ``step``, or ``None``."""
        index = np.searchsorted(self.steps, step)
        if index < len(self) and int(self.steps[index]) == step:
            return float(self.values[index])
        return None

    def nonfinite_since(self) -> int | None:
        """The first step of the trailing stretch of non-finite values (``None`` if the last is finite).

        Example:
            >>> Series.from_pairs([(1, 1.0), (2, math.nan), (3, 2.0), (4, math.inf), (5, math.nan)]).nonfinite_since()
            4
        """
        finite = np.isfinite(self.values)
        if not len(self) or finite[-1]:
            return None
        good = np.flatnonzero(finite)
        return int(self.steps[good[-1] + 1]) if len(good) else int(self.steps[0])

    def last_finite_step(self) -> int | None:
        finite = np.flatnonzero(np.isfinite(self.values))
        return int(self.steps[finite[-1]]) if len(finite) else None

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
    """Everything normguard logged for one run: its scalars by tag, its events in order, and
    ``warnings`` naming any event file that could not be read to its end."""

    name: str
    path: str
    scalars: dict[str, Series] = field(default_factory=dict)
    events: list[LoggedEvent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: float = 0.0  # wall time of the first record (orders the columns)

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


# ---------------------------------------------------------------------------- reading


def _event_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if any(EVENT_FILE_MARKER in f for f in filenames):
            found.append(Path(dirpath))
    return sorted(found)


def _masked_crc(data: bytes) -> int:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    return int(masked_crc32c(data))


def read_records(path: Path) -> tuple[list[bytes], str | None]:
    """The records of one TFRecord file, each checked against its CRC, and what was wrong.

    A record whose data fails its checksum (a corrupted byte) is skipped and reading goes
    on; a corrupted length or a file that ends inside a record (truncated) ends it.
    Returns the good records and ``None``, or a one-line description of the damage.
    """
    data = path.read_bytes()
    records: list[bytes] = []
    skipped: list[int] = []
    problem = None
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            problem = f"truncated at byte {pos} of {len(data)} (an incomplete record header)"
            break
        header = data[pos : pos + 8]
        if _masked_crc(header) != struct.unpack("<I", data[pos + 8 : pos + 12])[0]:
            problem = (
                f"corrupted at byte {pos} of {len(data)} (a record length fails its checksum): the rest is unreadable"
            )
            break
        length = struct.unpack("<Q", header)[0]
        end = pos + 12 + length + 4
        if end > len(data):
            problem = f"truncated at byte {pos} of {len(data)} (a record of {length} bytes is cut off)"
            break
        payload = data[pos + 12 : pos + 12 + length]
        if _masked_crc(payload) != struct.unpack("<I", data[end - 4 : end])[0]:
            skipped.append(pos)
        else:
            records.append(payload)
        pos = end
    if skipped:
        corrupt = f"{len(skipped)} corrupted record(s) skipped (the first at byte {skipped[0]})"
        problem = corrupt if problem is None else f"{corrupt}; {problem}"
    return records, problem


def _tensor_text(value: Any) -> list[str]:
    return [raw.decode("utf-8", "replace") for raw in value.tensor.string_val]


def _read_run(name: str, path: Path) -> RunData | None:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    pairs: dict[str, list[tuple[int, float]]] = {}
    json_events: list[LoggedEvent] = []
    text_events: list[LoggedEvent] = []
    problems: list[str] = []
    plugins: dict[str, str] = {}  # tag -> plugin (metadata may be written only with the first value)
    started = math.inf
    files = sorted(p for p in path.iterdir() if EVENT_FILE_MARKER in p.name and p.is_file())
    for file in files:
        records, problem = read_records(file)
        if problem is not None:
            problems.append(f"{file.name}: {problem}")
        for record in records:
            try:
                event = event_pb2.Event.FromString(record)
            except Exception:  # a record with a valid checksum but not an Event: another tool's data
                continue
            started = min(started, event.wall_time)
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name:
                    plugins[value.tag] = value.metadata.plugin_data.plugin_name
                if not tags.is_normguard_tag(value.tag):
                    continue
                kind = value.WhichOneof("value")
                plugin = plugins.get(value.tag, "")
                if kind == "simple_value":
                    pairs.setdefault(tags.current_tag(value.tag), []).append((event.step, value.simple_value))
                elif kind == "tensor" and plugin == "scalars":
                    number = float(np.asarray(tensor_util.make_ndarray(value.tensor)).reshape(-1)[0])
                    pairs.setdefault(tags.current_tag(value.tag), []).append((event.step, number))
                elif kind == "tensor" and _tag_is(value.tag, tags.EVENTS_JSON):
                    json_events.extend(_json_events(_tensor_text(value)))
                elif kind == "tensor" and _tag_is(value.tag, tags.EVENTS_TEXT):
                    for text in _tensor_text(value):  # one entry per step, a paragraph per event
                        lines = [ln for ln in text.splitlines() if ln.strip()]
                        text_events.extend(_parse_event(line, event.step) for line in lines)
    scalars = {tag: Series.from_pairs(p) for tag, p in sorted(pairs.items())}
    if not scalars and not json_events:
        if problems:  # a damaged file with nothing readable is still worth a word
            warnings.warn(f"{name}: " + "; ".join(problems), DamagedLogWarning, stacklevel=3)
        return None
    events = json_events if json_events else text_events  # text only for logs written before normguard 0.2
    # an event scalar without its structured record (a sink that drops text) still counts
    seen = {(e.step, e.kind) for e in events}
    for kind, series in RunData(name, str(path), scalars).group(tags.EVENT).items():
        for step in series.steps.tolist():
            if (step, kind) not in seen:
                events.append(LoggedEvent(step, kind, ""))
    events.sort(key=lambda e: e.step)  # stable: write order within a step
    return RunData(name, str(path), scalars, events, problems, started if math.isfinite(started) else 0.0)


def _tag_is(tag: str, wanted: str) -> bool:
    return tag == wanted or tag.startswith(wanted + "/")


def _json_events(texts: Iterable[str]) -> Iterator[LoggedEvent]:
    for text in texts:
        try:
            items = events_from_json(text)
        except ValueError:
            continue
        yield from (LoggedEvent(e.step, e.kind.value, e.message, dict(e.data)) for e in items)


def _parse_event(line: str, step: int) -> LoggedEvent:
    match = _EVENT_LINE.match(line.strip())
    if match is None:
        return LoggedEvent(int(step), "unknown", line.strip())
    return LoggedEvent(int(match.group(1)), match.group(2), match.group(3))


def load_runs(logdir: str | os.PathLike[str]) -> dict[str, RunData]:
    """Read every run with normguard data under ``logdir``.

    Runs come in a fixed order, the columns of the report: by parent directory, then in
    the order they started (the first record's wall time), so a baseline and its guarded
    twin trained one after the other stay side by side in the order they ran.

    Raises ``FileNotFoundError`` if ``logdir`` does not exist and ``ValueError`` if it
    holds no normguard data. Directories with event files but no normguard tags (a
    framework's own logs) are skipped. A truncated or corrupted event file is read as far
    as it can be; the run's :attr:`RunData.warnings` say what was lost, and a
    :class:`DamagedLogWarning` is issued.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     load_runs(d)
        Traceback (most recent call last):
        ...
        ValueError: no normguard data in ... (no TensorBoard event files with normguard tags)
    """
    root = Path(logdir)
    if not root.exists():
        raise FileNotFoundError(f"log directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory")
    found: list[RunData] = []
    for path in _event_dirs(root):
        run = _read_run(path.relative_to(root).as_posix(), path)
        if run is not None:
            found.append(run)
            for problem in run.warnings:
                warnings.warn(f"run {run.name!r}: {problem}", DamagedLogWarning, stacklevel=2)
    if not found:
        raise ValueError(f"no normguard data in {str(root)!r} (no TensorBoard event files with normguard tags)")
    found.sort(key=lambda r: (Path(r.name).parent.as_posix(), r.started, r.name))
    return {run.name: run for run in found}


# ---------------------------------------------------------------------------- summary


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


def _restored_step(run: RunData) -> int | None:
    """The step whose weights the run's last restore put back (``None`` without a restore)."""
    step = None
    for e in run.events:
        if e.kind != EventKind.RESTORE.value:
            continue
        if "best_step" in e.data:
            step = int(e.data["best_step"])
        elif (match := _RESTORED.search(e.message)) is not None:  # logs written before normguard 0.2
            step = int(match.group(1))
    return step


def summarize(run: RunData, top_k: int = 5) -> dict[str, Any]:
    """A JSON-friendly summary of one run (``None`` where a value was never logged or is not finite).

    The ``final_*`` values describe the weights the run ended with: after a restore, the
    values logged at the restored step (``restored_to_step``); otherwise those of the last
    check. Keys:

    * ``run``, ``path``, ``last_step``, ``checks`` (number of norm checks);
    * ``final_norm``, ``norm_at_last_check`` (before any restore), ``norm_after_restore``;
    * ``nonfinite_since``: for ``norm``, ``train_loss`` and ``val_loss`` whose last logged
      value is NaN or infinite, the step that stretch began (weights or losses that went
      NaN are never reported as their last finite value), with ``last_finite_norm`` and
      ``last_finite_norm_step`` for the norm;
    * ``max_growth_exponent`` and its step, ``first_fired_step``, ``restored_to_step``,
      ``events`` (every event: step, kind, message), ``actions_taken`` (the action kinds);
    * ``final_train_loss``, ``final_val_loss``, ``val_loss_at_last_check``,
      ``best_val_loss`` and its step, ``noise_floor``, ``final_gap``, ``weight_decay``
      (final value per param group), ``fastest_layers`` (top ``top_k`` by growth of log
      norm) and ``warnings`` (damaged event files: the run may be incomplete).

    Example:
        >>> run = RunData("r", "", {tags.GROWTH_EXPONENT: Series.from_pairs([(10, 0.5), (20, 1.5), (30, 1.0)])},
        ...               [LoggedEvent(20, "detector_fired", "signature")])
        >>> s = summarize(run)
        >>> s["max_growth_exponent"], s["max_growth_exponent_step"], s["first_fired_step"], s["final_norm"]
        (1.5, 20, 20, None)
    """

    def final(tag: str) -> float | None:
        series = run.series(tag)
        return None if series is None else _finite_or_none(series.final())

    def at_end(tag: str) -> float | None:
        """The value the run ended with: at the restored step after a restore, else the last one."""
        series = run.series(tag)
        if series is None:
            return None
        if restored_step is not None:
            return _finite_or_none(series.at(restored_step))
        return _finite_or_none(series.final())

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
    restored_step = _restored_step(run)
    norm_after_restore = None
    if restored_step is not None and total is not None:
        norm_after_restore = _finite_or_none(total.at(restored_step))
    nonfinite = {}
    for key, tag in (("norm", tags.TOTAL_NORM), ("train_loss", tags.TRAIN_LOSS), ("val_loss", tags.VAL_LOSS)):
        series = run.series(tag)
        since = None if series is None else series.nonfinite_since()
        if since is not None:
            nonfinite[key] = since
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
        "final_norm": at_end(tags.TOTAL_NORM),
        "norm_at_last_check": final(tags.TOTAL_NORM),
        "nonfinite_since": nonfinite,
        "last_finite_norm": None if total is None else total.last(),
        "last_finite_norm_step": None if total is None else total.last_finite_step(),
        "max_growth_exponent": max_growth,
        "max_growth_exponent_step": max_growth_step,
        "first_fired_step": fired[0] if fired else None,
        "restored_to_step": restored_step,
        "norm_after_restore": norm_after_restore,
        "events": [e.to_dict() for e in run.events],
        "actions_taken": actions,
        "final_train_loss": at_end(tags.TRAIN_LOSS),
        "final_val_loss": at_end(tags.VAL_LOSS),
        "val_loss_at_last_check": final(tags.VAL_LOSS),
        "best_val_loss": best_val,
        "best_val_step": best_val_step,
        "noise_floor": final(tags.NOISE_FLOOR),
        "final_gap": at_end(tags.GAP),
        "weight_decay": {k: s.final() for k, s in sorted(run.group(tags.WEIGHT_DECAY).items())},
        "fastest_layers": [{"layer": k, "log_growth": g} for k, g in layer_growth(run)[:top_k]],
        "warnings": list(run.warnings),
    }


# ---------------------------------------------------------------------------- figure

#: the panels of one column, top to bottom, and their relative heights
PANELS = ("events", "loss", "norm", "growth", "gap", "layers", "conditions")
_HEIGHTS = (1.2, 3.0, 2.2, 1.6, 2.0, 2.6, 1.2)
#: width of one column in inches (the panel plus its legend, outside to the right)
COLUMN_WIDTH_IN = 7.6
#: the HTML page shows figures at this many CSS pixels per inch, from PNGs of twice that
HTML_CSS_DPI = 100
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


def _plot(ax: Any, series: Series | None, **kwargs: Any) -> bool:
    if series is None or not len(series):
        return False
    ax.plot(series.steps, series.values, **kwargs)
    return True


def _legend(ax: Any, **kwargs: Any) -> None:
    """The legend outside the panel, on its right: it never covers data. Its labels are text."""
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", **kwargs)
    _plain(*legend.get_texts(), legend.get_title())


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


def _event_style(kind: str) -> tuple[str, str]:
    return _EVENT_STYLE.get(kind, ("tab:gray", kind))


def event_rows(run: RunData) -> list[str]:
    """The event kinds of a run in the order of the figure's event rows (most important first)."""
    present = {e.kind for e in run.events}
    return [k for k in _EVENT_STYLE if k in present] + sorted(present - set(_EVENT_STYLE))


def _draw_events(fig: Any, axes: Sequence[Any], run: RunData) -> None:
    """Panel 1: a marker per event in its kind's row; a dotted line per event through the other
    panels, the lines of one step side by side (``EVENT_LINE_SPACING_PT`` apart), never on top
    of each other. Artists carry ``gid`` ``event-marker:<kind>:<step>`` / ``event-line:<kind>:<step>``."""
    from matplotlib.transforms import offset_copy

    ax = axes[0]
    rows = event_rows(run)
    by_step: dict[int, list[str]] = {}
    for event in run.events:
        kinds = by_step.setdefault(event.step, [])
        if event.kind not in kinds:
            kinds.append(event.kind)
    for step, kinds in by_step.items():
        kinds.sort(key=rows.index)
        for i, kind in enumerate(kinds):
            colour, _ = _event_style(kind)
            ax.plot([step], [rows.index(kind)], marker="v", markersize=9, linestyle="none", color=colour)
            ax.lines[-1].set_gid(f"event-marker:{kind}:{step}")
            shift = (i - (len(kinds) - 1) / 2) * EVENT_LINE_SPACING_PT
            for panel in axes[1:]:
                line = panel.axvline(step, color=colour, linestyle=(0, (2, 1.5)), linewidth=1.3, alpha=0.9)
                line.set_transform(offset_copy(line.get_transform(), fig=fig, x=shift, units="points"))
                line.set_zorder(4 if kind == EventKind.DETECTOR_FIRED.value else 3)
                line.set_gid(f"event-line:{kind}:{step}")
    ax.set_yticks(range(len(rows)), [_event_style(k)[1] for k in rows], fontsize="small")
    for label, kind in zip(ax.get_yticklabels(), rows):
        label.set_color(_event_style(kind)[0])
        _plain(label)
    ax.set_ylim(max(len(rows), 1) - 0.4, -0.6)  # the first kind on top
    ax.grid(axis="y", color="0.92")
    if not rows:
        ax.text(0.5, 0.5, "no events", transform=ax.transAxes, ha="center", va="center", color="gray")


def _draw_column(fig: Any, axes: Sequence[Any], run: RunData, top_k: int) -> None:
    _, ax_loss, ax_norm, ax_growth, ax_gap, ax_layers, ax_cond = axes
    # 2. losses and the noise floor
    train, val, floor = run.series(tags.TRAIN_LOSS), run.series(tags.VAL_LOSS), run.series(tags.NOISE_FLOOR)
    drew = _plot(ax_loss, train, color="tab:blue", label="train loss")
    drew |= _plot(ax_loss, val, color="tab:orange", marker=".", label="validation loss")
    drew |= _plot(ax_loss, floor, color="gray", linestyle="--", drawstyle="steps-post", label="noise floor")
    if val is not None and np.isfinite(val.values).any():
        best = int(np.nanargmin(np.where(np.isfinite(val.values), val.values, np.nan)))
        ax_loss.plot(val.steps[best], val.values[best], "*", color="tab:green", markersize=11, label="best validation")
    if drew:
        if _positive(train, val, floor):
            ax_loss.set_yscale("log")
        _legend(ax_loss)
    else:
        _no_data(ax_loss, "loss")
    ax_loss.set_ylabel("loss")
    # 3. total norm, and the norm of the weights a restore put back (what the run ended with)
    total = run.series(tags.TOTAL_NORM)
    if _plot(ax_norm, total, color="tab:green", label="total norm ‖w‖"):
        restored = _restored_step(run)
        if restored is not None and total is not None and total.at(restored) is not None:
            ax_norm.plot(
                [restored],
                [total.at(restored)],
                "o",
                markersize=9,
                markerfacecolor="none",
                markeredgewidth=2,
                color="tab:green",
                label=f"restored (step {restored})",
            )
        _legend(ax_norm)
    else:
        _no_data(ax_norm, "norm")
    ax_norm.set_ylabel("weight norm")
    # 4. its growth exponent
    if _plot(ax_growth, run.series(tags.GROWTH_EXPONENT), color="tab:purple", label="d log‖w‖ / d log step"):
        ax_growth.axhline(0.0, color="gray", linewidth=0.8)
        _legend(ax_growth, title="growth exponent", title_fontsize="small")
    else:
        _no_data(ax_growth, "growth exponent")
    ax_growth.set_ylabel("growth\nexponent")
    # 5. the gap
    if _plot(ax_gap, run.series(tags.GAP), color="tab:red", marker=".", label="validation − train"):
        ax_gap.axhline(0.0, color="gray", linewidth=0.8)
        _legend(ax_gap)
    else:
        _no_data(ax_gap, "gap")
    ax_gap.set_ylabel("gap")
    # 6. the fastest-growing layers
    ranked = layer_growth(run)[:top_k]
    for layer, g in ranked:
        series = run.layers[layer]
        ax_layers.plot(series.steps, series.values, label=f"{_short(layer)} (×{math.exp(g):.3g})")
    if ranked:
        if _positive(*(run.layers[k] for k, _ in ranked)):
            ax_layers.set_yscale("log")
        _legend(ax_layers, title="fastest-growing layers", title_fontsize="small")
    else:
        _no_data(ax_layers, "per-layer norm")
    ax_layers.set_ylabel("layer norm")
    # 7. conditions: one strip each, filled where the condition held
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
    ax_cond.set_yticks(range(len(names)), names, fontsize="small")
    _plain(*ax_cond.get_yticklabels())
    ax_cond.set_ylim(max(len(names), 1) - 0.4, -0.6)
    if not names:
        _no_data(ax_cond, "detector decision")
    ax_cond.set_xlabel("step")
    # 1. events, last: their lines go through the panels drawn above
    _draw_events(fig, axes, run)


def _title(run: RunData) -> str:
    s = summarize(run, top_k=0)
    parts = ["not fired" if s["first_fired_step"] is None else f"fired at step {s['first_fired_step']}"]
    if s["last_step"] is not None:
        parts.append(f"{s['last_step']} steps")
    if s["restored_to_step"] is not None:
        parts.append(f"restored step {s['restored_to_step']}")
    if s["warnings"]:
        parts.append("DAMAGED LOG: incomplete")
    return f"{run.name}\n{', '.join(parts)}"


def _figure(runs: Mapping[str, RunData], top_k: int, column_width: float = COLUMN_WIDTH_IN, title: bool = True) -> Any:
    """One column per run (in the given order), every panel with its own y-axis."""
    figure_class = _require_matplotlib()
    fig = figure_class(figsize=(column_width * len(runs), 16.0), layout="constrained")
    axes = fig.subplots(len(PANELS), len(runs), sharex="col", squeeze=False, gridspec_kw={"height_ratios": _HEIGHTS})
    for col, run in enumerate(runs.values()):
        _draw_column(fig, axes[:, col], run, top_k)
        _plain(axes[0, col].set_title(_title(run), fontsize="medium"))
    if title:
        fig.suptitle("normguard report", fontsize="large")
    return fig


def _save(fig: Any, target: Any, **kwargs: Any) -> None:
    fig.savefig(target, **kwargs)


def plot_report(runs: Mapping[str, RunData], out_path: str | os.PathLike[str], top_k: int = 5) -> Path:
    """Draw the report figure, one column per run, and save it (``.png``, ``.svg``, ``.pdf``
    or ``.html``: a self-contained page with one figure per run, shown at its design size,
    the summary table and every event).

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
    if suffix in (".html", ".htm"):
        figures = {}
        for name, run in runs.items():
            buffer = io.BytesIO()
            _save(_figure({name: run}, top_k, title=False), buffer, format="png", dpi=2 * HTML_CSS_DPI)
            figures[name] = buffer.getvalue()
        out.write_text(report_html(runs, figures, top_k=top_k), encoding="utf-8")
    else:
        _save(_figure(runs, top_k), out, dpi=110)
    return out


# ---------------------------------------------------------------------------- HTML


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, or ``None`` if ``png`` is not one."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


#: the summary table's columns: (title, key, explanation shown on hover)
_TABLE = [
    ("run", "run", "the run's directory under LOGDIR"),
    ("last step", "last_step", "the last step with normguard data"),
    ("first fired at step", "first_fired_step", "the first step the detector fired"),
    ("actions taken", "actions_taken", "what normguard did to training"),
    ("restored to step", "restored_to_step", "the step whose weights a restore put back"),
    ("final norm", "final_norm", "the norm of the weights the run ended with (after a restore: the restored ones)"),
    ("norm at the last check", "norm_at_last_check", "before any restore"),
    ("max growth exponent", "max_growth_exponent", "largest d log|w| / d log step"),
    ("final val loss", "final_val_loss", "validation loss of the weights the run ended with"),
    ("best val loss", "best_val_loss", "the lowest validation loss logged"),
    ("final train loss", "final_train_loss", "training loss of the weights the run ended with"),
    ("noise floor", "noise_floor", "the noise floor in use at the end"),
]


def _cell(s: dict[str, Any], key: str) -> str:
    value = s[key]
    if key == "norm_at_last_check" and "norm" in s["nonfinite_since"]:
        return f"non-finite since step {s['nonfinite_since']['norm']}"
    if key == "final_norm" and value is None and "norm" in s["nonfinite_since"] and s["restored_to_step"] is None:
        return "non-finite"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return _fmt(value)


def report_html(runs: Mapping[str, RunData], figures: Mapping[str, bytes] | bytes, top_k: int = 5) -> str:
    """A self-contained HTML page: the summary table, one figure per run and every event.

    ``figures`` maps run names to PNGs (one PNG for all runs is accepted too). Each figure
    is shown at half its pixel size (sharp on high-density screens) and at most the page's
    width; its "full-size image" link shows it at full size (CSS ``:target``, no script).

    Example:
        >>> run = RunData("a<b", "", {tags.TOTAL_NORM: Series.from_pairs([(1, 2.0)])})
        >>> page = report_html({"a<b": run}, {"a<b": b"png"})
        >>> "data:image/png;base64,cG5n" in page, "a&lt;b" in page
        (True, True)
    """
    if isinstance(figures, bytes):
        figures = {"all runs": figures}
    summaries = [summarize(r, top_k) for r in runs.values()]
    head = "".join(f'<th title="{html.escape(tip)}">{html.escape(title)}</th>' for title, _, tip in _TABLE)
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(_cell(s, key))}</td>" for _, key, _ in _TABLE) + "</tr>" for s in summaries
    ]
    damaged = [f"{s['run']}: {w}" for s in summaries for w in s["warnings"]]
    warning = ""
    if damaged:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in damaged)
        title = "<strong>Damaged event files: these runs are incomplete.</strong>"
        warning = f'<div class="warning">{title}<ul>{items}</ul></div>'
    blocks = []
    for i, (name, png) in enumerate(figures.items()):
        size = _png_size(png)
        attrs = "" if size is None else f' width="{size[0] // 2}" height="{size[1] // 2}"'
        image = base64.b64encode(png).decode("ascii")
        blocks.append(
            f'<figure id="figure-{i}"><div class="scroll"><img alt="normguard report of {html.escape(name)}"{attrs} '
            f'src="data:image/png;base64,{image}"></div><figcaption>{html.escape(name)} · '
            f'<a class="full" href="#figure-{i}">full-size image</a> · '
            f'<a class="fit" href="#figures">fit to the page</a></figcaption></figure>'
        )
    event_rows = [
        f"<tr><td>{html.escape(s['run'])}</td><td>{e['step']}</td><td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(e['message'])}</td></tr>"
        for s in summaries
        for e in s["events"]
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>normguard report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: sans-serif; margin: 1.5em; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
.warning {{ border: 2px solid #c00; background: #fee; padding: 0.5em 1em; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0; max-width: 100%; }}
figure .scroll {{ overflow-x: auto; }}
figure img {{ max-width: 100%; height: auto; display: block; }}
figure:target {{ flex-basis: 100%; }}
figure:target img {{ width: auto; max-width: none; }}
figure .fit {{ display: none; }}
figure:target .fit {{ display: inline; }}
figure:target .full {{ display: none; }}
figcaption {{ font-size: 0.9em; color: #444; }}
</style></head><body>
<h1>normguard report</h1>
{warning}
<h2>Summary</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Figures</h2>
<p>One per run. Top to bottom: events (one row per kind), losses with the noise floor, weight norm,
its growth exponent, the validation − train gap, the fastest-growing layers, and the detector's
conditions (red where they held). Dashed vertical lines mark the events.</p>
<div class="figures" id="figures">
{chr(10).join(blocks)}
</div>
<h2>Events</h2>
<table><thead><tr><th>run</th><th>step</th><th>kind</th><th>message</th></tr></thead><tbody>
{chr(10).join(event_rows) if event_rows else '<tr><td colspan="4">no events</td></tr>'}
</tbody></table>
</body></html>
"""
