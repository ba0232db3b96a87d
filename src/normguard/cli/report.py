"""``normguard report LOGDIR``: one figure and a summary from normguard's TensorBoard logs.

Every run under LOGDIR (a directory with event files holding ``normguard/`` tags) becomes
one column of the figure, so runs in sub-directories are compared side by side. The figure
goes to ``--out`` (``.png``, ``.svg``, ``.pdf``, or ``.html``: a self-contained page with the
PNG embedded and the summary table); ``--json`` prints the summary as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from normguard.cli import UsageError

_FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".html", ".htm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory written by normguard")
    parser.add_argument(
        "--out",
        default="normguard-report.png",
        help="figure to write: .png, .svg, .pdf or .html (default: %(default)s)",
    )
    parser.add_argument("--no-figure", action="store_true", help="only print the summary (no matplotlib needed)")
    parser.add_argument("--top-k", type=int, default=5, help="fastest-growing layers to show (default: %(default)s)")


def _line(s: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))

    fired = "not fired" if s["first_fired_step"] is None else f"fired at step {s['first_fired_step']}"
    actions = ", ".join(s["actions_taken"]) or "none"
    norm = f"norm at the last check {fmt(s['final_norm'])} (max growth exponent {fmt(s['max_growth_exponent'])})"
    if s["restored_to_step"] is not None:
        norm += f", restored to the weights of step {s['restored_to_step']} (norm {fmt(s['norm_after_restore'])})"
    return (
        f"{s['run']}: {s['last_step']} steps, detector {fired}, actions: {actions}; {norm}; "
        f"final train loss {fmt(s['final_train_loss'])}, val loss {fmt(s['final_val_loss'])} "
        f"(best {fmt(s['best_val_loss'])}), noise floor {fmt(s['noise_floor'])}"
    )


def _clean(value: Any) -> Any:
    """NaN/Inf become null so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    from normguard import report

    if args.top_k < 0:
        raise UsageError(f"--top-k must be 0 or more, got {args.top_k}")
    out = None if args.no_figure else str(args.out)
    if out is not None and not out.lower().endswith(_FIGURE_SUFFIXES):
        raise UsageError(f"--out must end in .png, .svg, .pdf or .html, got {out!r}")
    try:
        runs = report.load_runs(args.logdir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    summaries = [report.summarize(r, top_k=args.top_k) for r in runs.values()]
    if out is not None:
        try:
            report.plot_report(runs, out, top_k=args.top_k)
        except ImportError as exc:
            raise UsageError(f"{exc} (or pass --no-figure)") from None
        except OSError as exc:
            raise UsageError(f"cannot write {out!r}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(_clean({"logdir": str(args.logdir), "figure": out, "runs": summaries}), indent=2))
        return 0
    for s in summaries:
        print(_line(s))
    if out is not None:
        print(f"wrote {out}")
    return 0
