"""The norm engine: per-layer and total ℓ2 weight norms from fused reductions.

A *layer* is the module that owns parameters directly (its qualified name, e.g.
``encoder.0.attn.q_proj``; parameters of the root module go under ``"<root>"``).
Tied or shared parameters are counted once, under the first module that owns them.
Frozen parameters (``requires_grad=False``) are left out unless asked for.

One pure reduction, :func:`_reduce`, serves the engine and the functional
:func:`layer_norms` / :func:`total_norm`: one ``torch._foreach_norm`` per (device, dtype)
bucket (a ``vector_norm`` per tensor where a device has no foreach kernels, as
``torch.nn.utils.clip_grad`` does), per-tensor *norms* combined into per-layer norms in
float64, results left on the device. Nothing here moves a number to the host;
:meth:`NormSnapshot.to_host` is the one device→host transfer.

Precision: the engine's pass accumulates 16/32-bit weights in float32 and float64 weights
in float64 (the hot path). A float32 sum of squares overflows once a tensor's norm passes
~1.8e19, although such a norm is still finite; a layer that reads ``+inf`` is therefore
re-measured *wide* (16/32-bit weights accumulated in float64; float64 weights, and any
weights on a device without float64, scaled by their largest magnitude first) by
:meth:`NormSnapshot.to_host`, which then makes a second transfer, only in that case. The
functional helpers (:func:`layer_norms`, :func:`total_norm`) do the same after reading one
overflow flag; sharded models are always measured wide. Genuinely non-finite weights stay
non-finite.

Sharded parameters (DTensor, as made by FSDP2's ``fully_shard``) contribute the weighted
sum of squares of their local shard, in float64; these partial sums are all-reduced in one
collective so the result equals the unsharded model's norm.

Example:
    >>> import torch, normguard as ng
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    >>> sorted(ng.layer_norms(model))
    ['0', '2']
    >>> total = ng.total_norm(model)
    >>> bool(torch.isclose(total, torch.cat([p.flatten() for p in model.parameters()]).norm()))
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from normguard.validation import check_bool, check_choice

try:  # what clip_grad uses to decide between the fused kernel and a per-tensor loop
    from torch.utils._foreach_utils import _device_has_foreach_support
except ImportError:  # pragma: no cover - the private helper moved or is missing in this build

    def _device_has_foreach_support(device: torch.device) -> bool:
        return device.type in ("cpu", "cuda")


ROOT_LAYER = "<root>"
UNOWNED_LAYER = "<unowned>"

Offload = Literal["cpu", "device"]
"""Where the engine keeps its copies of the weights."""

__all__ = [
    "ROOT_LAYER",
    "HostSnapshot",
    "NormEngine",
    "NormSnapshot",
    "Offload",
    "ParamFilter",
    "group_parameters",
    "layer_norms",
    "total_norm",
]


# ------------------------------------------------------------------ argument checks
def _check_offload(value: object) -> Offload:
    """``value`` if it is one of :data:`Offload`'s options (see :func:`normguard.validation.check_choice`)."""
    return check_choice("offload", value, get_args(Offload))


# ------------------------------------------------------------------ parameters and layers
def _local(param: Tensor) -> tuple[Tensor, float | None]:
    """The tensor to reduce, and the weight of its partial sum if it must be all-reduced.

    For a DTensor the local shard is returned with weight ``1 / replication``: summing
    weighted local sums of squares over every rank then counts each element once.
    Plain tensors return ``None`` (replicated or single-process: no collective).
    """
    to_local = getattr(param, "to_local", None)
    placements = getattr(param, "placements", None)
    mesh = getattr(param, "device_mesh", None)
    if to_local is None or placements is None or mesh is None:
        return param.detach(), None
    import torch.distributed as dist

    local = to_local().detach()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    shards = 1
    for dim, placement in enumerate(placements):
        if placement.is_shard() or placement.is_partial():
            shards *= mesh.size(dim)
    return local, shards / world


ParamFilter = Callable[[str, Tensor], bool]
"""``filter(qualified_name, parameter) -> bool``: whether a parameter is measured."""


