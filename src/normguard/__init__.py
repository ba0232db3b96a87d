"""normguard: watch weight norms during training and act on the near-interpolation signature.

``import normguard`` loads the runtime guard only (torch, numpy); the science
(:mod:`normguard.science`: ``spectrum``, ``theory``, ``pilot``, needing scipy) loads on
first use, and matplotlib only when a figure is drawn.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Linear(3, 1)
    >>> sorted(ng.layer_norms(model))
    ['<root>']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from normguard.actions import Action, Escalation, HoldNoiseFloor, RaiseWeightDecay, StopTraining, Warn
from normguard.detector import Condition, NearInterpolationDetector, Reason, Verdict, label_noise_floor
from normguard.events import Event, EventKind
from normguard.guard import NormGuard
from normguard.monitor import StateError
from normguard.norms import NormEngine, NormSnapshot, group_parameters, layer_norms, total_norm
from normguard.options import GuardOptions
from normguard.sinks import Sink

if TYPE_CHECKING:
    from normguard.science import pilot, spectrum, theory
    from normguard.science.spectrum import (
        AlphaEstimate,
        CovarianceAccumulator,
        estimate_alpha,
        estimate_alpha_streaming,
        layer_input_alphas,
    )

__version__ = "0.2.0.dev0"

_LAZY_MODULES = {"spectrum", "theory", "pilot", "science"}
_LAZY_SPECTRUM = {
    "AlphaEstimate",
    "CovarianceAccumulator",
    "estimate_alpha",
    "estimate_alpha_streaming",
    "layer_input_alphas",
}


def __getattr__(name: str) -> Any:
    """Load the science on first use: ``ng.spectrum``, ``ng.theory``, ``ng.pilot``, ``ng.estimate_alpha``."""
    if name in _LAZY_MODULES:
        module = importlib.import_module("normguard.science" if name == "science" else f"normguard.science.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_SPECTRUM:
        value = getattr(importlib.import_module("normguard.science.spectrum"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'normguard' has no attribute {name!r}")


__all__ = [
    "Action",
    "AlphaEstimate",
    "Condition",
    "CovarianceAccumulator",
    "Escalation",
    "Event",
    "EventKind",
    "GuardOptions",
    "HoldNoiseFloor",
    "NearInterpolationDetector",
    "NormEngine",
    "NormGuard",
    "NormSnapshot",
    "RaiseWeightDecay",
    "Reason",
    "Sink",
    "StateError",
    "StopTraining",
    "Verdict",
    "Warn",
    "__version__",
    "estimate_alpha",
    "estimate_alpha_streaming",
    "group_parameters",
    "label_noise_floor",
    "layer_input_alphas",
    "layer_norms",
    "pilot",
    "spectrum",
    "theory",
    "total_norm",
]
