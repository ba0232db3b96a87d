"""Figures and summaries from TensorBoard event files: normguard's runs and the baselines beside them.

One module per concern: :mod:`~normguard.report.reading` reads the event files
(:func:`load_runs`, every record checked), :mod:`~normguard.report.runs` holds what was
read (:class:`RunData`, :class:`Series`), :mod:`~normguard.report.summary` turns a run
into numbers (:func:`summarize`), :mod:`~normguard.report.figure` draws the runs side by
side on one x-axis (:func:`plot_report`; needs matplotlib: ``pip install
'normguard[report]'``) and :mod:`~normguard.report.page` writes the HTML page
(:func:`report_html`).

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

import warnings
from typing import Any

from normguard.events import Event
from normguard.report.figure import (
    COLUMN_WIDTH_IN,
    DPI,
    EVENT_STYLE,
    MAX_COLUMNS,
    PANELS,
    X_AXES,
    event_rows,
    make_figure,
    panels_for,
    plot_report,
)
from normguard.report.page import HTML_CSS_DPI, report_html
from normguard.report.reading import DamagedLogWarning, load_runs, read_records
from normguard.report.runs import EPOCH_TAGS, TRAIN_LOSS_TAGS, VAL_LOSS_TAGS, RunData, Series
from normguard.report.summary import ACTION_KINDS, describe_change, layer_changes, layer_growth, summarize

__all__ = [
    "ACTION_KINDS",
    "COLUMN_WIDTH_IN",
    "DPI",
    "EPOCH_TAGS",
    "EVENT_STYLE",
    "HTML_CSS_DPI",
    "MAX_COLUMNS",
    "PANELS",
    "TRAIN_LOSS_TAGS",
    "VAL_LOSS_TAGS",
    "X_AXES",
    "DamagedLogWarning",
    "RunData",
    "Series",
    "describe_change",
    "event_rows",
    "layer_changes",
    "layer_growth",
    "load_runs",
    "make_figure",
    "panels_for",
    "plot_report",
    "read_records",
    "report_html",
    "summarize",
]


def _logged_event(step: int, kind: str, message: str, data: dict[str, Any] | None = None) -> Event:
    """``LoggedEvent(step, kind, message, data)`` of normguard before 0.2: now an :class:`~normguard.Event`."""
    return Event.from_dict({"step": step, "kind": kind, "message": message, "data": data or {}})


def __getattr__(name: str) -> Any:
    """``LoggedEvent`` (deprecated): the report reads back the one event type, :class:`normguard.Event`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     warnings.simplefilter("always")
        ...     from normguard.report import LoggedEvent
        ...     LoggedEvent(3, "stop", "stopping").line()
        'step 3 [stop] stopping'
    """
    if name == "LoggedEvent":
        warnings.warn(
            "normguard.report.LoggedEvent is deprecated: the report reads back normguard.Event "
            "(build one with Event.from_dict({'step': ..., 'kind': ..., 'message': ...}))",
            DeprecationWarning,
            stacklevel=2,
        )
        return _logged_event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
