"""What the three front doors share: input checks, the check interval, ranks, errors.

:class:`~normguard.NormGuard`, :class:`~normguard.lightning.NormGuardCallback` and
:class:`~normguard.transformers.NormGuardTrainerCallback` translate their loop's events
into calls on one :class:`~normguard.monitor.Monitor`; the small pieces of translation they
have in common live here, once, so no front door imports another.

Example:
    >>> crossed(last=40, step=50, every=50), crossed(last=50, step=60, every=50)
    (True, False)
    >>> as_scalar("val_loss", np.float32(0.25)).item()
    0.25
"""

from __future__ import annotations

import inspect
import logging
import operator
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from normguard.detector import NearInterpolationDetector
from normguard.monitor import GuardResults, Monitor
from normguard.norms import widest_float as loss_dtype
from normguard.validation import check_int, is_real_number

__all__ = [
    "DoorResults",
    "any_rank",
    "as_loss_tensor",
    "as_scalar",
    "check_and_agree",
    "check_interval",
    "crossed",
    "is_logging_rank",
    "loss_dtype",
    "missing_metric",
    "renamed",
    "retired",
    "run_check",
    "unwrap_optimizer",
    "world_size",
]

log = logging.getLogger("normguard")


# ---------------------------------------------------------------------------- the interval
def check_interval(name: str, value: Any) -> int:
    """The check interval as a Python ``int`` (numpy integers accepted), at least 1.

    Example:
        >>> check_interval("every_n_steps", np.int64(5)), type(check_interval("every_n_steps", np.int64(5)))
        (5, <class 'int'>)
    """
    return operator.index(check_int(name, value, 1))


def crossed(last: int, step: int, every: int) -> bool:
    """Whether going from step ``last`` to ``step`` passes a multiple of ``every`` (a check is due)."""
    return step > last and step // every > last // every


