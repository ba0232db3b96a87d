"""Training overhead of watching: step time with and without NormGuard / NormGuardCallback.

Plain PyTorch: one model is trained in blocks of 50 steps; each block belongs to one
variant (unguarded, unguarded again for an A/A noise floor, guarded every 50 steps,
guarded every step), blocks interleaved with alternating order; ratios are per round.
Lightning: short ``Trainer.fit`` runs alternate with and without the callback; the
steady-state time per step comes from a timing callback (first batches skipped).

    python benchmarks/overhead.py            # writes its section of RESULTS.md
    python benchmarks/overhead.py --quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import TinyTransformer, header, median, mlp, spread, write_section
from torch import nn

import normguard

BLOCK = 50  # steps per block: one check of a guard at the default interval falls in each


def make_task(kind: str, quick: bool) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """A model and a closure computing its loss on a fixed batch."""
    torch.manual_seed(0)
    if kind == "transformer":
        vocab = 512
        model = TinyTransformer(
            vocab=vocab, d_model=64 if quick else 128, layers=2 if quick else 4, heads=4, ff=128 if quick else 512
        )
        tokens = torch.randint(0, vocab, (8, 33))

        def loss_fn(m: nn.Module) -> torch.Tensor:
            logits = m(tokens[:, :-1])
            return nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))

        return model, loss_fn
    model = mlp(width=256 if quick else 1024, depth=4, d_in=256, d_out=10)
    x, y = torch.randn(32, 256), torch.randint(0, 10, (32,))
    return model, lambda m: nn.functional.cross_entropy(m(x), y)


def plain_overhead(kind: str, rounds: int, quick: bool) -> dict[str, list[float]]:
    """Per-round ratios t(variant) / t(unguarded) for the plain-PyTorch front door."""
    model, loss_fn = make_task(kind, quick)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    guards = {
        "every_50": normguard.NormGuard(model, opt, log_dir=None, every_n_steps=50),
        "every_1": normguard.NormGuard(model, opt, log_dir=None, every_n_steps=1),
    }

    in_guard: dict[str, list[float]] = {v: [] for v in guards}

    def block(variant: str) -> float:
        guard = guards.get(variant)
        spent = 0.0
        t0 = time.perf_counter()
        for _ in range(BLOCK):
            loss = loss_fn(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if guard is not None:
                t1 = time.perf_counter()
                guard.step(loss)
                spent += time.perf_counter() - t1
        total = time.perf_counter() - t0
        if guard is not None:
            in_guard[variant].append(spent / (total - spent))
        return total

    variants = ["none", "none_again", "every_50", "every_1"]
    for v in variants:  # warm-up
        block(v)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            times[v].append(block(v))
    for g in guards.values():
        g.close()
    out = {v: [t / a for t, a in zip(times[v], times["none"])] for v in variants if v != "none"}
    out["step_ms"] = [t / BLOCK * 1e3 for t in times["none"]]
    for v, shares in in_guard.items():
        out[f"{v}_direct"] = [1 + x for x in shares[1:]]  # the first block was warm-up
    return out


def lightning_overhead(rounds: int, steps: int, quick: bool) -> dict[str, list[float]] | str:
    """Per-round ratios for a Lightning ``Trainer`` with and without ``NormGuardCallback``."""
    try:
        import lightning.pytorch as pl

        from normguard.lightning import NormGuardCallback
    except ImportError as exc:
        return f"not run: {exc}"
    model_, loss_fn = make_task("transformer", quick)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model_

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = loss_fn(self.net)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    class Timer(pl.Callback):
        def __init__(self, skip: int) -> None:
            self.skip, self.t0, self.t1, self.n = skip, 0.0, 0.0, 0

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == self.skip:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer: Any, *args: Any) -> None:
            self.t1, self.n = time.perf_counter(), trainer.global_step - self.skip

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(steps, 1)), batch_size=1)
    module = Module()

    def fit(variant: str) -> float:
        timer = Timer(skip=10)
        callbacks: list[Any] = [timer]
        if variant != "none":
            callbacks.append(NormGuardCallback(every_n_steps=50 if variant == "every_50" else 1))
        trainer = pl.Trainer(
            max_steps=steps,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=callbacks,
            accelerator="cpu",
            devices=1,
        )
        trainer.fit(module, data)
        return (timer.t1 - timer.t0) / max(timer.n, 1)

    variants = ["none", "none_again", "every_50", "every_1"]
    fit("none")  # warm-up
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            times[v].append(fit(v))
    out = {v: [t / a for t, a in zip(times[v], times["none"])] for v in variants if v != "none"}
    out["step_ms"] = [t * 1e3 for t in times["none"]]
    return out


def row(label: str, res: dict[str, list[float]], rounds: int) -> str:
    def cell(v: str) -> str:
        lo, hi = spread(res[v])
        return f"{(median(res[v]) - 1) * 100:+.2f} % ({(lo - 1) * 100:+.1f} to {(hi - 1) * 100:+.1f})"

    def direct(v: str) -> str:
        return f"{(median(res[v]) - 1) * 100:+.2f} %" if v in res else "–"

    return (
        f"| {label} | {median(res['step_ms']):.2f} ms | {rounds} | {cell('none_again')} | {cell('every_50')} "
        f"| {cell('every_1')} | {direct('every_50_direct')} | {direct('every_1_direct')} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few rounds, print only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 12; quick 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-lightning", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 12)

    lines = [
        "| loop | unguarded step | rounds | A/A: unguarded vs unguarded (IQR) | guarded, every 50 steps (IQR) "
        "| guarded, every step (IQR) | time in `guard.step`, every 50 | time in `guard.step`, every step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("transformer", "mlp"):
        res = plain_overhead(kind, rounds, args.quick)
        lines.append(row(f"plain PyTorch, {kind}, `NormGuard`", res, rounds))
        print(lines[-1])
    notes = ""
    if not args.skip_lightning:
        lres = lightning_overhead(max(2, rounds // 2), 60 if args.quick else 310, args.quick)
        if isinstance(lres, str):
            notes = f"\nLightning `NormGuardCallback`: {lres}.\n"
        else:
            lines.append(row("Lightning `Trainer`, transformer, `NormGuardCallback`", lres, max(2, rounds // 2)))
        print(lines[-1], notes)
    body = (
        "### Training overhead\n\n"
        + header("overhead")
        + "\n"
        + "\n".join(lines)
        + "\n\nCells: median over rounds of t(variant) / t(unguarded) − 1 in the same round, with the "
        "interquartile range over rounds. Plain loops: blocks of 50 steps per variant, interleaved with "
        "alternating order, after one warm-up block each; the A/A column (unguarded against unguarded) is "
        "the noise floor of the measurement. The last two columns time the `guard.step` calls inside the "
        "guarded blocks directly (their share of the rest of the step): a much less noisy estimate of the same "
        "overhead that leaves out indirect effects such as cache pollution. "
        "Lightning: whole `fit` runs of 310 steps alternate; time per "
        "step after the first 10. AdamW; transformer: 4-layer `nn.TransformerEncoder` (d_model 128, ff 512), "
        "batch 8×32 tokens; MLP: 3 hidden layers of 1024, batch 32.\n" + notes
    )
    print(body)
    if not (args.quick or args.no_write):
        write_section("overhead", body)


if __name__ == "__main__":
    main()
