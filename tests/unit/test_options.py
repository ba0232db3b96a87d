"""The front doors take GuardOptions as ``**options``: same names, same defaults, same errors."""

from __future__ import annotations

import ast
import inspect
import pydoc
from dataclasses import fields

import pytest
import torch

import normguard as ng
from normguard import options as options_module
from normguard.actions import StopTraining
from normguard.options import OPTION_NAMES, GuardOptions


def test_each_option_is_declared_once_as_a_field_of_guard_options() -> None:
    # the one declaration: GuardOptions' fields; the front doors' options are those not spelled per door
    per_door = [f.name for f in fields(GuardOptions) if f.metadata.get("per_door")]
    assert per_door == ["every_n_steps", "interval_name"]
    assert list(OPTION_NAMES) == [f.name for f in fields(GuardOptions) if f.name not in per_door]
    tree = ast.parse(inspect.getsource(options_module))
    declared = [n.target.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    names = [f.name for f in fields(GuardOptions)]
    assert {name: declared.count(name) for name in names} == dict.fromkeys(names, 1)  # no second list
    assert not hasattr(options_module, "GuardOptionsKwargs")


def _front_doors() -> list[tuple[type, set[str]]]:
    """Each front door and the keyword parameters that are its own."""
    doors: list[tuple[type, set[str]]] = [(ng.NormGuard, {"model", "optimizer", "log_dir", "every_n_steps", "attach"})]
    try:
        from normguard.lightning import NormGuardCallback

        doors.append((NormGuardCallback, {"every_n_steps", "every_n_train_steps", "train_loss", "val_loss", "name"}))
    except ImportError:  # pragma: no cover - lightning is in the dev extra
        pass
    try:
        from normguard.transformers import NormGuardTrainerCallback

        own = {"every_n_steps", "trainer", "measure", "val_loss", "inflated_loss", "model_uses_num_items", "name"}
        own.add("_rebuild")
        doors.append((NormGuardTrainerCallback, own))
    except ImportError:  # pragma: no cover - transformers is in the dev extra
        pass
    return doors


@pytest.mark.parametrize(("door", "own"), _front_doors(), ids=lambda d: getattr(d, "__name__", ""))
def test_signature_lists_every_option_with_its_default(door: type, own: set[str]) -> None:
    params = inspect.signature(door).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert set(params) == own | set(OPTION_NAMES)
    defaults = {f.name: f.default for f in fields(GuardOptions)}
    for name in OPTION_NAMES:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default == defaults[name], name
    shown = pydoc.plain(pydoc.render_doc(door))  # what help() prints
    assert "noise_floor: 'float | str | None' = None" in shown and "max_history: 'int' = 1000" in shown


def test_unknown_option_is_a_type_error_naming_it() -> None:
    model = torch.nn.Linear(2, 1)
    with pytest.raises(
        TypeError, match=r"^NormGuard\(\) got an unexpected keyword argument 'patiense'; did you mean 'patience'\?$"
    ):
        ng.NormGuard(model, patiense=3)
    with pytest.raises(TypeError, match=r"^NormGuard\(\) got an unexpected keyword argument 'frobnicate'$"):
        ng.NormGuard(model, frobnicate=True)
    with pytest.raises(TypeError, match="'interval_name'"):  # a field of GuardOptions, but no option
        ng.NormGuard(model, interval_name="steps")


def test_options_reach_guard_options_unchanged() -> None:
    kwargs = {
        "noise_floor": 0.5,
        "patience": 3,
        "monitor": "val_acc",
        "mode": "max",
        "include_frozen": True,
        "offload": "cpu",
        "log_layers": False,
        "best_weights_in_checkpoint": False,
        "max_history": 7,
    }
    guard = ng.NormGuard(torch.nn.Linear(2, 1), every_n_steps=4, **kwargs)
    for key, value in kwargs.items():
        assert getattr(guard.options, key) == value, key
    assert guard.options.every_n_steps == 4 and guard.detector.patience == 3 and guard.detector.mode == "max"


def test_lightning_callback_takes_every_n_steps_and_its_old_name() -> None:
    lightning = pytest.importorskip("normguard.lightning")
    cb = lightning.NormGuardCallback(7, noise_floor=1.0, mode="max", monitor="val_acc")
    assert cb.options.every_n_steps == 7 and cb.options.mode == "max" and cb.detector.noise_floor == 1.0
    with pytest.raises(ValueError, match="`every_n_steps` to be an integer >= 1"):
        lightning.NormGuardCallback(0)
    assert lightning.NormGuardCallback(every_n_steps=5).options.every_n_steps == 5
    with pytest.warns(FutureWarning, match="every_n_train_steps"):
        assert lightning.NormGuardCallback(every_n_train_steps=5).options.every_n_steps == 5
    with pytest.raises(ValueError, match="`val_loss` to name the validation loss"):
        lightning.NormGuardCallback(monitor="val_acc", mode="max", val_loss=None)


def test_transformers_callback_state_args_are_unchanged() -> None:
    hf = pytest.importorskip("normguard.transformers")
    defaults = {
        "mode": "min",
        "include_frozen": False,
        "track_init_distance": False,
        "track_update_size": False,
        "offload": "device",
        "log_layers": True,
        "best_weights_in_checkpoint": True,
        "max_history": 1000,
    }
    door = {"measure": "decayed", "val_loss": "eval_loss", "model_uses_num_items": None, "name": None}
    args = hf.NormGuardTrainerCallback(noise_floor=0.6, action="stop").state()["args"]
    # the options passed and the door's own arguments: defaults are not written (a newer default applies)
    assert args == {"noise_floor": 0.6, "action": "stop", "every_n_steps": None, **door, "_rebuild": {"not_json": []}}
    assert not set(defaults) & set(args)
    cb = hf.NormGuardTrainerCallback(
        5,
        action=["weight_decay", "stop"],
        patience=4,
        monitor="accuracy",
        mode="max",
        model_uses_num_items=True,
        name="a",
    )
    assert cb.state()["args"] == {
        "action": ["weight_decay", "stop"],
        "patience": 4,
        "monitor": "accuracy",
        "mode": "max",
        "every_n_steps": 5,
        **door,
        "model_uses_num_items": True,
        "name": "a",
        "_rebuild": {"not_json": []},
    }
    # an action object is not JSON: the rebuild shares the live instance instead
    assert "action" not in hf.NormGuardTrainerCallback(action=StopTraining()).state()["args"]
    with pytest.raises(
        TypeError, match=r"^NormGuardTrainerCallback\(\) got an unexpected keyword argument 'nosie_floor'"
    ):
        hf.NormGuardTrainerCallback(nosie_floor=0.6)


def test_noise_floor_is_checked_once_and_kept_as_a_float() -> None:
    # a floor computed from tensors (e.g. a measured noise variance) is read as its number, so the
    # options stay plain data (the Hugging Face callback writes them to trainer_state.json)
    opts = GuardOptions.from_kwargs("NormGuard", {"noise_floor": torch.tensor(0.5)}, every_n_steps=10)
    assert type(opts.noise_floor) is float and opts.noise_floor == opts.build_detector().noise_floor == 0.5
    assert GuardOptions(every_n_steps=10, noise_floor="auto").noise_floor == "auto"
    for bad in (-1.0, "guess", float("nan"), torch.tensor([0.5])):
        with pytest.raises(ValueError, match="`noise_floor`"):
            GuardOptions(every_n_steps=10, noise_floor=bad)
