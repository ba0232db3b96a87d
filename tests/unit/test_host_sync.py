"""Non-check steps make no device→host transfer; a check step makes exactly one."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import normguard as ng

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[Counter[str]]:
    """Count calls of every Tensor method that moves a value to the host."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str):  # type: ignore[no-untyped-def]
        original = originals[name]

        def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def make_loop(n_layers: int) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(n_layers)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, opt, torch.randn(16, 8)


@pytest.mark.parametrize("n_layers", [2, 40])
@pytest.mark.parametrize("noise_floor", [None, 0.5])
def test_only_check_steps_touch_the_host(n_layers: int, noise_floor: float | None) -> None:
    model, opt, x = make_loop(n_layers)
    guard = ng.NormGuard(model, opt, every_n_steps=5, noise_floor=noise_floor, track_update_size=True)
    per_step = []
    for _ in range(20):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with count_host_reads() as counts:
            guard.step(loss)
        per_step.append(sum(counts.values()))
    assert per_step == [0, 0, 0, 0, 1] * 4, per_step
    assert len(guard.verdicts) == 4


def test_nonfinite_loss_costs_no_transfer_until_the_check() -> None:
    model, opt, _x = make_loop(2)
    guard = ng.NormGuard(model, opt, every_n_steps=4)
    reads = []
    for loss in (1.0, float("nan"), float("inf"), 2.0):
        with count_host_reads() as counts:
            guard.step(torch.tensor(loss))
        reads.append(sum(counts.values()))
    assert reads == [0, 0, 0, 1]
    [event] = [e for e in guard.events if e.kind == ng.EventKind.NONFINITE_LOSS]
    assert event.data == {"count": 2, "first_step": 2}
    assert guard.verdicts[-1].train_loss == pytest.approx(1.5)  # the NaN and Inf are left out


def test_validation_end_is_one_transfer() -> None:
    model, opt, x = make_loop(3)
    guard = ng.NormGuard(model, opt, every_n_steps=100)
    for _ in range(3):
        guard.step(model(x).pow(2).mean().detach())
    with count_host_reads() as counts:
        guard.validation_end(torch.tensor(0.7))
    assert sum(counts.values()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sync_debug_mode_on_non_check_steps() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 1)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 64, device="cuda")
    guard = ng.NormGuard(model, opt, every_n_steps=10)
    for step in range(1, 21):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10:
            torch.cuda.set_sync_debug_mode("error")
        try:
            guard.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert len(guard.verdicts) == 2
