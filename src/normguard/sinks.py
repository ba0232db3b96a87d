"""Where normguard's numbers go: a :class:`Sink` base, TensorBoard and any metrics logger.

A sink receives, on the logging rank only and at checks only (never on the hot path):
``scalars(step, values)`` and ``events(step, events)`` (the structured :class:`Event`
objects of one step). ``text``, ``flush`` and ``close`` have do-nothing defaults, so a
sink that only wants scalars defines one method.

Example:
    >>> class Collect(Sink):
    ...     def __init__(self):
    ...         self.rows = []
    ...     def scalars(self, step, values):
    ...         self.rows.append((step, dict(values)))
    >>> sink = Collect()
    >>> sink.scalars(1, {"normguard/norm/total": 2.0})
    >>> sink.rows
    [(1, {'normguard/norm/total': 2.0})]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from normguard import tags
from normguard.events import Event, events_to_json

__all__ = ["MetricsLoggerSink", "Sink", "SummaryWriterSink", "check_sinks", "markdown_text"]

_MARKDOWN_SPECIAL = "\\`*_[]#+-.!|{}"


class Sink:
    """Base class of sinks. Override :meth:`scalars`; the rest is optional."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars of one step, by tag (see :mod:`normguard.tags`)."""

    def events(self, step: int, events: Sequence[Event]) -> None:
        """The events of one step. The default writes their lines with :meth:`text`."""
        self.text(step, tags.EVENTS_TEXT, "\n\n".join(e.line() for e in events))

    def text(self, step: int, tag: str, text: str) -> None:
        """Free text under a tag (TensorBoard's Text tab)."""

    def flush(self) -> None:
        """Write anything buffered."""

    def close(self) -> None:
        """Release what the sink owns (it never closes a writer it was handed)."""


def check_sinks(sinks: Any) -> list[Any]:
    """The sinks as a list, each checked to have a callable ``scalars`` (duck-typed sinks allowed)."""
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, (list, tuple)):
        raise TypeError(f"Expected argument `sinks` to be a list of sink objects but got {sinks!r}.")
    for k, sink in enumerate(sinks):
        if not callable(getattr(sink, "scalars", None)):
            raise TypeError(
                f"Expected argument `sinks[{k}]` to be a sink (an object with a `scalars(step, values)` method, "
                f"e.g. a normguard.sinks.Sink subclass) but got {type(sink).__name__}."
            )
    return list(sinks)


def write_events(sink: Any, step: int, events: Sequence[Event]) -> None:
    """Hand events to a sink: structured if it takes them, else as text lines (older sinks)."""
    method = getattr(sink, "events", None)
    if callable(method):
        method(step, events)
    elif callable(getattr(sink, "text", None)):
        sink.text(step, tags.EVENTS_TEXT, "\n\n".join(e.line() for e in events))


def markdown_text(lines: Sequence[str]) -> str:
    """Lines as Markdown that TensorBoard's Text tab shows literally, one paragraph each.

    The Text tab renders Markdown and keeps some HTML, so a layer named ``<b>``, ``*x*``
    or ``a_b_`` would be drawn as markup: Markdown's punctuation is backslash-escaped,
    ``&``, ``<``, ``>`` written as entities, and a line break inside a line (which could
    start a list or a code block) becomes a space.

    Example:
        >>> markdown_text(["step 8 [stop] <root> *x*", "b"])
        'step 8 \\\\[stop\\\\] &lt;root&gt; \\\\*x\\\\*\\n\\nb'
    """
    out = []
    for line in lines:
        line = " ".join(line.splitlines()).strip()
        text = "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in line)
        out.append(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "\n\n".join(out)


def _json_summary(tag: str, text: str) -> Any:
    """A string tensor under normguard's own plugin name: stored, read back, shown by no tab."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    plugin = SummaryMetadata.PluginData(plugin_name=tags.EVENTS_JSON_PLUGIN, content=b"")
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[text.encode("utf-8")],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin), tensor=tensor)])


class SummaryWriterSink(Sink):
    """Writes to a ``torch.utils.tensorboard.SummaryWriter`` (created from ``log_dir``, or given).

    The custom-scalars layout is written once, when the sink is created. Events go to the
    Text tab (tag ``normguard/events/text_summary``: one entry per step, one paragraph per
    event, Markdown-escaped so names show as written) and, under ``normguard/events_json``,
    as JSON in a tensor of normguard's own plugin, which no TensorBoard tab shows (a writer
    without ``_get_file_writer`` gets it as text instead). Non-finite values are
    written as they are (TensorBoard shows them), never dropped silently. A writer handed in
    (``writer=``, e.g. Lightning's or Hugging Face's) is flushed at :meth:`close`, never
    closed: its owner closes it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     sink = SummaryWriterSink(d)
        ...     sink.scalars(1, {tags.TOTAL_NORM: 2.0})
        ...     sink.close()
    """

    def __init__(self, log_dir: str | None = None, writer: Any = None) -> None:
        self._owns_writer = writer is None
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=log_dir)
        self.writer = writer
        self.writer.add_custom_scalars(tags.custom_scalars_layout())
        self._closed = False

    @property
    def log_dir(self) -> str:
        return str(self.writer.log_dir if hasattr(self.writer, "log_dir") else self.writer.get_logdir())

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), global_step=step)

    def events(self, step: int, events: Sequence[Event]) -> None:
        self.text(step, tags.EVENTS_TEXT, markdown_text([e.line() for e in events]))
        data = events_to_json(list(events))
        file_writer = getattr(self.writer, "_get_file_writer", None)
        if callable(file_writer):
            file_writer().add_summary(_json_summary(tags.EVENTS_JSON, data), step)
        else:  # a writer of another library: text is the one string record all of them have
            self.text(step, tags.EVENTS_JSON, data)

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.writer.flush()
        if self._owns_writer:
            self.writer.close()
        self._closed = True


class MetricsLoggerSink(Sink):
    """A sink over any logger with ``log_metrics(values, step=...)`` (Lightning's loggers).

    Events are not sent (such loggers have no text call); they always reach the
    ``normguard`` Python logger.
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def events(self, step: int, events: Sequence[Event]) -> None:
        pass

    def flush(self) -> None:
        save = getattr(self.logger, "save", None)
        if callable(save):
            save()
