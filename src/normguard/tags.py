"""The tag scheme for every logger: each tag name in one place, the custom-scalars layout,
and the values a check logs (:func:`check_values`). The sinks that write them live in
:mod:`normguard.sinks`.

Every tag starts with ``normguard``. TensorBoard's Scalars and Time Series tabs group tags
by the part before the first ``/`` and sort groups and tags by name, so the part before
the first ``/`` says where a value is shown: the group ``normguard`` (what to look at
first) sorts before ``normguard-growth``, ``normguard-layers`` and ``normguard-timeline``
(diagnostics), and TensorBoard opens the first two groups. Within ``normguard`` the gap,
the losses and the norm come first (the noise floor, a constant, after them).

==================================================  ==========================================
tag                                                 value
==================================================  ==========================================
``normguard/gap/value``                             validation − training loss (same stretch)
``normguard/loss/train``                            mean training loss since the previous check
``normguard/loss/val``                              validation loss
``normguard/norm/total``                            total ℓ2 norm of the measured weights
``normguard/threshold/noise_floor``                 the noise floor σ̂² in use (given or estimated)
``normguard/threshold/noise_floor_low``, ``_high``  the bounds of an estimated floor's interval
``normguard/val_metric``                            the validation metric named by ``monitor``
``normguard/weight_decay/group_<i>``                the weight decay in effect in optimizer group i
                                                    (``opt_<k>_group_<i>`` with several optimizers):
                                                    an action's own λ where it applies the shrink
                                                    itself (``hold_floor`` under Adam or SGD), else
                                                    the group's ``weight_decay``
``normguard/hold_floor/shrink_per_step/group_<i>``  lr · λ: the fraction of each weight
                                                    ``hold_floor`` removes per step (same suffixes)
``normguard-growth/norm_growth_exponent``           d log‖w‖ / d log(step) over the recent window
``normguard-growth/norm_change_per_check``          (‖w_t‖ − ‖w_prev‖) / ‖w_prev‖ per check
``normguard-growth/gap_trend_per_1000_steps``       slope of the gap, loss units per 1000 steps
``normguard-growth/drift_share``                    ‖w − w_best‖ / ‖w − w₀‖ at a validation (when tracked)
``normguard-layers/norm/<layer>``                   ℓ2 norm of one layer (module)
``normguard-layers/init_distance/<layer>``          ‖w − w₀‖ of one layer (when tracked)
``normguard-layers/update_size/<layer>``            ‖w_t − w_prev‖ of one layer (when tracked)
``normguard-timeline/condition/<name>``             1 when a detector condition holds, else 0
``normguard-timeline/condition/streak``             the leading rule's streak (decisions in a row)
``normguard-timeline/event/<kind>``                 1 at the step an event happened
``normguard/events`` (text)                         one paragraph per event; TensorBoard's Text
                                                    tab names it ``normguard/events/text_summary``
``normguard/events_json``                           the same events as JSON, for ``normguard
                                                    report`` (a tensor of the ``normguard``
                                                    plugin: no tab shows it)
==================================================  ==========================================

Example:
    >>> layer_tag("encoder.0.q_proj")
    'normguard-layers/norm/encoder.0.q_proj'
    >>> is_normguard_tag("normguard-growth/norm_growth_exponent"), is_normguard_tag("normguardian/x")
    (True, False)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from normguard.detector import Condition

if TYPE_CHECKING:
    from normguard.detector import Verdict
    from normguard.norms import HostSnapshot

PREFIX = "normguard"
#: TensorBoard groups, in the order TensorBoard shows them (main first, then diagnostics)
GROWTH_GROUP = f"{PREFIX}-growth"
LAYERS_GROUP = f"{PREFIX}-layers"
TIMELINE_GROUP = f"{PREFIX}-timeline"
GROUPS = (PREFIX, GROWTH_GROUP, LAYERS_GROUP, TIMELINE_GROUP)

TRAIN_LOSS = f"{PREFIX}/loss/train"
VAL_LOSS = f"{PREFIX}/loss/val"
NOISE_FLOOR = f"{PREFIX}/threshold/noise_floor"
NOISE_FLOOR_LOW = f"{NOISE_FLOOR}_low"
NOISE_FLOOR_HIGH = f"{NOISE_FLOOR}_high"
TOTAL_NORM = f"{PREFIX}/norm/total"
GAP = f"{PREFIX}/gap/value"
VAL_METRIC = f"{PREFIX}/val_metric"
WEIGHT_DECAY = f"{PREFIX}/weight_decay"
#: ``hold_floor``'s per-step shrink lr · λ, per group (the suffixes of :func:`weight_decay_tag`)
SHRINK_PER_STEP = f"{PREFIX}/hold_floor/shrink_per_step"
GROWTH_EXPONENT = f"{GROWTH_GROUP}/norm_growth_exponent"
RELATIVE_GROWTH = f"{GROWTH_GROUP}/norm_change_per_check"
GAP_TREND = f"{GROWTH_GROUP}/gap_trend_per_1000_steps"
DRIFT_SHARE = f"{GROWTH_GROUP}/drift_share"
LAYER_NORM = f"{LAYERS_GROUP}/norm"
LAYER_INIT_DISTANCE = f"{LAYERS_GROUP}/init_distance"
LAYER_UPDATE_SIZE = f"{LAYERS_GROUP}/update_size"
CONDITION = f"{TIMELINE_GROUP}/condition"
EVENT = f"{TIMELINE_GROUP}/event"
EVENTS_TEXT = f"{PREFIX}/events"
EVENTS_JSON = f"{PREFIX}/events_json"
#: the tag TensorBoard's Text tab shows for :data:`EVENTS_TEXT` (``add_text`` appends ``/text_summary``)
EVENTS_TEXT_SHOWN = f"{EVENTS_TEXT}/text_summary"
#: the plugin name of the JSON events (a name no TensorBoard dashboard displays)
EVENTS_JSON_PLUGIN = PREFIX

#: tags of normguard before 0.2 (one ``normguard/`` group) -> today's, for reading old logs
LEGACY_TAGS = {
    f"{PREFIX}/norm/growth_exponent": GROWTH_EXPONENT,
    f"{PREFIX}/norm/relative_growth": RELATIVE_GROWTH,
    f"{PREFIX}/gap/trend": GAP_TREND,
    f"{PREFIX}/loss/noise_floor": NOISE_FLOOR,
}
#: tag prefixes of normguard before 0.2 -> today's
LEGACY_PREFIXES = {
    f"{PREFIX}/layer_norm/": LAYER_NORM + "/",
    f"{PREFIX}/layer_init_distance/": LAYER_INIT_DISTANCE + "/",
    f"{PREFIX}/layer_update_size/": LAYER_UPDATE_SIZE + "/",
    f"{PREFIX}/condition/": CONDITION + "/",
    f"{PREFIX}/event/": EVENT + "/",
}

__all__ = [
    "CONDITION",
    "EVENT",
    "EVENTS_JSON",
    "EVENTS_JSON_PLUGIN",
    "EVENTS_TEXT",
    "EVENTS_TEXT_SHOWN",
    "GAP",
    "GAP_TREND",
    "GROUPS",
    "GROWTH_EXPONENT",
    "GROWTH_GROUP",
    "LAYERS_GROUP",
    "LAYER_INIT_DISTANCE",
    "LAYER_NORM",
    "LAYER_UPDATE_SIZE",
    "NOISE_FLOOR",
    "NOISE_FLOOR_HIGH",
    "NOISE_FLOOR_LOW",
    "RELATIVE_GROWTH",
    "SHRINK_PER_STEP",
    "TIMELINE_GROUP",
    "TOTAL_NORM",
    "TRAIN_LOSS",
    "VAL_LOSS",
    "VAL_METRIC",
    "WEIGHT_DECAY",
    "check_values",
    "condition_tag",
    "current_tag",
    "custom_scalars_layout",
    "event_tag",
    "is_normguard_tag",
    "layer_tag",
    "weight_decay_tag",
    "weight_decays_in_effect",
]

#: an action's own weight decay, by suffix under ``normguard/weight_decay/``: ``<action>/opt_<k>_group_<i>``
_ACTION_DECAY = re.compile(r"^(?:[^/]+/)+opt_(\d+)_group_(\d+)$")


def layer_tag(layer: str, kind: str = LAYER_NORM) -> str:
    """The tag of one layer's value (``kind`` is one of the ``LAYER_*`` groups)."""
    return f"{kind}/{layer}"


