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
    return {
        name: math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params)) for name, params in groups.items()
    }


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
        NormEngine(model).compute().layer_sq.sum().item()
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
    with pytest.raises(ValueError, match="`offload`"):
        NormEngine(nn.Linear(1, 1), offload="gpu")


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
