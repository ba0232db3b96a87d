"""GPU check of the norm engine (one H100/H200; well under 5 minutes).

1. Correctness of the CUDA path against float64 (fp32, bf16, fp16; magnitudes 1 and 1e4).
2. ``torch.cuda.set_sync_debug_mode("error")`` around the non-check steps of a
   NormGuard-guarded training loop: must not raise.
3. Kernel launches per norm pass (torch.profiler) for 10, 100, 1000, 5000 tensors: should
   not grow with the tensor count beyond ``_foreach_norm``'s chunking.
4. Achieved bandwidth of the pass vs a measured device-to-device copy for a ≥ 1 GB model
   (target ≥ 80 %), and the per-tensor ``.item()`` peer loop for the ratio.
5. ``hold_floor`` on CUDA: a plain loop with Adam (normguard's own shrink hook) and AdamW
   (its ``weight_decay``), sync debug mode "error" on every non-check step, the controller
   engaged, and the best-validation weights back on the model's device at the end; then
   the same action in a real Lightning ``Trainer`` and a Hugging Face ``Trainer`` on the GPU.

Prints markdown tables. Without CUDA: prints "CUDA not available: skipped" and exits 0.

    python benchmarks/gpu_check.py            # on a CUDA machine
    python benchmarks/gpu_check.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from normguard.norms import NormEngine

SKIP_MESSAGE = "CUDA not available: skipped"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------ 1. correctness
def correctness(
    device: str = "cuda",
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16),
    magnitudes: tuple[float, ...] = (1.0, 1e4),
    sizes: tuple[tuple[int, ...], ...] = ((1024, 1024), (4096,), (3, 3, 64, 64), (7,), (1,)),
    rtol: float = 1e-4,
) -> list[dict[str, Any]]:
    """Per-layer and total norms of weights in each dtype and magnitude against float64 references.

    The reference is the float64 norm of the *same* (already rounded) low-precision values, so
    the error measured is the engine's accumulation error only. fp16 at 1e4 overflows if
    squares are accumulated in fp16: the engine must accumulate in float32.
    """
    rows = []
    gen = torch.Generator().manual_seed(0)
    for dtype in dtypes:
        for magnitude in magnitudes:
            model = nn.Module()
            for i, shape in enumerate(sizes):
                values = (torch.randn(shape, generator=gen) * magnitude).clamp(-6e4, 6e4)
                layer = nn.Module()
                layer.weight = nn.Parameter(values.to(device=device, dtype=dtype))
                model.add_module(f"layer{i}", layer)
            host, _ = NormEngine(model).compute().to_host()
            errors = []
            for name, layer in model.named_children():
                ref = layer.weight.detach().double().norm().item()
                errors.append(abs(host.layer_norms[name] - ref) / ref)
            ref_total = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()]).norm().item()
            errors.append(abs(host.total - ref_total) / ref_total)
            worst = max(errors)
            rows.append(
                {
                    "dtype": str(dtype).replace("torch.", ""),
                    "magnitude": magnitude,
                    "max_rel_err": worst,
                    "ok": all(e <= rtol for e in errors),
                }  # False for NaN too
            )
    return rows


# ------------------------------------------------------------------ 2. sync debug mode
@contextlib.contextmanager
def syncs_raise(enforce: bool) -> Iterator[None]:
    """Within, a device→host synchronisation raises (CUDA's sync debug mode "error") if ``enforce``."""
    if enforce:
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if enforce:
            torch.cuda.set_sync_debug_mode("default")


def guarded_loop_sync_free(device: str = "cuda", steps: int = 120, every: int = 50) -> dict[str, Any]:
    """Train with NormGuard; sync debug mode "error" on every non-check step. Returns what happened.

    Without a noise floor the guard tracks the weights' drift from the best validation point:
    a validation after each check (outside the debug mode) measures it from its host copies.
    """
    import normguard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    x = torch.randn(64, 256, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    guard = normguard.NormGuard(model, opt, log_dir=None, every_n_steps=every)
    on_cuda = torch.device(device).type == "cuda"
    guarded_steps, error, drifts = 0, None, []
    try:
        for step in range(1, steps + 1):
            check_step = step % every == 0
            with syncs_raise(on_cuda and not check_step):
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                guard.step(loss)
            guarded_steps += not check_step
            if check_step:
                with torch.no_grad():
                    drifts.append(guard.validation_end(nn.functional.cross_entropy(model(x), y)).drift)
    except RuntimeError as exc:  # raised by the sync debug mode
        error = f"step {step}: {exc}".splitlines()[0]
    finally:
        guard.close()
    return {
        "steps": steps,
        "non_check_steps": guarded_steps,
        "checks": len(guard.verdicts),
        "error": error,
        "enforced": on_cuda,
        "drifts": drifts,
    }


# ------------------------------------------------------------------ 3. launches per pass
def launches_per_pass(device: str = "cuda", counts: tuple[int, ...] = (10, 100, 1000, 5000)) -> list[dict[str, Any]]:
    """Kernels, launch calls and aten ops of one normguard check, for models of ``counts`` tensors."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    rows = []
    for n in counts:
        model = nn.ParameterList(nn.Parameter(torch.randn(64, device=device)) for _ in range(n))
        engine = NormEngine(model)
        for _ in range(3):  # warm-up (plan, index tensors, allocator)
            engine.compute().to_host()
        sync(device)
        with profile(activities=activities) as prof:
            engine.compute().to_host()
            sync(device)
        kernels = launches = ops = foreach = 0
        for evt in prof.events():
            name = evt.name
            if on_cuda and evt.device_type == torch.autograd.DeviceType.CUDA:
                kernels += 1
            if "LaunchKernel" in name or name in ("cuLaunchKernel", "cudaLaunchKernelExC"):
                launches += 1
            if name.startswith("aten::") and evt.cpu_parent is None:
                ops += 1
            if name == "aten::_foreach_norm":
                foreach += 1
        rows.append(
            {
                "tensors": n,
                "kernels": kernels,
                "launch_calls": launches,
                "top_level_aten_ops": ops,
                "foreach_norm_calls": foreach,
            }
        )
    return rows


# ------------------------------------------------------------------ 4. bandwidth
def timed(fns: dict[str, Callable[[], object]], device: str, repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call, interleaved, synchronising around each sample."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[k]()
            sync(device)
            samples[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


def bandwidth(
    device: str = "cuda", total_bytes: int = 2**30, tensors: int = 16, repeats: int = 9, inner: int = 5
) -> dict[str, Any]:
    """Norm pass vs device-to-device copy vs one flat ``vector_norm`` vs the ``.item()`` peer loop."""
    numel = max(1, total_bytes // 4 // tensors)
    model = nn.ParameterList(nn.Parameter(torch.randn(numel, device=device)) for _ in range(tensors))
    engine = NormEngine(model)
    params = list(model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in params)
    flat = torch.cat([p.detach() for p in params])
    dst = torch.empty_like(flat)
    fns = {
        "normguard": lambda: engine.compute().to_host(),
        "copy": lambda: dst.copy_(flat),
        "floor": lambda: torch.linalg.vector_norm(flat).item(),
        "peers": lambda: [torch.linalg.vector_norm(p.detach()).item() for p in params],
    }
    t = timed(fns, device, repeats, inner)
    pass_bw = n_bytes / t["normguard"]
    copy_bw = 2 * n_bytes / t["copy"]  # a copy reads and writes every byte
    return {
        "bytes": n_bytes,
        "tensors": tensors,
        "times": t,
        "pass_GBps": pass_bw / 1e9,
        "copy_GBps": copy_bw / 1e9,
        "floor_GBps": n_bytes / t["floor"] / 1e9,
        "fraction_of_copy": pass_bw / copy_bw,
        "speedup_vs_peers": t["peers"] / t["normguard"],
    }


def peers_many(device: str = "cuda", tensors: int = 1000, numel: int = 4096, repeats: int = 9) -> dict[str, float]:
    """normguard's check vs the ``.item()`` peer loop where syncs dominate: many small tensors."""
    model = nn.ParameterList(nn.Parameter(torch.randn(numel, device=device)) for _ in range(tensors))
    engine = NormEngine(model)
    params = list(model.parameters())
    t = timed(
        {
            "normguard": lambda: engine.compute().to_host(),
            "peers": lambda: [torch.linalg.vector_norm(p.detach()).item() for p in params],
        },
        device,
        repeats,
        3,
    )
    return {
        "tensors": tensors,
        "normguard_ms": t["normguard"] * 1e3,
        "peers_ms": t["peers"] * 1e3,
        "speedup_vs_peers": t["peers"] / t["normguard"],
    }


# ------------------------------------------------------------------ 5. hold_floor on CUDA
def _noisy_classes(n: int, seed: int, device: str, noise: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs of 4 classes, a fraction ``noise`` of labels replaced by random ones."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 32, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.randint(0, 4, (n,), generator=g)
    x = centres[y] + torch.randn(n, 32, generator=g)
    flip = torch.rand(n, generator=g) < noise
    y = torch.where(flip, torch.randint(0, 4, (n,), generator=g), y)
    return x.to(device), y.to(device)


def _restored_best(model: nn.Module, best: Any) -> bool:
    """Whether every tensor of ``model`` equals the guard's best-validation copy, on the model's device."""
    if best is None or best.state is None:
        return False
    current = model.state_dict()
    return all(
        k in current and current[k].device == next(model.parameters()).device and torch.equal(current[k].cpu(), v.cpu())
        for k, v in best.state.items()
    )


def hold_floor_loop(device: str = "cuda", optimizer: str = "adam", steps: int = 200, every: int = 10) -> dict[str, Any]:
    """``NormGuard(action="hold_floor")`` in a plain loop: no sync off check steps, engaged, restored."""
    import normguard
    from normguard.detector import label_noise_floor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4)).to(device)
    make = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = make(model.parameters(), lr=3e-3)
    x, y = _noisy_classes(256, 0, device)
    xv, yv = _noisy_classes(256, 1, device)
    floor = label_noise_floor(0.65, 4)
    guard = normguard.NormGuard(model, opt, every_n_steps=every, noise_floor=floor, action="hold_floor")
    on_cuda = torch.device(device).type == "cuda"
    error, step = None, 0
    try:
        for step in range(1, steps + 1):
            check_step = step % every == 0
            with syncs_raise(on_cuda and not check_step):
                idx = torch.arange((step * 32) % 256, (step * 32) % 256 + 32, device=device)
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                guard.step(loss.detach())
            if check_step:
                with torch.no_grad():
                    guard.validation_end(nn.functional.cross_entropy(model(xv), yv))
    except RuntimeError as exc:  # raised by the sync debug mode
        error = f"step {step}: {exc}".splitlines()[0]
    action = guard.monitor.action
    guard.close()
    return {
        "optimizer": type(opt).__name__,
        "error": error,
        "engaged": bool(getattr(action, "engaged", False)),
        "max_decay": max(action.decays().values(), default=0.0),
        "restored": _restored_best(model, guard.monitor.best),
        "device": str(next(model.parameters()).device),
    }


def hold_floor_lightning(device: str = "cuda", epochs: int = 40) -> dict[str, Any]:
    """``NormGuardCallback(action="hold_floor", monitor="val_acc")`` in a Lightning ``Trainer`` on the GPU."""
    import lightning as L

    from normguard.detector import label_noise_floor
    from normguard.lightning import NormGuardCallback

    class Blobs(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4))

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            self.trained_on = str(batch[0].device)  # Lightning moves the model back to the CPU at teardown
            loss = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            logits = self.net(batch[0])
            self.log("val_loss", nn.functional.cross_entropy(logits, batch[1]))
            self.log("val_acc", (logits.argmax(-1) == batch[1]).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    L.seed_everything(0, verbose=False)
    data = [torch.utils.data.TensorDataset(*_noisy_classes(256, seed, "cpu")) for seed in (0, 1)]
    train = torch.utils.data.DataLoader(data[0], batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(data[1], batch_size=256)
    floor = label_noise_floor(0.65, 4)
    guard = NormGuardCallback(8, noise_floor=floor, action="hold_floor", monitor="val_acc", mode="max")
    module = Blobs()
    trainer = L.Trainer(
        accelerator="cuda" if torch.device(device).type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
    )
    trainer.fit(module, train, val)
    action = guard.monitor.action if guard.monitor is not None else None
    return {
        "front door": "Lightning Trainer",
        "engaged": bool(getattr(action, "engaged", False)),
        "max_decay": max(action.decays().values(), default=0.0) if action is not None else 0.0,
        "restored": guard.monitor is not None and _restored_best(module, guard.monitor.best),
        "device": f"{module.trained_on} (trained; on the CPU after Lightning's teardown)",
    }


def hold_floor_transformers(device: str = "cuda", epochs: int = 25) -> dict[str, Any]:
    """``NormGuardTrainerCallback(action="hold_floor")`` in a Hugging Face ``Trainer`` on the GPU (tiny BERT)."""
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainingArguments

    from normguard import demos
    from normguard.detector import label_noise_floor
    from normguard.transformers import NormGuardTrainerCallback

    class Sequences(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(1, 100, (n, 16), generator=g)
            clean = (self.x[:, 0] < 50).long()
            self.y = torch.where(torch.rand(n, generator=g) < 0.3, 1 - clean, clean)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.x[i], "labels": self.y[i]}

    guard = NormGuardTrainerCallback(noise_floor=label_noise_floor(0.6, 2), action="hold_floor")
    model = demos.tiny_bert(num_labels=2, seed=0)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=32,
            per_device_eval_batch_size=64,
            learning_rate=3e-3,
            weight_decay=0.01,
            num_train_epochs=epochs,
            eval_strategy="steps",
            eval_steps=8,
            logging_steps=4,
            save_strategy="no",
            report_to=[],
            use_cpu=torch.device(device).type != "cuda",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=Sequences(128, 0), eval_dataset=Sequences(128, 1), callbacks=[guard]
        )
        trainer.remove_callback(PrinterCallback)  # the report is the check's output, not the training log
        trainer.train()
    action = guard.monitor.action if guard.monitor is not None else None
    return {
        "front door": "Hugging Face Trainer",
        "engaged": bool(getattr(action, "engaged", False)),
        "max_decay": max(action.decays().values(), default=0.0) if action is not None else 0.0,
        "restored": guard.monitor is not None and _restored_best(trainer.model, guard.monitor.best),
        "device": str(next(trainer.model.parameters()).device),
    }


# ------------------------------------------------------------------ report
def report(device: str, quick: bool) -> tuple[str, bool]:
    """Run every check on ``device``; the markdown report and whether all targets were met."""
    t0 = time.perf_counter()
    lines = [
        f"GPU: {torch.cuda.get_device_name(0) if torch.device(device).type == 'cuda' else device}; "
        f"torch {torch.__version__}; CUDA {torch.version.cuda}",
        "",
    ]
    ok = True
    rows = correctness(device)
    lines += ["| dtype | magnitude | max rel. error vs float64 | ok |", "|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['magnitude']:g} | {r['max_rel_err']:.1e} | {'yes' if r['ok'] else 'NO'} |")
        ok &= r["ok"]
    s = guarded_loop_sync_free(device)
    measured = [d for d in s["drifts"] if d is not None]
    lines += [
        "",
        f'Sync debug mode "error" on {s["non_check_steps"]} non-check steps of a guarded loop '
        f"({s['checks']} checks): {'no sync raised' if s['error'] is None else 'RAISED: ' + s['error']}"
        + ("" if s["enforced"] else " (not enforced off CUDA)")
        + f"; drift from the best point measured at {len(measured)} of {len(s['drifts'])} validations"
        + (f" (last share {measured[-1]:.3g})" if measured else ""),
        "",
    ]
    ok &= s["error"] is None and len(measured) == len(s["drifts"]) - 1  # none before the first best point
    counts = (10, 100, 1000) if quick else (10, 100, 1000, 5000)
    launches = launches_per_pass(device, counts)
    lines += [
        "| tensors | CUDA kernels per check | launch calls | top-level aten ops | `_foreach_norm` calls |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in launches:
        lines.append(
            f"| {r['tensors']} | {r['kernels']} | {r['launch_calls']} | {r['top_level_aten_ops']} "
            f"| {r['foreach_norm_calls']} |"
        )
    bw = bandwidth(device, total_bytes=2**28 if quick else 2**30 + 2**26)
    t = bw["times"]
    lines += [
        "",
        "| model | normguard check | GB/s | D2D copy GB/s (read+write) | pass / copy | floor GB/s "
        "| peers `.item()` loop | speed-up vs peers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {bw['bytes'] / 1e9:.2f} GB, {bw['tensors']} tensors | {t['normguard'] * 1e3:.3f} ms "
        f"| {bw['pass_GBps']:.0f} | {bw['copy_GBps']:.0f} | {bw['fraction_of_copy']:.0%} "
        f"| {bw['floor_GBps']:.0f} "
        f"| {t['peers'] * 1e3:.3f} ms | {bw['speedup_vs_peers']:.2f}× |",
    ]
    ok &= bw["fraction_of_copy"] >= 0.8
    pm = peers_many(device)
    lines.append(
        f"| {pm['tensors']} × 4096 fp32 | {pm['normguard_ms']:.3f} ms | | | | | {pm['peers_ms']:.3f} ms "
        f"| {pm['speedup_vs_peers']:.2f}× |"
    )
    lines += [
        "",
        '| hold_floor run | sync debug "error" off check steps | engaged | largest λ | best weights restored '
        "| model on |",
        "|---|---|---|---:|---|---|",
    ]
    for opt_name in ("adam", "adamw"):
        r = hold_floor_loop(device, opt_name)
        lines.append(
            f"| plain loop, {r['optimizer']} | {'no sync raised' if r['error'] is None else 'RAISED: ' + r['error']} "
            f"| {'yes' if r['engaged'] else 'NO'} | {r['max_decay']:.3g} | {'yes' if r['restored'] else 'NO'} "
            f"| {r['device']} |"
        )
        ok &= r["error"] is None and r["engaged"] and r["restored"] and r["device"].startswith("cuda")
    for run in (hold_floor_lightning, hold_floor_transformers):
        try:
            r = run(device)
        except Exception as exc:  # a front door that fails on the GPU is a finding, not a crash of the check
            lines.append(f"| {run.__name__} | FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} | | | | |")
            ok = False
            continue
        lines.append(
            f"| {r['front door']} | (not enforced: the framework syncs) | {'yes' if r['engaged'] else 'NO'} "
            f"| {r['max_decay']:.3g} | {'yes' if r['restored'] else 'NO'} | {r['device']} |"
        )
        ok &= r["engaged"] and r["restored"] and r["device"].startswith("cuda")
    lines += [
        "",
        f"Targets (correctness, no sync off check steps, pass ≥ 80 % of copy bandwidth, hold_floor engaged "
        f"and restored on the GPU in every front door): "
        f"{'all met' if ok else 'NOT all met'}. Wall time {time.perf_counter() - t0:.0f} s.",
    ]
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and fewer tensor counts")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cuda:N")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or torch.device(args.device).type != "cuda":
        print(SKIP_MESSAGE)
        return 0
    text, ok = report(args.device, args.quick)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
