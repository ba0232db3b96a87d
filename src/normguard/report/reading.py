"""Reading TensorBoard event files: every record checked, damage named, runs found.

:func:`load_runs` reads every run under a log directory (a run is a directory holding
``events.out.tfevents.*`` files with normguard's tags or a framework's own losses, named by
its path relative to the log directory, ``"."`` for the directory itself, as TensorBoard
names them). A truncated or corrupted file is read as far as it can be and named in
:attr:`RunData.warnings` (and a :class:`DamagedLogWarning`).
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from normguard import tags
from normguard.events import Event, EventKind, events_from_json
from normguard.report.runs import LOGGER_TAGS, RunData, Series

__all__ = ["DamagedLogWarning", "load_runs", "read_records"]

EVENT_FILE_MARKER = "tfevents"
_EVENT_LINE = re.compile(r"^step (-?\d+) \[([^\]]+)\] (.*)$", re.DOTALL)


class DamagedLogWarning(UserWarning):
    """An event file is truncated or corrupted: the run was read only as far as it could be."""


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
    json_events: list[Event] = []
    text_events: list[Event] = []
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
                ours = tags.is_normguard_tag(value.tag)
                if not ours and value.tag not in LOGGER_TAGS:
                    continue
                tag = tags.current_tag(value.tag) if ours else value.tag
                kind = value.WhichOneof("value")
                plugin = plugins.get(value.tag, "")
                if kind == "simple_value":
                    pairs.setdefault(tag, []).append((event.step, value.simple_value))
                elif kind == "tensor" and plugin == "scalars":
                    number = float(np.asarray(tensor_util.make_ndarray(value.tensor)).reshape(-1)[0])
                    pairs.setdefault(tag, []).append((event.step, number))
                elif kind == "tensor" and ours and _tag_is(value.tag, tags.EVENTS_JSON):
                    json_events.extend(_json_events(_tensor_text(value)))
                elif kind == "tensor" and ours and _tag_is(value.tag, tags.EVENTS_TEXT):
                    for text in _tensor_text(value):  # one entry per step, a paragraph per event
                        lines = [ln for ln in text.splitlines() if ln.strip()]
                        text_events.extend(_parse_event(line, event.step) for line in lines)
    scalars = {tag: Series.from_pairs(p) for tag, p in sorted(pairs.items())}
    run = RunData(name, str(path), scalars, [], problems, started if math.isfinite(started) else 0.0)
    if (
        not json_events
        and not text_events
        and run.train_loss_tag is None
        and run.val_loss_tag is None
        and not run.has_normguard_data
    ):
        if problems:  # a damaged file with nothing readable is still worth a word
            warnings.warn(f"{name}: " + "; ".join(problems), DamagedLogWarning, stacklevel=3)
        return None
    events = json_events if json_events else text_events  # text only for logs written before normguard 0.2
    # an event scalar without its structured record (a sink that drops text) still counts
    seen = {(e.step, e.name) for e in events}
    for kind, series in run.group(tags.EVENT).items():
        for step in series.steps.tolist():
            if (step, kind) not in seen:
                events.append(_event(step, kind, ""))
    events.sort(key=lambda e: e.step)  # stable: write order within a step
    run.events = events
    return run


def _tag_is(tag: str, wanted: str) -> bool:
    return tag == wanted or tag.startswith(wanted + "/")


def _event(step: int, kind: str, message: str) -> Event:
    return Event.from_dict({"step": step, "kind": kind, "message": message})


def _json_events(texts: Iterable[str]) -> Iterator[Event]:
    for text in texts:
        try:
            yield from events_from_json(text)
        except ValueError:
            continue


def _parse_event(line: str, step: int) -> Event:
    match = _EVENT_LINE.match(line.strip())
    if match is None:
        return Event(int(step), EventKind.OTHER, line.strip())
    return _event(int(match.group(1)), match.group(2), match.group(3))


def load_runs(logdir: str | os.PathLike[str]) -> dict[str, RunData]:
    """Read every run under ``logdir``: those normguard logged, and baselines trained without it
    (a directory whose event files hold a framework's own loss, such as Lightning's
    ``train_loss`` or Hugging Face's ``train/loss``, and no normguard tag).

    Runs come in a fixed order, the columns of the report: by parent directory, then in
    the order they started (the first record's wall time), so a baseline and its guarded
    twin trained one after the other stay side by side in the order they ran.

    Raises ``FileNotFoundError`` if ``logdir`` does not exist and ``ValueError`` if it
    holds no run. Directories whose event files hold neither (another tool's logs) are
    skipped. A truncated or corrupted event file is read as far as it can be; the run's
    :attr:`RunData.warnings` say what was lost, and a :class:`DamagedLogWarning` is issued.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     load_runs(d)
        Traceback (most recent call last):
        ...
        ValueError: no normguard data in ... (no TensorBoard event files with normguard tags or a logged loss ...)
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
        raise ValueError(
            f"no normguard data in {str(root)!r} (no TensorBoard event files with normguard tags or a logged loss "
            "such as `train_loss`, `train/loss` or `val_loss`)"
        )
    found.sort(key=lambda r: (Path(r.name).parent.as_posix(), r.started, r.name))
    return {run.name: run for run in found}
