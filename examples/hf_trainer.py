"""NormGuardTrainerCallback in a Hugging Face Trainer: a tiny BERT memorising noisy labels, on the CPU.

Data: random token sequences (vocabulary 100, length 16); the label says whether the
first token is below 50, flipped for 20 % of the 256 training sequences and of the
validation sequences. A tiny BERT built from a config (2 layers, hidden 32; nothing is
downloaded) first learns the rule, then memorises the flipped labels: its training loss
sinks under the noise floor (the entropy of the label noise), its weight norm grows and
the validation loss climbs. The test set has clean labels: it says which weights are
better.

The same training runs twice from the same seed:

* ``unguarded``: the Trainer runs to the end;
* ``guarded``: ``NormGuardTrainerCallback(noise_floor=..., action="stop")`` stops at the
  signature and, when training ends, restores the weights of the best validation loss.

The script prints its summary only: the Trainer's own log lines (a dict per logging step)
are switched off by removing its ``PrinterCallback``; normguard's log lines say when it acts.

Run::

    python examples/hf_trainer.py                     # about a minute on one CPU core
    python examples/hf_trainer.py --log-dir runs/hf   # then: tensorboard --logdir runs/hf
                                                      #       normguard report runs/hf
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from typing import Any

import torch
import transformers
from transformers import PrinterCallback, Trainer, TrainingArguments

from normguard.demos import tiny_bert
from normguard.detector import label_noise_floor
from normguard.transformers import NormGuardTrainerCallback

NOISE = 0.2


class Sequences(torch.utils.data.Dataset):
    """Random sequences; label = first token < 50, flipped with probability ``noise``."""

    def __init__(self, n: int, seed: int, noise: float) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 100, (n, 16), generator=g)
        clean = (self.x[:, 0] < 50).long()
        self.y = torch.where(torch.rand(n, generator=g) < noise, 1 - clean, clean)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def run(name: str, out_dir: str, epochs: int, log_dir: str | None, guard: NormGuardTrainerCallback | None) -> dict:
    args = TrainingArguments(
        output_dir=f"{out_dir}/{name}",
        per_device_train_batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.01,
        num_train_epochs=epochs,
        logging_steps=8,
        eval_strategy="steps",
        eval_steps=16,
        save_strategy="no",
        report_to=["tensorboard"] if log_dir else [],
        use_cpu=True,
        disable_tqdm=True,  # no progress bar: the Trainer then prints its logs through a PrinterCallback ...
        log_level="error",
        seed=0,
    )
    if log_dir:  # read by the TensorBoardCallback the Trainer builds (transformers 5)
        os.environ["TENSORBOARD_LOGGING_DIR"] = f"{log_dir}/{name}"
    trainer = Trainer(
        model=tiny_bert(num_labels=2, seed=0),  # 2 layers, hidden 32, from a config
        args=args,
        train_dataset=Sequences(256, seed=0, noise=NOISE),
        eval_dataset=Sequences(256, seed=1, noise=NOISE),
        compute_metrics=accuracy,
        callbacks=[guard] if guard is not None else [],
    )
    trainer.remove_callback(PrinterCallback)  # ... which goes: this script prints a summary, not a dict per log
    print(f"training {name} ({epochs} epochs) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    test = trainer.evaluate(Sequences(1024, seed=2, noise=0.0), metric_key_prefix="test")  # clean labels
    val = [h for h in trainer.state.log_history if "eval_loss" in h]
    return {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "best_val_loss": min(h["eval_loss"] for h in val),
        "last_val_loss": val[-1]["eval_loss"],
        "test_loss": test["test_loss"],
        "test_accuracy": test["test_accuracy"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--log-dir", default=None, help="TensorBoard directory (one run per variant)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("normguard").setLevel(logging.INFO)

    # label_noise_floor(η, C) replaces a label by a uniform one with probability η; flipping to the
    # other of 2 classes with probability NOISE is that with η = 2 NOISE (floor: binary entropy of NOISE)
    floor = label_noise_floor(2 * NOISE, 2)
    with tempfile.TemporaryDirectory() as out_dir:
        unguarded = run("unguarded", out_dir, args.epochs, args.log_dir, None)
        guard = NormGuardTrainerCallback(noise_floor=floor, action="stop")
        guarded = run("guarded", out_dir, args.epochs, args.log_dir, guard)

    print(f"\nnoise floor (entropy of {NOISE:.0%} label noise over 2 classes): {floor:.3f}")
    print(f"{'':10} {'steps':>9} {'best val':>9} {'last val':>9} {'test loss':>10} {'test acc':>9} {'seconds':>8}")
    for name, r in (("unguarded", unguarded), ("guarded", guarded)):
        print(
            f"{name:10} {r['steps']:>4}/{r['max_steps']:<4} {r['best_val_loss']:>9.3f} {r['last_val_loss']:>9.3f} "
            f"{r['test_loss']:>10.3f} {r['test_accuracy']:>9.3f} {r['seconds']:>8.1f}"
        )
    print("\nwhat normguard did:")
    for event in guard.events:
        print(f"  {event.line()}")
    if not guard.events:
        print("  nothing: the signature did not appear (train longer: --epochs)")
    print("(test: 1024 sequences with clean labels; the guarded model holds the weights it restored)")


if __name__ == "__main__":
    main()
