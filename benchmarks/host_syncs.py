"""Host synchronisations per 1 000 training steps: NormGuard against the peers' approach.

Wraps ``torch.Tensor.item``, ``tolist``, ``cpu``, ``numpy``, ``__bool__``, ``__float__``,
``__int__``, ``__index__``, ``__repr__`` and ``__format__`` (count, then call through)
during a real training loop, and attributes each call to its origin: normguard's code,
the peers' logging code, or torch's own internals (e.g. the CPU optimizer's step counter).

    python benchmarks/host_syncs.py            # writes its section of RESULTS.md
    python benchmarks/host_syncs.py --quick
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from _common import TinyTransformer, header, write_section
from torch import nn

import normguard

METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__repr__", "__format__")
NORMGUARD_DIR = str(Path(normguard.__file__).resolve().parent)
TORCH_DIRS = (str(Path(torch.__file__).resolve().parent),)


class SyncCounter:
    """Counts device→host reads by origin and by step while active."""

    def __init__(self) -> None:
        self.step = 0
        self.scope = "loop"
        self.by_origin: collections.Counter[str] = collections.Counter()
        self.by_method: collections.Counter[tuple[str, str]] = collections.Counter()
        self.per_step: collections.Counter[tuple[str, int]] = collections.Counter()
        self._depth = 0

    def origin(self) -> str:
        frame = sys._getframe(3)  # skip origin, record, wrapper
        first = frame.f_code.co_filename
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(NORMGUARD_DIR):
                return "normguard"
            if name == __file__:
                break
            frame = frame.f_back
        if first.startswith(TORCH_DIRS) or "/site-packages/" in first:
            return "torch/library internals"
        return self.scope

    def record(self, method: str) -> None:
        origin = self.origin()
        self.by_origin[origin] += 1
        self.by_method[(origin, method)] += 1
        self.per_step[(origin, self.step)] += 1

    @contextmanager
    def patched(self) -> Iterator[SyncCounter]:
        """Wrap the methods on ``torch.Tensor`` (nested calls count once)."""
        saved = {m: getattr(torch.Tensor, m) for m in METHODS}

        def wrap(method: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if self._depth == 0:
                    self.record(method)
                self._depth += 1
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._depth -= 1

            return wrapper

        for m, fn in saved.items():
            setattr(torch.Tensor, m, wrap(m, fn))
        try:
            yield self
        finally:
            for m, fn in saved.items():
                setattr(torch.Tensor, m, fn)


def peers_log(model: nn.Module) -> dict[str, float]:
    """What Composer's OptimizerMonitor / Cockpit / Lightning's grad_norm do: a norm and a host read per tensor."""
    out = {name: torch.linalg.vector_norm(p.detach()).item() for name, p in model.named_parameters()}
    out["total"] = sum(v * v for v in out.values()) ** 0.5
    return out


def train(variant: str, steps: int, every: int, counter: SyncCounter, seed: int = 0) -> int:
    """A real training loop (small transformer, AdamW); returns the number of parameter tensors."""
    torch.manual_seed(seed)
    model = TinyTransformer(vocab=256, d_model=64, layers=4, heads=4, ff=128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    guard = normguard.NormGuard(model, opt, log_dir=None, every_n_steps=every) if variant == "normguard" else None
    tokens = torch.randint(0, 256, (8, 32))
    with counter.patched():
        for step in range(1, steps + 1):
            counter.step = step
            logits = model(tokens[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, 256), tokens[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if guard is not None:
                guard.step(loss)
            elif variant == "peers" and step % every == 0:
                counter.scope = "peers"
                peers_log(model)
                counter.scope = "loop"
    if guard is not None:
        guard.close()
    return sum(1 for _ in model.parameters())


def summarise(counter: SyncCounter, steps: int, every: int, origin: str) -> dict[str, Any]:
    """Counts for ``origin``: total, on check steps, on other steps, max per check step."""
    check_steps = {s for s in range(1, steps + 1) if s % every == 0}
    per = {s: n for (o, s), n in counter.per_step.items() if o == origin}
    on_check = [per.get(s, 0) for s in sorted(check_steps)]
    off_check = sum(n for s, n in per.items() if s not in check_steps)
    return {
        "total": sum(per.values()),
        "per_1000": sum(per.values()) * 1000 / steps,
        "check_steps": len(check_steps),
        "min_on_check": min(on_check) if on_check else 0,
        "max_on_check": max(on_check) if on_check else 0,
        "off_check": off_check,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steps, print only")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant (default 1000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = args.steps or (100 if args.quick else 1000)

    rows = []
    internals: list[str] = []
    for variant, every in (("baseline", 50), ("normguard", 50), ("normguard", 1), ("peers", 50), ("peers", 1)):
        # peers at every step: one read per tensor per step; 200 steps show the rate
        steps_v = min(steps, 200) if variant == "peers" and every == 1 else steps
        counter = SyncCounter()
        n_tensors = train(variant, steps_v, every, counter)
        origin = {"normguard": "normguard", "peers": "peers", "baseline": "loop"}[variant]
        s = summarise(counter, steps_v, every, origin)
        other = {o: n for o, n in counter.by_origin.items() if o != origin}
        methods = sorted({m for (o, m) in counter.by_method if o == origin})
        label = variant if variant == "baseline" else f"{variant}, every {every}"
        rows.append((label, steps_v, n_tensors, s, methods))
        internals.append(f"{label}: {dict(other) or 'none'}")
        print(label, s, methods, "other origins:", dict(other))

    lines = [
        "| variant | steps run | param tensors | reads by the variant per 1 000 steps | check steps "
        "| reads per check step (min–max) | reads on other steps | methods |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, steps_v, n_t, s, methods in rows:
        span = f"{s['min_on_check']}–{s['max_on_check']}" if label != "baseline" else "–"
        lines.append(
            f"| {label} | {steps_v} | {n_t} | {s['per_1000']:.0f} | {s['check_steps'] if label != 'baseline' else '–'} "
            f"| {span} | {s['off_check']} "
            f"| {', '.join(f'`{m}`' for m in methods) or '–'} |"
        )
    body = (
        "### Host synchronisations\n\n"
        + header("host_syncs")
        + "\n"
        + "\n".join(lines)
        + "\n\nModel: 4-layer `nn.TransformerEncoder` (d_model 64) + embedding + head, AdamW, batch 8×31 tokens. "
        "A read is attributed to normguard when normguard's code is on the call stack, to the peers' "
        "logging code when it runs inside it; the baseline row counts the loop's own reads (there are none). "
        "Reads made by torch's internals, identical in every variant and not device syncs on a GPU "
        "(the CPU optimizer's step counter, `.item()` on a CPU tensor), were counted apart: "
        + "; ".join(internals)
        + ".\n"
    )
    print(body)
    if not (args.quick or args.no_write):
        write_section("host_syncs", body)


if __name__ == "__main__":
    main()
