"""TensorBoard output: every tag name in one place, the custom-scalars layout, the sinks.

Tag scheme (all under ``normguard/``; ``/`` groups them in TensorBoard):

==========================================  =============================================
tag                                         value
==========================================  =============================================
``normguard/norm/total``                    total ℓ2 norm of the measured weights
``normguard/norm/growth_exponent``          d log‖w‖ / d log(step) over the recent window
``normguard/norm/relative_growth``          (‖w_t‖ − ‖w_prev‖) / ‖w_prev‖ per check
``normguard/layer_norm/<layer>``            ℓ2 norm of one layer (module)
``normguard/layer_init_distance/<layer>``   ‖w − w₀‖ of one layer (when tracked)
``normguard/layer_update_size/<layer>``     ‖w_t − w_prev‖ of one layer (when tracked)
``normguard/loss/train``                    mean training loss since the previous check
``normguard/loss/val``                      validation loss
``normguard/loss/noise_floor``              the noise floor σ̂² in use (given or estimated)
``normguard/gap/value``                     validation − training loss (same stretch)
``normguard/gap/trend``                     slope of the gap per 1000 steps
``normguard/condition/<name>``              1 when a detector condition holds, else 0
``normguard/event/<kind>``                  1 at the step an event happened
``normguard/weight_decay/group_<i>``        weight decay of optimizer group i
``normguard/events`` (text)                 one line per event
==========================================  =============================================

Example:
    >>> layer_tag("encoder.0.q_proj")
    'normguard/layer_norm/encoder.0.q_proj'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

PREFIX = "normguard"
TOTAL_NORM = f"{PREFIX}/norm/total"
GROWTH_EXPONENT = f"{PREFIX}/norm/growth_exponent"
RELATIVE_GROWTH = f"{PREFIX}/norm/relative_growth"
LAYER_NORM = f"{PREFIX}/layer_norm"
LAYER_INIT_DISTANCE = f"{PREFIX}/layer_init_distance"
LAYER_UPDATE_SIZE = f"{PREFIX}/layer_update_size"
TRAIN_LOSS = f"{PREFIX}/loss/train"
VAL_LOSS = f"{PREFIX}/loss/val"
NOISE_FLOOR = f"{PREFIX}/loss/noise_floor"
GAP = f"{PREFIX}/gap/value"
GAP_TREND = f"{PREFIX}/gap/trend"
CONDITION = f"{PREFIX}/condition"
EVENT = f"{PREFIX}/event"
WEIGHT_DECAY = f"{PREFIX}/weight_decay"
EVENTS_TEXT = f"{PREFIX}/events"

__all__ = [
    "CONDITION",
    "EVENT",
    "EVENTS_TEXT",
    "GAP",
    "GAP_TREND",
    "GROWTH_EXPONENT",
    "LAYER_INIT_DISTANCE",
    "LAYER_NORM",
    "LAYER_UPDATE_SIZE",
    "NOISE_FLOOR",
    "RELATIVE_GROWTH",
    "TOTAL_NORM",
    "TRAIN_LOSS",
    "VAL_LOSS",
    "WEIGHT_DECAY",
    "Sink",
    "SummaryWriterSink",
    "condition_tag",
    "custom_scalars_layout",
    "event_tag",
    "layer_tag",
]


def layer_tag(layer: str, kind: str = LAYER_NORM) -> str:
    """The tag of one layer's value (``kind`` is one of the ``LAYER_*`` groups)."""
    return f"{kind}/{layer}"


def condition_tag(name: str) -> str:
    return f"{CONDITION}/{name}"


def event_tag(kind: str) -> str:
    return f"{EVENT}/{kind}"


def custom_scalars_layout() -> dict[str, dict[str, list[Any]]]:
    """The layout for TensorBoard's Custom Scalars tab (``SummaryWriter.add_custom_scalars``).

    One category, ``normguard``, with four charts side by side: the norm, its growth,
    the losses with the noise floor, and the gap.
    """
    return {
        PREFIX: {
            "weight norm": ["Multiline", [TOTAL_NORM]],
            "norm growth": ["Multiline", [GROWTH_EXPONENT, RELATIVE_GROWTH]],
            "losses and noise floor": ["Multiline", [TRAIN_LOSS, VAL_LOSS, NOISE_FLOOR]],
            "validation - train gap": ["Multiline", [GAP, GAP_TREND]],
        }
    }


class Sink(Protocol):
    """Where normguard's numbers go. Every method is called on the host, at a check."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def text(self, step: int, tag: str, text: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class SummaryWriterSink:
    """Writes to a ``torch.utils.tensorboard.SummaryWriter`` (created from ``log_dir``).

    The custom-scalars layout is written once, when the sink is created. Non-finite
    values are written as they are (TensorBoard shows them), never dropped silently.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     sink = SummaryWriterSink(d)
        ...     sink.scalars(1, {TOTAL_NORM: 2.0})
        ...     sink.close()
    """

    def __init__(self, log_dir: str | None = None, writer: Any = None) -> None:
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=log_dir)
        self.writer = writer
        self.writer.add_custom_scalars(custom_scalars_layout())
        self._closed = False

    @property
    def log_dir(self) -> str:
        return str(self.writer.log_dir if hasattr(self.writer, "log_dir") else self.writer.get_logdir())

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), global_step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if not self._closed:
            self.writer.flush()
            self.writer.close()
            self._closed = True


def finite_or_nan(value: float | None) -> float:
    """A float for a scalar sink: ``None`` becomes NaN."""
    return math.nan if value is None else float(value)
