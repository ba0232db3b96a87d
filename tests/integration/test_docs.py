"""The documentation site (mkdocs.yml, docs/) builds with warnings as errors, and every page is there.

Needs the ``docs`` extra (mkdocs, mkdocs-material, mkdocstrings[python]); skipped without it,
except in CI (``CI`` set), where a missing toolchain is a failure.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _nav_pages() -> list[str]:
    """Every page named in mkdocs.yml's nav, as a path under docs/."""
    return re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.MULTILINE)


def _require_mkdocs() -> None:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python") if not _has(m)]
    if missing:
        reason = f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("tool", ["griffe_docstrings", "mkdocs_hooks"])
def test_site_tools_doctests(tool: str) -> None:
    spec = importlib.util.spec_from_file_location(tool, ROOT / "tools" / f"{tool}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_every_nav_page_exists_and_no_internal_leftovers() -> None:
    pages = _nav_pages()
    assert len(pages) >= 15, pages
    for page in pages:
        path = ROOT / "docs" / page
        assert path.is_file(), f"mkdocs.yml names {page}, which does not exist"
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = path.read_text(encoding="utf-8")
        for leftover in ("THEORY.md", "DESIGN.md", "issue 11", "the main README"):
            assert leftover not in text, f"{path.relative_to(ROOT)} mentions {leftover!r}"


#: callables whose keyword arguments a page's code may name: (module, attribute path)
API = {
    "NormGuard": ("normguard", "NormGuard"),
    "NormGuardCallback": ("normguard.lightning", "NormGuardCallback"),
    "NormGuardTrainerCallback": ("normguard.transformers", "NormGuardTrainerCallback"),
    "add_normguard": ("normguard.transformers", "NormGuardTrainerCallback"),  # passes **options on
    "validation_end": ("normguard", "NormGuard.validation_end"),
    "NoiseFloorEstimator": ("normguard", "NoiseFloorEstimator"),
    "label_noise_floor": ("normguard", "label_noise_floor"),
    "estimate_noise_floor": ("normguard", "estimate_noise_floor"),
    "HoldNoiseFloor": ("normguard", "HoldNoiseFloor"),
    "RaiseWeightDecay": ("normguard", "RaiseWeightDecay"),
    "StopTraining": ("normguard", "StopTraining"),
    "Escalation": ("normguard", "Escalation"),
    "model_pilot": ("normguard.science.pilot", "model_pilot"),
}


def _python_blocks() -> list[tuple[Path, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for match in re.finditer(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL):
            blocks.append((path, match.group(1)))
    return blocks


def test_code_on_the_pages_names_the_api_as_it_is() -> None:
    """Every python block parses, its normguard imports resolve, and its keywords exist (no drift)."""
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    problems = []
    for path, code in _python_blocks():
        where = path.relative_to(ROOT)
        tree = ast.parse(code, filename=str(where))  # a syntax error fails here
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("normguard"):
                module = importlib.import_module(node.module or "")
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                problems += [f"{where}: {node.module} has no {name}" for name in missing]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "ng"
                and not hasattr(importlib.import_module("normguard"), node.attr)
            ):
                problems.append(f"{where}: normguard has no {node.attr}")
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name not in API:
                    continue
                module, path_ = API[name]
                target: object = importlib.import_module(module)
                for part in path_.split("."):
                    target = getattr(target, part)
                params = inspect.signature(target).parameters  # type: ignore[arg-type]
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg not in params:
                        problems.append(f"{where}: {name}() has no argument {kw.arg!r}")
    assert not problems, "\n".join(problems)


def test_readme_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"^[a-z]+:", t)]
    assert local, "README.md links no file"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_api_pages_name_objects_that_exist() -> None:
    """mkdocstrings skips a ``members:`` name that does not exist without a word: check them here."""
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    problems = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^::: ([\w.]+)\n((?:    .*\n)*)", text, flags=re.MULTILINE):
            path, options = match.group(1), match.group(2)
            parts = path.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    target: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for attribute in parts[cut:]:
                    target = getattr(target, attribute, None)
                break
            if target is None:
                problems.append(f"{page.relative_to(ROOT)}: {path} does not exist")
                continue
            members = re.search(r"members: \[(.*?)\]", options)
            for name in (m.strip() for m in (members.group(1).split(",") if members else [])):
                if not hasattr(target, name):
                    problems.append(f"{page.relative_to(ROOT)}: {path} has no member {name}")
    assert not problems, "\n".join(problems)


QUICKSTART = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" '
    "&& normguard demo",
    "python -m pytest",
)


def test_readme_is_short_and_keeps_the_two_quickstart_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md is meant for a newcomer: about 200 lines, the rest in docs/"
    block = re.search(r"## Quickstart\n.*?```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert block is not None, "README.md has no Quickstart block"
    assert block.group(1).splitlines() == list(QUICKSTART)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert all(command in ci for command in QUICKSTART), "CI must run the README's Quickstart commands"
    for extra in ("lightning", "transformers", "science", "report", "all"):
        assert f'pip install "normguard[{extra}]"' in readme, extra


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_site_builds_strict(tmp_path: Path) -> None:
    _require_mkdocs()
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, warnings
    for page in _nav_pages():
        stem = page.removesuffix(".md")
        html = site / (stem.removesuffix("index") + "index.html" if stem.endswith("index") else stem + "/index.html")
        assert html.is_file(), html
        assert "<nav" in html.read_text(encoding="utf-8"), html
    api = (site / "api" / "doors" / "index.html").read_text(encoding="utf-8")
    for anchor in ("guard.NormGuard", "lightning.NormGuardCallback", "transformers.NormGuardTrainerCallback"):
        assert f'id="normguard.{anchor}"' in api, anchor
    assert (site / "report.png").is_file()
