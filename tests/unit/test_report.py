"""normguard.report and `normguard report`: logs written by real runs and by the sink, read back."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from normguard import report, tags
from normguard.cli import main
from normguard.events import Event, EventKind
from normguard.sinks import SummaryWriterSink

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_loop.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_loop_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The example's two real runs (paper linear setting), 120 steps, logged to TensorBoard."""
    log_dir = tmp_path_factory.mktemp("example") / "runs"
    results = load_example().main(["--steps", "120", "--log-dir", str(log_dir), "--json"])
    return log_dir, results


def write_synthetic(log_dir: Path) -> None:
    """A run written through normguard's own sink, with known values."""
    sink = SummaryWriterSink(str(log_dir))
    for step, norm, a, b in [(10, 1.0, 1.0, 0.5), (20, 2.0, 1.0, 1.0), (30, 4.0, 1.1, 4.0)]:
        sink.scalars(
            step,
            {
                tags.TOTAL_NORM: norm,
                tags.layer_tag("slow"): a,
                tags.layer_tag("fast"): b,
                tags.TRAIN_LOSS: 1.0 / norm,
                tags.NOISE_FLOOR: 0.5,
            },
        )
    sink.scalars(30, {tags.TOTAL_NORM: 4.5})  # a second check at the same step (validation): last one wins
    for step, val, growth in [(20, 0.9, 0.2), (30, 1.2, math.nan)]:
        sink.scalars(step, {tags.VAL_LOSS: val, tags.GAP: val - 0.3, tags.GROWTH_EXPONENT: growth})
        sink.scalars(step, {tags.condition_tag("below_floor"): 1.0, tags.condition_tag("norm_growing"): 0.0})
        sink.scalars(step, {tags.condition_tag("streak"): 1.0})
    fired = Event(30, EventKind.DETECTOR_FIRED, "signature [all three]")
    sink.scalars(fired.step, {tags.event_tag(fired.kind.value): 1.0})
    sink.text(fired.step, tags.EVENTS_TEXT, fired.line())
    sink.scalars(30, {tags.event_tag("weight_decay_changed"): 1.0})  # an event scalar without its text line
    sink.close()


def test_load_runs_and_summary_on_known_values(tmp_path: Path) -> None:
    write_synthetic(tmp_path)
    runs = report.load_runs(tmp_path)
    assert list(runs) == ["."]
    run = runs["."]
    total = run.series(tags.TOTAL_NORM)
    assert total is not None
    assert total.steps.tolist() == [10, 20, 30]
    assert total.values.tolist() == [1.0, 2.0, 4.5]
    assert set(run.layers) == {"slow", "fast"}
    assert set(run.conditions) == {"below_floor", "norm_growing"}  # the streak is not a condition strip
    assert [(e.step, e.kind, e.message) for e in run.events] == [
        (30, "detector_fired", "signature [all three]"),
        (30, "weight_decay_changed", ""),
    ]
    s = report.summarize(run, top_k=1)
    assert s["last_step"] == 30
    assert s["checks"] == 3
    assert s["final_norm"] == 4.5
    assert s["final_train_loss"] == 0.25
    assert s["final_val_loss"] == pytest.approx(1.2)
    assert s["best_val_loss"] == pytest.approx(0.9) and s["best_val_step"] == 20
    assert s["max_growth_exponent"] == pytest.approx(0.2) and s["max_growth_exponent_step"] == 20
    assert s["noise_floor"] == 0.5
    assert s["final_gap"] == pytest.approx(0.9)
    assert s["first_fired_step"] == 30
    assert s["actions_taken"] == ["weight_decay_changed"]
    assert s["fastest_layers"] == [{"layer": "fast", "log_growth": pytest.approx(math.log(8.0))}]
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN leaks through


