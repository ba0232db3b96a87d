"""The norm engine against float64 references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import normguard as ng
from normguard.norms import ROOT_LAYER, NormEngine, group_parameters

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_layer_norms(groups: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Per-layer norms in float64, each layer divided by its largest magnitude before squaring."""
    out = {}
    for name, params in groups.items():
        flat = torch.cat([p.detach().double().reshape(-1) for p in params])
        scale = float(flat.abs().max()) if flat.numel() else 0.0
        out[name] = scale * math.sqrt(float((flat / scale).pow(2).sum())) if scale > 0 else 0.0
    return out


class Zoo(nn.Module):
    """Parameters of every awkward kind: 0-d, empty, non-contiguous views, mixed dtypes."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.scalar = nn.Parameter(torch.tensor(3.0, device=device))
        self.empty = nn.Linear(0, 4, device=device)
        base = torch.randn(6, 8, device=device)
        self.transposed = nn.Parameter(base.t())  # non-contiguous
        self.strided = nn.Parameter(torch.randn(10, 10, device=device)[::2, 1::3])
        self.half = nn.Linear(5, 7, device=device).half()
        self.bf16 = nn.Linear(3, 2, device=device).to(torch.bfloat16)
        self.big = nn.Linear(16, 16, device=device).half()
        with torch.no_grad():
            self.big.weight.fill_(1e4)  # 16*16*1e8 overflows fp16 accumulation
        self.frozen = nn.Linear(2, 2, device=device)
        self.frozen.requires_grad_(False)


@pytest.mark.parametrize("device", DEVICES)
def test_engine_matches_float64_reference(device: str) -> None:
    torch.manual_seed(0)
    model = Zoo(device)
    assert not model.transposed.is_contiguous() and not model.strided.is_contiguous()
    got = {k: v.item() for k, v in ng.layer_norms(model).items()}
    want = reference_layer_norms(group_parameters(model))
    assert set(got) == set(want) and "frozen" not in got
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-30), name
    assert math.isfinite(got["big"]) and got["big"] == pytest.approx(16 * 1e4, rel=1e-3)
    total = ng.total_norm(model).item()
    assert total == pytest.approx(math.sqrt(sum(v * v for v in want.values())), rel=1e-5)
    assert ng.total_norm(model).dtype == torch.float32
    assert ng.total_norm(model).device.type == device


def test_frozen_parameters_only_when_asked() -> None:
    model = Zoo()
    with_frozen = ng.layer_norms(model, include_frozen=True)
    assert "frozen" in with_frozen
    assert with_frozen["frozen"].item() == pytest.approx(
        reference_layer_norms({"f": list(model.frozen.parameters())})["f"]
    )


def test_layers_are_owning_modules_and_tied_weights_count_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Embedding(10, 4), nn.Sequential(nn.Linear(4, 4)))
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.encoder[0].weight  # tied
            self.scale = nn.Parameter(torch.ones(()))

    model = Tied()
    groups = group_parameters(model)
    assert list(groups) == [ROOT_LAYER, "encoder.0", "encoder.1.0"]
    assert sum(len(v) for v in groups.values()) == 4  # scale, embedding (once), linear weight + bias
    total = ng.total_norm(model).item()
    unique = {id(p): p for p in model.parameters()}.values()
    assert total == pytest.approx(math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in unique)), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=12),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_random_shapes_and_dtypes(shapes: list[list[int]], dtype: torch.dtype, scale: float) -> None:
    params = nn.ParameterList([nn.Parameter((torch.randn(tuple(s)) * scale).to(dtype)) for s in shapes])
    got = ng.total_norm(params).item()
    want = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-30)


def test_mixed_dtypes_are_reduced_per_bucket() -> None:
    model = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3).double(), "c": nn.Linear(3, 3).half()})
    with torch.autograd.profiler.profile() as prof:
        NormEngine(model).compute().layer_norm.sum().item()
    calls = [e for e in prof.function_events if e.name == "aten::_foreach_norm"]
    assert len(calls) == 3  # one fused reduction per (device, dtype) group, not one per tensor


def test_parameters_added_mid_run_are_measured() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = NormEngine(model, optimizer=opt)
    assert engine.layer_names == ("0",)
    extra = nn.Parameter(torch.full((3,), 2.0))
    opt.add_param_group({"params": [extra]})
    model.append(nn.Linear(2, 1))
    host, _ = engine.compute().to_host()
    assert set(host.layer_norms) == {"0", "1", "<unowned>"}
    assert host.layer_norms["<unowned>"] == pytest.approx(math.sqrt(12.0))


def test_distance_from_init_and_update_size() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for offload in ("cpu", "device"):
        engine = NormEngine(model, track_init_distance=True, track_update_size=True, offload=offload)
        init = {k: v.detach().clone() for k, v in model.named_parameters()}
        first, _ = engine.compute().to_host()
        assert first.init_distance == {"0": 0.0, "1": 0.0}
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        engine.compute()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        host, _ = engine.compute().to_host()
        for layer in ("0", "1"):
            names = [k for k in init if k.startswith(layer + ".")]
            params = dict(model.named_parameters())
            want_init = math.sqrt(sum(float((params[k] - init[k]).double().pow(2).sum()) for k in names))
            want_update = math.sqrt(sum(float((params[k] - before[k]).double().pow(2).sum()) for k in names))
            assert host.init_distance[layer] == pytest.approx(want_init, rel=1e-5)
            assert host.update_size[layer] == pytest.approx(want_update, rel=1e-5)
        n_params = sum(p.numel() for p in model.parameters())
        assert engine.memory_bytes() == 2 * 4 * n_params  # two float32 copies


def test_nonfinite_weights_are_reported_per_layer() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    host, _ = NormEngine(model).compute().to_host()
    assert host.nonfinite_layers == ["1"]
    assert math.isnan(host.total) and math.isfinite(host.layer_norms["0"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`model` to have parameters"):
        NormEngine(nn.ReLU())
    with pytest.raises(TypeError, match=r"`model` to be a torch\.nn\.Module"):
        ng.layer_norms("not a model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^Expected argument `offload` to be one of 'cpu', 'device' but got 'gpu'\.$"):
        NormEngine(nn.Linear(1, 1), offload="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`offload`"):
        NormEngine(nn.Linear(1, 1), offload=["cpu"])  # type: ignore[arg-type]


def test_a_long_lived_engine_follows_in_place_changes() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    engine = NormEngine(model)
    engine.compute()
    model[1].weight.data = model[1].weight.data.double()  # dtype changed in place, same Parameter
    model.double()
    got = {k: v.item() for k, v in engine.compute().layer_norms().items()}
    want = reference_layer_norms(group_parameters(model))
    assert got == pytest.approx(want, rel=1e-6)
    model[0].weight.requires_grad_(False)
    assert engine.compute().layer_norms()["0"].item() == pytest.approx(model[0].bias.detach().norm().item(), rel=1e-6)


# ---------------------------------------------------------------- large finite norms (issue 14.3)
def make_filled(value: float, dtype: torch.dtype, layers: int = 2) -> nn.Module:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(layers)]).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (1e25, torch.float64),  # float64 weights reduce in float64
        (1e20, torch.float32),  # norm 2e20 fits float32; its float32 sum of squares does not
        (3e38, torch.float32),  # near float32's largest: the total (~1.5e39) only fits on the host
        (1e20, torch.bfloat16),
        (6e4, torch.float16),  # near float16's largest
        (1e200, torch.float64),  # squares beyond float64: scaled
    ],
)
def test_large_finite_norms_come_out_finite(value: float, dtype: torch.dtype) -> None:
    model = make_filled(value, dtype)
    want = reference_layer_norms(group_parameters(model))
    want_total = math.hypot(*want.values())
    host, _ = NormEngine(model).compute().to_host()
    assert host.nonfinite_layers == []
    for name, value_ in want.items():
        assert host.layer_norms[name] == pytest.approx(value_, rel=1e-5), name
    assert host.total == pytest.approx(want_total, rel=1e-5)
    functional = {k: v.item() for k, v in ng.layer_norms(model).items()}
    total = ng.total_norm(model).item()
    if want_total < torch.finfo(torch.float32).max:  # the functional API returns float32
        assert functional == pytest.approx(want, rel=1e-5)
        assert total == pytest.approx(want_total, rel=1e-5)
    else:
        assert total == math.inf


def test_overflow_remeasure_is_the_only_second_transfer() -> None:
    calls = []

    def counted(snap: ng.NormSnapshot) -> ng.NormSnapshot:
        assert snap.remeasure is not None
        inner = snap.remeasure
        snap.remeasure = lambda: calls.append(1) or inner()  # type: ignore[func-returns-value]
        return snap

    counted(NormEngine(make_filled(1.0, torch.float32)).compute()).to_host()
    assert calls == []  # finite norms: the one transfer only
    host, _ = counted(NormEngine(make_filled(1e20, torch.float32)).compute()).to_host()
    assert calls == [1] and host.nonfinite_layers == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_nonfinite_weights_stay_nonfinite(bad: float, dtype: torch.dtype) -> None:
    model = make_filled(1e20 if dtype != torch.float64 else 1e200, dtype)  # overflow and bad weights together
    with torch.no_grad():
        model[1].weight[0, 0] = bad
    host, _ = NormEngine(model).compute().to_host()
    assert host.nonfinite_layers == ["1"]
    assert math.isfinite(host.layer_norms["0"]) and math.isnan(host.total)
    assert not math.isfinite(ng.layer_norms(model)["1"].item())
    assert not math.isfinite(ng.total_norm(model).item())


def test_tiny_weights_are_accurate_in_the_functional_api() -> None:
    model = make_filled(1e-25, torch.float32)  # squares underflow float32
    want = reference_layer_norms(group_parameters(model))
    assert {k: v.item() for k, v in ng.layer_norms(model).items()} == pytest.approx(want, rel=1e-5)


def test_device_without_float64_scales_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    import normguard.norms as norms

    monkeypatch.setattr(norms, "_has_float64", lambda device: False)  # as on MPS
    model = make_filled(1e20, torch.float32)
    model[0].to(torch.bfloat16)
    want = reference_layer_norms(group_parameters(model))
    assert {k: v.item() for k, v in ng.layer_norms(model).items()} == pytest.approx(want, rel=1e-5)
    host, _ = NormEngine(model).compute().to_host()
    assert host.layer_norms == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- engine hygiene (issue 12.10)
def test_vector_norm_fallback_where_foreach_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    import normguard.norms as norms

    torch.manual_seed(0)
    model = Zoo()
    want = {k: v.item() for k, v in ng.layer_norms(model).items()}
    monkeypatch.setattr(norms, "_device_has_foreach_support", lambda device: False)
    engine = NormEngine(model)
    with torch.autograd.profiler.profile() as prof:
        host, _ = engine.compute().to_host()
    assert not [e for e in prof.function_events if e.name == "aten::_foreach_norm"]
    assert host.layer_norms == pytest.approx(want, rel=1e-5)


def test_compute_records_no_graph() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    engine = NormEngine(model, track_init_distance=True, track_update_size=True)
    with torch.enable_grad():
        snap = engine.compute()
    assert not snap.layer_norm.requires_grad
    assert snap.init_distance is not None and not snap.init_distance.requires_grad
    assert not ng.total_norm(model).requires_grad


def test_functional_api_builds_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("layer_norms/total_norm should not build a NormEngine")

    monkeypatch.setattr(NormEngine, "__init__", refuse)
    model = nn.Linear(2, 2)
    assert set(ng.layer_norms(model)) == {ROOT_LAYER}
    assert ng.total_norm(model).item() > 0


@pytest.mark.parametrize("value", ["no", 0, 1, None, "False"])
def test_include_frozen_must_be_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match=r"^Expected argument `include_frozen` to be a bool but got"):
        NormEngine(nn.Linear(1, 1), include_frozen=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`include_frozen`"):
        ng.layer_norms(nn.Linear(1, 1), include_frozen=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`include_frozen`"):
        ng.total_norm(nn.Linear(1, 1), include_frozen=value)  # type: ignore[arg-type]


def test_flags_must_be_bools_and_numpy_bools_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="`track_init_distance`"):
        NormEngine(nn.Linear(1, 1), track_init_distance="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`track_update_size`"):
        NormEngine(nn.Linear(1, 1), track_update_size=1)  # type: ignore[arg-type]
    frozen = nn.Linear(1, 1).requires_grad_(False)
    assert NormEngine(frozen, include_frozen=np.bool_(True)).include_frozen is True


def test_meta_parameters_are_refused_at_construction() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"`model` to have materialised parameters.*'meta' device \(layers 0, 1\)"):
        NormEngine(model)
    with pytest.raises(ValueError, match="'meta' device"):
        ng.layer_norms(model)
    model.to_empty(device="cpu")
    assert set(NormEngine(model).layer_names) == {"0", "1"}  # materialised: accepted


def test_layer_sq_is_kept_for_earlier_callers() -> None:
    snap = NormEngine(make_filled(2.0, torch.float32, layers=1)).compute()
    assert snap.layer_sq.tolist() == pytest.approx([24.0])  # 6 entries of 2.0
    snap.layer_sq = snap.layer_sq * 4
    assert snap.to_host()[0].layer_norms["0"] == pytest.approx(math.sqrt(96.0))


@pytest.mark.parametrize("device", DEVICES)
def test_drift_distances_from_the_first_pass_and_the_best_point(device: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).to(device)
    engine = NormEngine(model, track_drift=True)
    snap = engine.compute()  # the first pass keeps w0 (on the host) and reports nothing extra
    assert snap.init_distance is None and snap.best_distance is None
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    host, _ = engine.compute(drift=True).to_host()
    assert host.best_distance is None  # no best point yet
    want_init = math.sqrt(sum(float((model.state_dict()[k] - start[k]).pow(2).sum()) for k in start))
    assert math.hypot(*host.init_distance.values()) == pytest.approx(want_init, rel=1e-6)
    engine.mark_best()
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[1].weight.mul_(2.0)
    host, _ = engine.compute(drift=True).to_host()
    assert host.best_distance == pytest.approx(
        {"0": 0.0, "1": float((model[1].weight.detach() - best["1.weight"]).norm())}
    )
    assert host.drift_share() == pytest.approx(
        math.hypot(*host.best_distance.values()) / math.hypot(*host.init_distance.values())
    )
    assert engine.memory_bytes() == 2 * sum(p.numel() * 4 for p in model.parameters())
    assert host.layer_norms["0"] == pytest.approx(float(torch.cat([model[0].weight.flatten(), model[0].bias]).norm()))
    assert all(t.device.type == "cpu" for store in (engine._drift_init, engine._best) for t in store.values())
    assert engine.compute().best_distance is None  # not at a validation: no transfer of the copies


def test_drift_references_round_trip_and_refuse_another_layout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    engine = NormEngine(model, track_drift=True)
    engine.compute()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    engine.mark_best()
    with torch.no_grad():
        model[1].bias.add_(3.0)
    want, _ = engine.compute(drift=True).to_host()
    state = engine.drift_state()
    assert state is not None and set(state) == {"init", "best"}
    fresh = NormEngine(model, track_drift=True)
    assert fresh.load_drift_state(state)
    got, _ = fresh.compute(drift=True).to_host()
    assert got.best_distance == pytest.approx(want.best_distance) and got.init_distance == pytest.approx(
        want.init_distance
    )
    saved_best = [t.clone() for t in state["best"]]
    with torch.no_grad():
        model[0].weight.add_(5.0)
    engine.mark_best()  # a later best point does not change a state saved before it
    assert all(torch.equal(a, b) for a, b in zip(state["best"], saved_best))
    other = NormEngine(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), track_drift=True)
    assert not other.load_drift_state(state)
    assert not NormEngine(model).load_drift_state(state)  # not tracking: nothing to load into
    fresh.forget_drift()
    assert fresh.drift_state() is None and fresh.memory_bytes() == 0
    with pytest.raises(TypeError, match="`track_drift`"):
        NormEngine(model, track_drift="yes")  # type: ignore[arg-type]
