"""NormGuardCallback in real Lightning Trainers: logs read back, detection, resume, misconfiguration."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import normguard as ng  # noqa: E402
from normguard import tags  # noqa: E402
from normguard.events import EventKind  # noqa: E402
from normguard.lightning import NormGuardCallback  # noqa: E402
from normguard.science.datasets import power_law_regression  # noqa: E402

QUIET = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "accelerator": "cpu",
    "devices": 1,
}


@pytest.fixture(autouse=True)
def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ---------------------------------------------------------------------------- small fixtures
class Regressor(L.LightningModule):
    """MSE regression; records each step's loss so tests can recompute what was logged."""

    def __init__(
        self, net: nn.Module, lr: float = 1e-2, optimizer: str = "adam", weight_decay: float = 0.0, log_as: str = ""
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.log_as = log_as or "train_loss"
        self.step_losses: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = (self(x) - y).float().pow(2).mean()
        self.step_losses.append(loss.detach())
        self.log(self.log_as, loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", (self(x) - y).float().pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[self.optimizer]
        return cls(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def mlp(d_in: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, 1))


def linear(d_in: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d_in, 1, bias=False)


def loaders(data: Mapping[str, torch.Tensor], batch_size: int | None = None) -> tuple[DataLoader, DataLoader]:
    train = TensorDataset(data["x_train"], data["y_train"])
    val = TensorDataset(data["x_val"], data["y_val"])
    return (
        DataLoader(train, batch_size=batch_size or len(train)),
        DataLoader(val, batch_size=len(val)),
    )


def random_regression(n: int = 64, d: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 32, d, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.3 * torch.randn(n + 32, generator=g)
    return {"x_train": x[:n], "y_train": y[:n], "x_val": x[n:], "y_val": y[n:]}


@pytest.fixture(scope="module")
def noise_task() -> dict[str, torch.Tensor]:
    """The paper's linear setting: d = 1.5 n, Σ = diag(i^-1.5), β* ~ N(0, 10/d I): almost no signal."""
    return power_law_regression(n=200, alpha=1.5, seed=0)


@pytest.fixture(scope="module")
def clean_task() -> dict[str, torch.Tensor]:
    """Well-posed regression, n >> d: the model cannot fit the noise."""
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(5, generator=g)
    out = {}
    for split, size in (("train", 1000), ("val", 500)):
        x = torch.randn(size, 5, generator=g)
        out[f"x_{split}"], out[f"y_{split}"] = x, x @ beta + torch.randn(size, generator=g)
    return out


class RecordingSink:
    """A sink that keeps everything it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.texts: list[tuple[int, str, str]] = []

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def text(self, step: int, tag: str, text: str) -> None:
        self.texts.append((step, tag, text))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(step, row[tag]) for step, row in self.rows if tag in row]


def read_events(log_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


# ---------------------------------------------------------------------------- logging
def test_tensorboard_logger_gets_tags_layout_and_final_norms(tmp_path: Path) -> None:
    module = Regressor(mlp(), lr=0.05, optimizer="adamw", weight_decay=1e-3)
    train, val = loaders(random_regression(), batch_size=8)
    guard = NormGuardCallback(every_n_steps=5)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=5, log_every_n_steps=1, logger=logger, callbacks=[guard], **QUIET
    )
    trainer.fit(module, train, val)  # sanity check runs first (2 val steps) and must be ignored

    assert trainer.global_step == 10
    acc = read_events(logger.log_dir)
    scalar_tags = set(acc.Tags()["scalars"])
    expected = {
        tags.TOTAL_NORM,
        tags.TRAIN_LOSS,
        tags.VAL_LOSS,
        tags.layer_tag("net.0"),
        tags.layer_tag("net.2"),
        "train_loss",  # Lightning's own metrics land in the same run
    }
    assert expected <= scalar_tags, expected - scalar_tags
    # the custom-scalars layout is in the run's event file too
    from tensorboard.plugins.custom_scalar import metadata

    assert acc.Tensors(metadata.CONFIG_SUMMARY_TAG)
    # checks at steps 5 and 10; validations (not the sanity check) at the end of each epoch
    assert [e.step for e in acc.Scalars(tags.VAL_LOSS)] == [5, 10]
    # the last check is the last step, and validation does not change weights: values = final model
    final = {k: v.item() for k, v in ng.layer_norms(module).items()}
    for layer in ("net.0", "net.2"):
        assert acc.Scalars(tags.layer_tag(layer))[-1].value == pytest.approx(final[layer], rel=1e-6)
    assert acc.Scalars(tags.TOTAL_NORM)[-1].value == pytest.approx(ng.total_norm(module).item(), rel=1e-6)
    # the train loss at a check is the mean of the per-step losses since the previous check
    losses = [x.item() for x in module.step_losses]
    train_logged = {e.step: e.value for e in acc.Scalars(tags.TRAIN_LOSS)}
    assert train_logged[5] == pytest.approx(sum(losses[:5]) / 5, rel=1e-5)
    assert train_logged[10] == pytest.approx(sum(losses[5:10]) / 5, rel=1e-5)
    assert guard.last_norms()["total"] == pytest.approx(ng.total_norm(module).item(), rel=1e-6)


def test_csv_and_several_loggers_get_the_scalars(tmp_path: Path) -> None:
    module = Regressor(mlp())
    train, val = loaders(random_regression(), batch_size=16)
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    tb_logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=4,
        logger=[csv_logger, tb_logger],
        callbacks=[NormGuardCallback(every_n_steps=2)],
        **QUIET,
    )
    trainer.fit(module, train, val)
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    totals = [(int(r["step"]), float(r[tags.TOTAL_NORM])) for r in rows if r.get(tags.TOTAL_NORM)]
    assert [s for s, _ in totals][:4] == [2, 4, 6, 8]  # one row per step: the train check and validation at 4 merged
    assert totals[-1][1] == pytest.approx(ng.total_norm(module).item(), rel=1e-6)
    assert any(r.get(tags.layer_tag("net.0")) for r in rows)
    assert tags.TOTAL_NORM in read_events(tb_logger.log_dir).Tags()["scalars"]


READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class CountingCallback(NormGuardCallback):
    """Counts the Tensor→host reads made inside the callback's per-batch hook."""

    reads: list[tuple[int, int, int]]

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        counts = {name: 0 for name in READS}
        originals = {name: getattr(torch.Tensor, name) for name in READS}

        def wrap(name: str) -> Any:
            def counted(tensor: torch.Tensor, *a: Any, **k: Any) -> Any:
                counts[name] += 1
                return originals[name](tensor, *a, **k)

            return counted

        for name in READS:
            setattr(torch.Tensor, name, wrap(name))
        try:
            super().on_train_batch_end(trainer, *args)
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
        self.reads.append((trainer.global_step, sum(counts.values()), counts["tolist"]))


def test_only_check_steps_touch_the_host() -> None:
    class ProgBar(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = (self(x) - y).pow(2).mean()
            self.log("train_loss", loss, prog_bar=True)  # reading callback_metrics would .item() this
            return loss

    guard = CountingCallback(every_n_steps=4)
    guard.reads = []
    train, _ = loaders(random_regression(), batch_size=8)
    trainer = L.Trainer(max_steps=8, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(ProgBar(mlp()), train)
    assert [(step, reads) for step, reads, _ in guard.reads if step % 4] == [(s, 0) for s in (1, 2, 3, 5, 6, 7)]
    assert [(step, reads, tolist) for step, reads, tolist in guard.reads if step % 4 == 0] == [(4, 1, 1), (8, 1, 1)]


# ---------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("floor", "rule", "patience"),
    [
        # the true noise: the training loss goes under the floor, the first rule stops
        (1.0, "below_floor+val_stalled", 7),
        # a floor under the true noise (1.0): the training loss stays above it while the validation
        # loss stalls, so the second rule (EarlyStopping's 10 stalled validations, with the training
        # loss nearer the floor than the validation loss) is the one that stops
        (0.3, "val_stalled|near_floor", 10),
    ],
)
def test_fires_stops_and_restores_best_on_the_near_interpolation_task(
    noise_task: dict[str, torch.Tensor], floor: float, rule: str, patience: int
) -> None:
    L.seed_everything(0)
    module = Regressor(linear(noise_task["x_train"].shape[1]), lr=1e-2)
    train, val = loaders(noise_task)
    guard = NormGuardCallback(every_n_steps=5, noise_floor=floor, action="stop")
    trainer = L.Trainer(max_epochs=200, check_val_every_n_epoch=5, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train, val)

    kinds = [e.kind for e in guard.events]
    assert kinds == [EventKind.DETECTOR_FIRED, EventKind.RESTORE, EventKind.STOP]
    assert f"of {rule};" in guard.events[0].message
    stop_step = guard.events[-1].step
    assert trainer.global_step == stop_step < 200 and trainer.should_stop and guard.should_stop
    [fired] = [v for v in guard.verdicts if v.fired]
    assert fired.step == stop_step and fired.rule == rule and fired.streak == patience
    assert all(fired.conditions[c] for c in rule.replace("|", "+").split("+"))
    assert fired.gap is not None and fired.gap > 0  # the training loss is under the validation loss
    under_floor = fired.train_loss < floor
    assert fired.conditions["below_floor"] == under_floor and under_floor == (floor == 1.0)
    # restore-best: the module holds the weights of the best validation check (kept on the CPU)
    best = guard.monitor.best
    assert best is not None and best.step < stop_step
    for k, v in module.state_dict().items():
        assert torch.equal(v, best.state[k])


def test_stops_mid_epoch_without_validation(tmp_path: Path, noise_task: dict[str, torch.Tensor]) -> None:
    # no validation: decisions at the train checks; several batches per epoch, so the stop is mid-epoch
    L.seed_everything(0)
    module = Regressor(linear(noise_task["x_train"].shape[1]), lr=1e-2)
    train, _ = loaders(noise_task, batch_size=50)
    # patience 6 (the floor rule's count min(7, 6)): with a check every 5 steps it stops at a step
    # that is not a multiple of the 4 batches per epoch
    guard = NormGuardCallback(every_n_steps=5, noise_floor=1.0, action="stop_no_restore", patience=6)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    trainer = L.Trainer(max_epochs=100, logger=logger, callbacks=[guard], **QUIET)
    trainer.fit(module, train)
    stop = [e for e in guard.events if e.kind == EventKind.STOP]
    assert len(stop) == 1 and trainer.global_step == stop[0].step < 400 and stop[0].step % 4 != 0
    acc = read_events(logger.log_dir)
    assert [e.step for e in acc.Scalars(tags.event_tag("stop"))] == [stop[0].step]
    [text] = [t for t in acc.Tags()["tensors"] if t.startswith(tags.EVENTS_TEXT + "/")]
    assert b"stopping: near" in acc.Tensors(text)[-1].tensor_proto.string_val[0]


def test_quiet_on_a_well_posed_task(clean_task: dict[str, torch.Tensor]) -> None:
    L.seed_everything(0)
    module = Regressor(linear(5), lr=0.1)
    train, val = loaders(clean_task)
    guard = NormGuardCallback(every_n_steps=5, noise_floor=1.0, action="stop")
    trainer = L.Trainer(max_epochs=150, check_val_every_n_epoch=5, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train, val)
    assert trainer.global_step == 150
    assert not guard.should_stop and guard.events == []
    decided = [v for v in guard.verdicts if v.decided]
    assert len(decided) == 31  # one at the first check (no validation yet), then one per validation
    assert not any(v.active for v in decided)
    # converged at the floor: validation stalls (as EarlyStopping would see it), but the training
    # loss never gets nearer the floor than the validation loss by more than the noise allows
    assert max(v.streak for v in decided) >= 10
    assert not any(v.conditions["near_floor"] for v in decided)


# ---------------------------------------------------------------------------- resume
def _resume_run(data: dict[str, torch.Tensor], max_epochs: int, ckpt_path: str | None = None) -> tuple[Any, ...]:
    L.seed_everything(0)
    module = Regressor(linear(data["x_train"].shape[1]), lr=1e-2, weight_decay=1e-4)
    train, val = loaders(data)
    action = ng.RaiseWeightDecay(factor=4.0, cooldown=1, max_weight_decay=0.5)
    guard = NormGuardCallback(every_n_steps=5, noise_floor=1.0, action=action)
    trainer = L.Trainer(max_epochs=max_epochs, check_val_every_n_epoch=5, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return trainer, guard, module


def test_checkpoint_resume_continues_exactly(tmp_path: Path, noise_task: dict[str, torch.Tensor]) -> None:
    full_trainer, full, full_module = _resume_run(noise_task, 84)
    # interrupted at 42: not a multiple of 5, so the partial loss window must survive the checkpoint
    first_trainer, _, _ = _resume_run(noise_task, 42)
    path = str(tmp_path / "mid.ckpt")
    first_trainer.save_checkpoint(path)
    resumed_trainer, resumed, resumed_module = _resume_run(noise_task, 84, ckpt_path=path)

    assert resumed_trainer.global_step == full_trainer.global_step == 84
    changes = [e for e in full.events if e.kind == EventKind.WEIGHT_DECAY_CHANGED]
    assert len(changes) >= 2 and any(e.step > 42 for e in changes)  # the test exercises the cooldown
    assert [e.to_dict() for e in resumed.events] == [e.to_dict() for e in full.events]
    tail = [v for v in full.verdicts if v.step > 42]
    assert resumed.verdicts == tail  # the same decisions, conditions, windows, streaks
    wd = [g["weight_decay"] for g in full_trainer.optimizers[0].param_groups]
    assert [g["weight_decay"] for g in resumed_trainer.optimizers[0].param_groups] == wd
    assert wd[0] > 1e-4
    torch.testing.assert_close(resumed_module.net.weight, full_module.net.weight)


def test_two_callbacks_coexist_in_a_checkpoint_and_duplicates_fail(tmp_path: Path) -> None:
    a = NormGuardCallback(every_n_steps=2, name="a")
    b = NormGuardCallback(every_n_steps=2, name="b")
    assert a.state_key != b.state_key
    module = Regressor(mlp())
    train, _ = loaders(random_regression(), batch_size=16)
    trainer = L.Trainer(max_steps=4, logger=False, callbacks=[a, b], **QUIET)
    trainer.fit(module, train)
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["callbacks"]
    assert {a.state_key, b.state_key} <= set(saved)
    assert len(saved[a.state_key]["monitor"]["detector"]["norms"]) == 2

    # Lightning refuses twins given to the Trainer; the callback also catches one appended later
    with pytest.raises(RuntimeError, match="state_key` must be unique"):
        L.Trainer(callbacks=[NormGuardCallback(), NormGuardCallback()], logger=False, **QUIET)
    trainer = L.Trainer(max_steps=2, logger=False, callbacks=[NormGuardCallback()], **QUIET)
    trainer.callbacks.append(NormGuardCallback())
    with pytest.raises(ValueError, match="unique `state_key`"):
        trainer.fit(Regressor(mlp()), train)


def test_state_from_an_older_version_loads() -> None:
    # a normguard 0.1 checkpoint state: version 1, no fingerprint, `best_train` instead of `divergence`
    first = NormGuardCallback(every_n_steps=2, action="stop")
    train, val = loaders(random_regression(), batch_size=16)
    L.Trainer(max_steps=4, logger=False, callbacks=[first], **QUIET).fit(Regressor(mlp()), train, val)
    old = first.state_dict()
    monitor = {k: v for k, v in old["monitor"].items() if k not in ("fingerprint", "divergence", "nonfinite")}
    old = {**old, "version": 1, "monitor": {**monitor, "version": 1, "best_train": 0.5}}
    guard = NormGuardCallback(every_n_steps=2, action="stop")
    guard.load_state_dict(old)
    trainer = L.Trainer(max_steps=8, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(Regressor(mlp()), train, val, ckpt_path=None)
    assert guard.monitor is not None and guard.monitor.divergence.best <= 0.5
    assert guard.detector.state_dict()["norms"][0] == first.detector.state_dict()["norms"][0]


@pytest.mark.parametrize("bad", [None, [], {"monitor": None}, {"monitor": {"detector": {}}}])
def test_garbage_state_is_refused(bad: Any) -> None:
    guard = NormGuardCallback(every_n_steps=2)
    train, _ = loaders(random_regression(), batch_size=16)
    with pytest.raises(ng.StateError):
        guard.load_state_dict(bad)
        L.Trainer(max_steps=2, logger=False, callbacks=[guard], **QUIET).fit(Regressor(mlp()), train)


def test_state_of_another_model_is_refused_at_fit_start() -> None:
    first = NormGuardCallback(every_n_steps=2, action="stop")
    train, val = loaders(random_regression(), batch_size=16)
    L.Trainer(max_steps=4, logger=False, callbacks=[first], **QUIET).fit(Regressor(mlp()), train, val)
    other = NormGuardCallback(every_n_steps=2, action="stop")
    other.load_state_dict(first.state_dict())
    wider = Regressor(torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)))
    with pytest.raises(ng.StateError, match="belongs to another model"):
        L.Trainer(max_steps=4, logger=False, callbacks=[other], **QUIET).fit(wider, train, val)


def test_a_reused_callback_starts_fresh_on_a_new_fit() -> None:
    guard = NormGuardCallback(every_n_steps=2, noise_floor=1.0, action="stop_no_restore")
    train, val = loaders(random_regression(), batch_size=16)
    L.Trainer(max_steps=10, logger=False, callbacks=[guard], **QUIET).fit(Regressor(mlp()), train, val)
    assert guard.monitor is not None
    guard.monitor.request_stop(10, "the first run stopped")  # as if the first fit had fired and stopped
    assert guard.should_stop
    # a new Trainer and model: nothing carries over (no stop, no windows, checks from step 2)
    trainer = L.Trainer(max_steps=6, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(Regressor(mlp(), lr=1e-4), train)
    assert trainer.global_step == 6 and not guard.should_stop
    assert [v.step for v in guard.verdicts] == [2, 4, 6]
    assert guard.events == []


# ---------------------------------------------------------------------------- misconfiguration
def test_unknown_train_metric_lists_the_available_keys() -> None:
    # manual optimization, training_step returns nothing: the loss is the logged `train_loss`
    class LogsAsLoss(TwoOptimizers):
        def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
            super().log("loss" if name == "train_loss" else name, value, *args, **kwargs)

    train, _ = loaders(random_regression(), batch_size=16)
    trainer = L.Trainer(max_steps=4, logger=False, callbacks=[NormGuardCallback(every_n_steps=2)], **QUIET)
    with pytest.raises(RuntimeError, match=r"no metric 'train_loss'.*return the loss.*\['loss'\]"):
        trainer.fit(LogsAsLoss(), train)


def test_unknown_val_metric_lists_the_available_keys() -> None:
    train, val = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2, val_loss="valid/mse")
    trainer = L.Trainer(max_steps=4, logger=False, callbacks=[guard], num_sanity_val_steps=0, **QUIET)
    with pytest.raises(RuntimeError, match=r"no metric 'valid/mse'.*'val_loss'"):
        trainer.fit(Regressor(mlp()), train, val)


def test_the_loss_is_read_from_outputs_whatever_is_logged() -> None:
    # automatic optimization: training_step's loss (a dict here) is read, logged on epoch only or not at all
    class EpochOnly(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            x, y = batch
            loss = (self(x) - y).pow(2).mean()
            self.step_losses.append(loss.detach())
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return {"loss": loss, "extra": loss.detach() * 0}

    module = EpochOnly(mlp())
    train, _ = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2)
    trainer = L.Trainer(max_steps=4, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train)
    losses = [x.item() for x in module.step_losses]
    assert [v.step for v in guard.verdicts] == [2, 4]
    assert guard.verdicts[1].train_loss == pytest.approx(sum(losses[2:4]) / 2, rel=1e-5)


class NoDecay(torch.optim.Optimizer):
    """A custom optimizer whose param groups have no `weight_decay` entry."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


def test_weight_decay_action_needs_weight_decay_in_the_optimizer() -> None:
    class Custom(Regressor):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return NoDecay(self.parameters())

    train, _ = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2, action="weight_decay")
    trainer = L.Trainer(max_steps=2, logger=False, callbacks=[guard], **QUIET)
    with pytest.raises(ValueError, match="`weight_decay` entry"):
        trainer.fit(Custom(mlp()), train)


def test_normguard_imports_without_lightning() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "import normguard\n"
        "try:\n"
        "    import normguard.lightning\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: normguard.lightning needs Lightning" in proc.stdout and "normguard[lightning]" in proc.stdout


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        NormGuardCallback(every_n_steps=0)
    with pytest.raises(TypeError, match="both"):
        NormGuardCallback(every_n_steps=3, every_n_train_steps=4)
    with pytest.raises(ValueError, match="not both"):
        NormGuardCallback(detector=ng.NearInterpolationDetector(), noise_floor=1.0)
    with pytest.raises(ValueError, match="action"):
        NormGuardCallback(action="explode")
    with pytest.raises(ValueError, match="noise_floor"):
        NormGuardCallback(noise_floor="high")


# ---------------------------------------------------------------------------- loop variants
def test_fast_dev_run_is_skipped(tmp_path: Path) -> None:
    guard = NormGuardCallback(every_n_steps=1)
    train, val = loaders(random_regression(), batch_size=16)
    trainer = L.Trainer(fast_dev_run=2, callbacks=[guard], **{**QUIET, "enable_checkpointing": None})
    trainer.fit(Regressor(mlp()), train, val)
    assert guard.monitor is None and guard.verdicts == [] and guard.events == []


def test_validate_outside_fit_is_ignored() -> None:
    guard = NormGuardCallback(every_n_steps=2)
    train, val = loaders(random_regression(), batch_size=16)
    trainer = L.Trainer(max_steps=2, logger=False, callbacks=[guard], num_sanity_val_steps=0, **QUIET)
    module = Regressor(mlp())
    trainer.fit(module, train, val)
    before = len(guard.verdicts)
    trainer.validate(module, val, verbose=False)
    assert len(guard.verdicts) == before


def test_gradient_accumulation_checks_on_optimizer_steps_with_unscaled_losses() -> None:
    module = Regressor(mlp())
    train, _ = loaders(random_regression(), batch_size=8)
    guard = NormGuardCallback(every_n_steps=2)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=8, accumulate_grad_batches=2, logger=False, **QUIET)
    trainer.callbacks.append(guard)
    trainer.fit(module, train)
    assert trainer.global_step == 4
    assert [v.step for v in guard.verdicts] == [2, 4]
    losses = [x.item() for x in module.step_losses]
    # every batch's loss (not divided by accumulate_grad_batches) enters the mean, once
    assert guard.verdicts[0].train_loss == pytest.approx(sum(losses[:4]) / 4, rel=1e-5)
    assert guard.verdicts[1].train_loss == pytest.approx(sum(losses[4:]) / 4, rel=1e-5)


def test_step_and_epoch_logging_reads_the_step_value() -> None:
    class Both(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = (self(x) - y).pow(2).mean()
            self.step_losses.append(loss.detach())
            self.log("train_loss", loss, on_step=True, on_epoch=True)  # train_loss_step / train_loss_epoch
            return loss

    module = Both(mlp())
    train, _ = loaders(random_regression(), batch_size=8)
    guard = NormGuardCallback(every_n_steps=3)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train)
    losses = [x.item() for x in module.step_losses]
    assert [v.step for v in guard.verdicts] == [3, 6]
    assert guard.verdicts[1].train_loss == pytest.approx(sum(losses[3:6]) / 3, rel=1e-5)  # not epoch 1's mean


def test_public_fallback_prefers_the_step_value() -> None:
    # a Lightning without the step cache this callback reads: trainer.callback_metrics is used
    from types import SimpleNamespace

    from normguard.lightning import step_metric

    step, epoch = torch.tensor(1.0), torch.tensor(2.0)
    trainer = SimpleNamespace(callback_metrics={"train_loss_step": step, "train_loss": epoch})
    assert step_metric(trainer, "train_loss") is step  # type: ignore[arg-type]
    assert step_metric(SimpleNamespace(callback_metrics={"train_loss": epoch}), "train_loss") is epoch  # type: ignore[arg-type]
    assert step_metric(SimpleNamespace(callback_metrics={}), "train_loss") is None  # type: ignore[arg-type]


class TwoOptimizers(L.LightningModule):
    """Manual optimization with two optimizers: global_step advances by 2 per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.encoder = nn.Linear(6, 8)
        self.head = nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        opt_a, opt_b = self.optimizers()
        loss = (self.head(torch.tanh(self.encoder(x))).squeeze(-1) - y).pow(2).mean()
        opt_a.zero_grad()
        opt_b.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        opt_b.step()
        self.log("train_loss", loss)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.AdamW(self.encoder.parameters(), lr=1e-2, weight_decay=1e-2),
            torch.optim.SGD(self.head.parameters(), lr=1e-2, weight_decay=0.0),
        ]


def test_manual_optimization_with_two_optimizers() -> None:
    sink = RecordingSink()
    guard = NormGuardCallback(every_n_steps=5, sinks=[sink], action="weight_decay")
    train, _ = loaders(random_regression(), batch_size=8)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=8, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(TwoOptimizers(), train)
    assert trainer.global_step == 16
    assert [v.step for v in guard.verdicts] == [6, 10, 16]  # the first step at or past each multiple of 5
    assert {f"{tags.WEIGHT_DECAY}/opt_0_group_0", f"{tags.WEIGHT_DECAY}/opt_1_group_0"} <= set(sink.rows[-1][1])
    assert set(guard.last_norms()) == {"encoder", "head", "total"}


def test_bf16_mixed_precision_on_cpu() -> None:
    module = Regressor(mlp())
    train, val = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2)
    trainer = L.Trainer(max_steps=4, precision="bf16-mixed", logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train, val)
    assert [v.step for v in guard.verdicts][:2] == [2, 4]
    assert all(math.isfinite(v.train_loss) for v in guard.verdicts if v.train_loss is not None)
    assert guard.last_norms()["total"] == pytest.approx(ng.total_norm(module).item(), rel=1e-6)


def test_torch_compiled_submodule() -> None:
    # The network inside the LightningModule is compiled (backend="eager": Lightning's loop and
    # normguard's reads see a compiled module without waiting minutes for inductor's C++ build on CPU).
    # Compiling the whole LightningModule fails in torch 2.13 + Lightning 2.6 inside `self.log`,
    # with or without normguard (dynamo cannot trace Lightning's signature inspection).
    module = Regressor(torch.compile(mlp(), backend="eager"))
    train, _ = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2)
    trainer = L.Trainer(max_steps=4, logger=False, callbacks=[guard], **QUIET)
    trainer.fit(module, train)
    assert [v.step for v in guard.verdicts] == [2, 4]
    assert set(guard.last_norms()) == {"net._orig_mod.0", "net._orig_mod.2", "total"}
    assert guard.last_norms()["total"] == pytest.approx(ng.total_norm(module).item(), rel=1e-6)


def test_quickstart_example_runs() -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "examples" / "lightning_quickstart.py"
    proc = subprocess.run([sys.executable, str(script), "--steps", "60"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split("  ")[0].strip(): line.split() for line in proc.stdout.splitlines()}
    watch_steps, guard_steps = map(int, lines["steps run"][-2:])
    assert watch_steps == 60 and guard_steps < 60  # watch runs to the end; guard stops at the signature
    test_watch, test_guard = map(float, lines["test MSE"][-2:])
    assert test_guard < test_watch


def test_manual_optimization_reads_a_returned_loss() -> None:
    class Returns(TwoOptimizers):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            opt_a, opt_b = self.optimizers()
            loss = (self.head(torch.tanh(self.encoder(x))).squeeze(-1) - y).pow(2).mean()
            opt_a.zero_grad()
            opt_b.zero_grad()
            self.manual_backward(loss)
            opt_a.step()
            opt_b.step()
            self.seen.append(loss.item())
            return loss  # nothing logged

    module = Returns()
    module.seen = []
    train, _ = loaders(random_regression(), batch_size=8)
    guard = NormGuardCallback(every_n_steps=4)
    L.Trainer(max_epochs=1, limit_train_batches=4, logger=False, callbacks=[guard], **QUIET).fit(module, train)
    assert [v.step for v in guard.verdicts] == [4, 8]  # two optimizer steps per batch
    assert guard.verdicts[1].train_loss == pytest.approx(sum(module.seen[2:]) / 2, rel=1e-5)


# ---------------------------------------------------------------------------- issue 11 in a Trainer
def test_hold_floor_in_a_trainer_holds_the_floor_and_beats_no_intervention(noise_task: dict[str, torch.Tensor]) -> None:
    def fit(action: Any) -> tuple[Regressor, Any]:
        L.seed_everything(0)
        module = Regressor(linear(noise_task["x_train"].shape[1]), lr=1e-2, optimizer="adamw", weight_decay=0.01)
        train, val = loaders(noise_task)
        guard = NormGuardCallback(every_n_steps=5, noise_floor=1.0, action=action)
        L.Trainer(max_epochs=300, check_val_every_n_epoch=5, logger=False, callbacks=[guard], **QUIET).fit(
            module, train, val
        )
        return module, guard

    def test_mse(module: Regressor) -> float:
        with torch.no_grad():
            return float((module(noise_task["x_test"]) - noise_task["y_test"]).pow(2).mean())

    held, guard = fit("hold_floor")
    plain, _ = fit(lambda verdict, context: None)
    assert not guard.should_stop  # a controller: training runs its whole budget
    changes = [e for e in guard.events if e.kind == EventKind.WEIGHT_DECAY_CHANGED]
    assert changes[0].data.get("engaged") and len(changes) > 3
    optimizer = held.trainer.optimizers[0]
    assert optimizer.param_groups[0]["weight_decay"] > 0.01  # AdamW's own decay, raised
    last = [v.train_loss for v in guard.verdicts if v.decided][-5:]
    assert min(last) > 0.7  # held near the floor (1.0); the plain run memorises
    assert float(plain.step_losses[-1]) < 0.5
    assert test_mse(held) < test_mse(plain)
    # its state travels in the checkpoint
    state = guard.state_dict()["monitor"]["action"]
    assert state["engaged"]
    assert ng.HoldNoiseFloor().state_dict().keys() == state.keys()  # the controller's own layout, plain data


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_validation_metric_with_mode_max_judges_best_and_restore() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    flip = torch.rand(160, generator=g) < 0.4  # label noise, so the model memorises
    y[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=g)
    train = DataLoader(TensorDataset(x[:100], y[:100]), batch_size=100)
    val = DataLoader(TensorDataset(x[100:], y[100:]), batch_size=60)
    seen: list[tuple[int, float, float]] = []  # (step, val_acc, val_loss) at each validation

    class Record(L.Callback):
        def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
            if not trainer.sanity_checking:
                m = trainer.callback_metrics
                seen.append((trainer.global_step, float(m["val_acc"]), float(m["val_loss"])))

    guard = NormGuardCallback(every_n_steps=1, noise_floor=0.5, action="stop", monitor="val_acc", mode="max")
    L.Trainer(max_epochs=150, logger=False, callbacks=[Record(), guard], **QUIET).fit(Classifier(), train, val)
    best = guard.monitor.best
    assert best is not None and best.mode == "max"
    top = max(acc for _, acc, _ in seen)
    assert best.value == pytest.approx(top)
    assert best.step == next(step for step, acc, _ in seen if acc == pytest.approx(top))
    assert guard.should_stop
    restore = next(e for e in guard.events if e.kind == EventKind.RESTORE)
    assert restore.data["monitor"] == "val_acc" and restore.data["best_step"] == best.step


def test_missing_monitor_metric_lists_the_keys() -> None:
    train, val = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2, monitor="val_acc", mode="max")
    with pytest.raises(RuntimeError, match=r"no metric 'val_acc'.*'val_loss'"):
        L.Trainer(max_steps=8, logger=False, callbacks=[guard], num_sanity_val_steps=0, **QUIET).fit(
            Regressor(mlp()), train, val
        )


def test_nonfinite_validation_loss_is_an_event_in_a_trainer() -> None:
    class NaNValidation(Regressor):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.tensor(float("nan")))

    train, val = loaders(random_regression(), batch_size=16)
    guard = NormGuardCallback(every_n_steps=2)
    L.Trainer(max_epochs=2, logger=False, callbacks=[guard], num_sanity_val_steps=0, **QUIET).fit(
        NaNValidation(mlp()), train, val
    )
    bad = [e for e in guard.events if e.kind == EventKind.NONFINITE_VAL_LOSS]
    assert len(bad) == 2 and bad[-1].data["count"] == 2


def test_a_nan_monitor_value_does_not_make_a_false_stop() -> None:  # D2, through the Lightning door
    values = iter([0.9, float("nan"), 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04])

    class Scripted(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return (self.net(x) - y).pow(2).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", (self.net(x) - y).pow(2).mean() * 1e-3)  # other units: would become "best"
            self.log("val_mae", next(values))  # improves at every finite validation

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
    data = DataLoader(TensorDataset(x, y), batch_size=32)
    guard = NormGuardCallback(every_n_steps=1, noise_floor=1.0, action="stop", monitor="val_mae", patience=3)
    L.Trainer(max_epochs=12, logger=False, callbacks=[guard], num_sanity_val_steps=0, **QUIET).fit(
        Scripted(), data, data
    )
    assert not guard.should_stop
    assert guard.monitor.best is not None and guard.monitor.best.value == pytest.approx(0.04)
