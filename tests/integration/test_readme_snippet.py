"""Every output and table that README.md and docs/ show agrees with a fresh run (tools/render_docs.py).

One test per generated block: the command, example or snippet is run fresh, exactly as the page
shows it, and compared with what the page shows (exactly where the output is deterministic,
within the tolerance its recipe states otherwise). A failure names the line that differs; fix
it by running ``python tools/render_docs.py`` (or ``--only NAME``) and committing the pages.
The custom-loop snippet is also checked for what it must show: normguard acting on held-out rows.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@cache
def render() -> Any:
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "tools" / "render_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_docs"] = module
    spec.loader.exec_module(module)
    return module


def _blocks() -> dict[tuple[str, str], list[tuple[Path, str]]]:
    return render().shown_blocks()


#: outputs quick enough (a few seconds) to run unmarked; the others train models
QUICK = {"theory", "noise_floor_snippet", "cli_help"} | {f"cli_help_{c}" for c in ("demo", "theory", "report")}
#: an import of an optional extra each output needs
NEEDS = {
    "spectrum_digits": ("scipy", "sklearn"),
    "pilot_digits": ("scipy", "sklearn"),
    "model_pilot_snippet": ("scipy",),
    "theory": ("scipy",),
    "lightning_example": ("lightning",),
    "hf_example": ("transformers",),
}


def test_every_block_has_a_recipe_and_every_recipe_is_shown() -> None:
    blocks = _blocks()  # raises for a block without a recipe
    shown = {name for kind, name in blocks if kind == "output"}
    assert set(render().OUTPUTS) == shown, set(render().OUTPUTS) ^ shown
    assert {name for kind, name in blocks if kind == "table"} == set(render().TABLES)
    assert ("output", "demo") in blocks and any(p.name == "README.md" for p, _ in blocks[("output", "demo")])


@pytest.mark.parametrize("name", sorted(render().TABLES))
def test_table_matches_its_source(name: str) -> None:
    fresh = render().generate("table", name)
    for page, shown in _blocks()[("table", name)]:
        where = page.relative_to(ROOT)
        assert shown == fresh, f"{where}: table {name} differs from its source; run tools/render_docs.py"


def _output_params() -> list[Any]:
    params = []
    for name in sorted(render().OUTPUTS):
        marks = [pytest.mark.timeout(900)] + ([] if name in QUICK else [pytest.mark.slow])
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _output_params())
def test_shown_output_matches_a_fresh_run(name: str, tmp_path: Path) -> None:
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    fresh = render().run_output(name, tmp_path)
    problems = [
        f"{page.relative_to(ROOT)}: {problem}"
        for page, shown in _blocks()[("output", name)]
        for problem in render().differences("output", name, shown, fresh)
    ]
    assert not problems, "\n".join(problems) + "\n(regenerate with: python tools/render_docs.py --only " + name + ")"
    if name == "custom_loop_snippet":
        check_custom_loop_snippet(fresh, tmp_path)


def check_custom_loop_snippet(out: str, scratch: Path) -> None:
    """The snippet validates on held-out rows, and normguard acts there and stops the run."""
    code = render().find_snippet("custom_loop")
    assert "x_val" in code and "validation_end(mse(x_val, y_val))" in code
    for kind in ("detector_fired", "weight_decay_changed", "restore", "stop"):
        assert f"[{kind}]" in out, (kind, out)
    summary = re.search(r"stopped at step (\d+): train MSE ([\d.]+), held-out MSE ([\d.]+)", out)
    assert summary is not None, out
    assert int(summary.group(1)) < 1000  # normguard stopped it
    assert float(summary.group(3)) > 1.0  # no model beats the noise floor on new rows
    assert list((scratch / "runs" / "example").glob("events.out.tfevents.*"))


def test_differences_tolerate_only_what_the_recipe_allows() -> None:
    rd = render()
    exact, tolerant = rd.Output(), rd.Output(rel_tol=0.02, varies=(rd.SECONDS,))
    rd.OUTPUTS["_exact"], rd.OUTPUTS["_tolerant"] = exact, tolerant
    try:
        assert rd.differences("output", "_exact", "a 1.00 b\n", "a 1.00 b\n") == []
        assert rd.differences("output", "_exact", "a 1.00 b\n", "a 1.01 b\n")
        assert rd.differences("output", "_tolerant", "loss 1.000 in 3.2 s\n", "loss 1.010 in 9.9 s\n") == []
        assert rd.differences("output", "_tolerant", "loss 1.000\n", "loss 1.100\n")  # beyond 2 %
        assert rd.differences("output", "_tolerant", "step 160\n", "step 161\n")  # integers exactly
        assert rd.differences("output", "_tolerant", "a\n", "a\nb\n")  # a line more
        assert rd.differences("output", "_tolerant", "stop\n", "restore\n")  # text exactly
    finally:
        del rd.OUTPUTS["_exact"], rd.OUTPUTS["_tolerant"]
