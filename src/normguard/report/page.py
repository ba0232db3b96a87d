"""The HTML report: a self-contained page with the summary table, one figure per run and every event."""

from __future__ import annotations

import base64
import html
import struct
from collections.abc import Mapping
from typing import Any

from normguard.report.runs import RunData
from normguard.report.summary import summarize

__all__ = ["HTML_CSS_DPI", "report_html"]

#: the HTML page shows figures at this many CSS pixels per inch, from PNGs of twice that
HTML_CSS_DPI = 100


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, or ``None`` if ``png`` is not one."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


#: the summary table's columns: (title, key, explanation shown on hover)
_TABLE = [
    ("run", "run", "the run's directory under LOGDIR"),
    ("source", "source", "normguard's logs, or a baseline's own losses (the framework's loss tags)"),
    ("last step", "last_step", "the last step logged"),
    ("first fired at step", "first_fired_step", "the first step the detector fired"),
    ("actions taken", "actions_taken", "what normguard did to training"),
    ("restored to step", "restored_to_step", "the step whose weights a restore put back (not the latest ones)"),
    ("final norm", "final_norm", "the norm of the weights the run ended with (after a restore: the restored ones)"),
    ("norm at the last check", "norm_at_last_check", "before any restore"),
    ("max growth exponent", "max_growth_exponent", "largest d log|w| / d log step"),
    ("final val loss", "final_val_loss", "validation loss of the weights the run ended with"),
    ("best val loss", "best_val_loss", "the lowest validation loss logged"),
    ("final train loss", "final_train_loss", "training loss of the weights the run ended with"),
    ("noise floor", "noise_floor", "the noise floor in use at the end"),
]


def _cell(s: dict[str, Any], key: str) -> str:
    value = s[key]
    if key == "norm_at_last_check" and "norm" in s["nonfinite_since"]:
        return f"non-finite since step {s['nonfinite_since']['norm']}"
    if key == "final_norm" and value is None and "norm" in s["nonfinite_since"] and s["restored_to_step"] is None:
        return "non-finite"
    if key == "restored_to_step" and value is None and s["kept_last_weights"]:
        return "kept the last weights"
    if key == "source" and value == "logger":
        return "baseline: " + " / ".join(t for t in (s["train_loss_tag"], s["val_loss_tag"]) if t)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return _fmt(value)


def report_html(runs: Mapping[str, RunData], figures: Mapping[str, bytes] | bytes, top_k: int = 5) -> str:
    """A self-contained HTML page: the summary table, one figure per run and every event.

    ``figures`` maps run names to PNGs (one PNG for all runs is accepted too). Each figure
    is shown at half its pixel size (sharp on high-density screens) and at most the page's
    width; its "full-size image" link shows it at full size (CSS ``:target``, no script).

    Example:
        >>> from normguard import tags
        >>> from normguard.report.runs import Series
        >>> run = RunData("a<b", "", {tags.TOTAL_NORM: Series.from_pairs([(1, 2.0)])})
        >>> page = report_html({"a<b": run}, {"a<b": b"png"})
        >>> "data:image/png;base64,cG5n" in page, "a&lt;b" in page
        (True, True)
    """
    if isinstance(figures, bytes):
        figures = {"all runs": figures}
    summaries = [summarize(r, top_k) for r in runs.values()]
    head = "".join(f'<th title="{html.escape(tip)}">{html.escape(title)}</th>' for title, _, tip in _TABLE)
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(_cell(s, key))}</td>" for _, key, _ in _TABLE) + "</tr>" for s in summaries
    ]
    damaged = [f"{s['run']}: {w}" for s in summaries for w in s["warnings"]]
    warning = ""
    if damaged:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in damaged)
        title = "<strong>Damaged event files: these runs are incomplete.</strong>"
        warning = f'<div class="warning">{title}<ul>{items}</ul></div>'
    blocks = []
    for i, (name, png) in enumerate(figures.items()):
        size = _png_size(png)
        attrs = "" if size is None else f' width="{size[0] // 2}" height="{size[1] // 2}"'
        image = base64.b64encode(png).decode("ascii")
        blocks.append(
            f'<figure id="figure-{i}"><div class="scroll"><img alt="normguard report of {html.escape(name)}"{attrs} '
            f'src="data:image/png;base64,{image}"></div><figcaption>{html.escape(name)} · '
            f'<a class="full" href="#figure-{i}">full-size image</a> · '
            f'<a class="fit" href="#figures">fit to the page</a></figcaption></figure>'
        )
    event_rows = [
        f"<tr><td>{html.escape(s['run'])}</td><td>{e['step']}</td><td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(e['message'])}</td></tr>"
        for s in summaries
        for e in s["events"]
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>normguard report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: sans-serif; margin: 1.5em; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
.warning {{ border: 2px solid #c00; background: #fee; padding: 0.5em 1em; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0; max-width: 100%; }}
figure .scroll {{ overflow-x: auto; }}
figure img {{ max-width: 100%; height: auto; display: block; }}
figure:target {{ flex-basis: 100%; }}
figure:target img {{ width: auto; max-width: none; }}
figure .fit {{ display: none; }}
figure:target .fit {{ display: inline; }}
figure:target .full {{ display: none; }}
figcaption {{ font-size: 0.9em; color: #444; }}
</style></head><body>
<h1>normguard report</h1>
{warning}
<h2>Summary</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Figures</h2>
<p>One per run, all on the same x-axis. Top to bottom: events (one row per kind), losses with the
noise floor (a baseline: the losses its framework logged), weight norm, the weight decay in effect
(when an action changed it, with the point it engaged), the norm's growth exponent, the validation − train
gap, the layers whose norm changed most, and the detector's conditions (red where they held). Dashed
vertical lines mark the events.</p>
<div class="figures" id="figures">
{chr(10).join(blocks)}
</div>
<h2>Events</h2>
<table><thead><tr><th>run</th><th>step</th><th>kind</th><th>message</th></tr></thead><tbody>
{chr(10).join(event_rows) if event_rows else '<tr><td colspan="4">no events</td></tr>'}
</tbody></table>
</body></html>
"""