def renamed(door: str, old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of an option renamed from ``old`` to ``new``: the old name still works, with a
    ``FutureWarning``; both at once is an error."""
    if old_value is None:
        return new_value
    if new_value is not None and new_value != default:
        raise TypeError(f"{door}() got both `{new}` and its old name `{old}`: pass `{new}` only.")
    warnings.warn(
        f"{door}(`{old}`=...) is renamed `{new}` (the same meaning in every normguard front door); "
        f"`{old}` will be removed in a future release.",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def retired(door: str, name: str, advice: str) -> None:
    """The ``FutureWarning`` for an argument that is no longer used (it is accepted and ignored)."""
    warnings.warn(f"{door}({name}=...) is no longer used: {advice}", FutureWarning, stacklevel=3)


# ---------------------------------------------------------------------------- inputs
def _from_numpy(name: str, value: np.ndarray | np.generic) -> Tensor:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"Expected argument `{name}` to hold real numbers but got a numpy array of dtype {array.dtype}."
        )
    return torch.from_numpy(np.array(array, dtype=np.float64))


def as_loss_tensor(name: str, value: Any) -> Tensor:
    """A real loss as a tensor: a floating-point tensor (kept on its device, no host sync), a
    Python or numpy number, or a numpy array.

    Example:
        >>> as_loss_tensor("loss", np.array(0.5)).item(), as_loss_tensor("loss", 2).item()
        (0.5, 2.0)
    """
    if isinstance(value, Tensor):
        if not value.is_floating_point() or value.is_complex():
            raise TypeError(
                f"Expected argument `{name}` to be a real floating-point tensor but got dtype {value.dtype}: "
                "pass the loss itself (e.g. `loss`, not `loss.long()` or a boolean)."
            )
        if value.device.type == "meta":
            raise ValueError(f"Expected argument `{name}` to hold a value but got a tensor on the 'meta' device.")
    elif isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, np.bool_):
        value = _from_numpy(name, value)
    elif is_real_number(value):
        return torch.tensor(float(value))
    else:
        raise TypeError(
            f"Expected argument `{name}` to be a tensor or a real number but got {type(value).__name__} (numpy "
            "numbers and arrays are accepted)."
        )
    if value.numel() == 0:
        raise ValueError(f"Expected argument `{name}` to hold a value but got an empty tensor.")
    return value


def as_scalar(name: str, value: Any) -> Tensor:
    """One real number as a tensor (a 0-d or one-element tensor or array, or a number); another
    shape raises naming ``name``."""
    tensor = as_loss_tensor(name, value)
    if tensor.numel() != 1:
        raise ValueError(f"Expected argument `{name}` to be a scalar but got shape {tuple(tensor.shape)}.")
    return tensor


def unwrap_optimizer(optimizer: Any) -> Any:
    """The innermost ``torch.optim.Optimizer`` a wrapper holds as ``.optimizer`` or ``._optimizer``
    (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), or the object itself.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> class Wrapper:
        ...     def __init__(self, inner): self.optimizer = inner
        >>> unwrap_optimizer(Wrapper(opt)) is opt, unwrap_optimizer(opt) is opt
        (True, True)
    """
    inner = optimizer
    for _ in range(8):
        nested = next(
            (
                n
                for n in (getattr(inner, "optimizer", None), getattr(inner, "_optimizer", None))
                if isinstance(n, torch.optim.Optimizer) and n is not inner
            ),
            None,
        )
        if nested is None:
            break
        inner = nested
    return inner


# ---------------------------------------------------------------------------- ranks
def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_logging_rank() -> bool:
    """Rank 0, or the only process."""
    import torch.distributed as dist

    return world_size() == 1 or dist.get_rank() == 0


def any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` OR-ed over the ranks (one all-reduce, at a check, when a process group runs)."""
    import torch.distributed as dist

    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


# ---------------------------------------------------------------------------- errors
def missing_metric(door: str, argument: str, name: str, available: Iterable[str], how: str) -> RuntimeError:
    """The error for a watched metric that is not there: what is, and how to fix it."""
    return RuntimeError(
        f"{door}({argument}={name!r}) found no metric {name!r}: {how}, or pass `{argument}=` one of the "
        f"available keys: {sorted(available)}."
    )


# ---------------------------------------------------------------------------- the check
_CHECK_TAKES_ESTIMATE = "floor_estimate" in inspect.signature(Monitor.check).parameters


def run_check(
    monitor: Monitor,
    step: int,
    val_loss: Tensor | float | None = None,
    val_metric: Tensor | float | None = None,
    floor_estimate: Any = None,
) -> Any:
    """``monitor.check``, with the noise-floor estimate when one is given."""
    if floor_estimate is None:
        return monitor.check(step, val_loss=val_loss, val_metric=val_metric)
    if not _CHECK_TAKES_ESTIMATE:  # pragma: no cover - the core without estimates
        raise NotImplementedError("This normguard's Monitor.check takes no `floor_estimate` yet.")
    return monitor.check(step, val_loss=val_loss, val_metric=val_metric, floor_estimate=floor_estimate)


def check_and_agree(
    monitor: Monitor,
    step: int,
    agree: Callable[[bool], bool],
    val_loss: Tensor | float | None = None,
    val_metric: Tensor | float | None = None,
    floor_estimate: Any = None,
) -> bool:
    """A check (:func:`run_check`), then whether training stops: the monitor's stop request OR-ed
    over the ranks by ``agree`` (so every rank stops at the same step and none hangs); a rank that
    stops because another asked records it (``follow_stop``)."""
    run_check(monitor, step, val_loss, val_metric, floor_estimate)
    if not agree(monitor.should_stop):
        return False
    monitor.follow_stop(step)
    return True


class DoorResults(GuardResults):
    """:class:`~normguard.monitor.GuardResults` plus the detector every front door shows."""

    options: Any

    @property
    def detector(self) -> NearInterpolationDetector:
        """The detector in use (before the first fit: a copy of the configured one)."""
        if self.monitor is not None:
            return self.monitor.detector
        build = getattr(self.options, "build_detector", None)
        detector: NearInterpolationDetector = build() if callable(build) else self.options.detector
        return detector
