"""Check an installed normguard wheel: ``python .ci/check_install.py EXTRA`` (``core`` or an extra's name).

Run by ``.ci/run`` with the Python of a clean virtual environment into which only
``torch==2.13.0`` and the wheel (with that extra) were installed. It checks that normguard
comes from that environment (not from the source tree), that its version is the wheel's,
that the extra's modules import and work, and that what the extra did not install is
missing with an ``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

EXTRAS = {
    # extra -> (top-level packages it installs, normguard code that needs them)
    "science": (
        ["scipy"],  # data whose covariance eigenvalues decay as i^-2 (alpha 2)
        "import normguard as ng, numpy as np\n"
        "X = np.random.default_rng(0).normal(size=(400, 40)) * np.arange(1, 41) ** -1.0\n"
        "assert 1.5 < ng.estimate_alpha(X).alpha < 2.5",
    ),
    "report": (
        ["matplotlib"],
        "import normguard.report as r\ntry:\n    r.make_figure({})\nexcept ValueError:\n    pass",
    ),
    "lightning": (["lightning", "torchmetrics"], "import normguard.lightning\nfrom normguard import NoiseFloorMetric"),
    "transformers": (["transformers", "accelerate"], "import normguard.transformers"),
}
EXTRAS["all"] = (
    [package for packages, _ in EXTRAS.values() for package in packages],
    "\n".join(code for _, code in EXTRAS.values()),
)


def main(extra: str) -> None:
    import normguard

    where = Path(normguard.__file__).resolve()
    assert Path(sys.prefix).resolve() in where.parents, f"normguard imported from {where}, not from {sys.prefix}"
    assert normguard.__version__ == importlib.metadata.version("normguard"), "the wheel's version is not __version__"
    assert (where.parent / "py.typed").is_file(), "py.typed is missing from the wheel"
    assert "NormGuard" in dir(normguard)

    installed, code = EXTRAS.get(extra, ([], "import normguard"))
    exec(code, {})
    for other, (packages, other_code) in EXTRAS.items():
        if other == "all" or set(packages) <= set(installed):
            continue
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if set(missing) != set(packages):
            continue  # installed anyway, as a dependency of another extra
        try:
            exec(other_code, {})
        except ImportError as exc:
            assert f"pip install 'normguard[{other}]'" in str(exc), f"[{other}] missing, but the error says: {exc}"
        else:
            raise AssertionError(f"{other_code!r} ran without the [{other}] extra")

    # the command line: the demo runs with the core alone
    with tempfile.TemporaryDirectory() as out:
        demo = ["demo", "--n", "20", "--steps", "20", "--no-progress", "--out-dir", out]
        cmd = [sys.executable, "-m", "normguard", *demo]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"normguard {normguard.__version__} [{extra}]: installed from the wheel, imports and runs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "core")
