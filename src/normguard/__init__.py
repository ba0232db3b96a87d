"""normguard: watch weight norms during training and act on the near-interpolation signature.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Linear(3, 1)
    >>> sorted(ng.layer_norms(model))
    ['<root>']
"""

from normguard import pilot, spectrum, theory
from normguard.actions import Escalation, RaiseWeightDecay, StopTraining, Warn
from normguard.events import Event, EventKind
from normguard.guard import NormGuard
from normguard.norms import NormEngine, NormSnapshot, group_parameters, layer_norms, total_norm
from normguard.detector import Condition, NearInterpolationDetector, Reason, Verdict, label_noise_floor
from normguard.science.spectrum import (
    AlphaEstimate,
    CovarianceAccumulator,
    estimate_alpha,
    estimate_alpha_streaming,
    layer_input_alphas,
)

__version__ = "0.1.0"

__all__ = [
    "AlphaEstimate",
    "Condition",
    "CovarianceAccumulator",
    "Escalation",
    "Event",
    "EventKind",
    "NearInterpolationDetector",
    "NormEngine",
    "NormGuard",
    "NormSnapshot",
    "RaiseWeightDecay",
    "Reason",
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
