"""The Hugging Face door's checkpoint state: what it writes into a checkpoint and reads back.

Hugging Face saves a callback's ``state()`` (its ``ExportableState`` contract) as JSON in each
checkpoint's ``trainer_state.json``: ``args`` rebuild the callback (:func:`rebuild_args`),
``attributes`` hold the run (:func:`export`: the monitor's state through the one JSON codec of
:mod:`normguard.events`). Tensors do not go into JSON: the best weights and the drift
references go to a file beside it in the checkpoint folder (:func:`save_weights`,
:func:`weights_file`). On resume, :func:`find_saved` picks the callback's entry among the
saved ones (:func:`check_unique` keeps them apart) and :func:`load` reads it and the file back
into the monitor; when Hugging Face rebuilt the callback from its ``args``, :func:`hand_over`
gives the run back to the user's object (one built with its Trainer: :func:`keep_live`).
Nothing here imports Hugging Face: it reads the public attributes of the objects it is given.

Example:
    >>> weights_file(None), weights_file("run a"), checkpoint_folder("out", 40)
    ('normguard_best_weights.pt', 'normguard_best_weights_run_a.pt', 'out/checkpoint-40')
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from normguard.events import from_json_safe, to_json_safe
from normguard.monitor import Monitor, StateError
from normguard.options import GuardOptions

if TYPE_CHECKING:  # for the annotations only: the door imports this module
    from normguard.transformers import NormGuardTrainerCallback

__all__ = [
    "BEST_WEIGHTS_FILE",
    "check_unique",
    "checkpoint_folder",
    "export",
    "find_saved",
    "hand_over",
    "keep_live",
    "load",
    "rebuild_args",
    "save_weights",
    "weights_file",
]

log = logging.getLogger("normguard")

BEST_WEIGHTS_FILE = "normguard_best_weights.pt"
STATE_VERSION = 1
_GIVEN_TRAINER: weakref.WeakSet[NormGuardTrainerCallback] = weakref.WeakSet()  # the callbacks built with their Trainer


def weights_file(name: str | None) -> str:
    """The best-weights file of the callback called ``name``, in a checkpoint folder."""
    if name is None:
        return BEST_WEIGHTS_FILE
    safe = re.sub(r"\W", "_", name)
    return f"normguard_best_weights_{safe}.pt"


def checkpoint_folder(output_dir: Any, step: int) -> str:
    """The folder Hugging Face saves the checkpoint of ``step`` in."""
    return os.path.join(str(output_dir), f"checkpoint-{step}")


def rebuild_args(options: GuardOptions, given: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The ``args`` Hugging Face rebuilds the callback from, JSON only: the options ``given`` (as
    checked into ``options``; an action, detector or sinks that are objects are left out and named
    in ``_rebuild.not_json``) and the door's ``own`` arguments."""
    not_json = [k for k in ("action", "detector", "sinks") if not _is_json(given.get(k))]
    chosen = to_json_safe({k: getattr(options, k) for k in given if k not in not_json})
    return {**chosen, **own, "_rebuild": {"not_json": not_json}}


def export(monitor: Monitor, last_check_step: int, name: str | None, checkpoint: str | None) -> dict[str, Any]:
    """The run's state for ``trainer_state.json``: the monitor's, without the tensors that
    :func:`save_weights` writes to the file it names in the checkpoint folder ``checkpoint``."""
    state = monitor.state_dict()
    best, drift = state.get("best"), state.pop("drift", None)
    has_file = drift is not None or (isinstance(best, dict) and best.get("state") is not None)
    if isinstance(best, dict):
        state["best"] = {**best, "state": None}  # tensors: in the side file
    return {
        "version": STATE_VERSION,
        "monitor": to_json_safe(state),
        "last_check_step": last_check_step,
        "best_weights_file": weights_file(name) if has_file else None,
        "checkpoint": checkpoint if has_file else None,  # recorded: a resume from another output_dir finds it
    }


def save_weights(monitor: Monitor, folder: str, name: str | None) -> None:
    """Write the best weights and the drift references, where there are any, into ``folder``."""
    best, drift = monitor.best, monitor.engine.drift_state()
    if ((best is None or best.state is None) and drift is None) or not os.path.isdir(folder):
        return
    saved = {"step": None, "value": None, "state": None} if best is None else best.state_dict()
    torch.save({**saved, "drift": drift}, os.path.join(folder, weights_file(name)))


