"""The one validated options object every front door builds and the core reads.

:class:`GuardOptions` is frozen and checked once, at construction, before any model is
seen: a bad value raises at ``NormGuard(...)`` / ``NormGuardCallback(...)``, naming the
argument. The action is resolved and the detector built here, so the front doors hold
no configuration logic of their own.

Example:
    >>> opts = GuardOptions(every_n_steps=10, noise_floor=1.0, action=["weight_decay", "stop"])
    >>> opts.action.describe(), opts.detector.patience
    ('escalation(weight_decay -> stop)', 6)
    >>> GuardOptions(mode="max")
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `mode` to be 'min' when no validation metric is named (`monitor=None`) but got 'max'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from normguard.actions import Action, resolve_action
from normguard.detector import NearInterpolationDetector
from normguard.sinks import check_sinks
from normguard.validation import check_bool, check_choice, check_int, check_name

__all__ = ["DEFAULT_PATIENCE", "GuardOptions"]

DEFAULT_PATIENCE = 6


@dataclass(frozen=True)
class GuardOptions:
    """Every option of :class:`~normguard.NormGuard` and the framework callbacks.

    Args:
        every_n_steps: optimizer steps between checks (one norm pass, one host transfer).
        noise_floor: σ̂²: a float ≥ 0, ``"auto"`` (from validation) or ``None``.
        action: a name, an :class:`~normguard.actions.Action`, a callable or a list
            (see :mod:`normguard.actions`); ``None`` warns.
        patience: decisions the signature must persist before firing (default 6).
        detector: a configured :class:`~normguard.detector.NearInterpolationDetector`
            (instead of ``noise_floor``/``patience``).
        monitor: name of a validation metric that judges "best", "still improving" and the
            restore (e.g. ``"val_acc"``); ``None``: the validation loss does.
        mode: ``"min"`` or ``"max"``: whether lower or higher ``monitor`` is better.
        include_frozen, track_init_distance, track_update_size, offload: norm engine options.
        log_layers: one tag per layer.
        sinks: extra sinks (see :mod:`normguard.sinks`); logging rank only.
        best_weights_in_checkpoint: put the best-validation weights (one copy of the model
            state) in the guard's checkpoint state; ``False`` keeps checkpoints small and a
            resumed run learns "best" again from its next validation.
        max_history: how many verdicts and events are kept in memory (and events in the
            checkpoint: about 200 bytes each); older ones are dropped.
    """

    every_n_steps: int = 50
    noise_floor: float | str | None = None
    action: Any = None
    patience: int | None = None
    detector: NearInterpolationDetector | None = None
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    include_frozen: bool = False
    track_init_distance: bool = False
    track_update_size: bool = False
    offload: Literal["cpu", "device"] = "device"
    log_layers: bool = True
    sinks: Sequence[Any] = field(default=())
    best_weights_in_checkpoint: bool = True
    max_history: int = 1000
    interval_name: str = "every_n_steps"

    def __post_init__(self) -> None:
        check_int(self.interval_name, self.every_n_steps, 1)
        if self.detector is not None:
            if not isinstance(self.detector, NearInterpolationDetector):
                raise TypeError(
                    "Expected argument `detector` to be a NearInterpolationDetector or None but got "
                    f"{type(self.detector).__name__}."
                )
            if self.noise_floor is not None or self.patience is not None:
                raise ValueError(
                    "Expected either argument `detector` or `noise_floor`/`patience`, not both: configure the "
                    "floor and patience on the detector."
                )
            detector = self.detector
        else:
            patience = DEFAULT_PATIENCE if self.patience is None else check_int("patience", self.patience, 1)
            detector = NearInterpolationDetector(noise_floor=self.noise_floor, patience=patience)
        check_name("monitor", self.monitor, optional=True)
        check_choice("mode", self.mode, ("min", "max"))
        if self.monitor is None and self.mode != "min":
            raise ValueError(
                "Expected argument `mode` to be 'min' when no validation metric is named (`monitor=None`) "
                f"but got {self.mode!r}."
            )
        detector.mode = self.mode
        for name in ("include_frozen", "track_init_distance", "track_update_size", "log_layers"):
            check_bool(name, getattr(self, name))
        check_bool("best_weights_in_checkpoint", self.best_weights_in_checkpoint)
        check_choice("offload", self.offload, ("cpu", "device"))
        check_int("max_history", self.max_history, 1)
        object.__setattr__(self, "detector", detector)
        object.__setattr__(self, "action", resolve_action(self.action))
        object.__setattr__(self, "sinks", tuple(check_sinks(self.sinks)))

    @property
    def resolved_action(self) -> Action:
        assert isinstance(self.action, Action)
        return self.action

    @property
    def resolved_detector(self) -> NearInterpolationDetector:
        assert self.detector is not None
        return self.detector
