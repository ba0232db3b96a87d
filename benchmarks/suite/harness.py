"""Run one (task, noise, seed, arm) in a real Lightning ``Trainer`` and record its per-epoch trace.

The trace (one record per epoch, at the end of its validation) holds what any stopping or
regularising rule could have looked at, plus the clean test metric it cannot see:

==================  ==========================================================================
key                 meaning
==================  ==========================================================================
``epoch``           1-based epoch
``train_loss``      mean training loss over the epoch's batches (as logged in training mode)
``val_loss``        validation loss (noisy labels)
``val_metric``      validation accuracy % (classification) or MSE (regression)
``test_metric``     clean test accuracy % or test MSE, at every epoch
``norm``            total ℓ2 norm of all trainable parameters
``norm_decayed``    ℓ2 norm of the parameters with ndim ≥ 2 (the weights a decay acts on)
``layers``          per-layer norms (``normguard.layer_norms``), keyed by module name
``dist_best``       ℓ2 distance from the best-validation-metric-so-far weights
``dist_best_loss``  ℓ2 distance from the best-validation-loss-so-far weights
``dist_init``       ℓ2 distance from the initial weights
``weight_decay``    the optimizer's weight decay per param group (arms that change it)
``step_loss``       grid 2 only: the training loss of every optimizer step of the epoch
``lr``              grid 2 only: the learning rate of group 0 at the end of the epoch
``floor``           grid 2, normguard arms: the floor the detector used after this validation
                    (the known floor, or the latest estimate with ``noise_floor="estimate"``)
``floor_low/high``  grid 2, estimate arm: the estimate's interval (when the callback exposes it)
``hold_lambda``     grid 2, ``hold_floor`` arms: the controller's λ per group (``scalars()``)
==================  ==========================================================================

Grid 2 (``suite/grid2.py``) adds the noise kind (``uniform``: label redrawn from all C
classes; ``other``: moved to a random other class; ``pair``: class k → k+1 mod C; ``clean``),
the optimizer (``adamw``: AdamW lr 1e-3, decay 0.01, constant; ``sgd``: SGD momentum 0.9,
decay 5e-4, linear warmup over the first 5 % of steps then a cosine to 0) and
``engaged_step`` (the first optimizer step after which the ``hold_floor`` controller
reported itself engaged).

A normguard arm's result also holds ``verdicts``: every verdict of its ``NormGuardCallback``
(``cb.verdicts``) as ``step``, ``reason``, ``streak``, ``rule``, ``conditions`` (each detector
condition True/False/None) and ``growth_exponent``, and its events (a restore's best step,
a decay change's old and new value).

Cost of the recorder: three flat copies of the parameters (init, best by metric, best by loss)
and one test-set forward pass per epoch; it is not part of any arm.

Results are stored compactly by :mod:`suite.store` (one xz-compressed JSON-lines file per
task under ``benchmarks/results/suite/``, one line per run).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import normguard as ng

from . import store
from .tasks import ALL_TASKS, TaskData, TaskSpec, build_data, loss_fn, metric_value

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "suite"
TRACE_VERSION = 1
# events whose numbers are kept in a result (what a restore restored, what a decay became)
EVENT_DATA_KINDS = ("restore", "weight_decay_changed")
EVENT_DATA_KEYS = ("best_step", "best_value", "old", "new", "group", "engaged", "train_loss", "noise_floor", "by")


class SuiteModule(L.LightningModule):
    """One task's model, loss and metrics; logs ``train_loss`` (step), ``val_loss`` and ``val_<metric>``.

    ``optimizer``: ``"adamw"`` (lr 1e-3, constant) or ``"sgd"`` (the task's ``sgd_lr``,
    momentum 0.9, decay 5e-4, linear warmup over 5 % of ``total_steps`` then a cosine to 0).
    ``record_steps`` keeps every step's training loss for the trace; ``floor_metric`` holds a
    ``normguard`` ``NoiseFloorMetric`` updated in ``validation_step`` (the estimate arm's one line).
    """

    def __init__(
        self,
        spec: TaskSpec,
        data: TaskData,
        model: nn.Module,
        weight_decay: float = 0.01,
        log_step_loss: bool = True,
        *,
        optimizer: str = "adamw",
        total_steps: int = 0,
        record_steps: bool = False,
        floor_metric: nn.Module | None = None,
        augment_seed: int = 0,
    ) -> None:
        super().__init__()
        self.log_step_loss = log_step_loss  # only normguard reads it; self.log costs ~1 ms a step on CPU
        self.spec, self.data, self.model = spec, data, model
        self.loss_fn = loss_fn(spec)
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.total_steps = total_steps
        self.record_steps = record_steps
        self.step_losses: list[Tensor] = []
        if floor_metric is not None:
            self.floor_metric = floor_metric
        self.augment_gen = torch.Generator().manual_seed(1_000 + augment_seed)
        self.epoch_loss_sum: Tensor = torch.zeros(())
        self.epoch_batches = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, _: int) -> Tensor:
        x, y = batch
        if self.spec.augment is not None:
            x = self.spec.augment(x, self.augment_gen)
        loss = self.loss_fn(self.model(x), y)
        if self.log_step_loss:
            self.log("train_loss", loss, on_step=True, on_epoch=False)
        if self.record_steps:
            self.step_losses.append(loss.detach())
        self.epoch_loss_sum = self.epoch_loss_sum + loss.detach()
        self.epoch_batches += 1
        return loss

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        out = self.model(x)
        self.log("val_loss", self.loss_fn(out, y), on_epoch=True)
        self.log(f"val_{self.spec.metric}", metric_value(self.spec, out, y), on_epoch=True)
        if hasattr(self, "floor_metric"):
            self.floor_metric.update(out, y)

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=self.weight_decay)
        if self.optimizer_name != "sgd":
            raise ValueError(f"Expected optimizer 'adamw' or 'sgd' but got {self.optimizer_name!r}.")
        opt = torch.optim.SGD(self.model.parameters(), lr=self.spec.sgd_lr, momentum=0.9, weight_decay=5e-4)
        total = max(self.total_steps, 1)
        warmup = max(1, round(0.05 * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def take_epoch_loss(self) -> float:
        """Mean training loss since the last call (host sync: once per epoch)."""
        value = float(self.epoch_loss_sum) / max(self.epoch_batches, 1)
        self.epoch_loss_sum, self.epoch_batches = torch.zeros(()), 0
        return value

    def take_step_losses(self) -> list[float]:
        """Every step's training loss since the last call (host sync: once per epoch)."""
        values = torch.stack(self.step_losses).tolist() if self.step_losses else []
        self.step_losses = []
        return [float(f"{v:.5g}") for v in values]

    @torch.no_grad()
    def test_metric(self) -> float:
        was_training = self.model.training
        self.model.eval()
        value = metric_value(self.spec, self.model(self.data.x_test), self.data.y_test)
        self.model.train(was_training)
        return value


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters() if p.requires_grad])


