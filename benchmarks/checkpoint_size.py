"""What normguard adds to a checkpoint, with and without the best weights (issue 12.9).

A restore-best action (``action="stop"``, ``HoldNoiseFloor(restore_best_at_end=True)``)
keeps one copy of the model's ``state_dict()``; without a known noise floor the detector's
``drifted`` condition keeps two copies of the measured weights (w₀ and w_best). By default
they are part of the guard's state, so every checkpoint carries them.
``best_weights_in_checkpoint=False`` leaves them out (a resumed run learns "best" again from
its next validation and measures drift from the resumed weights). This measures the saved
bytes of the guard's state each way on a transformer of realistic size, next to the model's own.

Run: ``python benchmarks/checkpoint_size.py [--layers 6] [--width 512]``
"""

from __future__ import annotations

import argparse
import io

import torch
from torch import nn

import normguard as ng


def saved_bytes(obj: object) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(args.width, nhead=8, dim_feedforward=4 * args.width, batch_first=True)
    model = nn.Sequential(nn.Embedding(32000, args.width), nn.TransformerEncoder(layer, args.layers))
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []
    settings = (("stop", 1.0), ("stop", None), (None, None))  # (action, noise floor): None floor tracks drift
    for action, floor in settings:
        for keep in (True, False):
            guard = ng.NormGuard(
                model, opt, every_n_steps=1, action=action, noise_floor=floor, best_weights_in_checkpoint=keep
            )
            guard.step(torch.tensor(1.0))
            guard.validation_end(torch.tensor(1.0))  # a best point exists: the copies are held in memory either way
            rows.append((action or "warn (default)", floor, keep, saved_bytes(guard.state_dict())))
            guard.close()
    model_bytes = saved_bytes(model.state_dict())
    print(f"Command: `python benchmarks/checkpoint_size.py --layers {args.layers} --width {args.width}`\n")
    print(f"model: {params / 1e6:.1f} M parameters, state_dict {model_bytes / 2**20:.1f} MiB (float32)\n")
    print(
        "| action | noise floor | best_weights_in_checkpoint | guard state in a checkpoint "
        "| relative to the model's state_dict |"
    )
    print("|---|---|---|---|---|")
    for action, floor, keep, size in rows:
        print(f"| {action} | {floor} | {keep} | {size / 2**20:.2f} MiB ({size:,} bytes) | {size / model_bytes:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
