"""The detector fed scripted sequences, no training (like ignite's handler tests)."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normguard.detector import (
    FloorKind,
    NearInterpolationDetector,
    NoiseFloor,
    Reason,
    label_noise_floor,
    theil_sen,
)

FLOOR = 1.0


def feed(det: NearInterpolationDetector, rows: list[tuple[float, float | None, float | None]], start: int = 0) -> list:
    """rows: (total norm, train loss, val loss or None); one decision per row, 100 steps apart."""
    out = []
    for i, (norm, train, val) in enumerate(rows, start=start + 1):
        out.append(
            det.update(100 * i, total_norm=norm, layer_norms={"a": norm, "b": 1.0}, train_loss=train, val_loss=val)
        )
    return out


def signature_rows(n: int, stalled: bool = True, below: bool = True, widening: bool = True) -> list:
    """A memorising run: training loss under the floor while validation gets worse."""
    rows = []
    for i in range(1, n + 1):
        norm = 1.0 + 0.3 * i
        train = 0.5 if below else 1.5
        val = (1.0 + 0.05 * i) if stalled else (1.0 - 0.05 * i)
        if not widening:
            train = val - (0.5 - 0.02 * i)
        rows.append((norm, train, val))
    return rows


def clean_rows(n: int) -> list:
    """Ordinary learning under AdamW: the norm grows and levels off, validation still improves."""
    return [(3.0 - 2.0 * math.exp(-i / 5), 1.5 - 0.05 * i, 1.6 - 0.05 * i) for i in range(1, n + 1)]


def test_known_floor_fires_on_floor_and_stall_for_patience() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=3, window=5)
    verdicts = feed(det, signature_rows(8))
    # the first validation sets "best"; from the second on validation is stalled and train is under the floor
    assert [v.streak for v in verdicts] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert [v.fired for v in verdicts] == [False, False, False, True, False, False, False, False]
    assert [v.active for v in verdicts] == [False] * 3 + [True] * 5
    assert verdicts[3].reason is Reason.SIGNATURE and verdicts[2].reason is Reason.BUILDING
    assert verdicts[4].top_layers[0][0] == "a"  # the layer that grows, not the constant one
    assert verdicts[3].conditions["below_floor"] and verdicts[3].conditions["val_stalled"]


def test_steady_norm_growth_of_ordinary_training_is_not_norm_growing() -> None:
    # the 0.1 condition held at every decision here: a steadily growing norm is not memorising
    det = NearInterpolationDetector(noise_floor=None, patience=1, window=5)
    verdicts = feed(det, clean_rows(15))
    assert not any(v.conditions["norm_growing"] for v in verdicts)
    assert not any(v.fired for v in verdicts)


def test_norm_growth_speeding_up_again_is_norm_growing() -> None:
    det = NearInterpolationDetector(noise_floor=None, patience=1, window=4)
    steps = [100 * i for i in range(1, 21)]
    norms = [1.0 + 0.5 * math.log(s / 100 + 1) for s in steps[:10]]  # decelerating: the signal is learnt
    norms += [norms[-1] * (s / steps[9]) ** 1.0 for s in steps[10:]]  # growth speeds up: fitting noise
    verdicts = [det.update(s, total_norm=n, train_loss=0.5) for s, n in zip(steps, norms)]
    growing = [v.conditions["norm_growing"] for v in verdicts]
    assert not any(growing[:10]) and all(growing[13:])


@pytest.mark.parametrize("missing", ["stalled", "below"])
def test_known_floor_needs_both_floor_and_stall(missing: str) -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=2, window=5)
    verdicts = feed(det, signature_rows(12, **{missing: False}))
    assert not any(v.fired or v.active for v in verdicts)
    name = {"stalled": "val_stalled", "below": "below_floor"}[missing]
    assert all(v.conditions[name] is False for v in verdicts[1:])


def test_clean_run_never_fires_with_any_floor() -> None:
    for floor in (FLOOR, "auto", None):
        det = NearInterpolationDetector(noise_floor=floor, patience=1, window=5)
        assert not any(v.fired for v in feed(det, clean_rows(20))), floor


def test_streak_resets_when_validation_improves_again() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=3, window=4)
    rows = [*signature_rows(3), (2.5, 0.5, 0.5), *signature_rows(9)[4:]]  # a new best at decision 4
    verdicts = feed(det, rows)
    assert verdicts[3].streak == 0 and verdicts[3].reason is Reason.NOT_MET
    assert not any(v.fired for v in verdicts[:6])


def test_rules_follow_what_is_known() -> None:
    def names(det: NearInterpolationDetector) -> list[tuple[str, int]]:
        return [(r.name, r.patience) for r in det.rules()]

    assert names(NearInterpolationDetector(noise_floor=1.0)) == [("below_floor", 7)]
    det = NearInterpolationDetector(noise_floor=1.0)
    det.update(10, total_norm=1.0, train_loss=0.5, val_loss=1.0)
    assert names(det) == [("below_floor+val_stalled", 7), ("val_stalled|near_floor", 10)]
    clean = NearInterpolationDetector(noise_floor=0.0)
    clean.update(10, total_norm=1.0, train_loss=0.5, val_loss=1.0)
    assert names(clean) == [("below_floor+val_stalled", 7)]  # a floor of 0: no noise to memorise
    assert names(NearInterpolationDetector(noise_floor="auto")) == [
        ("below_floor+val_stalled+gap_widening|drifted", 10)
    ]
    assert names(NearInterpolationDetector(noise_floor=None, patience=4)) == [("val_stalled+gap_widening|drifted", 4)]
    # floor_patience never exceeds patience
    assert names(NearInterpolationDetector(noise_floor=1.0, patience=3)) == [("below_floor", 3)]
    custom = NearInterpolationDetector(require=["gap_widening", "val_stalled"])
    assert names(custom) == [("gap_widening+val_stalled", 10)]
    with pytest.raises(ValueError, match="`require`"):
        NearInterpolationDetector(require=["growing"])
    with pytest.raises(ValueError, match="`floor_patience`"):
        NearInterpolationDetector(floor_patience=0)


def stalled_rows(n: int, train: float, val: float) -> list:
    """Validation stalled from the second decision on (it creeps up), the training loss constant."""
    return [(1.0 + 0.1 * i, train, val + 0.01 * i) for i in range(n)]


def test_training_loss_nearer_the_floor_than_validation_fires_at_patience() -> None:
    # floor 1, validation ~2: a training loss of 1.3 is above the floor but nearer it than validation
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    verdicts = feed(det, stalled_rows(9, train=1.3, val=2.0))
    assert all(v.conditions["near_floor"] and not v.conditions["below_floor"] for v in verdicts)
    assert [v.fired for v in verdicts].index(True) == 5  # 5 stalled validations (decisions 2-6)
    assert verdicts[5].rule == "val_stalled|near_floor" and verdicts[5].streak == 5
    assert "val_stalled|near_floor" in verdicts[5].describe()


def test_near_floor_needs_to_hold_only_when_the_stall_reaches_patience() -> None:
    # EarlyStopping's count of stalled validations, with the training loss nearer the floor than
    # the validation loss at the decision that stops: here it gets there 2 decisions after the
    # stall reached its patience, and the rule fires at once
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    rows = stalled_rows(7, train=1.95, val=2.0) + stalled_rows(3, train=1.3, val=2.2)
    verdicts = feed(det, rows)
    near = [v.conditions["near_floor"] for v in verdicts]
    assert near == [False] * 7 + [True] * 3
    assert [v.fired for v in verdicts].index(True) == 7
    assert verdicts[7].rule == "val_stalled|near_floor" and verdicts[7].streak == 7  # stalled since decision 2


def test_plateau_far_above_the_floor_never_fires() -> None:
    # training loss ~ validation loss, both well above the floor: the model has not begun to fit noise
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=3, floor_patience=2, window=4)
    verdicts = feed(det, stalled_rows(20, train=1.95, val=2.0))
    assert not any(v.conditions["near_floor"] for v in verdicts)
    assert not any(v.fired or v.active for v in verdicts)
    # validation has stalled for 19 decisions (EarlyStopping would have stopped): the rule waits on near_floor
    assert all(v.reason is Reason.BUILDING for v in verdicts[1:]) and verdicts[-1].streak == 19


def test_once_fired_the_rule_stays_active_while_validation_stays_stalled() -> None:
    # the training loss swings around the midpoint (as a raised weight decay may make it): one onset,
    # and the signature stays active, so an escalation can reach its next stage
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=3, floor_patience=2, window=4)
    rows = [(1.0 + 0.1 * i, 1.2 if i % 2 else 1.9, 2.1 + 0.01 * i) for i in range(16)]
    verdicts = feed(det, rows)
    assert sum(v.fired for v in verdicts) == 1
    onset = [v.fired for v in verdicts].index(True)
    assert all(v.active and v.rule == "val_stalled|near_floor" for v in verdicts[onset:])
    assert {v.conditions["near_floor"] for v in verdicts[onset:]} == {True, False}


def test_a_validation_without_training_loss_does_not_restart_the_stall_count() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    rows = stalled_rows(4, train=1.3, val=2.0)
    rows.append((1.5, None, 2.05))  # no finite training loss since the previous validation
    verdicts = feed(det, rows) + feed(det, stalled_rows(3, train=1.3, val=2.1), start=5)
    assert verdicts[4].conditions["near_floor"] is None and verdicts[4].streak == 4
    assert [v.fired for v in verdicts].index(True) == 5  # 5 stalled validations, as EarlyStopping counts


def test_require_names_only_conditions_that_can_be_evaluated() -> None:
    for floor, bad in ((None, "below_floor"), (None, "near_floor"), ("auto", "near_floor"), (0.0, "near_floor")):
        with pytest.raises(ValueError, match=f"`require`.*{bad}"):
            NearInterpolationDetector(noise_floor=floor, require=[bad, "val_stalled"])
    assert NearInterpolationDetector(noise_floor=1.0, require=["near_floor", "val_stalled"]).rules()[0].patience == 10


def test_near_floor_needs_a_known_positive_floor_and_validation() -> None:
    for floor in (0.0, "auto", None):
        det = NearInterpolationDetector(noise_floor=floor, patience=3, window=4)
        assert all(v.conditions["near_floor"] is None for v in feed(det, stalled_rows(6, train=0.1, val=2.0)))
    det = NearInterpolationDetector(noise_floor=FLOOR, window=4)
    assert det.update(10, total_norm=1.0, train_loss=0.5).conditions["near_floor"] is None


def test_the_floor_rule_fires_first_and_the_onset_is_reported_once() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    verdicts = feed(det, stalled_rows(10, train=0.5, val=2.0))  # under the floor: both rules hold
    assert [v.fired for v in verdicts] == [False, False, True] + [False] * 7  # not again when the slow rule arrives
    assert all(v.active for v in verdicts[2:])
    assert verdicts[2].rule == "below_floor+val_stalled"
    assert verdicts[-1].rule == "below_floor+val_stalled" and verdicts[-1].streak == 9


def test_a_checkpoint_with_one_streak_still_loads() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    feed(det, stalled_rows(2, train=0.5, val=2.0))
    state = det.state_dict()
    del state["streaks"], state["active_rules"]
    state["streak"] = 1  # the format of normguard before the rules
    resumed = NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4)
    resumed.load_state_dict(state)
    assert resumed.state_dict()["streaks"] == {"below_floor+val_stalled": 1, "val_stalled|near_floor": 1}
    assert resumed.update(300, total_norm=1.3, train_loss=0.5, val_loss=2.03).fired


def test_validation_metric_with_mode_max_judges_stall() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=2, window=4)
    det.mode = "max"
    accuracies = [0.5, 0.6, 0.7, 0.7, 0.69]  # the loss rises throughout, accuracy still climbs until 0.7
    verdicts = [
        det.update(10 * i, total_norm=float(i), train_loss=0.5, val_loss=1.0 + 0.1 * i, val_metric=acc)
        for i, acc in enumerate(accuracies, start=1)
    ]
    assert [v.conditions["val_stalled"] for v in verdicts] == [False, False, False, True, True]
    assert [v.fired for v in verdicts] == [False, False, False, False, True]


def test_state_round_trips_mid_sequence() -> None:
    rows = signature_rows(10)
    full = feed(NearInterpolationDetector(noise_floor="auto", patience=2, window=4), rows)
    first = NearInterpolationDetector(noise_floor="auto", patience=2, window=4)
    feed(first, rows[:5])
    resumed = NearInterpolationDetector(noise_floor="auto", patience=2, window=4)
    resumed.load_state_dict(first.state_dict())
    assert feed(resumed, rows[5:], start=5) == full[5:]


def test_reset_forgets_everything() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=1)
    feed(det, signature_rows(6))
    det.reset()
    assert det.state_dict() == NearInterpolationDetector(noise_floor=FLOOR, patience=1).state_dict()


def test_without_validation_decisions_happen_at_every_check() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=2, window=4)
    steps = [10 * i for i in range(1, 13)]
    norms = [1.0 + math.log(i) for i in range(1, 7)] + [2.8 * (i / 6) ** 1.5 for i in range(7, 13)]
    verdicts = [det.update(s, total_norm=n, train_loss=0.5) for s, n in zip(steps, norms)]
    assert [v.conditions["gap_widening"] for v in verdicts] == [None] * 12  # no validation: unavailable
    assert all(v.decided for v in verdicts) and any(v.fired for v in verdicts)


def test_with_infrequent_validation_checks_only_record() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, patience=2)
    det.update(10, total_norm=1.0, train_loss=0.5, val_loss=1.0)
    verdict = det.update(20, total_norm=1.2, train_loss=0.5)
    assert verdict.reason is Reason.RECORDED and not verdict.decided and verdict.streak == 0


def test_without_floor_or_validation_nothing_fires() -> None:
    det = NearInterpolationDetector(noise_floor=None, patience=1)
    verdicts = [det.update(10 * i, total_norm=float(i) ** (1 + i / 5), train_loss=0.1) for i in range(1, 12)]
    assert not any(v.fired for v in verdicts)  # the norm alone never fires


def test_auto_floor_waits_for_validation_to_stop_improving() -> None:
    det = NearInterpolationDetector(noise_floor="auto", patience=1, window=4, require=["below_floor", "val_stalled"])
    improving = [(1.0 + 0.2 * i, 0.1, 1.0 - 0.05 * i) for i in range(1, 8)]
    verdicts = feed(det, improving)
    assert all(v.conditions["below_floor"] is False and not v.fired for v in verdicts)
    assert det.current_floor() is None
    worse = feed(det, [(3.0, 0.05, 0.9), (3.3, 0.04, 0.95)], start=7)
    assert det.current_floor() == pytest.approx(1.0 - 0.05 * 7)
    assert worse[-1].conditions["below_floor"] is True and worse[0].fired and worse[-1].active


def test_growth_exponent_of_a_power_law_is_recovered() -> None:
    det = NearInterpolationDetector(noise_floor=FLOOR, window=6)
    for step in (100, 200, 400, 800, 1600, 3200):
        det.update(step, total_norm=3.0 * step**0.25, train_loss=0.5)
    growth, positive = det.growth()
    assert growth == pytest.approx(0.25, abs=1e-9) and positive == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_floor": -0.1}, "`noise_floor`"),
        ({"noise_floor": float("nan")}, "`noise_floor`"),
        ({"noise_floor": "median"}, "`noise_floor`"),
        ({"margin": 0}, "`margin`"),
        ({"patience": 0}, "`patience` to be an integer >= 1"),
        ({"patience": 2.0}, "`patience`"),
        ({"window": 2}, "`window` to be an integer >= 3"),
        ({"confidence": 0.2}, "`confidence`"),
        ({"min_norm_increase": -1}, "`min_norm_increase`"),
    ],
)
def test_argument_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NearInterpolationDetector(**kwargs)


def test_label_noise_floor_matches_the_entropy_formula() -> None:
    assert label_noise_floor(0.0, 10) == 0.0
    eta, c = 0.3, 10
    p = np.array([1 - eta + eta / c] + [eta / c] * (c - 1))
    assert label_noise_floor(eta, c) == pytest.approx(float(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="`noise_rate`"):
        label_noise_floor(1.0, 10)


finite_or_not = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(finite_or_not, st.one_of(st.none(), finite_or_not), st.one_of(st.none(), finite_or_not)),
        min_size=1,
        max_size=30,
    ),
    floor=st.one_of(st.none(), st.just("auto"), st.floats(0, 10)),
    patience=st.integers(1, 4),
)
def test_random_sequences_never_crash_and_keep_invariants(rows: list, floor, patience: int) -> None:
    det = NearInterpolationDetector(noise_floor=floor, patience=patience, window=4)
    decisions = 0
    previous_streak = 0
    for i, (norm, train, val) in enumerate(rows, start=1):
        v = det.update(i * 7, total_norm=norm, layer_norms={"x": norm}, train_loss=train, val_loss=val)
        decisions += v.decided
        assert 0 <= v.streak <= decisions
        rules = {r.name: r for r in det.rules()}
        if v.fired:
            assert v.active and v.streak >= rules[v.rule].patience
        if v.active and v.decided:
            assert all(v.conditions[c] is True for c in rules[v.rule].conditions)
        if v.reason is Reason.NON_FINITE:
            assert v.streak == previous_streak and not v.fired
        for value in (v.growth_exponent, v.gap, v.gap_trend, v.noise_floor):
            assert value is None or math.isfinite(value)
        previous_streak = v.streak
    clone = NearInterpolationDetector(noise_floor=floor, patience=patience, window=4)
    clone.load_state_dict(det.state_dict())
    assert clone.state_dict() == det.state_dict()


@settings(max_examples=100, deadline=None)
@given(
    slope=st.floats(-5, 5),
    intercept=st.floats(-5, 5),
    n=st.integers(2, 12),
)
def test_theil_sen_is_exact_on_lines(slope: float, intercept: float, n: int) -> None:
    x = np.arange(1.0, n + 1)
    got, positive = theil_sen(x, intercept + slope * x)
    assert got == pytest.approx(slope, abs=1e-9)
    if abs(slope) > 1e-6:
        assert positive == (1.0 if slope > 0 else 0.0)


@pytest.mark.parametrize("floor", ["auto", None])
def test_drifted_gates_the_rules_without_a_known_floor(floor: str | None) -> None:
    """Stalled validation and a widening gap fire only once the weights have moved far from the best point."""

    def run(drift: float | None) -> list:
        det = NearInterpolationDetector(noise_floor=floor, patience=3, window=4)
        rows = [(1.0 + 0.1 * i, 1.0 - 0.1 * i, 1.0 - 0.02 * i) for i in range(1, 4)]  # learning: best moves
        rows += [(1.5 + 0.1 * i, 0.6 - 0.05 * i, 0.95 + 0.03 * i) for i in range(1, 9)]  # memorising
        return [
            det.update(100 * i, total_norm=n, train_loss=t, val_loss=v, drift=drift)
            for i, (n, t, v) in enumerate(rows, start=1)
        ]

    near = run(0.1)
    assert not any(v.fired for v in near) and near[-1].streak >= 3  # the streak holds; the gate does not
    assert near[-1].conditions["drifted"] is False
    far = run(0.5)
    assert sum(v.fired for v in far) == 1 and far[-1].active and far[-1].rule.endswith("|drifted")
    unknown = run(None)
    assert not any(v.fired for v in unknown) and unknown[-1].conditions["drifted"] is None  # never on missing evidence


def test_an_improving_validation_is_the_new_best_point() -> None:
    det = NearInterpolationDetector(noise_floor=None)
    first = det.update(100, total_norm=1.0, train_loss=1.0, val_loss=1.0, drift=0.9)
    worse = det.update(200, total_norm=1.1, train_loss=0.9, val_loss=1.1, drift=0.9)
    better = det.update(300, total_norm=1.2, train_loss=0.8, val_loss=0.8, drift=0.9)
    assert [v.conditions["drifted"] for v in (first, worse, better)] == [False, True, False]
    assert det.improved
    assert det.update(400, total_norm=1.3, train_loss=0.7).conditions["drifted"] is None  # not a validation


def test_needs_drift_only_where_a_rule_reads_it() -> None:
    assert NearInterpolationDetector(noise_floor=None).needs_drift
    assert NearInterpolationDetector(noise_floor="auto").needs_drift
    assert not NearInterpolationDetector(noise_floor=0.5).needs_drift
    assert NearInterpolationDetector(noise_floor=0.5, require=["below_floor", "drifted"]).needs_drift
    with pytest.raises(ValueError, match="`drift_share`"):
        NearInterpolationDetector(drift_share=0)


# ---------------------------------------------------------------- the noise-floor type and the estimated floor


@pytest.mark.parametrize(
    ("setting", "kind", "in_effect"),
    [
        (0.7, "known", 0.7),
        (0.0, "known", 0.0),
        ("estimate", "estimated", None),
        ("auto", "validation_min", None),
        (None, "none", None),
    ],
)
def test_noise_floor_type_keeps_what_the_user_passed(setting, kind: str, in_effect) -> None:
    floor = NoiseFloor.from_setting(setting)
    assert floor.kind is FloorKind(kind) and floor.setting == setting and floor.in_effect() == in_effect
    det = NearInterpolationDetector(noise_floor=setting)
    assert det.noise_floor == setting and type(det.noise_floor) is type(setting)
    assert det.floor == floor and det.current_floor() == in_effect
    with pytest.raises(FrozenInstanceError):
        floor.value = 1.0  # type: ignore[misc]


def test_noise_floor_type_rejects_bad_settings_and_estimates() -> None:
    with pytest.raises(ValueError, match=r"`noise_floor`.*'estimate'"):
        NoiseFloor.from_setting("estimated")
    with pytest.raises(ValueError, match="`noise_floor`"):
        NearInterpolationDetector(noise_floor=-1.0)
    det = NearInterpolationDetector(noise_floor="estimate")
    for (value, low, high), name in (
        ((1.0, 1.1, 1.2), "`low`"),  # low above the value
        ((1.0, 0.9, 0.95), "`high`"),  # high under the value
        ((-0.1, 0.0, 0.1), "`value`"),
        ((math.nan, 0.0, 0.1), "`value`"),
        ((1.0, math.nan, 1.1), "`low`"),
        ((1.0, 0.9, math.nan), "`high`"),
    ):
        with pytest.raises(ValueError, match=name):
            det.set_floor_estimate(value, low, high)
    assert det.current_floor() is None  # a rejected estimate changes nothing
    det.set_floor_estimate(1.0, 0.0, math.inf)  # an interval without an upper end is allowed
    assert det.floor.high == math.inf and det.floor.low == 0.0


def test_an_estimate_is_ignored_unless_the_floor_is_estimated() -> None:
    for setting in (1.0, 0.0, "auto", None):
        det = NearInterpolationDetector(noise_floor=setting, patience=3, window=4)
        feed(det, signature_rows(3))
        before = (det.state_dict(), det.current_floor(), det.floor)
        det.set_floor_estimate(0.4, 0.3, 0.5)
        assert (det.state_dict(), det.current_floor(), det.floor) == before, setting
        with pytest.raises(ValueError, match="`low`"):  # but still checked
            det.set_floor_estimate(0.4, 0.5, 0.6)


def test_estimated_floor_rules_are_those_of_a_known_floor() -> None:
    det = NearInterpolationDetector(noise_floor="estimate")
    assert [r.name for r in det.rules()] == ["below_floor"] and not det.needs_drift
    det.update(10, total_norm=1.0, train_loss=0.5, val_loss=1.0)
    assert [(r.name, r.patience) for r in det.rules()] == [
        ("below_floor+val_stalled", 7),
        ("val_stalled|near_floor", 10),
    ]
    assert (
        NearInterpolationDetector(noise_floor="estimate", require=["near_floor", "val_stalled"]).rules()[0].patience
        == 10
    )


def test_before_the_first_estimate_the_floor_conditions_are_unavailable() -> None:
    det = NearInterpolationDetector(noise_floor="estimate", patience=3, floor_patience=2, window=4)
    verdicts = feed(det, signature_rows(10))  # memorising, but no estimate yet
    assert not any(v.fired or v.active for v in verdicts)
    assert all(v.conditions["below_floor"] is None and v.conditions["near_floor"] is None for v in verdicts)
    assert all(v.noise_floor is None and v.noise_floor_low is None for v in verdicts)
    assert verdicts[-1].streak == 9 and verdicts[-1].rule == "val_stalled|near_floor"  # EarlyStopping's count goes on


def test_an_estimate_well_above_the_training_loss_fires_as_a_known_floor() -> None:
    known = feed(NearInterpolationDetector(noise_floor=FLOOR, patience=3, window=5), signature_rows(8))
    det = NearInterpolationDetector(noise_floor="estimate", patience=3, window=5)
    det.set_floor_estimate(FLOOR, 0.9, 1.1)
    estimated = feed(det, signature_rows(8))
    assert [v.fired for v in estimated] == [v.fired for v in known] == [False] * 3 + [True] + [False] * 4
    assert [v.active for v in estimated] == [v.active for v in known]
    assert [v.conditions for v in estimated] == [v.conditions for v in known]
    assert all(v.noise_floor == FLOOR and (v.noise_floor_low, v.noise_floor_high) == (0.9, 1.1) for v in estimated)
    data = estimated[3].to_data()
    assert (data["noise_floor"], data["noise_floor_low"], data["noise_floor_high"]) == (FLOOR, 0.9, 1.1)
    assert "noise_floor_low" not in known[3].to_data()  # other floors: the event data as before
    assert "estimated floor 1 [0.9, 1.1]" in estimated[3].describe()


def test_a_training_loss_inside_the_interval_is_not_below_the_floor() -> None:
    # train 0.97: under the estimate 1.0 but not under its lower end 0.9; validation stalls just above
    rows = [(1.0 + 0.1 * i, 0.97, 1.0 + 0.01 * i) for i in range(8)]
    known = feed(NearInterpolationDetector(noise_floor=FLOOR, patience=10, floor_patience=3, window=4), rows)
    assert any(v.fired for v in known) and all(v.conditions["below_floor"] for v in known)
    det = NearInterpolationDetector(noise_floor="estimate", patience=10, floor_patience=3, window=4)
    det.set_floor_estimate(FLOOR, 0.9, 1.1)
    estimated = feed(det, rows)
    assert not any(v.fired or v.active for v in estimated)
    assert all(v.conditions["below_floor"] is False for v in estimated)


def test_the_lowest_validation_loss_caps_an_estimate_that_is_too_high() -> None:
    # an estimate of 1.0 [0.9, 1.1] while validation reached 0.7: no model beats the floor on
    # fresh data, so the floor is at most 0.7, and a training loss of 0.8 is not under it
    det = NearInterpolationDetector(noise_floor="estimate", patience=10, floor_patience=2, window=4)
    det.set_floor_estimate(1.0, 0.9, 1.1)
    verdicts = feed(det, [(1.0 + 0.1 * i, 0.8, 0.7 + 0.01 * i) for i in range(6)])
    assert all(v.noise_floor_low == pytest.approx(0.7) and v.noise_floor == 1.0 for v in verdicts)
    assert all(v.conditions["below_floor"] is False for v in verdicts) and not any(v.fired for v in verdicts)
    det.set_floor_estimate(1.0, 0.6, 1.1)  # a lower end under the best validation loss is used as it is
    assert feed(det, [(2.0, 0.5, 0.8)], start=6)[0].noise_floor_low == 0.6


@pytest.mark.parametrize("estimate", [(0.0, 0.0, 0.0), (0.02, 0.0, 0.05), (0.3, 0.0, 0.9)])
def test_an_estimate_whose_interval_reaches_zero_never_fires(estimate: tuple[float, float, float]) -> None:
    # clean labels: the model memorises its (clean) training set and validation stalls for 30
    # validations; the estimate cannot be told from 0, so this is a floor of 0: nothing fires
    rows = [(1.0 + 0.2 * i, 0.001, 0.3 + 0.01 * i) for i in range(30)]
    zero = feed(NearInterpolationDetector(noise_floor=0.0, patience=3, floor_patience=2, window=4), rows)
    det = NearInterpolationDetector(noise_floor="estimate", patience=3, floor_patience=2, window=4)
    det.set_floor_estimate(*estimate)
    verdicts = feed(det, rows)
    assert not any(v.fired or v.active for v in verdicts) and not any(v.fired for v in zero)
    assert [v.conditions["below_floor"] for v in verdicts] == [v.conditions["below_floor"] for v in zero]
    assert all(v.conditions["near_floor"] is None for v in verdicts)


def test_the_near_floor_rule_with_an_estimate() -> None:
    # as test_training_loss_nearer_the_floor_than_validation_fires_at_patience, with an estimate
    det = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=2, window=4)
    det.set_floor_estimate(FLOOR, 0.9, 1.1)
    verdicts = feed(det, stalled_rows(9, train=1.3, val=2.0))
    assert all(v.conditions["near_floor"] and not v.conditions["below_floor"] for v in verdicts)
    assert [v.fired for v in verdicts].index(True) == 5 and verdicts[5].rule == "val_stalled|near_floor"
    # the conservative ends: level = 0.9 (low), gap > 0.1 × 1.1 (high)
    det = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=2, window=4)
    det.set_floor_estimate(FLOOR, 0.9, 1.1)
    rows = [(1.0, 1.44, 2.0), (1.1, 1.46, 2.01), (1.2, 1.0, 1.105)]
    verdicts = feed(det, rows)
    # 1.46 ≥ (2.01 + 0.9) / 2; then a gap of 0.105, under 0.1 × 1.1: a known floor of 1.0 holds both
    assert [v.conditions["near_floor"] for v in verdicts] == [True, False, False]
    known = feed(NearInterpolationDetector(noise_floor=FLOOR, patience=5, floor_patience=2, window=4), rows)
    assert [v.conditions["near_floor"] for v in known] == [True, True, True]


def test_a_new_estimate_applies_from_the_next_update() -> None:
    # validation stalled for 6 validations with no estimate; the first estimate opens the near_floor gate at once
    det = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=2, window=4)
    verdicts = feed(det, stalled_rows(7, train=1.3, val=2.0))
    assert not any(v.fired for v in verdicts) and verdicts[-1].streak == 6
    det.set_floor_estimate(FLOOR, 0.95, 1.05)
    after = feed(det, [(2.0, 1.3, 2.1)], start=7)[0]
    assert after.fired and after.rule == "val_stalled|near_floor" and after.noise_floor == FLOOR
    det.set_floor_estimate(1.6, 1.5, 1.7)  # a higher floor: the training loss is now under it
    later = feed(det, [(2.1, 1.3, 2.2), (2.2, 1.3, 2.3)], start=8)
    assert all(v.conditions["below_floor"] and v.noise_floor == 1.6 for v in later)
    assert det.current_floor() == 1.6 and (det.floor.low, det.floor.high) == (1.5, 1.7)


def test_an_estimated_floor_survives_a_resume() -> None:
    rows = stalled_rows(10, train=0.5, val=2.0)
    full_det = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=3, window=4)
    full_det.set_floor_estimate(FLOOR, 0.9, 1.1)
    full = feed(full_det, rows)
    first = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=3, window=4)
    first.set_floor_estimate(FLOOR, 0.9, 1.1)
    feed(first, rows[:2])
    state = first.state_dict()
    assert state["floor_estimate"] == {"value": FLOOR, "low": 0.9, "high": 1.1}
    resumed = NearInterpolationDetector(noise_floor="estimate", patience=5, floor_patience=3, window=4)
    resumed.load_state_dict(state)
    assert resumed.current_floor() == FLOOR and resumed.floor == first.floor
    assert feed(resumed, rows[2:], start=2) == full[2:] and full[3].fired
    # the estimate state is plain data (a JSON checkpoint keeps it) and only "estimate" reads it
    again = NearInterpolationDetector(noise_floor="estimate")
    again.load_state_dict(json.loads(json.dumps(state)))
    assert again.floor == first.floor
    known = NearInterpolationDetector(noise_floor=0.5)
    known.load_state_dict(state)
    assert known.current_floor() == 0.5 and "floor_estimate" not in known.state_dict()
    # reset forgets the estimate (a new fit); a state saved before the first estimate has none
    resumed.reset()
    assert resumed.current_floor() is None and resumed.state_dict()["floor_estimate"] is None
    fresh = NearInterpolationDetector(noise_floor="estimate")
    fresh.load_state_dict(resumed.state_dict())
    assert fresh.current_floor() is None


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.floats(0.1, 10), st.one_of(st.none(), st.floats(0, 5)), st.one_of(st.none(), st.floats(0, 5))),
        min_size=1,
        max_size=25,
    ),
    estimates=st.lists(st.tuples(st.integers(0, 25), st.floats(0, 3), st.floats(0, 1), st.floats(0, 1)), max_size=4),
    patience=st.integers(1, 4),
)
def test_estimates_at_any_time_keep_the_invariants_and_a_zero_interval_never_fires(
    rows: list, estimates: list, patience: int
) -> None:
    det = NearInterpolationDetector(noise_floor="estimate", patience=patience, floor_patience=patience, window=4)
    clean = NearInterpolationDetector(noise_floor="estimate", patience=patience, floor_patience=patience, window=4)
    for i, (norm, train, val) in enumerate(rows, start=1):
        for at, value, down, up in estimates:
            if at == i:
                det.set_floor_estimate(value, value * down, value * (1 + up))
                clean.set_floor_estimate(value, 0.0, value * (1 + up))  # an interval that reaches 0
        v = det.update(i * 7, total_norm=norm, train_loss=train, val_loss=val)
        c = clean.update(i * 7, total_norm=norm, train_loss=train, val_loss=val)
        rules = {r.name: r for r in det.rules()}
        if v.fired:
            assert v.active and v.streak >= rules[v.rule].patience
        if v.active:
            assert all(v.conditions[name] is True for name in rules[v.rule].conditions)
        if v.noise_floor_low is not None:
            assert v.noise_floor_low <= v.noise_floor <= v.noise_floor_high
        assert not c.fired and not c.active and c.conditions["below_floor"] in (None, False)
    resumed = NearInterpolationDetector(noise_floor="estimate", patience=patience, floor_patience=patience, window=4)
    resumed.load_state_dict(det.state_dict())
    assert resumed.state_dict() == det.state_dict() and resumed.floor == det.floor


def test_held_floor_waits_for_a_stall_on_an_estimate_and_is_capped_by_validation() -> None:
    det = NearInterpolationDetector(noise_floor="estimate")
    assert det.held_floor() == (None, True)
    det.set_floor_estimate(0.9, 0.8, 1.0)
    det.update(10, total_norm=1.0, train_loss=1.2, val_loss=1.1)  # improving
    assert det.held_floor() == (0.9, False)
    det.update(20, total_norm=1.0, train_loss=0.9, val_loss=0.85)  # improving, below the estimate
    assert det.held_floor() == (0.85, False)  # capped at the lowest validation loss
    det.update(30, total_norm=1.0, train_loss=0.7, val_loss=0.95)  # stalled
    assert det.held_floor() == (0.85, True)
    known = NearInterpolationDetector(noise_floor=0.5)
    known.update(10, total_norm=1.0, train_loss=1.2, val_loss=1.1)
    assert known.held_floor() == (0.5, True)
