"""NormGuard in a plain PyTorch training loop: the paper's linear setting, on the CPU.

Data (Wang, Sonthalia, Hu, AISTATS 2024): x = Σ^{1/2} z with Σ = diag(i^-α), α = 1.5,
d = 1.5 n features, y = xᵀβ* + ε with noise variance σ² = 1 (the noise floor: no model
can reach a test loss below 1) and β* ~ N(0, 10/d I). A bias-free linear model, started
from zero, is trained full-batch with Adam; its training loss sinks under the noise floor
while its weight norm grows fast and the validation–train gap widens.

The same training runs twice from the same start:

* ``unguarded``: normguard only watches (``action="warn"``) and training runs to the end;
* ``guarded``: normguard stops training when the signature appears and restores the
  weights of the best validation loss (``action="stop"``).

Run::

    python examples/custom_loop.py                      # prints the numbers
    python examples/custom_loop.py --log-dir runs/custom_loop
    normguard report runs/custom_loop --out report.png  # the two runs side by side
    tensorboard --logdir runs/custom_loop               # or look in TensorBoard
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import warnings
from typing import Any

import torch

import normguard as ng


def make_data(n: int, alpha: float, seed: int) -> dict[str, torch.Tensor]:
    """Train / validation / test splits of the paper's power-law regression."""
    g = torch.Generator().manual_seed(seed)
    d = round(1.5 * n)
    scale = torch.arange(1, d + 1, dtype=torch.float32).pow(-alpha / 2)  # Σ^{1/2}
    beta = torch.randn(d, generator=g) * math.sqrt(10.0 / d)
    data = {}
    for split, size in (("train", n), ("val", n // 2), ("test", 2000)):
        x = torch.randn(size, d, generator=g) * scale
        data[f"x_{split}"], data[f"y_{split}"] = x, x @ beta + torch.randn(size, generator=g)
    return data


def mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x).squeeze(-1) - y).pow(2).mean()


def train(data: dict[str, torch.Tensor], action: str, args: argparse.Namespace, log_dir: str | None) -> dict[str, Any]:
    model = torch.nn.Linear(data["x_train"].shape[1], 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    guard = ng.NormGuard(model, opt, log_dir=log_dir, every_n_steps=10, noise_floor=1.0, action=action)
    with guard:
        for step in range(1, args.steps + 1):
            loss = mse(model, data["x_train"], data["y_train"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)  # a tensor: no host sync on ordinary steps
            if step % args.val_every == 0:
                with torch.no_grad():
                    guard.validation_end(mse(model, data["x_val"], data["y_val"]))
                if guard.should_stop:  # stop+restore: the best weights are back in the model
                    break
    with torch.no_grad():
        test = mse(model, data["x_test"], data["y_test"]).item()
        train_loss = mse(model, data["x_train"], data["y_train"]).item()
    fired = [e.step for e in guard.events if e.kind is ng.EventKind.DETECTOR_FIRED]
    return {
        "action": action,
        "steps": step,
        "first_fired_step": fired[0] if fired else None,
        "events": [e.line() for e in guard.events],
        "final_train_loss": train_loss,
        "final_test_loss": test,
        "final_norm": model.weight.norm().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=None, help="TensorBoard directory (runs go to LOG_DIR/<name>)")
    parser.add_argument("--n", type=int, default=400, help="training samples (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=1.5, help="eigendecay exponent (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000, help="full-batch Adam steps (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-every", type=int, default=20, help="steps between validations (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    logging.getLogger("normguard").setLevel(logging.ERROR)  # its events are printed below instead
    data = make_data(args.n, args.alpha, args.seed)
    results = {}
    for name, action in (("unguarded", "warn"), ("guarded", "stop")):
        torch.manual_seed(args.seed)
        log_dir = None if args.log_dir is None else f"{args.log_dir}/{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ng.actions.NormGuardWarning)  # the events are printed below
            results[name] = train(data, action, args, log_dir)
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    d = data["x_train"].shape[1]
    print(f"paper linear setting: n={args.n}, d={d}, alpha={args.alpha}, noise floor 1.0, Adam lr {args.lr}")
    for name, r in results.items():
        fired = "never" if r["first_fired_step"] is None else f"at step {r['first_fired_step']}"
        print(
            f"{name:>9}: {r['steps']} steps, detector fired {fired}, final train loss {r['final_train_loss']:.3f}, "
            f"test loss {r['final_test_loss']:.3f}, weight norm {r['final_norm']:.2f}"
        )
        for line in r["events"]:
            if "[detector_fired]" not in line:
                print(f"{'':>11}{line}")
    plain, guarded = results["unguarded"]["final_test_loss"], results["guarded"]["final_test_loss"]
    print(f"test loss without normguard's stop+restore {plain:.3f}, with it {guarded:.3f} ({plain / guarded:.2f}x)")
    if args.log_dir:
        print(f"logs in {args.log_dir}; draw them with: normguard report {args.log_dir} --out report.png")
    return results


if __name__ == "__main__":
    main()
