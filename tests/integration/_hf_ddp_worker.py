"""Two-process DDP on CPU (gloo) through a Hugging Face Trainer and an accelerate loop.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 _hf_ddp_worker.py OUT_DIR``
(run by test_transformers.py). Each rank writes OUT_DIR/rank<r>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    import transformers
    from accelerate import Accelerator
    from test_transformers import FLOOR, RecordingSink, TrueLoss, make_trainer, tiny_bert

    from normguard import NormGuard, tags
    from normguard.transformers import NormGuardTrainerCallback

    transformers.logging.set_verbosity_error()
    out = Path(out_dir)
    model = tiny_bert()
    truth = TrueLoss(model)
    sink = RecordingSink()  # written on rank 0 only
    # tiny BERT ignores num_items_in_batch: the Trainer inflates its loss by GA x processes, normguard divides back
    guard = NormGuardTrainerCallback(noise_floor=FLOOR, action="stop", sinks=[sink], model_uses_num_items=False)
    # 2 processes x 8 per device x GA 2 = 32 sequences per optimizer step, as in the one-process tests
    trainer = make_trainer(out / "trainer", [guard, truth], ga=2, model=model, per_device_train_batch_size=8)
    trainer.train()
    rank = trainer.args.process_index
    train_losses = [
        (v.step, v.train_loss) for v in guard.verdicts if v.train_loss is not None and v.step % 8 != 0
    ]  # train checks (evaluations at multiples of 8 use the window since the previous evaluation)
    eval_logged = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]

    # an accelerate loop on the same process group: the prepared model is DDP-wrapped
    accelerator = Accelerator(cpu=True)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    wrapped, opt = accelerator.prepare(net, opt)
    names_wrapped = sorted(NormGuard(wrapped, opt, every_n_steps=1).monitor.engine.layer_names)
    names_unwrapped = sorted(
        NormGuard(accelerator.unwrap_model(wrapped), opt, every_n_steps=1).monitor.engine.layer_names
    )

    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "events": [(e.step, e.kind.value) for e in guard.events],
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "train_scale": guard._scales[0],
        "eval_scale": guard._scales[1],
        "true_losses": truth.losses,
        "train_checks": train_losses,
        "eval_logged": eval_logged,
        "val_seen": [v for _, v in sink.series(tags.VAL_LOSS)],
        "names_wrapped": names_wrapped,
        "names_unwrapped": names_unwrapped,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