def find_saved(callback: NormGuardTrainerCallback, state: Any) -> dict[str, Any] | None:
    """The latest run state of ``callback`` in ``state.stateful_callbacks`` (Hugging Face appends
    an entry per save; the last one with its ``name``), else its ``restored_state`` (set by hand
    or by a rebuild)."""
    for entry in reversed(_entries(callback, state)):
        if (entry.get("args") or {}).get("name") == callback.name:
            saved = (entry.get("attributes") or {}).get("restored_state")
            if saved:
                return _valid(saved)
    return _valid(callback.restored_state) if callback.restored_state else None


def check_unique(callback: NormGuardTrainerCallback, state: Any) -> None:
    """Refuse two callbacks of one Trainer with the same ``name``: their states would collide."""
    if callback.trainer is not None:
        names = [c.name for c in callback.trainer.callback_handler.callbacks if isinstance(c, type(callback))]
    else:  # a fresh run: one saved entry per instance
        names = [(e.get("args") or {}).get("name") for e in _entries(callback, state)] if state.global_step == 0 else []
    if names.count(callback.name) > 1:
        raise ValueError(
            f"Expected each NormGuardTrainerCallback on a Trainer to have its own `name=` but "
            f"{names.count(callback.name)} are named {callback.name!r}: their checkpoint states would collide."
        )


def load(monitor: Monitor, saved: Mapping[str, Any], args: Any, step: int) -> int:
    """Load ``saved`` (from :func:`export`) into ``monitor``, with the weights file from the first
    folder that holds it: ``args.resume_from_checkpoint``, the recorded one, this run's of
    ``step``. Returns the step of the last check."""
    state = from_json_safe(saved["monitor"])
    if saved.get("best_weights_file"):
        folders = [args.resume_from_checkpoint, saved.get("checkpoint"), checkpoint_folder(args.output_dir, step)]
        paths = [os.path.join(str(f), saved["best_weights_file"]) for f in folders if isinstance(f, str)]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            log.warning("normguard: no best weights file in %s: 'best' is learned again", paths)
        else:
            side = torch.load(path, map_location="cpu", weights_only=True)
            best = state.get("best")
            if isinstance(best, dict):
                if side.get("step") != best.get("step"):
                    raise StateError(f"Expected the best weights in {path} to be of step {best['step']}.")
                best["state"] = side["state"]
            state["drift"] = side.get("drift")
    monitor.load_state_dict(state)
    return int(saved.get("last_check_step", 0))


def keep_live(callback: NormGuardTrainerCallback) -> None:
    """Remember ``callback``, built with its ``trainer``: a rebuild from a checkpoint hands over to it."""
    _GIVEN_TRAINER.add(callback)


def hand_over(rebuilt: NormGuardTrainerCallback, state: Any, not_json: list[str]) -> NormGuardTrainerCallback | None:
    """The user's callback that Hugging Face replaced by ``rebuilt`` (built from a checkpoint's
    ``args``) on the Trainer whose state is ``state``, put back in its place among the Trainer's
    callbacks; ``None`` when it was not built with its Trainer (the rebuilt one then trains)."""
    for live in list(_GIVEN_TRAINER):
        handler = live.trainer.callback_handler
        if live.trainer.state is state and live.name == rebuilt.name and live not in handler.callbacks:
            handler.callbacks[handler.callbacks.index(rebuilt)] = live
            return live
    if not_json:
        log.warning(
            "normguard: Hugging Face rebuilt NormGuardTrainerCallback without its %s options: pass "
            "NormGuardTrainerCallback(trainer=trainer) to keep your object",
            not_json,
        )
    return None


def _entries(callback: NormGuardTrainerCallback, state: Any) -> list[dict[str, Any]]:
    """The states saved under the callback's class name in ``state.stateful_callbacks``: one dict,
    or a list when a class has several instances (a dict once built; typed as a list)."""
    found = (
        state.stateful_callbacks.get(type(callback).__name__) if isinstance(state.stateful_callbacks, dict) else None
    )
    return [e for e in (found if isinstance(found, list) else [found]) if isinstance(e, dict)]


def _valid(saved: Any) -> dict[str, Any]:
    if not isinstance(saved, dict) or not isinstance(saved.get("monitor"), dict):
        raise StateError(
            f"Expected a NormGuardTrainerCallback state (a dict with a 'monitor' dict) but got {saved!r:.200}"
        )
    return saved


def _is_json(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, (str, int, float))
        or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
    )
