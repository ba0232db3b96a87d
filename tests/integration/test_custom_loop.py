"""A real custom PyTorch loop with NormGuard, its TensorBoard file read back, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import normguard as ng
from normguard import tags


def read_events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def test_custom_loop_writes_tags_and_values(tmp_path: Path) -> None:
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    losses = []
    norms_at_checks = []
    with ng.NormGuard(model, opt, log_dir=str(tmp_path), every_n_steps=5) as guard:
        for step in range(1, 31):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            guard.step(loss)
            if step % 5 == 0:
                norms_at_checks.append({k: v.item() for k, v in ng.layer_norms(model).items()})
            if step % 10 == 0:
                with torch.no_grad():
                    guard.validation_end((model(x[:16]) - y[:16]).pow(2).mean())

    acc = read_events(tmp_path)
    scalar_tags = set(acc.Tags()["scalars"])
    for tag in (tags.TOTAL_NORM, tags.TRAIN_LOSS, tags.VAL_LOSS, tags.GAP, tags.layer_tag("0"), tags.layer_tag("2")):
        assert tag in scalar_tags, tag
    assert tags.condition_tag("val_stalled") in scalar_tags
    total = acc.Scalars(tags.TOTAL_NORM)
    # every check step once, though each validation makes an extra check at steps 10, 20, 30
    assert [e.step for e in total] == [5, 10, 15, 20, 25, 30]
    for tag in scalar_tags:  # one value per tag and step: TensorBoard keeps the last of duplicates
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), tag
    growth = {e.step: e.value for e in acc.Scalars(tags.RELATIVE_GROWTH)}
    assert all(v != 0.0 for v in growth.values())  # never a 0 from comparing a check with itself
    layer0 = {e.step: e.value for e in acc.Scalars(tags.layer_tag("0"))}
    for i, norms in enumerate(norms_at_checks):
        assert layer0[5 * (i + 1)] == pytest.approx(norms["0"], rel=1e-6)
    last_total = [e.value for e in total if e.step == 30][-1]
    assert last_total == pytest.approx(math.sqrt(sum(v * v for v in norms_at_checks[-1].values())), rel=1e-6)
    train = {e.step: e.value for e in acc.Scalars(tags.TRAIN_LOSS)}
    assert train[5] == pytest.approx(sum(losses[0:5]) / 5, rel=1e-5)
    assert train[30] == pytest.approx(sum(losses[25:30]) / 5, rel=1e-5)
    # the gap uses the training loss averaged over the same stretch as the validation (steps 11..20)
    val = {e.step: e.value for e in acc.Scalars(tags.VAL_LOSS)}
    gap = {e.step: e.value for e in acc.Scalars(tags.GAP)}
    assert gap[20] == pytest.approx(val[20] - sum(losses[10:20]) / 10, rel=1e-5)


def test_custom_scalars_layout_is_written(tmp_path: Path) -> None:
    from tensorboard.plugins.custom_scalar import metadata
    from tensorboard.plugins.custom_scalar.layout_pb2 import Layout

    guard = ng.NormGuard(small_model(), log_dir=str(tmp_path), every_n_steps=1)
    guard.step(1.0)
    guard.close()
    acc = read_events(tmp_path)
    [layout_event] = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for cat in layout.category for chart in cat.chart}
    # chart entries are regular expressions: a plain tag is anchored, its dots escaped
    charts = {title: [t.removesuffix("$").replace("\\.", ".") for t in found] for title, found in charts.items()}
    assert charts["weight norm"] == [tags.TOTAL_NORM]
    drawn = {tag for found in charts.values() for tag in found}
    assert {tags.NOISE_FLOOR, tags.GAP, tags.TRAIN_LOSS, tags.VAL_LOSS} <= drawn


def test_events_are_logged_as_scalars_and_text(tmp_path: Path) -> None:
    model = small_model()
    with ng.NormGuard(model, log_dir=str(tmp_path), every_n_steps=3) as guard:
        guard.step(torch.tensor(1.0))
        guard.step(torch.tensor(float("nan")))
        with torch.no_grad():
            model[2].weight.fill_(float("inf"))
        guard.step(torch.tensor(1.0))
    kinds = [e.kind for e in guard.events]
    assert kinds == [ng.EventKind.NONFINITE_LOSS, ng.EventKind.NONFINITE_WEIGHTS]
    assert guard.events[0].data["first_step"] == 2
    assert guard.events[1].data["layers"] == ["2"]
    acc = read_events(tmp_path)
    assert [e.step for e in acc.Scalars(tags.event_tag("nonfinite_weights"))] == [3]
    texts = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f"{tags.EVENTS_TEXT}/text_summary")]
    assert any("first at step 2" in t for t in texts) and any("layer(s): 2" in t for t in texts)


def test_attached_to_optimizer_counts_steps_itself(tmp_path: Path) -> None:
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = ng.NormGuard(model, opt, every_n_steps=4, attach=True)
    x = torch.randn(8, 6)
    for _ in range(8):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        guard.report_loss(loss)
    assert guard.global_step == 8 and [v.step for v in guard.verdicts] == [4, 8]
    with pytest.raises(RuntimeError, match="report_loss"):
        guard.step(loss)
    guard.close()
    opt.step()
    assert guard.global_step == 8  # the hook is removed on close


def test_state_dict_round_trip() -> None:
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = ng.NormGuard(model, opt, every_n_steps=2, noise_floor=0.5)
    for i in range(10):
        guard.step(torch.tensor(1.0 / (i + 1)))
    state = guard.state_dict()
    other = ng.NormGuard(model, opt, every_n_steps=2, noise_floor=0.5)
    other.load_state_dict(state)
    assert other.global_step == 10 and other.detector.state_dict() == guard.detector.state_dict()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (None, "Expected a normguard state dict but got NoneType"),
        ([1, 2], "Expected a normguard state dict but got list"),
        ({}, "are missing"),
        ({"version": 99, "detector": {}, "action": {}, "events": []}, "version 99"),
        ("garbage", "got str"),
    ],
)
def test_garbage_state_is_refused_at_load(bad: object, match: str) -> None:
    model = small_model()
    guard = ng.NormGuard(model, torch.optim.SGD(model.parameters(), lr=0.1), every_n_steps=2)
    with pytest.raises(ng.StateError, match=match):
        guard.load_state_dict(bad)  # type: ignore[arg-type]
    assert guard.global_step == 0  # nothing half-loaded


def test_state_of_another_model_is_refused_at_load() -> None:
    model_a, model_b = small_model(), torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    guard_a = ng.NormGuard(model_a, torch.optim.SGD(model_a.parameters(), lr=0.1), every_n_steps=1, action="stop")
    guard_a.step(torch.tensor(1.0))
    guard_a.validation_end(torch.tensor(1.0))  # best weights of model A in the state
    guard_b = ng.NormGuard(model_b, torch.optim.SGD(model_b.parameters(), lr=0.1), every_n_steps=1, action="stop")
    with pytest.raises(ng.StateError, match="belongs to another model"):
        guard_b.load_state_dict(guard_a.state_dict())
    # an older state without a fingerprint is still checked against the best weights it holds
    old = {**guard_a.state_dict(), "version": 1}
    del old["fingerprint"]
    with pytest.raises(ng.StateError, match="do not fit this model"):
        guard_b.load_state_dict(old)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_n_steps": 0}, ValueError, "`every_n_steps` to be an integer >= 1"),
        ({"detector": ng.NearInterpolationDetector(), "patience": 3}, ValueError, "not both"),
        ({"action": []}, ValueError, "`action` to be a non-empty list"),
        ({"sinks": [object()]}, TypeError, r"`sinks\[0\]` to be a sink"),
        ({"sinks": "tb"}, TypeError, "`sinks` to be a list"),
        ({"include_frozen": "no"}, TypeError, "`include_frozen` to be a bool"),
        ({"mode": "max"}, ValueError, "`mode` to be 'min' when no validation metric"),
        ({"every_n_steps": 2.5}, ValueError, "`every_n_steps`"),
        ({"noise_floor": -1.0}, ValueError, "`noise_floor`"),
        ({"noise_floor": "high"}, ValueError, "`noise_floor`"),
        ({"patience": 0}, ValueError, "`patience`"),
        ({"action": "explode"}, ValueError, "`action` to be one of"),
        ({"offload": "gpu"}, ValueError, "`offload`"),
        ({"unknown_option": 1}, TypeError, "unknown_option"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ng.NormGuard(small_model(), **kwargs)


def test_model_and_optimizer_errors() -> None:
    with pytest.raises(ValueError, match="`model` to have parameters"):
        ng.NormGuard(nn.ReLU())
    with pytest.raises(TypeError, match=r"`model` to be a torch\.nn\.Module"):
        ng.NormGuard(lambda x: x)  # type: ignore[arg-type]
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="holds none of the measured"):
        ng.NormGuard(small_model(), torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="`optimizer`"):
        ng.NormGuard(small_model(), "sgd")  # type: ignore[arg-type]
    guard = ng.NormGuard(small_model())
    with pytest.raises(TypeError, match="`loss`"):
        guard.step("1.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`val_loss` to be a scalar"):
        guard.validation_end(torch.ones(3))


def test_resume_mid_window_gives_the_same_verdicts() -> None:
    losses = [1.0 / (i + 1) for i in range(23)]

    def run(split_at: int | None) -> list:
        model = small_model()
        guard = ng.NormGuard(model, every_n_steps=5, noise_floor=0.5)
        for i, loss in enumerate(losses):
            if i == split_at:
                state = guard.state_dict()
                guard = ng.NormGuard(model, every_n_steps=5, noise_floor=0.5)
                guard.load_state_dict(state)
            with torch.no_grad():
                model[0].weight.mul_(1.02)
            guard.step(torch.tensor(loss))
        return [(v.step, v.train_loss, v.reason) for v in guard.verdicts]

    assert run(None)[-2:] == run(12)[-2:]  # step 12 lies inside the window of the check at 15


def test_drift_share_is_logged_at_validations_and_survives_a_resume(tmp_path: Path) -> None:
    """Without a floor the guard measures how far the weights moved since the best validation point."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)  # labels are pure noise
    xv, yv = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)

    def run(split_at: int | None, log_dir: Path | None = None) -> list:
        model = small_model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        guard = ng.NormGuard(model, opt, log_dir=log_dir, every_n_steps=5)
        at_validation = []
        for step in range(1, 121):
            if step == split_at:
                state = guard.state_dict()
                guard.close()
                guard = ng.NormGuard(model, opt, every_n_steps=5)
                guard.load_state_dict(state)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss.detach())
            if step % 10 == 0:
                with torch.no_grad():
                    v = guard.validation_end(nn.functional.mse_loss(model(xv), yv))
                at_validation.append((v.step, v.drift, v.conditions["drifted"]))
        guard.close()
        return at_validation

    full = run(None, tmp_path)
    drifts = [d for _, d, _ in full]
    assert drifts[0] is None and all(d is not None for d in drifts[1:])  # no best point before the first
    assert max(drifts[1:]) > 0.2 and any(c is True for _, _, c in full)  # memorising noise moves far from best
    assert run(57) == full  # the references travel in the state: the same drift after a resume
    values = read_events(tmp_path).Scalars(tags.DRIFT_SHARE)
    assert [round(v.value, 5) for v in values] == [round(d, 5) for d in drifts if d is not None]
