"""Regenerate every output and table that README.md and docs/ show, so that no number is typed.

A page marks what is generated between two HTML comments (invisible on GitHub and on the site)::

    <!-- BEGIN output:demo -->
    ```console
    $ normguard demo
    ... what the command printed ...
    ```
    <!-- END output:demo -->

* ``output:NAME`` blocks are what a command, an example script or a code snippet printed, run
  fresh in a scratch folder with this checkout's sources (:data:`OUTPUTS` says how to run each);
* ``table:NAME`` blocks are tables built from a results file (:data:`TABLES`): the suite's table
  in ``benchmarks/RESULTS.md``, the paper experiment's ``docs/paper_mlp_results.json``;
* a snippet that an output runs is the ```` ```python ```` block right after a
  ``<!-- snippet:NAME -->`` comment, run exactly as written.

The same block may appear on several pages; each is produced once. Run from the repository
root::

    python tools/render_docs.py                # rewrite every block that disagrees with a fresh run
    python tools/render_docs.py --only demo    # one block
    python tools/render_docs.py --check        # compare what the pages show with a fresh run
    python tools/render_docs.py --list

``--check`` (and ``tests/integration/test_readme_snippet.py``, one test per block) fails when a
shown block and a fresh run disagree: exactly where the output is deterministic, otherwise
within the tolerance its :class:`Output` states (``rel_tol`` on printed decimals; ``varies`` for
timings and paths, which are not compared).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

BLOCK = re.compile(r"<!-- BEGIN (output|table):([\w.-]+) -->\n(.*?)<!-- END \1:\2 -->", re.DOTALL)
SNIPPET = re.compile(r"<!-- snippet:([\w.-]+) -->\n```python\n(.*?)```", re.DOTALL)
NUMBER = re.compile(r"([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")
SECONDS = r"\d+(?:\.\d+)? ?s\b"


def pages() -> list[Path]:
    """Every page that may hold generated blocks: README.md and docs/**/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# ---------------------------------------------------------------------------- what is shown


@dataclass(frozen=True)
class Output:
    """How to produce one ``output:NAME`` block.

    Args:
        argv: the command, run in a scratch folder; ``"python"`` is this interpreter, a path
            under ``examples/`` is taken from this checkout. Empty: run ``snippet``.
        shown: the command line shown on the page (a ``$`` line), or ``None``.
        snippet: the name of the ``<!-- snippet:NAME -->`` code block to run.
        setup: files to make in the scratch folder first (a key of :data:`SETUPS`).
        varies: regular expressions of text that changes from run to run (timings, temporary
            paths): kept as printed, not compared (a pattern's group 1 if it has one, else the
            whole match).
        rel_tol: printed decimals agree within this relative tolerance (plus one unit of the
            last printed digit); ``0``: the text must be identical. Integers always exactly.
        keep_from: show the output from the first line matching this expression on.
        timeout: seconds.
    """

    argv: tuple[str, ...] = ()
    shown: str | None = None
    snippet: str | None = None
    setup: str | None = None
    varies: tuple[str, ...] = ()
    rel_tol: float = 0.0
    keep_from: str | None = None
    timeout: int = 600

    @property
    def lang(self) -> str:
        return "console" if self.shown else "text"


#: Training on another CPU (other BLAS, thread count) may round the last digits differently.
TRAINING_TOL = 0.02

