"""One run in numbers: :func:`summarize` (a JSON-friendly dict) and :func:`layer_changes`.

Example:
    >>> from normguard.events import Event, EventKind
    >>> run = RunData("r", "", {tags.GROWTH_EXPONENT: Series.from_pairs([(10, 0.5), (20, 1.5), (30, 1.0)])},
    ...               [Event(20, EventKind.DETECTOR_FIRED, "signature")])
    >>> s = summarize(run)
    >>> s["max_growth_exponent"], s["max_growth_exponent_step"], s["first_fired_step"], s["final_norm"]
    (1.5, 20, 20, None)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normguard import tags
from normguard.events import EventKind
from normguard.report.runs import RunData, Series, finite_or_none

__all__ = ["ACTION_KINDS", "describe_change", "layer_changes", "layer_growth", "summarize"]

#: event kinds that are normguard acting on training (the rest are observations)
ACTION_KINDS = (
    EventKind.WEIGHT_DECAY_CHANGED.value,
    EventKind.ACTION_ESCALATED.value,
    EventKind.STOP.value,
    EventKind.RESTORE.value,
    EventKind.RESTORE_SKIPPED.value,
)


def layer_growth(run: RunData) -> list[tuple[str, float]]:
    """Layers with the change of their log norm over the run, log(last / first positive),
    largest first (negative: the layer shrank).

    Example:
        >>> run = RunData("r", "", {tags.layer_tag("a"): Series.from_pairs([(1, 1.0), (2, 2.0)]),
        ...                         tags.layer_tag("b"): Series.from_pairs([(1, 1.0), (2, 8.0)])})
        >>> [(name, round(g, 3)) for name, g in layer_growth(run)]
        [('b', 2.079), ('a', 0.693)]
    """
    out = []
    for layer, series in run.layers.items():
        ok = np.isfinite(series.values) & (series.values > 0)
        if ok.sum() >= 2:
            values = series.values[ok]
            out.append((layer, float(math.log(values[-1] / values[0]))))
    return sorted(out, key=lambda x: -x[1])


def layer_changes(run: RunData, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` layers whose norm changed most over the run, by ``|log(last / first)|``:
    a layer that shrank ×0.5 ranks with one that grew ×2.

    Example:
        >>> run = RunData("r", "", {tags.layer_tag("a"): Series.from_pairs([(1, 1.0), (2, 1.1)]),
        ...                         tags.layer_tag("b"): Series.from_pairs([(1, 3.0), (2, 1.0)])})
        >>> [(name, describe_change(g)) for name, g in layer_changes(run)]
        [('b', 'shrank ×0.333'), ('a', 'grew ×1.1')]
    """
    return sorted(layer_growth(run), key=lambda x: -abs(x[1]))[:top_k]


def describe_change(log_growth: float) -> str:
    """A change of log norm in words: ``grew ×2``, ``shrank ×0.67``, or ``unchanged``.

    Example:
        >>> describe_change(math.log(2.0)), describe_change(math.log(0.67)), describe_change(0.0)
        ('grew ×2', 'shrank ×0.67', 'unchanged (×1)')
    """
    factor = math.exp(log_growth)
    text = f"×{factor:.3g}"
    if text == "×1":
        return "unchanged (×1)"
    return f"grew {text}" if log_growth > 0 else f"shrank {text}"


def _argbest(series: Series | None, pick: Any) -> tuple[float | None, int | None]:
    if series is None or not np.isfinite(series.values).any():
        return None, None
    i = int(pick(np.where(np.isfinite(series.values), series.values, np.nan)))
    return float(series.values[i]), int(series.steps[i])


