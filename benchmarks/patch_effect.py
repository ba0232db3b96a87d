"""Measured effect of ``benchmarks/proposed_norms_patch.diff`` on the norm pass.

Applies the patch to a temporary copy of ``src/normguard/norms.py``, imports both
engines side by side, checks they agree (also after adding, freezing and casting
parameters), and times a check (``compute().to_host()``) of each, interleaved.

    python benchmarks/patch_effect.py            # writes its section of RESULTS.md
    python benchmarks/patch_effect.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from _common import header, interleaved, median, param_stats, reference_models, spread, write_section
from torch import nn

import normguard.norms as original

ROOT = Path(__file__).resolve().parent.parent
PATCH = Path(__file__).resolve().parent / "proposed_norms_patch.diff"


def load_patched() -> ModuleType:
    """Import the patched engine from a temporary copy (the working tree is untouched)."""
    tmp = Path(tempfile.mkdtemp(prefix="normguard_patch_"))
    (tmp / "src" / "normguard").mkdir(parents=True)
    shutil.copy(ROOT / "src" / "normguard" / "norms.py", tmp / "src" / "normguard" / "norms.py")
    subprocess.run(["patch", "-s", "-p1", "-d", str(tmp), "-i", str(PATCH)], check=True)
    spec = importlib.util.spec_from_file_location("normguard_norms_patched", tmp / "src" / "normguard" / "norms.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def agree(a: ModuleType, b: ModuleType, model: nn.Module) -> float:
    """Largest relative difference of per-layer norms between two engines' fresh checks."""
    ha, _ = a.NormEngine(model).compute().to_host()
    hb, _ = b.NormEngine(model).compute().to_host()
    assert ha.layer_norms.keys() == hb.layer_norms.keys()
    return max(abs(ha.layer_norms[k] - hb.layer_norms[k]) / max(abs(ha.layer_norms[k]), 1e-30) for k in ha.layer_norms)


def edge_cases(patched: ModuleType) -> list[str]:
    """A long-lived patched engine must follow changes to the model like a fresh original one."""
    results = []
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    engine = patched.NormEngine(model)
    engine.compute()

    def same(label: str) -> None:
        got, _ = engine.compute().to_host()
        want, _ = (
            original.NormEngine(model).compute().to_host()
            if any(p.requires_grad for p in model.parameters())
            else (None, None)
        )
        ok = (
            want is not None
            and got.layer_norms.keys() == want.layer_norms.keys()
            and all(
                abs(got.layer_norms[k] - want.layer_norms[k]) <= 1e-6 * max(1.0, want.layer_norms[k])
                for k in want.layer_norms
            )
        )
        results.append(f"{label}: {'ok' if ok else 'MISMATCH'}")

    model.append(nn.Linear(2, 3))
    same("layer added")
    model[0].weight.requires_grad_(False)
    same("weight frozen")
    with torch.no_grad():
        model[1].weight.mul_(3.0)
    same("weights updated in place")
    model.double()
    same("model cast to float64")
    model[1].weight = nn.Parameter(torch.ones(2, 4, dtype=torch.float64))
    same("parameter replaced")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few repeats, print only")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15; quick 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 15)
    patched = load_patched()
    checks = edge_cases(patched)
    print("\n".join(checks))

    lines = [
        "| model | tensors | check, current engine | check, patched engine | speed-up (IQR) "
        "| (b) peers `.item()` loop | patched vs peers | max rel. diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, model in reference_models(quick=args.quick).items():
        before, after = original.NormEngine(model), patched.NormEngine(model)
        params = [p for p in model.parameters() if p.requires_grad]

        def peers(params: list[torch.Tensor] = params) -> float:
            return sum(torch.linalg.vector_norm(p.detach()).item() ** 2 for p in params) ** 0.5

        fns = {
            "before": lambda e=before: e.compute().to_host(),
            "after": lambda e=after: e.compute().to_host(),
            "peers": peers,
        }
        inner = 20 if name in ("cnn", "many_small") or args.quick else 5
        s = interleaved(fns, repeats=repeats, warmup=2, inner=inner if name != "many_small" else 3)
        ratio = [b / a for b, a in zip(s["before"], s["after"])]
        vs_peer = [p / a for p, a in zip(s["peers"], s["after"])]
        lo, hi = spread(ratio)
        n_t = param_stats(model)[0]
        row = (
            f"| {name} | {n_t} | {median(s['before']) * 1e3:.3f} ms | {median(s['after']) * 1e3:.3f} ms "
            f"| {median(ratio):.2f}× ({lo:.2f}–{hi:.2f}) | {median(s['peers']) * 1e3:.3f} ms "
            f"| {median(vs_peer):.2f}× | {agree(original, patched, model):.1e} |"
        )
        print(row)
        lines.append(row)
    body = (
        "### Proposed engine patch: measured effect\n\n"
        + header("patch_effect")
        + "\nPatch: `benchmarks/proposed_norms_patch.diff` (applied to a temporary copy; src/ untouched).\n\n"
        + "\n".join(lines)
        + f"\n\nMedians of {repeats} interleaved rounds (current, patched, peers) after warm-up; "
        'speed-up = t(current) / t(patched), per round; "patched vs peers" = t(peers) / t(patched). '
        "Follow-the-model checks of a long-lived patched engine against a fresh current one: "
        + "; ".join(checks)
        + ".\n"
    )
    print(body)
    if not (args.quick or args.no_write):
        write_section("patch_effect", body)


if __name__ == "__main__":
    main()