OUTPUTS: dict[str, Output] = {
    "demo": Output(("python", "-m", "normguard", "demo"), "normguard demo", varies=(SECONDS,), rel_tol=TRAINING_TOL),
    "custom_loop_snippet": Output(snippet="custom_loop", rel_tol=TRAINING_TOL),
    "custom_loop_example": Output(
        ("python", "examples/custom_loop.py", "--log-dir", "runs/custom_loop"),
        "python examples/custom_loop.py --log-dir runs/custom_loop",
        rel_tol=TRAINING_TOL,
    ),
    "lightning_example": Output(
        ("python", "examples/lightning_quickstart.py", "--log-dir", "runs/lightning"),
        "python examples/lightning_quickstart.py --log-dir runs/lightning",
        rel_tol=TRAINING_TOL,
    ),
    "hf_example": Output(
        ("python", "examples/hf_trainer.py", "--log-dir", "runs/hf"),
        "python examples/hf_trainer.py --log-dir runs/hf",
        varies=(r"(?m)^\s*(?:un)?guarded\s.*?(\s+\d+\.\d+)$",),  # the seconds column (its padding varies too)
        rel_tol=TRAINING_TOL,
        keep_from=r"^noise floor",
    ),
    "spectrum_digits": Output(
        ("python", "-m", "normguard", "spectrum", "digits.npz"), "normguard spectrum digits.npz", setup="digits"
    ),
    "theory": Output(
        ("python", "-m", "normguard", "theory", "--alpha", "1.5", "--gamma", "0.5", "--tau", "0.2"),
        "normguard theory --alpha 1.5 --gamma 0.5 --tau 0.2",
    ),
    "pilot_digits": Output(
        ("python", "-m", "normguard", "pilot", "digits.npz", "--tau", "0.05", "--sizes", "20", "30", "45", "60"),
        "normguard pilot digits.npz --tau 0.05 --sizes 20 30 45 60",
        setup="digits",
    ),
    "model_pilot_snippet": Output(snippet="model_pilot", rel_tol=TRAINING_TOL),
    "noise_floor_snippet": Output(snippet="noise_floor"),
    "floors_snippet": Output(snippet="floors"),
    "cli_help": Output(("python", "-m", "normguard", "--help"), "normguard --help"),
    **{
        f"cli_help_{command}": Output(("python", "-m", "normguard", command, "--help"), f"normguard {command} --help")
        for command in ("demo", "spectrum", "theory", "pilot", "report")
    },
}

DIGITS = (
    "from sklearn.datasets import load_digits; import numpy as np; X, y = load_digits(return_X_y=True); "
    "np.savez('digits.npz', X=X, y=(y - y.mean()) / y.std())"
)
#: files an output needs in its scratch folder, made by a command shown on the page too
SETUPS: dict[str, tuple[str, ...]] = {"digits": ("python", "-c", DIGITS)}


def find_snippet(name: str) -> str:
    """The code of the ``<!-- snippet:NAME -->`` block (the same on every page that shows it)."""
    found = {m.group(2) for page in pages() for m in SNIPPET.finditer(page.read_text(encoding="utf-8"))
             if m.group(1) == name}  # fmt: skip
    if len(found) != 1:
        raise LookupError(f"expected one code for snippet {name!r} on the pages but found {len(found)}")
    return found.pop()


def _command(argv: Iterable[str]) -> list[str]:
    out = [sys.executable if a == "python" else a for a in argv]
    return [str(ROOT / a) if a.startswith("examples/") else a for a in out]


def run_output(name: str, scratch: Path | None = None) -> str:
    """Run output ``name`` fresh and return the block's body (a fenced code block).

    It runs in ``scratch`` (kept, for a caller that inspects the files it wrote) or in a
    temporary folder.
    """
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix=f"render-{name}-") as tmp:
            return run_output(name, Path(tmp))
    spec = OUTPUTS[name]
    env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="100", PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    if spec.setup:
        subprocess.run(_command(SETUPS[spec.setup]), cwd=scratch, env=env, check=True, timeout=spec.timeout)
    if spec.snippet:
        script = scratch / "snippet.py"
        script.write_text(find_snippet(spec.snippet), encoding="utf-8")
        argv = [sys.executable, str(script)]
    else:
        argv = _command(spec.argv)
    proc = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=spec.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"output {name!r}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    lines = [line.rstrip() for line in proc.stdout.strip("\n").splitlines()]
    if spec.keep_from:
        start = next((i for i, line in enumerate(lines) if re.search(spec.keep_from, line)), None)
        if start is None:
            raise RuntimeError(f"output {name!r}: no line matches {spec.keep_from!r}:\n{proc.stdout[-2000:]}")
        lines = lines[start:]
    text = "\n".join(lines)
    shown = f"$ {spec.shown}\n" if spec.shown else ""
    return f"```{spec.lang}\n{shown}{text}\n```\n"


# ---------------------------------------------------------------------------- tables


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _results_block(name: str) -> str:
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- BEGIN {name} -->\n(.*?)<!-- END {name} -->", text, flags=re.DOTALL)
    if match is None:
        raise LookupError(f"benchmarks/RESULTS.md has no block {name!r}")
    return match.group(1)


