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
    np.save(root / "complex.npy", X[:100, :10] + 1j)
    np.savez(root / "other.npz", data=X)
    np.save(root / "wide.npy", np.random.default_rng(0).normal(size=(3, 20000)))
    return root


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_spectrum_json_and_plot(files, capsys, tmp_path):
    out = run_json(capsys, ["spectrum", str(files / "digits.npz"), "--plot", str(tmp_path / "s.png")])
    assert {"alpha", "alpha_ci", "r2", "fit_range", "n_samples", "n_features"} <= set(out)
    interval_keys = {"ci_method", "n_bootstrap", "bias", "alpha_uncorrected", "alpha_corrected", "alpha_se"}
    assert interval_keys | {"range_test", "range_statistic", "range_threshold", "range_widening"} <= set(out)
    assert out["ci_method"] == "parametric-bootstrap" and out["n_bootstrap"] >= 10
    assert out["range_test"] in {"pass", "fail"}
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
        ["spectrum", "{d}/digits.csv", "--plot", "{d}/missing/dir/x.png"],
        ["spectrum", "{d}/digits.csv", "--plot", "{d}/x.txt"],
        ["theory", "--alpha", "2", "--gamma", "0.5", "--tau", "0.2", "--plot", "/missing/x.png"],
        ["theory", "--alpha", "2", "--gamma", "0.5", "--tau", "0.2", "--plot", "{d}/x.txt"],
        ["spectrum", "{d}/complex.npy"],
        ["spectrum", "{d}/other.npz"],
        ["spectrum", "{d}/wide.npy"],
        ["spectrum", "{d}/wide.npy", "--no-center"],
        ["spectrum", "{d}/digits.csv", "--bootstrap", "1"],
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


def test_bad_input_messages(files, capsys):
    cases = {
        ("spectrum", "{d}/complex.npy"): "complex",
        ("spectrum", "{d}/other.npz"): "expected an array named 'X' but found ['data']",
        ("spectrum", "{d}/wide.npy", "--no-center"): "n = 3 samples is too small for a fit",
        ("spectrum", "{d}/digits.csv", "--plot", "{d}/missing/x.png"): "does not exist",
        ("theory", "--alpha", "2", "--gamma", "0.5", "--tau", "0.2", "--plot", "{d}/x.txt"): "expected a file name",
    }
    for argv, message in cases.items():
        assert main([a.replace("{d}", str(files)) for a in argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "ComplexWarning" not in err


def test_spectrum_text_shows_the_interval_details(files, capsys):
    assert main(["spectrum", str(files / "digits.csv"), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "(parametric-bootstrap, B = 20)" in out and "bias estimate" in out and "range test" in out
    assert main(["spectrum", str(files / "digits.csv"), "--ci-method", "regression-se"]) == 0
    assert "(regression-se)" in capsys.readouterr().out


def test_pilot_with_one_seed_has_no_interval(files, capsys):
    argv = ["pilot", str(files / "digits.npz"), "--tau", "0.05", "--sizes", "20", "30", "45", "--seeds", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "95% interval n/a (needs --seeds >= 2)" in out
    assert run_json(capsys, argv)["exponent_ci"] is None
    assert main([*argv[:-1], "0"]) == 2 and "seeds" in capsys.readouterr().err


def test_progress_bars_on_stderr_only_when_wanted(files, capsys, monkeypatch):
    """A bar on stderr when asked for (NORMGUARD_PROGRESS=1 stands in for a terminal); none with
    --no-progress or when stderr is not a terminal; stdout (the JSON) the same either way."""
    pilot = ["pilot", str(files / "digits.npz"), "--tau", "0.05", "--sizes", "20", "30", "45", "--seeds", "2", "--json"]
    spectrum = ["spectrum", str(files / "digits.npz"), "--bootstrap", "20", "--json"]
    monkeypatch.delenv("NORMGUARD_PROGRESS", raising=False)
    outs = {}
    for argv, label in ((pilot, "linear pilot n=45 (6/6)"), (spectrum, "normguard spectrum: alpha of 1797 x 64")):
        assert main(argv) == 0
        quiet = capsys.readouterr()
        assert quiet.err == ""
        monkeypatch.setenv("NORMGUARD_PROGRESS", "1")
        assert main(argv) == 0
        shown = capsys.readouterr()
        assert label in shown.err
        assert shown.out == quiet.out
        assert main([*argv, "--no-progress"]) == 0
        assert capsys.readouterr().err == ""
        monkeypatch.delenv("NORMGUARD_PROGRESS")
        outs[argv[0]] = json.loads(quiet.out)
    assert outs["pilot"]["sizes"] == [20, 30, 45]
