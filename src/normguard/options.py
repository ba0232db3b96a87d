"""The one validated options object every front door builds and the core reads.

:class:`GuardOptions` is frozen and checked once, at construction, before any model is
seen: a bad value raises at ``NormGuard(...)`` / ``NormGuardCallback(...)``, naming the
argument. It is a pure value: it holds what the user chose, never a live object. Each
guard builds its own detector and action from it (:meth:`GuardOptions.build_detector`,
:meth:`GuardOptions.build_action`); a detector or action object the user passes is a
template that is copied, never mutated, so one object given to two guards shares nothing.

Example:
    >>> opts = GuardOptions(every_n_steps=10, noise_floor=1.0, action=["weight_decay", "stop"])
    >>> opts.build_action().describe(), opts.build_detector().patience
    ('escalation(weight_decay -> stop)', 10)
    >>> GuardOptions(mode="max")
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `mode` to be 'min' when no validation metric is named (`monitor=None`) but got 'max'.

Each option's name, type and default are written once, as a field of :class:`GuardOptions`.
The front doors take them as ``**options`` and build the object with
:meth:`GuardOptions.from_kwargs`; :func:`takes_options` writes the fields into the front
door's signature, so ``help()``, ``inspect.signature`` and the editors that read the live
signature (IPython, Jupyter) list them with their defaults. Only what differs between front
doors (the check interval's name and default, the loop's own arguments) is spelled in the
front door: the fields marked ``per_door`` below, which :data:`OPTION_NAMES` leaves out.

Example:
    >>> OPTION_NAMES[:3], "every_n_steps" in OPTION_NAMES
    (('noise_floor', 'action', 'patience'), False)
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from normguard.actions import Action, resolve_action
from normguard.detector import NearInterpolationDetector
from normguard.sinks import check_sinks
from normguard.validation import check_bool, check_choice, check_int, check_name

__all__ = ["DEFAULT_PATIENCE", "OPTION_NAMES", "GuardOptions", "takes_options"]

DEFAULT_PATIENCE = 10


#: a field each front door spells itself (its own name and default): not one of ``**options``
_PER_DOOR = {"per_door": True}


@dataclass(frozen=True)
class GuardOptions:
    """Every option of :class:`~normguard.NormGuard` and the framework callbacks.

    Args:
        every_n_steps: optimizer steps between checks (one norm pass, one host transfer).
        interval_name: the name the front door gives ``every_n_steps`` (in its errors). These two
            are spelled by each front door itself, with its own default: not in ``**options``.
        noise_floor: σ̂²: a float ≥ 0 (known), ``"estimate"`` (estimated from the model's own
            validation predictions), ``"auto"`` (legacy: the lowest validation loss) or ``None``.
        action: a name, an :class:`~normguard.actions.Action`, a callable or a list
            (see :mod:`normguard.actions`); ``None`` warns.
        patience: decisions in a row the signature must hold before firing (default 10, EarlyStopping's
            usual patience; with a known floor, 7 once the training loss is under it: see
            :class:`~normguard.detector.NearInterpolationDetector`'s ``floor_patience``).
        detector: a configured :class:`~normguard.detector.NearInterpolationDetector`
            (instead of ``noise_floor``/``patience``).
        monitor: name of a validation metric that judges "best", "still improving" and the
            restore (e.g. ``"val_acc"``); ``None``: the validation loss does.
        mode: ``"min"`` or ``"max"``: whether lower or higher ``monitor`` is better.
        include_frozen, track_init_distance, track_update_size, offload: norm engine options.
        log_layers: one tag per layer.
        sinks: extra sinks (see :mod:`normguard.sinks`); logging rank only.
        best_weights_in_checkpoint: put the best-validation weights (one copy of the model
            state) in the guard's checkpoint state, and, where the detector reads ``drifted``,
            its two references (w₀ and w_best of the measured weights); ``False`` keeps
            checkpoints small and a resumed run learns "best" again from its next validation
            (and measures drift from the resumed weights).
        max_history: how many verdicts and events are kept in memory (and events in the
            checkpoint: about 200 bytes each); older ones are dropped.
    """

    every_n_steps: int = field(default=50, metadata=_PER_DOOR)
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
    interval_name: str = field(default="every_n_steps", metadata=_PER_DOOR)

    def __post_init__(self) -> None:
        check_int(self.interval_name, self.every_n_steps, 1)
        self.build_detector()  # checks noise_floor, patience and detector (the result is dropped)
        check_name("monitor", self.monitor, optional=True)
        check_choice("mode", self.mode, ("min", "max"))
        if self.monitor is None and self.mode != "min":
            raise ValueError(
                "Expected argument `mode` to be 'min' when no validation metric is named (`monitor=None`) "
                f"but got {self.mode!r}."
            )
        for name in ("include_frozen", "track_init_distance", "track_update_size", "log_layers"):
            check_bool(name, getattr(self, name))
        check_bool("best_weights_in_checkpoint", self.best_weights_in_checkpoint)
        check_choice("offload", self.offload, ("cpu", "device"))
        check_int("max_history", self.max_history, 1)
        resolve_action(self.action)
        check_sinks(self.sinks)

    def build_detector(self) -> NearInterpolationDetector:
        """A new detector for one guard: a copy of the ``detector`` given, or one built from
        ``noise_floor`` and ``patience``; its ``mode`` follows this object's."""
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
            detector = copy.deepcopy(self.detector)
        else:
            patience = DEFAULT_PATIENCE if self.patience is None else check_int("patience", self.patience, 1)
            detector = NearInterpolationDetector(noise_floor=self.noise_floor, patience=patience)
        detector.mode = self.mode
        return detector

    def build_action(self) -> Action:
        """A new, unbound action for one guard (an :class:`~normguard.actions.Action` given is copied)."""
        return resolve_action(self.action).fresh()

    @classmethod
    def from_kwargs(
        cls, caller: str, options: Mapping[str, Any], *, every_n_steps: Any, interval_name: str = "every_n_steps"
    ) -> GuardOptions:
        """The options a front door got as ``**options``, checked; ``caller`` names the front door
        in the ``TypeError`` an unknown name raises (as Python's own does, with a suggestion).

        Example:
            >>> GuardOptions.from_kwargs("NormGuard", {"patiense": 3}, every_n_steps=10)
            Traceback (most recent call last):
            ...
            TypeError: NormGuard() got an unexpected keyword argument 'patiense'; did you mean 'patience'?
        """
        for name in options:
            if name not in OPTION_NAMES:
                close = difflib.get_close_matches(str(name), OPTION_NAMES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{hint}")
        values = dict(options)
        if values.get("noise_floor") is not None and values.get("detector") is None:
            # the checked value (a float, "auto" or "estimate"): numpy and 0-d tensor floors become plain floats
            values["noise_floor"] = NearInterpolationDetector(noise_floor=values["noise_floor"]).noise_floor
        if "sinks" in values:
            values["sinks"] = tuple(check_sinks(values["sinks"]))
        return cls(every_n_steps=every_n_steps, interval_name=interval_name, **values)


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GuardOptions) if not f.metadata.get("per_door"))
"""The names a front door's ``**options`` accepts, in :class:`GuardOptions`' order."""

InitT = TypeVar("InitT", bound=Callable[..., None])


def takes_options(init: InitT) -> InitT:
    """Decorate a front door's ``__init__(..., **options)``: its signature (``help()``,
    ``inspect.signature``, documentation tools) lists every option of :data:`OPTION_NAMES` as a
    keyword parameter with :class:`GuardOptions`' default, in place of ``**options``.
    """
    signature = inspect.signature(init)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    spec = {f.name: f for f in fields(GuardOptions)}
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=spec[name].default, annotation=spec[name].type)
        for name in OPTION_NAMES
    ]
    init.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return init
