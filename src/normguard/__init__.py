"""normguard: watch weight norms during training and act on the near-interpolation signature.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Linear(3, 1)
    >>> sorted(ng.layer_norms(model))
    ['<root>']
"""

from normguard.actions import Escalation, RaiseWeightDecay, StopTraining, Warn
from normguard.events import Event, EventKind
from normguard.guard import NormGuard
from normguard.norms import NormEngine, NormSnapshot, group_parameters, layer_norms, total_norm
from normguard.signals import Condition, NearInterpolationDetector, Reason, Verdict, label_noise_floor

__version__ = "0.1.0"

__all__ = [
    "Condition",
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
    "group_parameters",
    "label_noise_floor",
    "layer_norms",
    "total_norm",
]