def group_parameters(
    model: nn.Module,
    include_frozen: bool = False,
    extra: Iterable[Tensor] = (),
    param_filter: ParamFilter | None = None,
) -> dict[str, list[Tensor]]:
    """Parameters grouped by the module that owns them, each parameter once.

    Args:
        model: the model to inspect.
        include_frozen: also take parameters with ``requires_grad=False``.
        extra: further parameters (e.g. from an optimizer) that the model does not own;
            they go under ``"<unowned>"``.
        param_filter: optional ``filter(name, param)``; parameters it rejects are left out
            (``name`` is the qualified name, ``"<unowned>"`` for ``extra`` ones).

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> shared = torch.nn.ModuleDict({"a": lin, "b": lin})
        >>> {k: len(v) for k, v in group_parameters(shared).items()}
        {'a': 2}
        >>> {k: len(v) for k, v in group_parameters(lin, param_filter=lambda name, p: name != "bias").items()}
        {'<root>': 1}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected argument `model` to be a torch.nn.Module but got {type(model)}.")
    include_frozen = check_bool("include_frozen", include_frozen)
    seen: set[int] = set()
    groups: dict[str, list[Tensor]] = {}
    if param_filter is not None and not callable(param_filter):
        got = type(param_filter).__name__
        raise TypeError(f"Expected argument `param_filter` to be a callable or None but got {got}.")
    for module_name, module in model.named_modules(remove_duplicate=True):
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or (not include_frozen and not param.requires_grad):
                continue
            seen.add(id(param))
            if param_filter is not None and not param_filter(f"{module_name}.{param_name}".lstrip("."), param):
                continue
            groups.setdefault(module_name or ROOT_LAYER, []).append(param)
    for param in extra:
        if id(param) in seen or (not include_frozen and not param.requires_grad):
            continue
        seen.add(id(param))
        if param_filter is not None and not param_filter(UNOWNED_LAYER, param):
            continue
        groups.setdefault(UNOWNED_LAYER, []).append(param)
    return groups


# ------------------------------------------------------------------ buckets and the reduction
def widest_float(device: torch.device) -> torch.dtype:
    """The widest float ``device`` computes in: float64, or float32 where it has none (MPS).

    The one place normguard makes this choice (norm combination, loss tensors made on the host).

    Example:
        >>> widest_float(torch.device("cpu")), widest_float(torch.device("mps"))
        (torch.float64, torch.float32)
    """
    return torch.float32 if device.type == "mps" else torch.float64


def _has_float64(device: torch.device) -> bool:
    return widest_float(device) == torch.float64


def _accumulation(dtype: torch.dtype, device: torch.device, wide: bool) -> tuple[torch.dtype | None, bool]:
    """How a bucket of ``dtype`` tensors on ``device`` is reduced: (accumulation dtype, scale first).

    The rule, in one place. ``wide=False`` (the hot path): 16-bit floats accumulate in
    float32, 32/64-bit floats in their own dtype (``None``: an explicit ``dtype`` equal to
    the tensor's own costs time on CPU). ``wide=True`` (finite whenever the norm is):
    16/32-bit floats accumulate in float64 where the device has it; float64 or complex
    weights, and all weights on a device without float64, are divided by their largest
    magnitude before squaring.

    Example:
        >>> cpu = torch.device("cpu")
        >>> _accumulation(torch.bfloat16, cpu, wide=False), _accumulation(torch.float32, cpu, wide=True)
        ((torch.float32, False), (torch.float64, False))
        >>> _accumulation(torch.float64, cpu, wide=True)
        (None, True)
    """
    own = torch.float32 if dtype.is_floating_point and dtype.itemsize < 4 else None
    if not wide:
        return own, False
    if dtype.is_floating_point and dtype != torch.float64 and _has_float64(device):
        return torch.float64, False
    return own, True


@dataclass(frozen=True)
class _Bucket:
    """Positions (into the measured list) of the tensors reduced by one fused call."""

    device: torch.device
    dtype: torch.dtype
    sharded: bool
    positions: tuple[int, ...]


def _buckets(tensors: Sequence[Tensor], sharded: Sequence[bool]) -> list[_Bucket]:
    """Group tensor positions by (device, dtype, sharded): the one bucketing helper.

    Example:
        >>> ts = [torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.zeros(3)]
        >>> [(b.dtype, b.positions) for b in _buckets(ts, [False] * 3)]
        [(torch.float32, (0, 2)), (torch.float64, (1,))]
    """
    groups: dict[tuple[torch.device, torch.dtype, bool], list[int]] = {}
    for i, (t, is_sharded) in enumerate(zip(tensors, sharded)):
        groups.setdefault((t.device, t.dtype, is_sharded), []).append(i)
    return [_Bucket(device, dtype, s, tuple(pos)) for (device, dtype, s), pos in groups.items()]


def _scaled_norm(tensor: Tensor, accumulate: torch.dtype | None, out: torch.dtype) -> Tensor:
    """ℓ2 norm of ``tensor`` divided by its largest magnitude first: no overflow, no underflow."""
    if tensor.numel() == 0:
        return torch.zeros((), dtype=out, device=tensor.device)
    peak = torch.linalg.vector_norm(tensor, math.inf)
    info = torch.finfo(peak.dtype)
    scale = peak.clamp(info.tiny, info.max)  # inf stays huge (inf / max = inf), NaN stays NaN
    return torch.linalg.vector_norm(tensor / scale, 2, dtype=accumulate).to(out) * scale.to(out)


def _tensor_norms(tensors: list[Tensor], bucket: _Bucket, wide: bool, home: torch.device, out: torch.dtype) -> Tensor:
    """The ℓ2 norm of each tensor of one bucket, as a 1-d ``out`` tensor on ``home``."""
    accumulate, scaled = _accumulation(bucket.dtype, bucket.device, wide)
    if scaled:
        norms = torch.stack([_scaled_norm(t, accumulate, out) for t in tensors])
    elif _device_has_foreach_support(bucket.device):
        norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=accumulate))
    else:  # no fused kernel for this device: one reduction per tensor, as clip_grad falls back
        norms = torch.stack([torch.linalg.vector_norm(t, 2, dtype=accumulate) for t in tensors])
    return norms.to(device=home, dtype=out, non_blocking=True)


def _by_layer(norms: Tensor, index: Tensor, n_layers: int, scaled: bool) -> Tensor:
    """Per-layer √Σ norm² of per-tensor ``norms`` (``index`` = layer of each).

    ``scaled`` divides each layer's norms by the layer's largest before squaring, for
    squares that could leave the dtype's range (float64 weights; float32 combination).

    Example:
        >>> norms = torch.tensor([3e200, 4e200, 1.0], dtype=torch.float64)
        >>> [f"{v:.6g}" for v in _by_layer(norms, torch.tensor([0, 0, 1]), 2, scaled=True).tolist()]
        ['5e+200', '1']
    """
    out = norms.new_zeros(n_layers)
    if not scaled:
        return out.index_add_(0, index, norms * norms).sqrt_()
    info = torch.finfo(norms.dtype)
    scale = norms.new_zeros(n_layers).scatter_reduce_(0, index, norms, "amax").clamp_(info.tiny, info.max)
    ratio = norms / scale[index]
    return out.index_add_(0, index, ratio * ratio).sqrt_().mul_(scale)


def _hypot(norms: Tensor) -> Tensor:
    """√Σ norms², scaled: the total norm from per-layer norms, finite whenever it is representable."""
    if norms.numel() == 0:
        return norms.new_zeros(())
    return _by_layer(norms, torch.zeros_like(norms, dtype=torch.long), 1, scaled=True)[0]


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Plan:
    """Fixed bookkeeping for one parameter set: buckets, layer indexes, shard weights.

    Raises:
        ValueError: if a parameter is on the ``meta`` device (it has no values to measure).
    """

    def __init__(self, groups: dict[str, list[Tensor]]) -> None:
        self.layer_names = tuple(groups)
        self.params: list[Tensor] = [p for params in groups.values() for p in params]
        layer_of = [i for i, params in enumerate(groups.values()) for _ in params]
        locals_ = [_local(p) for p in self.params]
        on_meta = list(dict.fromkeys(self.layer_names[layer_of[i]] for i, (t, _) in enumerate(locals_) if t.is_meta))
        if on_meta:
            raise ValueError(
                "Expected argument `model` to have materialised parameters but got parameters on the "
                f"'meta' device (layers {', '.join(on_meta[:5])}{', ...' if len(on_meta) > 5 else ''}). "
                "Materialise them first (e.g. `model.to_empty(device=...)`, then initialise) and measure after."
            )
        self.home = locals_[0][0].device if locals_ else torch.device("cpu")
        self.sharded = any(w is not None for _, w in locals_)
        self.combine = widest_float(self.home)
        self.buckets = _buckets([t for t, _ in locals_], [w is not None for _, w in locals_])
        self.scaled = self.combine != torch.float64 or any(b.dtype.itemsize >= 8 for b in self.buckets)
        replicated = [i for b in self.buckets if not b.sharded for i in b.positions]
        sharded = [i for b in self.buckets if b.sharded for i in b.positions]
        self.replicated_index = torch.tensor([layer_of[i] for i in replicated], dtype=torch.long, device=self.home)
        self.sharded_index = torch.tensor([layer_of[i] for i in sharded], dtype=torch.long, device=self.home)
        self.shard_weight = torch.tensor([locals_[i][1] for i in sharded], dtype=self.combine, device=self.home)
        self._first = (self.home, self.params[0].dtype) if self.params else None

    def moved(self) -> bool:
        """Whether the first parameter changed device or dtype (e.g. ``model.to(...)``) since planning."""
        if not self.params:
            return False
        first = self.params[0]
        return (_local(first)[0].device, first.dtype) != self._first

    def tensors(self) -> list[Tensor]:
        """What to reduce now: the parameters as they are (under ``no_grad``), or their local shards."""
        return [_local(p)[0] for p in self.params] if self.sharded else self.params


def _reduce(plan: _Plan, tensors: Sequence[Tensor], wide: bool) -> Tensor:
    """Per-layer ℓ2 norms of ``tensors`` (aligned with ``plan.params``): the one reduction.

    One fused norm per bucket, per-tensor norms combined per layer in ``plan.combine``
    (float64, or float32 on devices without it); sharded buckets add their weighted sums of
    squares, all-reduced in one collective. Reads only; no host synchronisation.

    Example:
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.constant_(lin.weight, 1e20)
        >>> plan = _Plan({"lin": [lin.weight]})
        >>> with torch.no_grad():
        ...     fast, wide = (_reduce(plan, plan.tensors(), wide=w).item() for w in (False, True))
        >>> fast, f"{wide:.6g}"
        (inf, '2e+20')
    """
    n_layers = len(plan.layer_names)
    replicated: list[Tensor] = []
    sharded: list[Tensor] = []
    for bucket in plan.buckets:
        norms = _tensor_norms([tensors[i] for i in bucket.positions], bucket, wide, plan.home, plan.combine)
        (sharded if bucket.sharded else replicated).append(norms)
    out = (
        _by_layer(_cat(replicated), plan.replicated_index, n_layers, plan.scaled)
        if replicated
        else torch.zeros(n_layers, dtype=plan.combine, device=plan.home)
    )
    if not sharded:
        return out
    local = _cat(sharded)
    squares = local.new_zeros(n_layers).index_add_(0, plan.sharded_index, local * local * plan.shard_weight)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(squares)  # the one collective of a check
    return (squares + out * out).sqrt_()


# ------------------------------------------------------------------ snapshots
@dataclass
class NormSnapshot:
    """Norms of one check, still on the device.

    ``layer_norm`` holds each layer's ℓ2 norm (order of ``layer_names``) in float64
    (float32 on a device without float64); the optional ``init_distance``,
    ``update_size`` and ``best_distance`` hold ‖w − w₀‖, ‖w_t − w_prev‖ and ‖w − w_best‖
    per layer. ``remeasure``, when set,
    recomputes ``layer_norm`` wide (see the module docstring); :meth:`to_host` calls it
    only if a layer reads ``+inf``.
    """

    layer_names: tuple[str, ...]
    layer_norm: Tensor
    init_distance: Tensor | None = None
    update_size: Tensor | None = None
    remeasure: Callable[[], Tensor] | None = field(default=None, repr=False, compare=False)
    best_distance: Tensor | None = None

    @property
    def layer_sq(self) -> Tensor:
        """Per-layer sums of squares, ``layer_norm²`` (the earlier representation; may overflow)."""
        return self.layer_norm.square()

    @layer_sq.setter
    def layer_sq(self, value: Tensor) -> None:
        self.layer_norm = value.sqrt()

    @property
    def total(self) -> Tensor:
        """The total ℓ2 norm, a 0-d float32 tensor on the device."""
        return _hypot(self.layer_norm).to(torch.float32)

    def layer_norms(self) -> dict[str, Tensor]:
        """Per-layer ℓ2 norms as 0-d float32 device tensors."""
        norms = self.layer_norm.to(torch.float32)
        return {name: norms[i] for i, name in enumerate(self.layer_names)}

    def to_host(self, *extra: Tensor) -> tuple[HostSnapshot, list[float]]:
        """Move everything, and the ``extra`` tensors (flattened), to the host in one transfer.

        A layer whose float32 accumulation overflowed reads ``+inf``; it is then re-measured
        wide and transferred again (a second transfer, only in that case). NaN and ±inf
        weights stay non-finite and are listed in :attr:`HostSnapshot.nonfinite_layers`.

        Example:
            >>> lin = torch.nn.Linear(2, 2, bias=False)
            >>> _ = torch.nn.init.constant_(lin.weight, 1e20)
            >>> snap = NormEngine(lin).compute()
            >>> snap.layer_norm.item()  # float32 accumulation overflowed
            inf
            >>> host, _ = snap.to_host()
            >>> f"{host.total:.6g}", host.nonfinite_layers
            ('2e+20', [])
        """
        device = self.layer_norm.device
        wide = widest_float(device)
        optional = (self.init_distance, self.update_size, self.best_distance)
        parts = [p for p in (self.layer_norm, *optional) if p is not None]
        parts.extend(t.detach().reshape(-1) for t in extra)
        values = torch.cat([p.to(device=device, dtype=wide) for p in parts]).tolist()  # the one transfer
        n = len(self.layer_names)
        pos = 0

        def take(count: int) -> list[float]:
            nonlocal pos
            out = values[pos : pos + count]
            pos += count
            return out

        layer = take(n)
        if self.remeasure is not None and math.inf in layer:
            with torch.no_grad():
                exact = self.remeasure().tolist()  # the second transfer: only after an overflow or an inf weight
            layer = [e if v == math.inf else v for v, e in zip(layer, exact)]
        init = take(n) if self.init_distance is not None else None
        update = take(n) if self.update_size is not None else None
        best = take(n) if self.best_distance is not None else None
        host = HostSnapshot(
            layer_norms=dict(zip(self.layer_names, layer)),
            total=math.hypot(*layer) if all(math.isfinite(v) for v in layer) else math.nan,
            init_distance=None if init is None else dict(zip(self.layer_names, init)),
            update_size=None if update is None else dict(zip(self.layer_names, update)),
            best_distance=None if best is None else dict(zip(self.layer_names, best)),
        )
        return host, take(len(values) - pos)


@dataclass
class HostSnapshot:
    """Norms of one check as host floats (what the detector and the sinks read)."""

    layer_norms: dict[str, float]
    total: float
    init_distance: dict[str, float] | None = None
    update_size: dict[str, float] | None = None
    nonfinite_layers: list[str] = field(default_factory=list)
    best_distance: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.nonfinite_layers = [k for k, v in self.layer_norms.items() if not math.isfinite(v)]

    def drift_share(self) -> float | None:
        """‖w − w_best‖ / ‖w − w₀‖ over all layers: the share of the distance travelled from the
        first check that was travelled since the best validation point (``None`` when either
        distance is missing, or the weights have not moved).

        Example:
            >>> HostSnapshot({"a": 1.0}, 1.0, init_distance={"a": 4.0}, best_distance={"a": 1.0}).drift_share()
            0.25
        """
        if self.init_distance is None or self.best_distance is None:
            return None
        travelled = math.hypot(*self.init_distance.values())
        since_best = math.hypot(*self.best_distance.values())
        if not (math.isfinite(travelled) and math.isfinite(since_best)) or travelled <= 0:
            return None
        return since_best / travelled


# ------------------------------------------------------------------ the engine
class NormEngine:
    """Computes per-layer norms of a model with one fused reduction per (device, dtype).

    The parameter list is re-read cheaply (on the host, no device work) before every
    pass, so parameters added to the model or to an optimizer mid-run are picked up.

    Args:
        model: the model whose weights are measured; its parameters must be materialised
            (not on the ``meta`` device).
        include_frozen: also measure parameters with ``requires_grad=False``.
        optimizer: optional; parameters it holds that the model does not own are measured too.
        track_init_distance: keep a copy of the weights at the first pass and report
            ‖w − w₀‖ per layer. Costs one extra copy of the measured weights.
        track_update_size: keep the weights of the previous pass and report
            ‖w_t − w_prev‖ per layer. Costs one extra copy of the measured weights.
        param_filter: optional ``filter(name, param) -> bool`` choosing the measured
            parameters (see :func:`group_parameters`), e.g. only those an optimizer decays.
        track_drift: keep the weights of the first pass and of the last :meth:`mark_best`,
            and report ‖w − w₀‖ and ‖w − w_best‖ per layer at ``compute(drift=True)`` (the
            detector's ``drifted`` condition). Costs two extra copies of the measured weights,
            always in host memory (like the best weights), whatever ``offload`` says: each
            ``compute(drift=True)`` copies them to the device, so call it at validations only.
        offload: where the copies live: ``"device"`` (default; fast, uses device memory)
            or ``"cpu"`` (host memory; each pass then copies them back to the device, and
            update-size tracking copies the weights to the host, a synchronising transfer).

    The two distances accumulate like the hot path and are not re-measured: one whose
    float32 sum of squares overflows (a distance past ~1.8e19) reads ``inf``.

    Raises:
        TypeError: if ``include_frozen`` or a ``track_*`` flag is not a bool.
        ValueError: for an unknown ``offload``, a model with nothing to measure, or
            parameters on the ``meta`` device.

    Example:
        >>> import torch
        >>> engine = NormEngine(torch.nn.Linear(4, 4), track_init_distance=True)
        >>> snap = engine.compute()
        >>> host, _ = snap.to_host()
        >>> host.init_distance
        {'<root>': 0.0}
    """

    def __init__(
        self,
        model: nn.Module,
        include_frozen: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
        track_init_distance: bool = False,
        track_update_size: bool = False,
        offload: Offload = "device",
        param_filter: ParamFilter | None = None,
        track_drift: bool = False,
    ) -> None:
        self.offload: Offload = _check_offload(offload)
        self.param_filter = param_filter
        self.include_frozen = check_bool("include_frozen", include_frozen)
        self.track_init_distance = check_bool("track_init_distance", track_init_distance)
        self.track_update_size = check_bool("track_update_size", track_update_size)
        self.track_drift = check_bool("track_drift", track_drift)
        self._drift_init: dict[int, Tensor] = {}  # host copies (see track_drift)
        self._best: dict[int, Tensor] = {}
        self.model = model
        self.optimizer = optimizer
        self._signature: tuple[object, ...] = ()
        self._init: dict[int, Tensor] = {}
        self._previous: dict[int, Tensor] = {}
        self._plan: _Plan | None = None
        groups = self._groups()
        if not groups and param_filter is not None:
            raise ValueError("Expected `param_filter` to keep some of the model's parameters but it rejected all.")
        _require_parameters(groups, self.include_frozen)
        self._signature = self._fingerprint()
        self._plan = _Plan(groups)  # refuses meta parameters now, not at the first step

    def _groups(self) -> dict[str, list[Tensor]]:
        extra: list[Tensor] = []
        if self.optimizer is not None:
            extra = [p for g in self.optimizer.param_groups for p in g["params"]]
        return group_parameters(self.model, self.include_frozen, extra, self.param_filter)

    @property
    def device(self) -> torch.device:
        """The device results live on (that of the first measured parameter)."""
        return self._refresh().home

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self._refresh().layer_names

    def parameters(self) -> list[Tensor]:
        """The measured parameters, in layer order."""
        return list(self._refresh().params)

    def _fingerprint(self) -> tuple[object, ...]:
        """A cheap host-side identity of the measured set (ids and requires_grad; no grouping).

        Walks ``_parameters`` directly: about 4x cheaper per parameter than
        :func:`group_parameters`, which only runs when this fingerprint changes.
        """
        frozen = self.include_frozen
        fp: list[object] = [
            id(p)
            for m in self.model.modules()
            for p in m._parameters.values()
            if p is not None and (frozen or p.requires_grad)
        ]
        if self.optimizer is not None:
            fp.extend((id(g["params"]), len(g["params"])) for g in self.optimizer.param_groups)
        return tuple(fp)

    def _refresh(self) -> _Plan:
        signature = self._fingerprint()
        if self._plan is None or signature != self._signature or self._plan.moved():
            self._signature = signature
            self._plan = _Plan(self._groups())
        return self._plan

    def measure_host(self) -> dict[str, float]:
        """Per-layer norms now, measured wide and moved to the host (one transfer; outside the hot
        path, e.g. after the weights were restored). Tracking state is left as it is."""
        with torch.no_grad():
            plan = self._refresh()
            return dict(zip(plan.layer_names, _reduce(plan, plan.tensors(), wide=True).tolist()))

    def compute(self, drift: bool = False) -> NormSnapshot:
        """One norm pass; results stay on the device, no host synchronisation.

        ``drift=True`` (with ``track_drift``; at validations) adds ‖w − w₀‖ and, once
        :meth:`mark_best` has been called, ‖w − w_best‖ per layer.
        """
        with torch.no_grad():
            plan = self._refresh()
            wide = plan.sharded  # a rank-local re-measure would need the collective again: measure wide now
            try:
                layer_norm = _reduce(plan, plan.tensors(), wide)
            except RuntimeError:  # a parameter changed dtype or device in place: plan again
                self._plan = plan = _Plan(self._groups())
                layer_norm = _reduce(plan, plan.tensors(), wide)
            init_distance = update_size = best_distance = None
            drift = drift and self.track_drift
            if self.track_init_distance:
                current = plan.tensors()
                init = [self._copy_once(self._init, p, t) for p, t in zip(plan.params, current)]
                init_distance = _reduce(plan, _differences(current, init), wide)
            if self.track_drift and (drift or not self._drift_init):  # w₀ at the first pass; else only at validations
                current = plan.tensors()
                init = [self._copy_once(self._drift_init, p, t, "cpu") for p, t in zip(plan.params, current)]
                if drift:
                    if not self.track_init_distance:
                        init_distance = _reduce(plan, _differences(current, init), wide)
                    if self._best:
                        best = [self._copy_once(self._best, p, t, "cpu") for p, t in zip(plan.params, current)]
                        best_distance = _reduce(plan, _differences(current, best), wide)
            if self.track_update_size:
                current = plan.tensors()
                previous = [self._copy_once(self._previous, p, t) for p, t in zip(plan.params, current)]
                update_size = _reduce(plan, _differences(current, previous), wide)
                for now, prev in zip(current, previous):
                    prev.copy_(now, non_blocking=True)
        remeasure = None if wide else functools.partial(_wide_norms, plan)
        return NormSnapshot(plan.layer_names, layer_norm, init_distance, update_size, remeasure, best_distance)

    def mark_best(self) -> None:
        """Keep the current weights as the best-validation point of ``compute(drift=True)``
        (a copy; called at a validation that improved, so the copy's transfer is at a check)."""
        if not self.track_drift:
            return
        plan = self._refresh()
        self._best = {}  # new tensors, not an in-place copy: a saved drift_state() must not change
        with torch.no_grad():
            self._best = {id(p): t.to("cpu", copy=True) for p, t in zip(plan.params, plan.tensors())}

    def forget_drift(self) -> None:
        """Drop the drift references (a new run): the next pass keeps its weights as w₀."""
        self._drift_init.clear()
        self._best.clear()

    def drift_state(self) -> dict[str, list[Tensor]] | None:
        """The drift references in the measured order (for a checkpoint), or ``None`` when not
        tracked or sharded (each rank holds its own shards: a resumed sharded run measures drift
        from its resumed weights)."""
        plan = self._refresh()
        if not self.track_drift or not self._drift_init or plan.sharded:
            return None
        params = plan.params
        state = {"init": [self._drift_init[id(p)] for p in params if id(p) in self._drift_init]}
        if self._best:
            state["best"] = [self._best[id(p)] for p in params if id(p) in self._best]
        return {k: [t.detach().cpu() for t in v] for k, v in state.items() if len(v) == len(params)}

    def load_drift_state(self, state: dict[str, list[Tensor]] | None) -> bool:
        """Load :meth:`drift_state`'s references; False (nothing loaded) when they do not fit the measured set."""
        if not self.track_drift or not state:
            return False
        plan = self._refresh()
        shapes = [tuple(t.shape) for t in plan.tensors()]
        stores = {"init": self._drift_init, "best": self._best}
        if any(name not in stores or [tuple(t.shape) for t in saved] != shapes for name, saved in state.items()):
            return False
        for name, saved in state.items():
            store = stores[name]
            store.clear()
            for p, t, ref in zip(plan.params, plan.tensors(), saved):
                store[id(p)] = ref.to(device="cpu", dtype=t.dtype, copy=True)
        return True

    def _copy_once(
        self, store: dict[int, Tensor], param: Tensor, local: Tensor, offload: Offload | None = None
    ) -> Tensor:
        """The stored copy of ``param`` (its ``local`` tensor when first seen), keyed by the parameter."""
        key = id(param)
        if key not in store:
            on_host = (offload or self.offload) == "cpu"
            store[key] = local.to("cpu", copy=True) if on_host else local.clone()
        return store[key]

    def memory_bytes(self) -> int:
        """Bytes held by the copies for distance-from-init, update size and drift."""
        stores = (self._init, self._previous, self._drift_init, self._best)
        return sum(t.numel() * t.element_size() for s in stores for t in s.values())


def _wide_norms(plan: _Plan) -> Tensor:
    """The plan's per-layer norms measured wide (the re-measure behind :meth:`NormSnapshot.to_host`)."""
    return _reduce(plan, plan.tensors(), wide=True)


def _differences(tensors: Sequence[Tensor], references: Sequence[Tensor]) -> list[Tensor]:
    """w − w_ref for each tensor, on the tensor's device."""
    return [t - ref.to(t.device, non_blocking=True) for t, ref in zip(tensors, references)]


def _require_parameters(groups: dict[str, list[Tensor]], include_frozen: bool) -> None:
    if not groups:
        raise ValueError(
            "Expected argument `model` to have parameters to measure but got none"
            + ("" if include_frozen else " that require grad (pass include_frozen=True to measure frozen ones)")
            + "."
        )


# ------------------------------------------------------------------ functional
def _measure(model: nn.Module, include_frozen: bool) -> tuple[tuple[str, ...], Tensor]:
    """Layer names and per-layer norms of ``model``: the engine's reduction, no engine state.

    As the engine does: the fast pass first, re-measured wide only when a sum of squares
    overflowed (one device→host read of a flag to know it); sharded models are measured wide
    at once (a re-measure would need the collective again)."""
    groups = group_parameters(model, include_frozen)
    _require_parameters(groups, include_frozen)
    plan = _Plan(groups)
    with torch.no_grad():
        if plan.sharded:
            return plan.layer_names, _reduce(plan, plan.tensors(), wide=True)
        fast = _reduce(plan, plan.tensors(), wide=False)
        if bool(torch.isinf(fast).any()):  # overflow (NaN weights stay NaN either way)
            return plan.layer_names, _reduce(plan, plan.tensors(), wide=True)
        return plan.layer_names, fast


def layer_norms(model: nn.Module, include_frozen: bool = False) -> dict[str, Tensor]:
    """Per-layer ℓ2 norms of ``model`` as float32 0-d tensors on the weights' device.

    Any norm that float32 can hold comes out finite: the fast pass, re-measured wide where a sum
    of squares overflowed (reading that flag is one host synchronisation; keep this function off
    the hot path, or use the guard, which reads it at its checks only).

    Example:
        >>> import torch
        >>> norms = layer_norms(torch.nn.Linear(2, 3))
        >>> list(norms), norms["<root>"].dtype
        (['<root>'], torch.float32)
    """
    names, norms = _measure(model, include_frozen)
    norms = norms.to(torch.float32)
    return {name: norms[i] for i, name in enumerate(names)}


def total_norm(model: nn.Module, include_frozen: bool = False) -> Tensor:
    """Total ℓ2 norm of ``model``'s weights as a float32 0-d tensor on the weights' device.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> _ = torch.nn.init.ones_(lin.weight)
        >>> total_norm(lin).item()
        2.0
    """
    return _hypot(_measure(model, include_frozen)[1]).to(torch.float32)
