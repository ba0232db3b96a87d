import json
import subprocess
import sys

import numpy as np
import pytest

from normguard.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("data")
    X, y = load_digits(return_X_y=True)
    np.savez(root / "digits.npz", X=X, y=(y - y.mean()) / y.std())
    bad = X.copy()
    bad[0, 0] = np.nan
    np.save(root / "nan.npy", bad)
    np.save(root / "vec.npy", X[:, 0])
    np.savetxt(root / "digits.csv", X[:300], delimiter=",")
    return root


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_spectrum_json_and_plot(files, capsys, tmp_path):
    out = run_json(capsys, ["spectrum", str(files / "digits.npz"), "--plot", str(tmp_path / "s.png")])
    assert {"alpha", "alpha_ci", "r2", "fit_range", "n_samples", "n_features"} <= set(out)
    assert out["n_samples"] == 1797 and out["n_features"] == 64
    assert out["alpha_ci"][0] <= out["alpha"] <= out["alpha_ci"][1]
    assert (tmp_path / "s.png").stat().st_size > 1000
    csv = run_json(capsys, ["spectrum", str(files / "digits.csv")])
    assert csv["n_samples"] == 300
    X32 = np.load(files / "digits.npz")["X"].astype(np.float32)
    np.save(tmp_path / "d32.npy", X32)
    by = {
        precision: run_json(capsys, ["spectrum", str(tmp_path / "d32.npy"), "--precision", precision])
        for precision in ("float32", "float64")
    }
    assert by["float32"]["fit_range"] == by["float64"]["fit_range"] == out["fit_range"]
    assert abs(by["float32"]["alpha"] - by["float64"]["alpha"]) < 1e-4


def test_theory_json(capsys, tmp_path):
    out = run_json(capsys, ["theory", "--alpha", "1.5", "--gamma", "0.6667", "--tau", "0.2"])
    keys = "alpha gamma tau sigma2 kappa kappa_crit ridge_r train_error test_error"
    assert set(keys.split()) | {"norm_constant", "interpolation_test_error"} <= set(out)
    assert 1 < out["test_error"] < out["interpolation_test_error"]
    assert main(["theory", "--alpha", "2", "--gamma", "0.5", "--tau", "0.3", "--plot", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").exists()


def test_pilot_json(files, capsys):
    out = run_json(
        capsys, ["pilot", str(files / "digits.npz"), "--tau", "0.05", "--sizes", "20", "30", "45", "--seeds", "4"]
    )
    assert {"exponent", "exponent_ci", "alpha", "sizes", "norms_sq"} <= set(out)
    assert out["sizes"] == [20, 30, 45] and out["exponent"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["spectrum", "missing.npy"],
        ["spectrum", "{d}/nan.npy"],
        ["spectrum", "{d}/vec.npy"],
        ["theory", "--alpha", "1.0", "--gamma", "0.5", "--tau", "0.2"],
        ["theory", "--alpha", "2", "--gamma", "1.5", "--tau", "0.2"],
        ["theory", "--alpha", "2", "--gamma", "0.5", "--tau", "1.0", "--sigma2", "1"],
        ["pilot", "{d}/digits.npz", "--tau", "-1"],
        ["pilot", "{d}/nan.npy", "--tau", "0.1"],
    ],
)
def test_bad_input_exit_2(files, capsys, argv):
    argv = [a.replace("{d}", str(files)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "error" in err


def test_subprocess(files):
    ok = subprocess.run(
        [sys.executable, "-m", "normguard.cli", "theory", "--alpha", "2", "--gamma", "0.5", "--tau", "0.3", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["tau"] == 0.3
    bad = subprocess.run(
        [sys.executable, "-m", "normguard.cli", "spectrum", str(files / "nan.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
