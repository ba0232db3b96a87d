"""``normguard demo`` (README's first command) runs its four arms and reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from normguard.cli import main


def test_demo_json_has_the_four_runs_and_normguard_acts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--json", "--n", "100", "--steps", "600", "--no-progress", "--out-dir", str(tmp_path)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"none", "early_stopping", "stop", "hold_floor"} <= set(out)
    assert out["none"]["steps"] == 600 and out["hold_floor"]["steps"] == 600
    assert out["early_stopping"]["steps"] < 600
    # the unguarded run fits below the noise floor (σ² = 1); hold_floor keeps near it
    assert out["none"]["final_train_loss"] < 0.5 < out["hold_floor"]["final_train_loss"]
    assert any("hold_floor engaged" in line for line in out["hold_floor"]["events"])
    assert all((tmp_path / name).is_dir() for name in ("none", "early_stopping", "stop", "hold_floor"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "5"], "Expected argument `--n` to be an integer >= 20 but got 5."),
        (["--alpha", "1"], "Expected argument `--alpha` to be a finite number > 1 but got 1.0."),
        (["--steps", "10"], "Expected argument `--steps` to be an integer >= 20 but got 10."),
    ],
)
def test_demo_refuses_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


def test_demo_shows_one_progress_bar_over_the_four_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NORMGUARD_PROGRESS", "1")  # stands in for a terminal
    assert main(["demo", "--n", "40", "--steps", "40", "--out-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    for i, name in enumerate(("none", "early_stopping", "stop", "hold_floor"), start=1):
        assert f"normguard demo: {name} ({i}/4)" in captured.err
    assert "/160 " in captured.err  # one bar over the four runs' steps (4 x 40)
    assert "normguard demo" not in captured.out.split("\n", 1)[1]  # the table on stdout has no bar in it
    monkeypatch.setenv("NORMGUARD_PROGRESS", "0")
    assert main(["demo", "--n", "40", "--steps", "40", "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
