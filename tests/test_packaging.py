"""Packaging: one version source, public names only in ``dir(normguard)``, a light core import,
and an ``ImportError`` that names the extra to install when an optional dependency is missing.

Each import check runs in a fresh interpreter (a subprocess), where a missing dependency is
simulated by ``sys.modules[name] = None`` (Python then raises ``ModuleNotFoundError`` for it).
The built wheel and sdist are checked by ``.ci/run`` (``python -m build``, ``twine check``,
the wheel installed into clean virtual environments, one per extra).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import normguard

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = ("scipy", "matplotlib", "lightning", "transformers", "accelerate", "torchmetrics", "sklearn", "pandas")


def run_python(code: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the modules in ``block`` made unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in block)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --------------------------------------------------------------------------- the version


def test_the_version_has_one_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project, "pyproject.toml must not repeat the version: it reads normguard.__version__"
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "normguard.__version__"}
    # PEP 440 (a public version: release, optional pre/post/dev parts)
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", normguard.__version__)
    source = (ROOT / "src" / "normguard" / "__init__.py").read_text()
    assert len(re.findall(r"^__version__ = ", source, flags=re.M)) == 1


def test_the_installed_metadata_reads_the_same_version() -> None:
    if Path(normguard.__file__).resolve().parents[1] != ROOT / "src":
        pytest.skip("normguard is imported from elsewhere than this tree")
    installed = importlib.metadata.version("normguard")
    assert installed == normguard.__version__, (
        f"installed metadata says {installed}, normguard.__version__ says {normguard.__version__}: "
        "reinstall (pip install -e .) after changing the version"
    )


def test_the_core_dependencies_are_torch_numpy_tensorboard() -> None:
    names = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower() for dep in PYPROJECT["project"]["dependencies"]}
    assert names == {"torch", "numpy", "tensorboard", "typing_extensions"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"lightning", "transformers", "science", "report", "all", "docs", "dev"} <= set(extras)
    assert extras["science"] == [dep for dep in extras["science"] if dep.startswith("scipy")]
    assert extras["report"] == [dep for dep in extras["report"] if dep.startswith("matplotlib")]
    assert extras["all"] == ["normguard[lightning,transformers,science,report]"]
    # torch==2.13.0 (what CI installs first) satisfies the range: no newer torch (and CUDA) is pulled
    torch_spec = next(dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch"))
    assert re.fullmatch(r"torch>=2\.\d+", torch_spec), torch_spec
    assert int(torch_spec.split(".")[1]) <= 13


# --------------------------------------------------------------------------- public names


def test_dir_shows_the_public_names_only() -> None:
    names = dir(normguard)
    assert names == sorted(set(names))
    assert {"NormGuard", "GuardOptions", "HoldNoiseFloor", "label_noise_floor", "__version__"} <= set(names)
    assert {"FloorEstimate", "estimate_noise_floor", "NoiseFloorEstimator", "hf_noise_floor_metrics"} <= set(names)
    assert {"estimate_alpha", "spectrum", "theory", "pilot"} <= set(names)  # loaded on first use
    # no imports, helpers or implementation modules
    for hidden in ("importlib", "TYPE_CHECKING", "Any", "annotations", "actions", "detector", "guard", "norms"):
        assert hidden not in names
    assert [name for name in names if name.startswith("_")] == ["__version__"]
    assert set(normguard.__all__) <= set(names)


def test_every_name_in_dir_resolves() -> None:
    pytest.importorskip("scipy", reason="the science names need scipy (normguard[science])")
    pytest.importorskip("torchmetrics", reason="NoiseFloorMetric needs torchmetrics (normguard[lightning])")
    proc = run_python("import normguard\nprint([n for n in dir(normguard) if not hasattr(normguard, n)])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- a light core


def test_the_core_import_loads_no_optional_dependency() -> None:
    proc = run_python(
        f"""
        import normguard
        from normguard import *  # __all__ is the core: no name in it needs an extra
        import normguard.cli
        normguard.cli.build_parser()  # every subcommand's module, as `normguard --help` loads them
        import json
        print(json.dumps(sorted(name for name in {OPTIONAL!r} if name in sys.modules)))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_core_works_with_every_extra_missing() -> None:
    """A guarded loop and the demo run with scipy, matplotlib, Lightning and transformers unimportable."""
    proc = run_python(
        """
        import torch
        import normguard as ng
        from normguard.cli import main

        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        guard = ng.NormGuard(model, opt, every_n_steps=2, noise_floor=0.1)
        for _ in range(4):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
        import tempfile
        with tempfile.TemporaryDirectory() as out:
            code = main(["demo", "--json", "--n", "20", "--steps", "20", "--no-progress", "--out-dir", out])
        print("exit", code)
        """,
        block=OPTIONAL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("exit 0")


# --------------------------------------------------------------------------- the extras' messages

#: code that needs an extra -> the extra its ImportError must name (each run with every optional module blocked)
NEEDS_AN_EXTRA = {
    "import normguard; normguard.theory": "science",
    "import normguard; normguard.estimate_alpha": "science",
    "import normguard; normguard.pilot": "science",
    "import normguard.science.theory": "science",
    "import normguard.science.pilot": "science",
    "import normguard.lightning": "lightning",
    "import normguard.transformers": "transformers",
    "from normguard.demos import tiny_bert; tiny_bert()": "transformers",
    "import normguard; normguard.NoiseFloorMetric": "lightning",
    "import normguard.report as r; r.make_figure({})": "report",
}


def test_a_missing_extra_names_what_to_install() -> None:
    proc = run_python(
        f"""
        import importlib, json
        messages = {{}}
        for code in {list(NEEDS_AN_EXTRA)!r}:
            for name in [m for m in sys.modules if m.startswith("normguard")]:
                del sys.modules[name]  # each case from a fresh import of normguard
            try:
                exec(code)
                messages[code] = "no ImportError"
            except ImportError as exc:
                messages[code] = str(exc)
        print(json.dumps(messages))
        """,
        block=OPTIONAL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(proc.stdout)
    for code, extra in NEEDS_AN_EXTRA.items():
        assert f"pip install 'normguard[{extra}]'" in messages[code], (code, messages[code])


def test_a_command_without_its_extra_says_so_in_one_line(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.normal(size=(40, 10)))
    np.savez(tmp_path / "data.npz", X=rng.normal(size=(40, 10)), y=rng.normal(size=40))
    theory = ("theory", "--alpha", "1.5", "--gamma", "0.5", "--tau", "0.2")
    commands = {  # argv -> (exit status, extra named)
        theory: (1, "science"),
        ("spectrum", str(tmp_path / "X.npy")): (1, "science"),
        ("pilot", str(tmp_path / "data.npz"), "--tau", "0.1"): (1, "science"),
        (*theory, "--plot", str(tmp_path / "t.png")): (2, "report"),  # a usage error: --plot checked first
    }
    proc = run_python(
        f"""
        import contextlib, io, json
        from normguard.cli import main
        results = []
        for argv in {list(commands)!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(list(argv))
            results.append([code, err.getvalue()])
        print(json.dumps(results))
        """,
        block=("scipy", "matplotlib"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (argv, (status, extra)), (code, err) in zip(commands.items(), json.loads(proc.stdout)):
        assert code == status, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith(f"normguard {argv[0]}: error: "), lines[0]
        assert f"pip install 'normguard[{extra}]'" in lines[0], lines[0]


def test_the_command_line_reports_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    from normguard.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"normguard {normguard.__version__}\n"