def _r(x: float) -> float:
    return float(f"{x:.6g}")


class TraceRecorder(Callback):
    """Appends one trace record per validation (see the module doc); put it first in the callbacks."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._init: Tensor | None = None
        self._best: dict[str, tuple[float, Tensor]] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._init = _flat(pl_module.model)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        module: SuiteModule = pl_module  # type: ignore[assignment]
        spec = module.spec
        metrics = trainer.callback_metrics
        val_loss = float(metrics["val_loss"])
        val_metric = float(metrics[f"val_{spec.metric}"])
        flat = _flat(module.model)
        sign = -1.0 if spec.mode == "max" else 1.0
        for key, value in (("metric", sign * val_metric), ("loss", val_loss)):
            if key not in self._best or value < self._best[key][0]:
                self._best[key] = (value, flat.clone())
        assert self._init is not None
        decayed = [p for p in module.model.parameters() if p.requires_grad and p.ndim >= 2]
        record = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": _r(module.take_epoch_loss()),
            "val_loss": _r(val_loss),
            "val_metric": _r(val_metric),
            "test_metric": _r(module.test_metric()),
            "norm": _r(float(flat.norm())),
            "norm_decayed": _r(math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in decayed))),
            "layers": {k: _r(float(v)) for k, v in ng.layer_norms(module.model).items()},
            "dist_best": _r(float((flat - self._best["metric"][1]).norm())),
            "dist_best_loss": _r(float((flat - self._best["loss"][1]).norm())),
            "dist_init": _r(float((flat - self._init).norm())),
            "weight_decay": [_r(float(g["weight_decay"])) for o in trainer.optimizers for g in o.param_groups],
        }
        if getattr(module, "record_steps", False):  # the HF harness passes a stand-in module
            record["step_loss"] = module.take_step_losses()
            record["lr"] = _r(float(trainer.optimizers[0].param_groups[0]["lr"]))
        self.records.append(record)


def _guard_parts(callbacks: list[Any]) -> tuple[Any, Any]:
    """(detector, action) of the first normguard callback among ``callbacks`` (None where absent)."""
    for cb in callbacks:
        monitor = getattr(cb, "monitor", None)
        if monitor is not None and hasattr(monitor, "detector"):
            return monitor.detector, getattr(monitor, "action", None)
    return None, None


class ControllerProbe(Callback):
    """Grid 2: what the guard's floor and controller did; put it *after* the normguard callback.

    At every training batch end it notes the first step at which the ``hold_floor`` action
    reports ``engaged``; at every validation end it adds ``floor`` (the detector's floor in
    effect), the estimate's interval where the callback exposes one, and ``hold_lambda``
    (the action's ``scalars()``) to the recorder's last record.
    """

    def __init__(self, recorder: TraceRecorder, guard: list[Any]) -> None:
        self.recorder, self.guard = recorder, guard
        self.engaged_step: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.engaged_step is None:
            _, action = _guard_parts(self.guard)
            if action is not None and bool(getattr(action, "engaged", False)):
                self.engaged_step = int(trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.recorder.records:
            return
        detector, action = _guard_parts(self.guard)
        record = self.recorder.records[-1]
        if detector is not None:
            floor = getattr(detector, "current_floor", None)
            floor = floor() if callable(floor) else floor
            record["floor"] = None if floor is None else _r(float(floor))
            interval = getattr(detector, "floor_interval", None)
            interval = interval() if callable(interval) else interval
            if interval is not None:
                record["floor_low"], record["floor_high"] = (_r(float(v)) for v in interval)
        if action is not None and hasattr(action, "scalars"):
            record["hold_lambda"] = {k: _r(float(v)) for k, v in action.scalars().items()}


# ---------------------------------------------------------------------- arms
class ArmUnavailable(RuntimeError):
    """The installed normguard lacks the options this arm needs."""


@dataclass
class ArmContext:
    """What an arm's factory may use."""

    spec: TaskSpec
    data: TaskData
    steps_per_epoch: int
    tmpdir: str
    check_every: int | None = None  # grid 2: optimizer steps between normguard checks


@dataclass
class Arm:
    """A benchmark arm: a callbacks factory and how the final model is chosen."""

    name: str
    callbacks: Callable[[ArmContext], list[Callback]]
    description: str
    uses_checkpoint: bool = False
    normguard: bool = False
    weight_decay: float = 0.01
    notes: list[str] = field(default_factory=list)
    floor_metric: bool = False  # the module holds a NoiseFloorMetric (noise_floor="estimate")


def _early_stopping(ctx: ArmContext) -> list[Callback]:
    monitor, mode = f"val_{ctx.spec.metric}", ctx.spec.mode
    return [
        EarlyStopping(monitor=monitor, patience=10, mode=mode, check_on_train_epoch_end=False),
        ModelCheckpoint(dirpath=ctx.tmpdir, monitor=monitor, mode=mode, save_top_k=1, save_weights_only=True),
    ]


def normguard_arm(
    action: Callable[[], Any] | Any, *, validation_metric: bool = True, auto_floor: bool = False
) -> Callable[[ArmContext], list]:
    """A factory for ``NormGuardCallback(action=...)`` with the task's known floor (or ``"auto"``
    with ``auto_floor``), checked once per epoch.

    Raises :class:`ArmUnavailable` when the installed callback rejects the options (the
    planned ``monitor``/``mode`` and the ``hold_floor`` actions are not in every version).
    """

    def build(ctx: ArmContext) -> list[Callback]:
        from normguard.lightning import NormGuardCallback

        try:
            act = action() if callable(action) and not isinstance(action, (str, list)) else action
        except (AttributeError, TypeError, ValueError) as exc:
            raise ArmUnavailable(f"action unavailable: {exc}") from exc
        kwargs: dict[str, Any] = {
            "every_n_train_steps": ctx.steps_per_epoch,
            "noise_floor": "auto" if auto_floor else ctx.data.floor,
            "action": act,
            "val_loss": "val_loss",
        }
        if validation_metric:
            kwargs |= {"monitor": f"val_{ctx.spec.metric}", "mode": ctx.spec.mode}
        try:
            return [NormGuardCallback(**kwargs)]
        except (TypeError, ValueError) as exc:
            raise ArmUnavailable(f"NormGuardCallback({', '.join(sorted(kwargs))}) rejected: {exc}") from exc

    return build


def _hold_restore() -> Any:
    return ng.HoldNoiseFloor()  # type: ignore[attr-defined]  # restore_best_at_end="engaged", the default


def _hold_last_weights() -> Any:
    return ng.HoldNoiseFloor(restore_best_at_end=False)  # type: ignore[attr-defined]


ARMS: dict[str, Arm] = {
    "none": Arm("none", lambda ctx: [], "full budget, last weights"),
    "early_stopping": Arm(
        "early_stopping",
        _early_stopping,
        "EarlyStopping(monitor=val metric, patience=10) + best ModelCheckpoint loaded before testing",
        uses_checkpoint=True,
    ),
    "stop": Arm("stop", normguard_arm("stop"), "NormGuardCallback(action='stop'), known floor", normguard=True),
    "stop_val_loss": Arm(
        "stop_val_loss",
        normguard_arm("stop", validation_metric=False),
        "NormGuardCallback(action='stop'), known floor, best judged by val_loss (no monitor; not in the default arms)",
        normguard=True,
    ),
    "stop_auto": Arm(
        "stop_auto",
        normguard_arm("stop", auto_floor=True),
        "NormGuardCallback(action='stop', noise_floor='auto') (not in the default arms; see replay_detector.py)",
        normguard=True,
    ),
    "hold_floor": Arm(
        "hold_floor",
        normguard_arm(_hold_last_weights),
        "NormGuardCallback(action=HoldNoiseFloor(restore_best_at_end=False)): the last weights",
        normguard=True,
    ),
    "hold_floor_restore": Arm(
        "hold_floor_restore",
        normguard_arm(_hold_restore),
        "NormGuardCallback(action=HoldNoiseFloor()): the default restore_best_at_end='engaged' (the best "
        "weights at the end if the controller engaged; runs before 2026-11-28 used True, always)",
        normguard=True,
    ),
    "escalation": Arm(
        "escalation",
        normguard_arm(["weight_decay", "stop"]),
        "NormGuardCallback(action=['weight_decay', 'stop'])",
        normguard=True,
    ),
}


def hold_floor_arm(*, estimate: bool) -> Callable[[ArmContext], list]:
    """Grid 2: ``NormGuardCallback(noise_floor=<known> or "estimate", action="hold_floor",
    monitor=val metric)``, checked every ``ctx.check_every`` optimizer steps (the public API,
    all defaults of the action)."""

    def build(ctx: ArmContext) -> list[Callback]:
        from normguard.lightning import NormGuardCallback

        kwargs: dict[str, Any] = {
            "every_n_train_steps": ctx.check_every or ctx.steps_per_epoch,
            "noise_floor": "estimate" if estimate else ctx.data.floor,
            "action": "hold_floor",
            "val_loss": "val_loss",
            "monitor": f"val_{ctx.spec.metric}",
            "mode": ctx.spec.mode,
        }
        try:
            return [NormGuardCallback(**kwargs)]
        except (TypeError, ValueError) as exc:
            raise ArmUnavailable(f"NormGuardCallback({', '.join(sorted(kwargs))}) rejected: {exc}") from exc

    return build


ARMS["hold_known"] = Arm(
    "hold_known",
    hold_floor_arm(estimate=False),
    "NormGuardCallback(noise_floor=<true floor>, action='hold_floor', monitor=val metric) (grid 2)",
    normguard=True,
)
ARMS["hold_estimate"] = Arm(
    "hold_estimate",
    hold_floor_arm(estimate=True),
    "NormGuardCallback(noise_floor='estimate', action='hold_floor', monitor=val metric) with a "
    "NoiseFloorMetric updated in validation_step (grid 2)",
    normguard=True,
    floor_metric=True,
)


def _noise_floor_metric() -> nn.Module:
    try:
        from normguard.noise_metric import NoiseFloorMetric  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ArmUnavailable(f"normguard.noise_metric.NoiseFloorMetric unavailable: {exc}") from exc
    return NoiseFloorMetric()


# ---------------------------------------------------------------------- one run
def arm_records(callbacks: list[Any], steps_per_epoch: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events and verdicts of an arm's normguard callbacks, as a result records them."""
    events = []
    verdicts = []
    for cb in callbacks:
        for e in getattr(cb, "events", []) or []:
            kind = getattr(e.kind, "value", str(e.kind))
            record = {"kind": kind, "step": int(e.step), "epoch": _r(e.step / steps_per_epoch)}
            if kind in EVENT_DATA_KINDS:
                record["data"] = {k: v for k, v in e.to_dict()["data"].items() if k in EVENT_DATA_KEYS}
            events.append(record)
        for v in getattr(cb, "verdicts", []) or []:
            verdicts.append(
                {
                    "step": int(v.step),
                    "reason": v.reason.value,
                    "streak": int(v.streak),
                    "rule": v.rule,
                    "conditions": dict(v.conditions),
                    "growth_exponent": None if v.growth_exponent is None else _r(v.growth_exponent),
                }
            )
    return events, verdicts


@dataclass(frozen=True)
class RunRef:
    """Where one run's result is stored: the store ``root`` and the run's :func:`store.run_key`."""

    root: Path
    key: tuple[Any, ...]


def saved_result(path: RunRef | None, budget: int) -> dict[str, Any] | None:
    """The result saved for ``path`` if it has this epochs budget and the current trace version."""
    if path is None:
        return None
    saved = store.find(path.root, path.key)
    if saved is None:
        return None
    return saved if saved.get("version") == TRACE_VERSION and saved.get("budget") == budget else None


def finish_result(
    path: RunRef | None,
    *,
    task: str,
    noise: float,
    seed: int,
    arm: str,
    budget: int,
    data: TaskData,
    steps_per_epoch: int,
    records: list[dict[str, Any]],
    final_test_metric: float,
    restored: bool,
    seconds: float,
    callbacks: list[Any],
    **extra: Any,
) -> dict[str, Any]:
    """One run's result in the suite's schema (``extra`` keys go before the events), saved to ``path`` if given."""
    spec = ALL_TASKS[task]
    events, verdicts = arm_records(callbacks, steps_per_epoch)
    result = {
        "version": TRACE_VERSION,
        "task": task,
        "kind": spec.kind,
        "metric": spec.metric,
        "mode": spec.mode,
        "noise": noise,
        "seed": seed,
        "arm": arm,
        "budget": budget,
        "floor": data.floor,
        "steps_per_epoch": steps_per_epoch,
        "epochs_trained": len(records),
        "final_test_metric": _r(final_test_metric),
        "restored_checkpoint": restored,
        "seconds": round(seconds, 2),
        **extra,
        "events": events,
        "verdicts": verdicts,
        "trace": records,
    }
    if path is not None:
        store.append(path.root, result)
    return result


def trace_path(
    task: str,
    noise: float,
    seed: int,
    arm: str,
    root: Path = RESULTS_DIR,
    *,
    noise_kind: str = "uniform",
    optimizer: str = "adamw",
) -> RunRef:
    """The reference of one run's stored result under ``root`` (see :mod:`suite.store`)."""
    return RunRef(Path(root), (task, noise_kind, optimizer, float(noise), int(seed), arm))


def run(
    task: str,
    noise: float,
    seed: int,
    arm: str,
    *,
    epochs: int | None = None,
    root: Path | None = RESULTS_DIR,
    force: bool = False,
    noise_kind: str = "uniform",
    optimizer: str = "adamw",
    check_every: int | None = None,
    spec: TaskSpec | None = None,
) -> dict[str, Any]:
    """Train one arm and return (and, with ``root``, save) its result and trace.

    A saved result with the same epochs budget and trace version is reused unless ``force``.
    Raises :class:`ArmUnavailable` for a normguard arm the installed API cannot build.
    ``noise_kind`` (``"uniform"``, ``"other"``, ``"pair"``; ``noise=0`` for clean labels),
    ``optimizer`` (``"adamw"``, ``"sgd"``), ``check_every`` and ``spec`` (a task variant, e.g.
    with fewer epochs or rows) are grid 2's; with their defaults a run is the original suite's.
    Grid-2 results (any of them set) also record every step's training loss and what the
    guard's floor and controller did (:class:`ControllerProbe`).
    """
    spec = spec or ALL_TASKS[task]
    grid2 = noise_kind != "uniform" or optimizer != "adamw" or check_every is not None
    budget = epochs or spec.epochs
    path = (
        trace_path(task, noise, seed, arm, root, noise_kind=noise_kind, optimizer=optimizer)
        if root is not None
        else None
    )
    saved = saved_result(path, budget) if not force else None
    if saved is not None:
        return saved
    arm_spec = ARMS[arm]
    floor_metric = _noise_floor_metric() if arm_spec.floor_metric else None
    torch.manual_seed(seed)
    L.seed_everything(seed, verbose=False)
    data = build_data(spec, noise, seed, noise_kind)
    model = spec.build_model(data)
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=spec.batch_size, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=len(data.y_val))
    steps_per_epoch = len(train)
    module = SuiteModule(
        spec,
        data,
        model,
        weight_decay=arm_spec.weight_decay,
        log_step_loss=arm_spec.normguard,
        optimizer=optimizer,
        total_steps=budget * steps_per_epoch,
        record_steps=grid2,
        floor_metric=floor_metric,
        augment_seed=seed,
    )
    recorder = TraceRecorder()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ArmContext(spec, data, steps_per_epoch, tmp, check_every)
        arm_callbacks = arm_spec.callbacks(ctx)
        probe = [ControllerProbe(recorder, arm_callbacks)] if grid2 and arm_spec.normguard else []
        trainer = L.Trainer(
            max_epochs=budget,
            callbacks=[recorder, *arm_callbacks, *probe],
            logger=False,
            enable_checkpointing=arm_spec.uses_checkpoint,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
        )
        started = time.perf_counter()
        trainer.fit(module, train, val)
        seconds = time.perf_counter() - started
        restored_from = None
        for cb in arm_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
                module.load_state_dict(torch.load(cb.best_model_path, weights_only=False)["state_dict"])
                restored_from = cb.best_model_path
    extra: dict[str, Any] = {}
    if grid2:
        extra = {
            "grid": 2,
            "noise_kind": noise_kind,
            "optimizer": optimizer,
            "check_every": check_every,
            "engaged_step": probe[0].engaged_step if probe else None,
        }
    return finish_result(
        path,
        task=task,
        noise=noise,
        seed=seed,
        arm=arm,
        budget=budget,
        data=data,
        steps_per_epoch=steps_per_epoch,
        records=recorder.records,
        final_test_metric=module.test_metric(),
        restored=restored_from is not None,
        seconds=seconds,
        callbacks=arm_callbacks,
        **extra,
    )