def weight_decay_tag(group: int, optimizer: int = 0, n_optimizers: int = 1) -> str:
    """The tag of one param group's weight decay: ``group_<i>``, or ``opt_<k>_group_<i>`` when
    there are several optimizers.

    Example:
        >>> weight_decay_tag(0), weight_decay_tag(1, optimizer=1, n_optimizers=2)
        ('normguard/weight_decay/group_0', 'normguard/weight_decay/opt_1_group_1')
    """
    suffix = f"group_{group}" if n_optimizers == 1 else f"opt_{optimizer}_group_{group}"
    return f"{WEIGHT_DECAY}/{suffix}"


_V = TypeVar("_V")


def weight_decays_in_effect(values: Mapping[str, _V]) -> dict[str, _V]:
    """One weight decay per param group, by tag suffix: the decay in effect, whoever applies it.

    ``values`` maps tag suffixes under ``normguard/weight_decay/`` to values: the optimizers'
    own (``group_<i>``, or ``opt_<k>_group_<i>`` with several optimizers) and an action's
    (``<action>/opt_<k>_group_<i>``: ``hold_floor``'s λ). An action's value replaces its
    group's: under AdamW the two are equal (the action sets the group's ``weight_decay``);
    under Adam or SGD the action shrinks the weights itself while the group's coupled
    ``weight_decay`` stays as the user set it, so the action's λ is the decoupled decay in
    effect. Any other suffix is kept as it is.

    Example:
        >>> weight_decays_in_effect({"group_0": 0.0, "group_1": 0.0, "hold_floor/opt_0_group_0": 10.0})
        {'group_0': 10.0, 'group_1': 0.0}
        >>> weight_decays_in_effect({"opt_0_group_0": 0.1, "opt_1_group_0": 0.0, "hold_floor/opt_1_group_0": 2.0})
        {'opt_0_group_0': 0.1, 'opt_1_group_0': 2.0}
    """
    several = any(k.startswith("opt_") for k in values)
    out: dict[str, _V] = {}
    actions: dict[str, _V] = {}
    for key, value in values.items():
        match = _ACTION_DECAY.match(key)
        if match is None:
            out[key] = value
            continue
        k, i = int(match.group(1)), int(match.group(2))
        suffix = f"opt_{k}_group_{i}" if several or k > 0 else f"group_{i}"
        actions[suffix] = value
    out.update(actions)
    return out


