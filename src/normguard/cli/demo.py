"""``normguard demo``: the paper's synthetic power-law regression, trained past its noise floor.

Four runs with the same seed, data and full-batch Adam: no intervention; early stopping on
the validation loss (patience 10 validations, best weights restored: what Lightning's
``EarlyStopping`` + best ``ModelCheckpoint`` do); normguard's ``stop`` (stop at the
signature, restore the best weights); and normguard's ``hold_floor`` (a decoupled weight
decay that keeps the training loss at the noise floor for the rest of training). Each
writes TensorBoard logs; the command prints the test error of each and what normguard did.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from normguard.cli import add_progress_argument, progress_flag, usage_errors
from normguard.progress import Progress, progress
from normguard.science.datasets import power_law_regression
from normguard.validation import check_int, check_number

RUNS = ("none", "early_stopping", "stop", "hold_floor")
EARLY_STOPPING_PATIENCE = 10


@dataclass
class DemoRun:
    name: str
    log_dir: str
    steps: int
    final_train_loss: float
    final_test_loss: float
    best_val_loss: float
    test_loss_at_best_val: float
    final_norm: float
    first_fired_step: int | None = None
    events: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir", default="runs/normguard-demo", help="TensorBoard log directory (default: %(default)s)"
    )
    parser.add_argument(
        "--n", type=int, default=400, help="training samples; features d = 1.5 n (default: %(default)s)"
    )
    parser.add_argument(
        "--alpha", type=float, default=1.5, help="eigendecay exponent of the data (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=2000, help="full-batch Adam steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    add_progress_argument(parser)


def _train(name: str, data: dict[str, torch.Tensor], args: argparse.Namespace, bar: Progress) -> DemoRun:
    import normguard as ng

    torch.manual_seed(args.seed)
    d = data["x_train"].shape[1]
    model = torch.nn.Linear(d, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.0)
    log_dir = os.path.join(args.out_dir, name)
    action = name if name in ("stop", "hold_floor") else (lambda verdict, context: None)
    guard = ng.NormGuard(model, opt, log_dir=log_dir, every_n_steps=10, noise_floor=1.0, action=action)

    def mse(split: str) -> torch.Tensor:
        return (model(data[f"x_{split}"]).squeeze(-1) - data[f"y_{split}"]).pow(2).mean()

    best_val, test_at_best, best_state, since_best = math.inf, math.nan, None, 0
    bar.set_description(f"normguard demo: {name} ({RUNS.index(name) + 1}/{len(RUNS)})")
    done_before = bar.n
    step = 0
    with guard:
        for step in range(1, args.steps + 1):
            loss = mse("train")
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
            bar.update(1)
            if step % 20 == 0:
                with torch.no_grad():
                    val, test = mse("val"), mse("test")
                guard.validation_end(val)
                since_best += 1
                if val.item() < best_val:
                    best_val, test_at_best, since_best = val.item(), test.item(), 0
                    best_state = copy.deepcopy(model.state_dict())
                if name == "early_stopping" and since_best >= EARLY_STOPPING_PATIENCE and best_state is not None:
                    model.load_state_dict(best_state)
                    break
            if guard.should_stop:
                break
    bar.update(done_before + args.steps - bar.n)  # a run that stopped early: its unused steps count as done
    with torch.no_grad():
        final_train, final_test = mse("train").item(), mse("test").item()
    fired = [e.step for e in guard.events if e.kind == ng.EventKind.DETECTOR_FIRED]
    return DemoRun(
        name=name,
        log_dir=log_dir,
        steps=step,
        final_train_loss=final_train,
        final_test_loss=final_test,
        best_val_loss=best_val,
        test_loss_at_best_val=test_at_best,
        final_norm=ng.total_norm(model).item(),
        first_fired_step=fired[0] if fired else None,
        events=[e.line() for e in guard.events] if name in ("stop", "hold_floor") else [],
    )


def run(args: argparse.Namespace) -> int:
    with usage_errors():
        check_int("--n", args.n, 20)
        check_number("--alpha", args.alpha, low=1, low_open=True)
        check_int("--steps", args.steps, 20)
    import logging
    import warnings

    logging.getLogger("normguard").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="normguard")
    data = power_law_regression(args.n, args.alpha, seed=args.seed)
    started = time.perf_counter()
    with progress(len(RUNS) * args.steps, "normguard demo", unit="step", enabled=progress_flag(args)) as bar:
        runs = {name: _train(name, data, args, bar) for name in RUNS}
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**{k: asdict(v) for k, v in runs.items()}, "seconds": elapsed}))
        return 0
    d = data["x_train"].shape[1]
    print(f"normguard demo: linear regression, n={args.n}, d={d}, alpha={args.alpha}, noise floor sigma^2 = 1.0")
    print(f"full-batch Adam, {args.steps} steps at most ({elapsed:.1f} s)\n")
    heads = ("no intervention", "EarlyStopping", "normguard stop", "hold_floor")
    print(f"{'':20}" + "".join(f"{h:>17}" for h in heads))
    rows = [
        ("steps trained", "steps", "d"),
        ("final train MSE", "final_train_loss", ".3f"),
        ("final test MSE", "final_test_loss", ".3f"),
        ("final weight norm", "final_norm", ".2f"),
    ]
    for label, key, fmt in rows:
        print(f"{label:20}" + "".join(f"{getattr(runs[name], key):>17{fmt}}" for name in RUNS))
    print(
        f"\nEarlyStopping: patience {EARLY_STOPPING_PATIENCE} validations on the validation loss, best weights "
        "restored.\nhold_floor keeps training for the whole budget with the training loss held at the floor."
    )
    for name in ("stop", "hold_floor"):
        shown = runs[name].events[:6]
        print(f"\nWhat normguard did ({name}):")
        for line in shown:
            print(f"  {line}")
        if len(runs[name].events) > len(shown):
            print(f"  ... and {len(runs[name].events) - len(shown)} more events")
    print(f"\nSee it: tensorboard --logdir {args.out_dir}   (Custom Scalars tab: 'normguard')")
    return 0
