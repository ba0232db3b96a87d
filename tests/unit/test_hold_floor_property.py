"""Property test of hold_floor's per-step bounds: random lr schedules (warm restarts, warmup from 0,
a group at lr 0), random skipped steps and random losses; checked at every optimizer step."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normguard.actions import ActionContext
from normguard.detector import Reason, Verdict
from normguard.hold_floor import HoldNoiseFloor

MAX_SHRINK = 0.1

schedules = st.lists(
    st.tuples(
        st.sampled_from(["restart", "warmup", "zero", "constant", "spike"]),
        st.floats(1e-4, 2.0),  # peak lr
        st.integers(5, 60),  # steps in this phase
    ),
    min_size=1,
    max_size=5,
)


def lr_path(phases: list[tuple[str, float, int]]) -> list[float]:
    out: list[float] = []
    for kind, peak, n in phases:
        for i in range(n):
            if kind == "restart":
                out.append(peak * 0.5 * (1 + math.cos(math.pi * i / n)))
            elif kind == "warmup":
                out.append(peak * i / n)  # from 0
            elif kind == "zero":
                out.append(0.0)
            elif kind == "spike":
                out.append(peak * 50 if i == n // 2 else peak)
            else:
                out.append(peak)
    return out


@settings(max_examples=40, deadline=None)
@given(
    phases=schedules,
    losses=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=50),
    skips=st.lists(st.booleans(), min_size=1, max_size=50),
    every=st.integers(1, 12),
)
def test_every_step_stays_in_bounds(
    phases: list[tuple[str, float, int]], losses: list[float], skips: list[bool], every: int
) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 3)
    frozen = nn.Linear(3, 1)
    opt = torch.optim.SGD(  # no momentum and zero gradients: a step only multiplies by the shrink
        [{"params": model.parameters()}, {"params": frozen.parameters(), "lr": 0.0}], lr=0.1
    )
    hold = HoldNoiseFloor(max_shrink=MAX_SHRINK, param_groups=[0, 1])
    hold.bind([opt])
    path = lr_path(phases)
    for step, lr in enumerate(path, start=1):
        opt.param_groups[0]["lr"] = lr
        if step % every == 0:
            loss = losses[(step // every) % len(losses)]
            hold(
                Verdict(step=step, reason=Reason.NOT_MET),
                ActionContext(
                    step, [opt], lambda e: None, lambda r: None, lambda: False, train_loss=loss, noise_floor=1.0
                ),
            )
        before = [p.detach().clone() for p in (*model.parameters(), *frozen.parameters())]
        for p in (*model.parameters(), *frozen.parameters()):
            p.grad = torch.zeros_like(p)
        skipped = skips[step % len(skips)]
        if not skipped:  # a skipped step (as a GradScaler skips it) never calls step()
            opt.step()
        after = [p.detach() for p in (*model.parameters(), *frozen.parameters())]
        for b, a in zip(before, after):
            assert torch.isfinite(a).all()
            assert (torch.sign(a) * torch.sign(b) >= 0).all()  # no sign flip
        if skipped:
            assert all(torch.equal(b, a) for b, a in zip(before, after))
            continue
        for b, a in zip(before[:2], after[:2]):  # the lr > 0 group: the factor is 1 − lr·λ
            mask = b.abs() > 1e-6
            factor = (a[mask] / b[mask]).unique()
            shrink = 1.0 - float(factor.min())
            assert -1e-6 <= shrink <= MAX_SHRINK + 1e-6
        for b, a in zip(before[2:], after[2:]):  # the lr 0 group is never shrunk
            assert torch.equal(b, a)
        for group in hold._groups:
            assert math.isfinite(group.decay) and group.decay >= 0
