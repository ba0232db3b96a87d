"""The tag scheme for every logger: each tag name in one place, the custom-scalars layout,
and the values a check logs (:func:`check_values`). The sinks that write them live in
:mod:`normguard.sinks`.

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
``normguard/val_metric``                    the validation metric named by ``monitor`` (if any)
``normguard/loss/noise_floor``              the noise floor σ̂² in use (given or estimated)
``normguard/gap/value``                     validation − training loss (same stretch)
``normguard/gap/trend``                     slope of the gap per 1000 steps
``normguard/condition/<name>``              1 when a detector condition holds, else 0
``normguard/event/<kind>``                  1 at the step an event happened
``normguard/weight_decay/group_<i>``        weight decay of optimizer group i
``normguard/events`` (text)                 one line per event (Text tab:
                                            ``normguard/events/text_summary``)
``normguard/events_json`` (text)            the same events as JSON, for ``normguard report``
==========================================  =============================================

Example:
    >>> layer_tag("encoder.0.q_proj")
    'normguard/layer_norm/encoder.0.q_proj'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from normguard.detector import Verdict
    from normguard.norms import HostSnapshot

PREFIX = "normguard"
TOTAL_NORM = f"{PREFIX}/norm/total"
GROWTH_EXPONENT = f"{PREFIX}/norm/growth_exponent"
RELATIVE_GROWTH = f"{PREFIX}/norm/relative_growth"
LAYER_NORM = f"{PREFIX}/layer_norm"
LAYER_INIT_DISTANCE = f"{PREFIX}/layer_init_distance"
LAYER_UPDATE_SIZE = f"{PREFIX}/layer_update_size"
TRAIN_LOSS = f"{PREFIX}/loss/train"
VAL_LOSS = f"{PREFIX}/loss/val"
VAL_METRIC = f"{PREFIX}/val_metric"
NOISE_FLOOR = f"{PREFIX}/loss/noise_floor"
GAP = f"{PREFIX}/gap/value"
GAP_TREND = f"{PREFIX}/gap/trend"
CONDITION = f"{PREFIX}/condition"
EVENT = f"{PREFIX}/event"
WEIGHT_DECAY = f"{PREFIX}/weight_decay"
EVENTS_TEXT = f"{PREFIX}/events"
EVENTS_JSON = f"{PREFIX}/events_json"

__all__ = [
    "CONDITION",
    "EVENT",
    "EVENTS_JSON",
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
    "VAL_METRIC",
    "WEIGHT_DECAY",
    "check_values",
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

    One category, ``normguard``: the norm, the losses with the noise floor and the gap
    first, then each growth rate on its own axis (a rate never shares an axis with a level).
    """
    return {
        PREFIX: {
            "weight norm": ["Multiline", [TOTAL_NORM]],
            "losses and noise floor": ["Multiline", [TRAIN_LOSS, VAL_LOSS, NOISE_FLOOR]],
            "validation - train gap": ["Multiline", [GAP]],
            "norm growth exponent d log|w| / d log step": ["Multiline", [GROWTH_EXPONENT]],
            "gap trend (per 1000 steps)": ["Multiline", [GAP_TREND]],
            "norm change per check": ["Multiline", [RELATIVE_GROWTH]],
        }
    }


def check_values(
    host: HostSnapshot,
    verdict: Verdict,
    *,
    train_loss: float | None,
    val_loss: float | None,
    val_metric: float | None = None,
    log_layers: bool = True,
    weight_decays: dict[str, float] | None = None,
) -> dict[str, float]:
    """The scalars one check logs, by tag (``None`` values are left out)."""
    values: dict[str, float] = {TOTAL_NORM: host.total}
    if log_layers:
        values.update({layer_tag(k): v for k, v in host.layer_norms.items()})
        for kind, data in ((LAYER_INIT_DISTANCE, host.init_distance), (LAYER_UPDATE_SIZE, host.update_size)):
            values.update({layer_tag(k, kind): v for k, v in (data or {}).items()})
    optional = {
        TRAIN_LOSS: train_loss,
        GROWTH_EXPONENT: verdict.growth_exponent,
        RELATIVE_GROWTH: verdict.relative_growth,
        NOISE_FLOOR: verdict.noise_floor,
        VAL_LOSS: val_loss,
        VAL_METRIC: val_metric,
    }
    if val_loss is not None:
        optional[GAP] = verdict.gap
        optional[GAP_TREND] = verdict.gap_trend
    values.update({k: v for k, v in optional.items() if v is not None})
    if verdict.decided:
        values.update({condition_tag(k): float(v) for k, v in verdict.conditions.items() if v is not None})
        values[condition_tag("streak")] = float(verdict.streak)
    values.update({f"{WEIGHT_DECAY}/{k}": v for k, v in (weight_decays or {}).items()})
    return values
