"""normguard: watch weight norms during training and act on the near-interpolation signature.

``import normguard`` loads the runtime guard only (torch, numpy, tensorboard). The rest
loads on first use and needs an extra: the science (:mod:`normguard.science`: ``spectrum``,
``theory``, ``pilot``) needs scipy (``pip install 'normguard[science]'``), figures need
matplotlib (``[report]``), :mod:`normguard.lightning` and :mod:`normguard.transformers`
their frameworks (``[lightning]``, ``[transformers]``); ``[all]`` installs every one.
``dir(normguard)`` lists the public names.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Linear(3, 1)
    >>> sorted(ng.layer_norms(model))
    ['<root>']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from normguard.actions import Action, Escalation, RaiseWeightDecay, StopTraining, Warn
from normguard.detector import Condition, NearInterpolationDetector, Reason, Verdict
from normguard.events import Event, EventKind
from normguard.guard import NormGuard
from normguard.hold_floor import HoldNoiseFloor
from normguard.monitor import StateError
from normguard.noise_floor import (
    FloorEstimate,
    NoiseFloorEstimator,
    estimate_noise_floor,
    hf_noise_floor_metrics,
    label_noise_floor,
)
from normguard.norms import NormEngine, NormSnapshot, group_parameters, layer_norms, total_norm
from normguard.options import GuardOptions
from normguard.sinks import Sink

if TYPE_CHECKING:  # the names loaded on first use (see __getattr__), as explicit re-exports for type checkers
    from normguard import science as science
    from normguard.noise_metric import NoiseFloorMetric as NoiseFloorMetric
    from normguard.science import pilot as pilot
    from normguard.science import spectrum as spectrum
    from normguard.science import theory as theory
    from normguard.science.spectrum import AlphaEstimate as AlphaEstimate
    from normguard.science.spectrum import CovarianceAccumulator as CovarianceAccumulator
    from normguard.science.spectrum import estimate_alpha as estimate_alpha
    from normguard.science.spectrum import estimate_alpha_streaming as estimate_alpha_streaming
    from normguard.science.spectrum import layer_input_alphas as layer_input_alphas

__version__ = "0.2.0.dev0"  # the one version source: pyproject.toml reads it (setuptools' dynamic version)

# name -> module, imported on first access (they need an extra; see _EXTRA_OF)
_LAZY: dict[str, str] = {
    "science": "normguard.science",
    "spectrum": "normguard.science.spectrum",
    "theory": "normguard.science.theory",
    "pilot": "normguard.science.pilot",
    "AlphaEstimate": "normguard.science.spectrum",
    "CovarianceAccumulator": "normguard.science.spectrum",
    "estimate_alpha": "normguard.science.spectrum",
    "estimate_alpha_streaming": "normguard.science.spectrum",
    "layer_input_alphas": "normguard.science.spectrum",
    "NoiseFloorMetric": "normguard.noise_metric",
}
_MODULES = {"science", "spectrum", "theory", "pilot"}
# a missing top-level package -> the extra that installs it
_EXTRA_OF = {
    "scipy": "science",
    "matplotlib": "report",
    "lightning": "lightning",
    "torchmetrics": "lightning",
    "transformers": "transformers",
    "accelerate": "transformers",
}


def __getattr__(name: str) -> Any:
    """Load the science on first use: ``ng.spectrum``, ``ng.theory``, ``ng.pilot``, ``ng.estimate_alpha``.

    Without scipy the ``ImportError`` names the extra to install (``normguard[science]``).

    Example:
        >>> import normguard as ng
        >>> ng.no_such_name
        Traceback (most recent call last):
        ...
        AttributeError: module 'normguard' has no attribute 'no_such_name'
    """
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'normguard' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in _EXTRA_OF:
            raise
        extra = _EXTRA_OF[missing]
        raise ImportError(
            f"normguard.{name} needs {missing}, which is not installed: pip install 'normguard[{extra}]'",
            name=missing,
        ) from exc
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only (``__all__`` and the science loaded on first use), not the imports.

    Example:
        >>> import normguard as ng
        >>> "NormGuard" in dir(ng), "estimate_alpha" in dir(ng), "importlib" in dir(ng), "annotations" in dir(ng)
        (True, True, False, False)
    """
    return sorted({*__all__, *_LAZY})


# The names ``from normguard import *`` gives: the core only (the science needs scipy, an extra).
__all__ = [
    "Action",
    "Condition",
    "Escalation",
    "Event",
    "EventKind",
    "FloorEstimate",
    "GuardOptions",
    "HoldNoiseFloor",
    "NearInterpolationDetector",
    "NoiseFloorEstimator",
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
    "estimate_noise_floor",
    "group_parameters",
    "hf_noise_floor_metrics",
    "label_noise_floor",
    "layer_norms",
    "total_norm",
]