def summarize(run: RunData, top_k: int = 5) -> dict[str, Any]:
    """A JSON-friendly summary of one run (``None`` where a value was never logged or is not finite).

    The ``final_*`` values describe the weights the run ended with: after a restore, the
    values logged at the restored step (``restored_to_step``); otherwise those of the last
    check. Keys:

    * ``run``, ``path``, ``source`` (``"normguard"``, or ``"logger"`` for a baseline drawn
      from the framework's own losses), ``train_loss_tag`` and ``val_loss_tag`` (the tags
      the losses come from), ``last_step``, ``checks`` (number of norm checks);
    * ``final_norm``, ``norm_at_last_check`` (before any restore), ``norm_after_restore``;
    * ``nonfinite_since``: for ``norm``, ``train_loss`` and ``val_loss`` whose last logged
      value is NaN or infinite, the step that stretch began (weights or losses that went
      NaN are never reported as their last finite value), with ``last_finite_norm`` and
      ``last_finite_norm_step`` for the norm;
    * ``max_growth_exponent`` and its step, ``first_fired_step``, ``events`` (every event:
      step, kind, message), ``actions_taken`` (the action kinds);
    * ``restored_to_step``: the step whose weights a restore event put back, ``None`` without
      one or when they were the latest weights; ``kept_last_weights``: normguard acted
      (or restored) but the run ended with the weights it trained to;
    * ``final_train_loss``, ``final_val_loss``, ``val_loss_at_last_check``,
      ``best_val_loss`` and its step, ``noise_floor``, ``final_gap``, ``weight_decay``
      (the final decay in effect per param group), ``layer_changes`` (the ``top_k`` layers
      whose norm changed most: ``layer``, ``log_growth``, ``factor`` last / first norm,
      ``change`` in words) and ``warnings`` (damaged event files: the run may be incomplete).
    """
    restored_step = run.restored_step()

    def final(series: Series | None) -> float | None:
        return None if series is None else finite_or_none(series.final())

    def at_end(series: Series | None) -> float | None:
        """The value the run ended with: at the restored step after a restore, else the last one."""
        if series is None:
            return None
        if restored_step is not None:
            return finite_or_none(series.at(restored_step))
        return finite_or_none(series.final())

    train, val = run.train_loss(), run.val_loss()
    max_growth, max_growth_step = _argbest(run.series(tags.GROWTH_EXPONENT), np.nanargmax)
    best_val, best_val_step = _argbest(val, np.nanargmin)
    total = run.series(tags.TOTAL_NORM)
    norm_after_restore = None
    if restored_step is not None and total is not None:
        norm_after_restore = finite_or_none(total.at(restored_step))
    nonfinite = {}
    for key, series in (("norm", total), ("train_loss", train), ("val_loss", val)):
        since = None if series is None else series.nonfinite_since()
        if since is not None:
            nonfinite[key] = since
    fired = [e.step for e in run.events if e.kind is EventKind.DETECTOR_FIRED]
    actions = []
    for e in run.events:
        if e.kind.value in ACTION_KINDS and e.kind.value not in actions:
            actions.append(e.kind.value)
    return {
        "run": run.name,
        "path": run.path,
        "source": "normguard" if run.has_normguard_data else "logger",
        "train_loss_tag": run.train_loss_tag,
        "val_loss_tag": run.val_loss_tag,
        "last_step": run.last_step,
        "checks": 0 if total is None else len(total),
        "final_norm": at_end(total),
        "norm_at_last_check": final(total),
        "nonfinite_since": nonfinite,
        "last_finite_norm": None if total is None else total.last(),
        "last_finite_norm_step": None if total is None else total.last_finite_step(),
        "max_growth_exponent": max_growth,
        "max_growth_exponent_step": max_growth_step,
        "first_fired_step": fired[0] if fired else None,
        "restored_to_step": restored_step,
        "kept_last_weights": run.kept_last_weights(),
        "norm_after_restore": norm_after_restore,
        "events": [{"step": e.step, "kind": e.name, "message": e.message} for e in run.events],
        "actions_taken": actions,
        "final_train_loss": at_end(train),
        "final_val_loss": at_end(val),
        "val_loss_at_last_check": final(val),
        "best_val_loss": best_val,
        "best_val_step": best_val_step,
        "noise_floor": final(run.series(tags.NOISE_FLOOR)),
        "final_gap": at_end(run.series(tags.GAP)),
        "weight_decay": {k: s.final() for k, s in sorted(run.weight_decays.items())},
        "layer_changes": [
            {"layer": k, "log_growth": g, "factor": math.exp(g), "change": describe_change(g)}
            for k, g in layer_changes(run, top_k)
        ],
        "warnings": list(run.warnings),
    }