def suite_rows() -> list[dict[str, str]]:
    """The first table of RESULTS.md's ``suite`` block, one dict per row (column title -> cell)."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in _results_block("suite").splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells)))
    if not rows:
        raise LookupError("benchmarks/RESULTS.md's suite block has no table")
    return rows


#: the suite's arms the short table shows, and their titles
SUITE_ARMS = {
    "none": "no normguard",
    "early_stopping": "EarlyStopping + best",
    "stop": "`stop`",
    "hold_floor_restore": "`hold_floor`",
}


def suite_table() -> str:
    """The suite's medians: one row per task, one column per arm, the noise levels side by side."""
    rows = suite_rows()
    cells: dict[tuple[str, str], list[str]] = {}
    noises: dict[str, list[str]] = {}
    for row in rows:
        task, noise, arm = row["task"], row["noise"], row["arm"]
        if arm not in SUITE_ARMS:
            continue
        noises.setdefault(task, [])
        if noise not in noises[task]:
            noises[task].append(noise)
        cells.setdefault((task, arm), []).append(row["test (median)"])
    out = []
    for task, levels in noises.items():
        label = f"{task}, {' / '.join(levels)}"
        out.append([label, *(" / ".join(cells.get((task, arm), ["–"])) for arm in SUITE_ARMS)])
    return _markdown_table(["task (test metric), noise", *SUITE_ARMS.values()], out)


SUITE2 = ROOT / "benchmarks" / "RESULTS_suite2.md"


