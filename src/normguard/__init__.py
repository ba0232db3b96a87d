"""normguard: watch weight norms during training and act on the near-interpolation signature."""

from normguard.norms import NormEngine, NormSnapshot, group_parameters, layer_norms, total_norm

__version__ = "0.1.0"

__all__ = [
    "NormEngine",
    "NormSnapshot",
    "__version__",
    "group_parameters",
    "layer_norms",
    "total_norm",
]
