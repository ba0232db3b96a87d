"""``normguard report LOGDIR``: one figure and a summary from normguard's TensorBoard logs.

Every run under LOGDIR becomes one column of the figure, so runs in sub-directories are
compared side by side (in the order they started), on one x-axis (``--x step`` or
``--x epoch``). A run is a directory with event files holding normguard's tags, or, for a
baseline trained without normguard, the framework's own losses (Lightning's ``train_loss``
/ ``val_loss``, Hugging Face's ``train/loss`` / ``eval/loss``). The figure goes to ``--out``
(``.png``, ``.svg``, ``.pdf``, or ``.html``: a self-contained page with a figure per run, the summary
table and every event);
``--json`` prints the summary as one JSON object.

Exit status: 0; 2 for a usage error (one line on stderr); 1 when an event file is truncated
or corrupted: the report is still written from what could be read, each damaged file is
named on stderr, and ``--json`` says ``"complete": false`` with the run's ``warnings``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from typing import Any

from normguard.cli import UsageError, add_progress_argument, progress_flag, usage_errors
from normguard.progress import progress
from normguard.validation import check_int

_FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".html", ".htm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory written by normguard")
    parser.add_argument(
        "--out",
        default="normguard-report.png",
        help="figure to write: .png, .svg, .pdf or .html (default: %(default)s)",
    )
    parser.add_argument("--no-figure", action="store_true", help="only print the summary (no matplotlib needed)")
    add_progress_argument(parser)
    parser.add_argument(
        "--top-k", type=int, default=5, help="layers whose norm changed most to show (default: %(default)s)"
    )
    parser.add_argument(
        "--x",
        choices=("step", "epoch"),
        default="step",
        help="the shared x-axis: the step, or the epoch the framework logged (default: %(default)s)",
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _norm_text(s: dict[str, Any]) -> str:
    """The norm clause: the weights the run ended with, never a stale finite value for NaN weights."""
    since = s["nonfinite_since"].get("norm")
    if since is not None:
        last = s["last_finite_norm"]
        before = "" if last is None else f"; last finite {_fmt(last)} at step {s['last_finite_norm_step']}"
        at_check = f"norm at the last check non-finite (since step {since}{before})"
    else:
        at_check = f"norm at the last check {_fmt(s['norm_at_last_check'])}"
    if s["kept_last_weights"]:
        at_check += " (kept the last weights)"
    if s["restored_to_step"] is not None:
        return (
            f"final norm {_fmt(s['norm_after_restore'])} (restored to the weights of step {s['restored_to_step']}; "
            f"{at_check} before the restore)"
        )
    return at_check


def _line(s: dict[str, Any]) -> str:
    if s["source"] == "logger":
        losses = " / ".join(t for t in (s["train_loss_tag"], s["val_loss_tag"]) if t)
        return (
            f"{s['run']}: {s['last_step']} steps, baseline without normguard (losses from {losses}); "
            f"final train loss {_fmt(s['final_train_loss'])}, val loss {_fmt(s['final_val_loss'])} "
            f"(best val {_fmt(s['best_val_loss'])})"
        )
    fired = "not fired" if s["first_fired_step"] is None else f"fired at step {s['first_fired_step']}"
    actions = ", ".join(s["actions_taken"]) or "none"
    losses = f"final train loss {_fmt(s['final_train_loss'])}, val loss {_fmt(s['final_val_loss'])}"
    for key, what in (("train_loss", "train"), ("val_loss", "val")):
        if key in s["nonfinite_since"]:
            losses += f" ({what} loss non-finite since step {s['nonfinite_since'][key]})"
    return (
        f"{s['run']}: {s['last_step']} steps, detector {fired}, actions: {actions}; {_norm_text(s)}; "
        f"max growth exponent {_fmt(s['max_growth_exponent'])}; {losses} (best val {_fmt(s['best_val_loss'])}), "
        f"noise floor {_fmt(s['noise_floor'])}"
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

    with usage_errors():
        check_int("--top-k", args.top_k, 0)
    out = None if args.no_figure else str(args.out)
    if out is not None and not out.lower().endswith(_FIGURE_SUFFIXES):
        raise UsageError(f"--out must end in .png, .svg, .pdf or .html, got {out!r}")
    bar = progress(None, "normguard report: reading", unit="run", enabled=progress_flag(args), tick=0.5)
    try:
        with warnings.catch_warnings():  # damaged files are reported below, once each
            warnings.simplefilter("ignore", report.DamagedLogWarning)
            runs = report.load_runs(args.logdir)
    except (FileNotFoundError, ValueError) as exc:
        bar.close()
        raise UsageError(str(exc)) from None
    summaries = [report.summarize(r, top_k=args.top_k) for r in runs.values()]
    bar.set_description("normguard report: drawing")
    if out is None:
        bar.close()
    else:
        try:
            with bar:
                report.plot_report(runs, out, top_k=args.top_k, x=args.x)
        except ValueError as exc:
            raise UsageError(f"--x {args.x}: {exc}") from None
        except ImportError as exc:
            raise UsageError(f"{exc} (or pass --no-figure)") from None
        except OSError as exc:
            raise UsageError(f"cannot write {out!r}: {exc.strerror or exc}") from None
    damaged = [(s["run"], w) for s in summaries for w in s["warnings"]]
    for run_name, problem in damaged:
        print(f"normguard report: warning: run {run_name!r} is incomplete: {problem}", file=sys.stderr)
    status = 1 if damaged else 0
    if args.json:
        result = {"logdir": str(args.logdir), "figure": out, "complete": not damaged, "runs": summaries}
        print(json.dumps(_clean(result), indent=2))
        return status
    for s in summaries:
        print(_line(s))
    if out is not None:
        print(f"wrote {out}")
    return status