def _suite2_text() -> str:
    """Grid 2's tables: benchmarks/RESULTS_suite2.md, or, before the suite has written it, the same
    tables built from the saved results (``benchmarks/suite/report2.py``)."""
    if SUITE2.is_file():
        return SUITE2.read_text(encoding="utf-8")
    for path in (ROOT / "benchmarks", ROOT / "src"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    report2 = importlib.import_module("suite.report2")
    grid2 = importlib.import_module("suite.grid2")
    return str(report2.build(grid2.ROOT))


def suite2_rows() -> list[dict[str, str]]:
    """The first table of grid 2's results (known and estimated floors), one dict per row."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in _suite2_text().splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells)))
    if not rows:
        raise LookupError("grid 2 of the suite has no results table yet")
    return rows


def _delta(cell: str) -> float | None:
    """The leading signed number of a cell such as ``+1.0 (+0.5, +2.1)``; None for ``–``."""
    match = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", cell)
    return float(match.group(1)) if match else None


def suite2_summary_table() -> str:
    """Grid 2 in a few rows: per noise kind, the median [range] over cells of each arm's gain."""
    rows = suite2_rows()
    columns = {
        "estimate − ES": "estimated floor − EarlyStopping",
        "known − ES": "known floor − EarlyStopping",
        "estimate − none": "estimated floor − no normguard",
    }
    kinds: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        kinds.setdefault(row["noise"], []).append(row)
    out = []
    for kind, group in kinds.items():
        cells = [kind, str(len(group))]
        for column in columns:
            values = sorted(v for r in group if (v := _delta(r.get(column, "–"))) is not None)
            cells.append(f"{statistics.median(values):+.1f} [{values[0]:+.1f}, {values[-1]:+.1f}]" if values else "–")
        out.append(cells)
    return _markdown_table(["label noise", "cells", *columns.values()], out)


def suite2_table() -> str:
    """Grid 2's test table (medians per cell) with the columns a reader compares."""
    keep = ["task", "noise", "opt", "floor", "none", "early_stopping", "hold_known", "hold_estimate"]
    titles = ["task", "noise", "optimizer", "true floor", "no normguard", "EarlyStopping + best",
              "`hold_floor`, known floor", "`hold_floor`, estimated floor"]  # fmt: skip
    return _markdown_table(titles, [[row.get(k, "–") for k in keep] for row in suite2_rows()])


def paper_mlp_table() -> str:
    """``examples/paper_mlp.py``'s results (docs/paper_mlp_results.json) as a table."""
    data = json.loads((ROOT / "docs" / "paper_mlp_results.json").read_text(encoding="utf-8"))
    rows = []
    for r in data["rows"]:
        lo, hi = r["exponent_ci"]
        rows.append(
            [
                f"{r['alpha']:g}",
                str(r["depth"]),
                f"{r['exponent']:.2f} [{lo:.2f}, {hi:.2f}]",
                f"{r['r2']:.2f}",
                f"{r['median_norm_sq'][-1]:,.0f}".replace(",", " "),
                f"{r['mean_test_error']:.2f}",
            ]
        )
    n_max = data["sizes"][-1]
    header = ["α", "hidden layers", "exponent of Σ‖W‖² (95 % interval)", "R²", f"norm at n = {n_max:,}", "test error"]
    seconds = data.get("seconds")
    note = f"\n`{data['command']}`, {len(data['seeds'])} seeds, n = {data['sizes'][0]} … {n_max}"
    note += f", {seconds / 60:.0f} min.\n" if seconds else ".\n"
    return _markdown_table([h.replace(f"{n_max:,}", f"{n_max:,}".replace(",", " ")) for h in header], rows) + note


def _import(module: str) -> Any:
    """A module of this checkout's sources (``src/`` first on the path)."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    return importlib.import_module(module)


def _inline(rst: str) -> str:
    """reStructuredText inline literals (````x````) as Markdown code, ``|`` escaped for a table."""
    return re.sub(r"``(.+?)``", r"`\1`", rst).replace("|", "\\|")


def tags_table() -> str:
    """The tag table of :mod:`normguard.tags`' docstring (a reStructuredText simple table) in Markdown."""
    doc = _import("normguard.tags").__doc__ or ""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+(\s+=+)+", line.strip())]
    if len(rules) < 3:
        raise LookupError("normguard.tags' docstring has no tag table")
    split = lines[rules[0]].index(" =") + 1  # where the second column starts
    rows: list[list[str]] = []
    for line in lines[rules[1] + 1 : rules[2]]:
        tag, value = line[:split].strip(), line[split:].strip()
        if tag:
            rows.append([tag, value])
        elif rows:  # a continuation of the previous row's value
            rows[-1][1] += " " + value
    return _markdown_table(["tag", "value"], [[_inline(t), _inline(v)] for t, v in rows])


def custom_scalars_table() -> str:
    """The categories and charts of normguard's Custom Scalars layout."""
    layout = _import("normguard.tags").custom_scalars_layout()
    rows = [[f"`{category}`", title.replace("|", "\\|")] for category, charts in layout.items() for title in charts]
    return _markdown_table(["category", "chart"], rows)


def results_summary_table() -> str:
    """The first table under RESULTS.md's ``## Summary`` heading: the cost targets, met or missed."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    match = re.search(r"^## Summary[^\n]*\n(.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE)
    if match is None:
        raise LookupError("benchmarks/RESULTS.md has no '## Summary' section")
    table = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return "\n".join(table) + "\n"


def results_file_table(file: str, block: str, index: int) -> Callable[[], str]:
    """The ``index``-th table (from 0) of the generated block ``block`` in ``benchmarks/<file>``."""

    def table() -> str:
        text = (ROOT / "benchmarks" / file).read_text(encoding="utf-8")
        match = re.search(rf"<!-- BEGIN {block} -->\n(.*?)<!-- END {block} -->", text, flags=re.DOTALL)
        if match is None:
            raise LookupError(f"benchmarks/{file} has no block {block!r}")
        tables = re.findall(r"((?:^\|.*\n)+)", match.group(1), flags=re.MULTILINE)
        if len(tables) <= index:
            raise LookupError(f"benchmarks/{file}'s block {block!r} has {len(tables)} tables, not {index + 1}")
        return tables[index]

    table.__doc__ = f"table {index} of benchmarks/{file}'s block {block!r}."
    return table


def results_block(name: str) -> Callable[[], str]:
    """RESULTS.md's generated block ``name`` as it is, its heading one level down."""

    def block() -> str:
        return re.sub(r"^### ", "#### ", _results_block(name), flags=re.MULTILINE)

    block.__doc__ = f"benchmarks/RESULTS.md's block {name!r}."
    return block


TABLES: dict[str, Callable[[], str]] = {
    "results_summary": results_summary_table,
    "noise_floor_held": results_file_table("RESULTS_noise_floor.md", "noise_floor_estimate", 1),
    "noise_floor_regression": results_file_table("RESULTS_noise_floor.md", "noise_floor_estimate", 2),
    "results_host_syncs": results_block("host_syncs"),
    "results_overhead": results_block("overhead"),
    "suite": suite_table,
    "suite2_summary": suite2_summary_table,
    "suite2": suite2_table,
    "paper_mlp": paper_mlp_table,
    "tags": tags_table,
    "custom_scalars": custom_scalars_table,
}


# ---------------------------------------------------------------------------- comparing


def _varies(text: str, spec: Output | None) -> str:
    """``text`` with what varies from run to run (a pattern's group 1, or the whole match) masked."""
    for pattern in spec.varies if spec else ():
        text = re.sub(pattern, _mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    if match.re.groups == 0:
        return "<varies>"
    start, end = match.span(1)
    whole = match.group(0)
    return whole[: start - match.start()] + "<varies>" + whole[end - match.start() :]


def _close(a: str, b: str, rel_tol: float) -> bool:
    if a == b:
        return True
    if rel_tol == 0 or not any(c in a + b for c in ".eE"):
        return False
    x, y = float(a), float(b)
    decimals = max(len(s.split(".")[1].split("e")[0].split("E")[0]) if "." in s else 0 for s in (a, b))
    unit = 10.0**-decimals
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=unit)


def differences(kind: str, name: str, shown: str, fresh: str) -> list[str]:
    """Where ``shown`` and ``fresh`` disagree beyond what the block's spec allows (empty: they agree)."""
    spec = OUTPUTS.get(name) if kind == "output" else None
    rel_tol = spec.rel_tol if spec else 0.0
    problems = []
    shown_lines, fresh_lines = _varies(shown, spec).splitlines(), _varies(fresh, spec).splitlines()
    if len(shown_lines) != len(fresh_lines):
        problems.append(f"{kind}:{name}: {len(shown_lines)} lines shown, {len(fresh_lines)} printed now")
    for i, (a, b) in enumerate(zip(shown_lines, fresh_lines), start=1):
        pa, pb = NUMBER.split(a), NUMBER.split(b)
        same = len(pa) == len(pb) and all(
            (x == y) if k % 2 == 0 else _close(x, y, rel_tol) for k, (x, y) in enumerate(zip(pa, pb))
        )
        if not same:
            problems.append(f"{kind}:{name} line {i}:\n  shown: {a}\n  now:   {b}")
    return problems


# ---------------------------------------------------------------------------- pages


def shown_blocks() -> dict[tuple[str, str], list[tuple[Path, str]]]:
    """(kind, name) -> [(page, body shown)] for every generated block on the pages."""
    found: dict[tuple[str, str], list[tuple[Path, str]]] = {}
    for page in pages():
        for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
            found.setdefault((match.group(1), match.group(2)), []).append((page, match.group(3)))
    unknown = [f"{k}:{n}" for k, n in found if n not in (OUTPUTS if k == "output" else TABLES)]
    if unknown:
        raise LookupError(f"blocks with no recipe in tools/render_docs.py: {', '.join(unknown)}")
    return found


def generate(kind: str, name: str) -> str:
    return run_output(name) if kind == "output" else TABLES[name]()


def rewrite(bodies: dict[tuple[str, str], str]) -> list[Path]:
    """Put the new bodies into every page that shows them; the pages changed."""
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")

        def body(match: re.Match[str]) -> str:
            key = (match.group(1), match.group(2))
            new = bodies.get(key, match.group(3))
            return f"<!-- BEGIN {key[0]}:{key[1]} -->\n{new}<!-- END {key[0]}:{key[1]} -->"

        new_text = BLOCK.sub(body, text)
        if new_text != text:
            page.write_text(new_text, encoding="utf-8")
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with a fresh run; change nothing")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these blocks (names without kind)")
    parser.add_argument("--list", action="store_true", help="list the blocks and the pages that show them")
    args = parser.parse_args(argv)
    blocks = shown_blocks()
    if args.list:
        for (kind, name), where in sorted(blocks.items()):
            print(f"{kind}:{name}: " + ", ".join(str(p.relative_to(ROOT)) for p, _ in where))
        missing = sorted(set(OUTPUTS) - {n for k, n in blocks if k == "output"})
        if missing:
            print("recipes shown nowhere: " + ", ".join(missing))
        return 0
    keys = [k for k in sorted(blocks) if not args.only or k[1] in args.only]
    if args.only and len(keys) < len(set(args.only)):
        parser.error(f"unknown block names among {args.only}; see --list")
    problems: list[str] = []
    bodies: dict[tuple[str, str], str] = {}
    for kind, name in keys:
        print(f"{kind}:{name} ...", file=sys.stderr, flush=True)
        fresh = generate(kind, name)
        found = [f"{page.relative_to(ROOT)}: {problem}" for page, shown in blocks[(kind, name)]
                 for problem in differences(kind, name, shown, fresh)]  # fmt: skip
        problems += found
        if found:  # a block that agrees with the fresh run is kept as it is (timings do not churn)
            bodies[(kind, name)] = fresh
    if args.check:
        print("\n".join(problems) if problems else f"{len(keys)} blocks agree with a fresh run")
        return 1 if problems else 0
    for page in rewrite(bodies):
        print(f"rewrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