def condition_tag(name: str) -> str:
    """The tag of one detector condition (``name`` is a ``Condition`` value or ``"streak"``)."""
    return f"{CONDITION}/{name}"


def event_tag(kind: str) -> str:
    """The scalar tag of one event kind (an ``EventKind`` value)."""
    return f"{EVENT}/{kind}"


def is_normguard_tag(tag: str) -> bool:
    """Whether ``tag`` is one of normguard's (any of its groups, today's or older)."""
    return tag.split("/", 1)[0] in GROUPS and "/" in tag


def current_tag(tag: str) -> str:
    """Today's name of a tag written by any normguard version (``tag`` itself if current).

    Example:
        >>> current_tag("normguard/layer_norm/fc1")
        'normguard-layers/norm/fc1'
    """
    if tag in LEGACY_TAGS:
        return LEGACY_TAGS[tag]
    for old, new in LEGACY_PREFIXES.items():
        if tag.startswith(old):
            return new + tag[len(old) :]
    return tag


def _exact(tag: str) -> str:
    """A custom-scalars pattern that matches ``tag`` only (TensorBoard uses ``re.match``)."""
    return tag.replace(".", "\\.") + "$"


def custom_scalars_layout() -> dict[str, dict[str, list[Any]]]:
    """The layout for TensorBoard's Custom Scalars tab (``SummaryWriter.add_custom_scalars``).

    A Custom Scalars chart colours its lines by run, so a chart holds one quantity: the runs
    are then told apart by colour and the quantity by the chart's title (train loss,
    validation loss and the noise floor in one chart looked alike). Category ``normguard``:
    the training loss, the validation loss, the gap and the weight norm first (the first
    rows on a laptop screen), then the noise floor in use, the two rates the detector
    decides on and the weight decay in effect, each on its own axis (a rate never shares an
    axis with a level, nor two rates one axis). Category ``normguard details``: the norm
    change per check, the drift share, the per-layer norms and one chart per detector
    condition.
    Chart tags are regular expressions that TensorBoard matches at the start of a tag; each is
    anchored (``$``) so that it draws exactly its tags (``normguard/threshold/noise_floor``
    alone would also draw ``noise_floor_low``).

    Example:
        >>> list(custom_scalars_layout()[PREFIX])[:4]
        ['training loss', 'validation loss', 'validation - train gap', 'weight norm']
    """
    return {
        PREFIX: {
            "training loss": ["Multiline", [_exact(TRAIN_LOSS)]],
            "validation loss": ["Multiline", [_exact(VAL_LOSS)]],
            "validation - train gap": ["Multiline", [_exact(GAP)]],
            "weight norm": ["Multiline", [_exact(TOTAL_NORM)]],
            "noise floor in use (training loss under it = fitting the noise)": ["Multiline", [_exact(NOISE_FLOOR)]],
            "norm growth exponent (d log|w| / d log step; 1 = grows like the step count)": [
                "Multiline",
                [_exact(GROWTH_EXPONENT)],
            ],
            "gap trend: loss per 1000 steps (above 0 = gap widening)": ["Multiline", [_exact(GAP_TREND)]],
            "weight decay in effect (per optimizer param group)": ["Multiline", [f"{WEIGHT_DECAY}/.*"]],
        },
        f"{PREFIX} details": {
            "norm change per check ((|w_t| - |w_prev|) / |w_prev|)": ["Multiline", [_exact(RELATIVE_GROWTH)]],
            "drift share (|w - w_best| / |w - w0|; above 0.2 = drifted)": ["Multiline", [_exact(DRIFT_SHARE)]],
            "layer norms": ["Multiline", [f"{LAYER_NORM}/.*"]],
            **{f"condition {c.value} (1 = held)": ["Multiline", [_exact(condition_tag(c.value))]] for c in Condition},
        },
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
    """The scalars one check logs, by tag (``None`` values are left out).

    ``weight_decays`` maps suffixes under ``normguard/weight_decay/`` to values; one tag per
    param group is written, the decay in effect (see :func:`weight_decays_in_effect`).
    """
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
        DRIFT_SHARE: verdict.drift,
    }
    if val_loss is not None:
        optional[GAP] = verdict.gap
        optional[GAP_TREND] = verdict.gap_trend
    values.update({k: v for k, v in optional.items() if v is not None})
    if verdict.decided:
        values.update({condition_tag(k): float(v) for k, v in verdict.conditions.items() if v is not None})
        values[condition_tag("streak")] = float(verdict.streak)
    values.update({f"{WEIGHT_DECAY}/{k}": v for k, v in weight_decays_in_effect(weight_decays or {}).items()})
    return values