def test_several_runs_and_foreign_logs(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    write_synthetic(tmp_path / "b")
    write_synthetic(tmp_path / "a" / "nested")
    with SummaryWriter(str(tmp_path / "lightning")) as writer:  # not normguard's: skipped
        writer.add_scalar("train_loss", 1.0, 1)
    assert list(report.load_runs(tmp_path)) == ["a/nested", "b"]


def test_errors_for_missing_or_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.load_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no normguard data"):
        report.load_runs(tmp_path)
    with pytest.raises(ValueError, match=r"\.png"):
        report.plot_report({"x": report.RunData("x", "")}, tmp_path / "out.txt")


def test_real_runs_read_back(example_run: tuple[Path, dict[str, Any]]) -> None:
    log_dir, results = example_run
    runs = report.load_runs(log_dir)
    assert list(runs) == ["guarded", "unguarded"]
    guarded, plain = (report.summarize(runs[k]) for k in ("guarded", "unguarded"))
    fired = results["guarded"]["first_fired_step"]
    assert fired is not None and fired < 120
    # the events in the logs are exactly the ones the guard emitted, in order
    for name, s in (("guarded", guarded), ("unguarded", plain)):
        assert [f"step {e['step']} [{e['kind']}] {e['message']}" for e in s["events"]] == results[name]["events"]
        assert s["first_fired_step"] == results[name]["first_fired_step"]
    assert guarded["actions_taken"] == ["restore", "stop"]
    # restored to the best validation's weights: the norm logged there is the model's norm at the end
    assert guarded["restored_to_step"] == guarded["best_val_step"] < fired
    assert guarded["norm_after_restore"] == pytest.approx(results["guarded"]["final_norm"], rel=1e-5)
    assert plain["restored_to_step"] is None and plain["norm_after_restore"] is None
    assert plain["actions_taken"] == []
    assert guarded["last_step"] == results["guarded"]["steps"] == fired  # stopped at the check that fired
    assert plain["last_step"] == 120
    # past the noise floor: training loss under it, norm larger, validation worse than its best
    assert plain["noise_floor"] == 1.0
    assert plain["final_train_loss"] < 1.0
    assert plain["final_norm"] > guarded["final_norm"] > 0
    assert plain["final_val_loss"] > plain["best_val_loss"]
    assert plain["max_growth_exponent"] > 0
    assert plain["fastest_layers"][0]["layer"] == "<root>"
    # the guarded run restored its best weights: lower test loss than running on
    assert results["guarded"]["final_test_loss"] < results["unguarded"]["final_test_loss"]
    # every condition strip held at the decision that fired
    for name in ("below_floor", "norm_growing", "gap_widening"):
        strip = runs["guarded"].conditions[name]
        assert strip.values[strip.steps.tolist().index(fired)] == 1.0, name


def test_figure_marks_every_event_in_every_panel(example_run: tuple[Path, dict[str, Any]]) -> None:
    pytest.importorskip("matplotlib")
    runs = report.load_runs(example_run[0])
    fig = report._figure(runs, top_k=3)
    axes = np.array(fig.axes[:10]).reshape(5, 2)  # the twin axes come after the grid
    for col, run in enumerate(runs.values()):
        event_steps = sorted({e.step for e in run.events})
        for ax in axes[:, col]:
            vertical = sorted({line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1})
            assert event_steps and set(event_steps) <= set(vertical)
        labels = {t.get_text() for t in axes[0, col].texts}
        assert any("fired" in label for label in labels)
        assert [t.get_text() for t in axes[4, col].get_yticklabels()] == ["below_floor", "norm_growing", "gap_widening"]
    assert axes[0, 0].get_title().startswith("guarded")


def test_cli_json_png_and_html(
    example_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    log_dir, results = example_run
    png = tmp_path / "report.png"
    assert main(["report", str(log_dir), "--out", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figure"] == str(png)
    assert [r["run"] for r in out["runs"]] == ["guarded", "unguarded"]
    assert out["runs"][0]["first_fired_step"] == results["guarded"]["first_fired_step"]
    assert png.read_bytes()[:8] == PNG_MAGIC

    page = tmp_path / "report.html"
    assert main(["report", str(log_dir), "--out", str(page)]) == 0
    text = capsys.readouterr().out
    assert "guarded: " in text and f"wrote {page}" in text
    body = page.read_text(encoding="utf-8")
    assert body.count("data:image/png;base64,") == 1
    assert "<td>guarded</td>" in body and "<td>restore, stop</td>" in body


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["report", str(tmp_path / "missing")], "does not exist"),
        (["report", str(tmp_path)], "no normguard data"),
        (["report", str(tmp_path), "--out", "r.txt"], ".png"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("normguard report: error:") and expected in err


def test_cli_no_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic(tmp_path)
    assert main(["report", str(tmp_path), "--no-figure", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figure"] is None and out["runs"][0]["final_norm"] == 4.5
    assert not list(tmp_path.glob("*.png"))


def test_cli_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_synthetic(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'normguard[report]'" in err and "--no-figure" in err
    assert main(["report", str(tmp_path), "--no-figure"]) == 0
