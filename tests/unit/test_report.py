"""normguard.report and `normguard report`: logs written by real runs and by the sink, read back."""

from __future__ import annotations

import base64
import html
import importlib.util
import itertools
import json
import math
import re
import struct
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import normguard as ng
from normguard import report, tags
from normguard.cli import main
from normguard.detector import Condition
from normguard.events import Event, EventKind
from normguard.report import page as page_module
from normguard.sinks import SummaryWriterSink, markdown_text

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
    """The example's two real runs (paper linear setting), 300 steps at most, logged to TensorBoard."""
    log_dir = tmp_path_factory.mktemp("example") / "runs"
    results = load_example().main(["--steps", "300", "--log-dir", str(log_dir), "--json"])
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
    sink.scalars(30, {tags.TOTAL_NORM: 4.5})  # a second value at the same step: the last one wins
    for step, val, growth in [(20, 0.9, 0.2), (30, 1.2, math.nan)]:
        sink.scalars(step, {tags.VAL_LOSS: val, tags.GAP: val - 0.3, tags.GROWTH_EXPONENT: growth})
        sink.scalars(step, {tags.condition_tag("below_floor"): 1.0, tags.condition_tag("norm_growing"): 0.0})
        sink.scalars(step, {tags.condition_tag("streak"): 1.0})
    fired = Event(30, EventKind.DETECTOR_FIRED, "signature [all three]")
    sink.scalars(fired.step, {tags.event_tag(fired.kind.value): 1.0})
    sink.events(fired.step, [fired])
    sink.scalars(30, {tags.event_tag("weight_decay_changed"): 1.0})  # an event scalar without its record
    sink.close()


def event_file(log_dir: Path) -> Path:
    [path] = list(log_dir.glob("events.out.tfevents.*"))
    return path


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """(start, length of data) of each TFRecord in a file."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        out.append((pos, length))
        pos += 12 + length + 4
    return out


# ---------------------------------------------------------------------------- reading and summary


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
    assert run.warnings == []
    s = report.summarize(run, top_k=1)
    assert s["last_step"] == 30
    assert s["checks"] == 3
    assert s["final_norm"] == s["norm_at_last_check"] == 4.5
    assert s["final_train_loss"] == 0.25
    assert s["final_val_loss"] == pytest.approx(1.2)
    assert s["best_val_loss"] == pytest.approx(0.9) and s["best_val_step"] == 20
    assert s["max_growth_exponent"] == pytest.approx(0.2) and s["max_growth_exponent_step"] == 20
    assert s["noise_floor"] == 0.5
    assert s["final_gap"] == pytest.approx(0.9)
    assert s["first_fired_step"] == 30
    assert s["actions_taken"] == ["weight_decay_changed"]
    assert s["layer_changes"] == [
        {"layer": "fast", "log_growth": pytest.approx(math.log(8.0)), "factor": pytest.approx(8.0), "change": "grew ×8"}
    ]
    assert s["source"] == "normguard" and s["restored_to_step"] is None and s["kept_last_weights"] is True
    assert s["nonfinite_since"] == {} and s["warnings"] == []
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN leaks through


def test_logs_of_older_versions_are_read_with_todays_tags(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:  # normguard 0.1's tags: one normguard/ group, text events
        for step, value in [(10, 1.0), (20, 2.0)]:
            writer.add_scalar("normguard/norm/total", value, step)
            writer.add_scalar("normguard/layer_norm/fc", value, step)
            writer.add_scalar("normguard/norm/growth_exponent", 0.5, step)
            writer.add_scalar("normguard/condition/below_floor", 1.0, step)
        writer.add_scalar("normguard/event/stop", 1.0, 20)
        writer.add_text("normguard/events", "step 20 [stop] stopping: signature", 20)
    run = report.load_runs(tmp_path)["."]
    assert set(run.scalars) == {
        tags.TOTAL_NORM,
        tags.layer_tag("fc"),
        tags.GROWTH_EXPONENT,
        tags.condition_tag("below_floor"),
        tags.event_tag("stop"),
    }
    assert [(e.step, e.kind, e.message) for e in run.events] == [(20, "stop", "stopping: signature")]


def test_several_runs_in_the_order_they_started_and_foreign_logs(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    # trained in this order: a baseline and its guarded twin, twice; alphabetical order would split the pairs
    for name in ("unguarded_a", "guarded_a", "unguarded_b", "guarded_b"):
        write_synthetic(tmp_path / "sweep" / name)
    write_synthetic(tmp_path / "nested" / "deep" / "x")
    with SummaryWriter(str(tmp_path / "lightning")) as writer:  # a baseline: the framework's own loss
        writer.add_scalar("train_loss", 1.0, 1)
    with SummaryWriter(str(tmp_path / "profiler")) as writer:  # another tool's logs: skipped
        writer.add_scalar("lr-Adam", 1.0, 1)
    assert list(report.load_runs(tmp_path)) == [
        "lightning",
        "nested/deep/x",
        "sweep/unguarded_a",
        "sweep/guarded_a",
        "sweep/unguarded_b",
        "sweep/guarded_b",
    ]


def test_errors_for_missing_or_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.load_runs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no normguard data"):
        report.load_runs(tmp_path)
    with pytest.raises(ValueError, match=r"\.png"):
        report.plot_report({"x": report.RunData("x", "")}, tmp_path / "out.txt")


def test_one_value_per_tag_and_step_in_the_event_file(example_run: tuple[Path, dict[str, Any]]) -> None:
    """Issue 15.1, at the data level: every record of a real run's event file, not a loader's view."""
    from tensorboard.compat.proto import event_pb2

    log_dir, _ = example_run
    for name in ("guarded", "unguarded"):
        records, problem = report.read_records(event_file(log_dir / name))
        assert problem is None
        written: Counter[tuple[str, int]] = Counter()
        for record in records:
            event = event_pb2.Event.FromString(record)
            written.update((v.tag, event.step) for v in event.summary.value)
        repeated = {key: n for key, n in written.items() if n > 1}
        assert not repeated, repeated
        # and the steps where a train check and a validation coincide keep the real growth, not 0.0
        growth = report.load_runs(log_dir)[name].series(tags.RELATIVE_GROWTH)
        assert growth is not None and len(growth) > 3 and (growth.values != 0.0).all()


def test_real_runs_read_back(example_run: tuple[Path, dict[str, Any]]) -> None:
    log_dir, results = example_run
    runs = report.load_runs(log_dir)
    assert list(runs) == ["unguarded", "guarded"]  # the order the example trained them
    guarded, plain = (report.summarize(runs[k]) for k in ("guarded", "unguarded"))
    fired = results["guarded"]["first_fired_step"]
    assert fired is not None and fired < 300
    # the events in the logs are exactly the ones the guard emitted, in order
    for name, s in (("guarded", guarded), ("unguarded", plain)):
        assert [f"step {e['step']} [{e['kind']}] {e['message']}" for e in s["events"]] == results[name]["events"]
        assert s["first_fired_step"] == results[name]["first_fired_step"]
    assert guarded["actions_taken"] == ["restore", "stop"]
    # restored to the best validation's weights: the final values are those of the restored step
    assert guarded["restored_to_step"] == guarded["best_val_step"] < fired
    assert guarded["final_norm"] == guarded["norm_after_restore"]
    assert guarded["final_norm"] == pytest.approx(results["guarded"]["final_norm"], rel=1e-5)
    assert guarded["norm_at_last_check"] > guarded["final_norm"]  # the norm before the restore
    assert guarded["final_val_loss"] == guarded["best_val_loss"] < guarded["val_loss_at_last_check"]
    assert plain["restored_to_step"] is None and plain["norm_after_restore"] is None
    assert plain["final_norm"] == plain["norm_at_last_check"]
    assert plain["actions_taken"] == []
    assert guarded["last_step"] == results["guarded"]["steps"] == fired  # stopped at the check that fired
    assert plain["last_step"] == 300
    # past the noise floor: training loss under it, norm larger, validation worse than its best
    assert plain["noise_floor"] == 1.0
    assert plain["final_train_loss"] < 1.0
    assert plain["final_norm"] > guarded["final_norm"] > 0
    assert plain["final_val_loss"] > plain["best_val_loss"]
    assert plain["max_growth_exponent"] > 0
    assert plain["layer_changes"][0]["layer"] == "<root>"
    assert plain["layer_changes"][0]["change"].startswith("grew ×")
    assert results["guarded"]["final_test_loss"] < results["unguarded"]["final_test_loss"]
    for name in ("below_floor", "val_stalled"):  # the conditions a known floor requires held when it fired
        strip = runs["guarded"].conditions[name]
        assert strip.values[strip.steps.tolist().index(fired)] == 1.0, name


# ---------------------------------------------------------------------------- issue 14.4: runs stated as they are


def nan_run(log_dir: Path) -> None:
    """12 steps, a check at each; the weights become NaN at step 6."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with ng.NormGuard(model, opt, log_dir=str(log_dir), every_n_steps=1) as guard:
        for step in range(1, 13):
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 6:
                with torch.no_grad():
                    model.weight.fill_(float("nan"))
            guard.step(loss)


def test_nan_weights_are_not_reported_as_the_last_finite_norm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nan_run(tmp_path)
    s = report.summarize(report.load_runs(tmp_path)["."])
    assert s["last_step"] == 12
    assert s["final_norm"] is None and s["norm_at_last_check"] is None
    assert s["nonfinite_since"]["norm"] == 6
    assert s["last_finite_norm_step"] == 5 and s["last_finite_norm"] > 0
    assert main(["report", str(tmp_path), "--no-figure"]) == 0
    text = capsys.readouterr().out
    assert "norm at the last check non-finite (since step 6; last finite" in text
    assert f"norm at the last check {s['last_finite_norm']:.4g}" not in text
    assert main(["report", str(tmp_path), "--no-figure", "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert run["final_norm"] is None and run["nonfinite_since"]["norm"] == 6


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    records = record_offsets(path)
    start, length = records[len(records) // 2]
    if how == "truncated":  # cut in the middle of a record
        del data[start + 12 + length // 2 :]
    elif how == "corrupted":  # one flipped byte inside a record's data
        data[start + 12 + length // 2] ^= 0xFF
    elif how == "corrupted_length":  # one flipped byte in a record's length
        data[start] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "corrupted", "corrupted_length"])
def test_damaged_event_files_are_named_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    nan_free = tmp_path / "logs"
    write_synthetic_long(nan_free)
    intact = report.load_runs(nan_free)["."]
    complete = report.summarize(intact)
    damage(event_file(nan_free), how)
    with pytest.warns(report.DamagedLogWarning, match=r"truncated|corrupted"):
        run = report.load_runs(nan_free)["."]
    [problem] = run.warnings
    assert ("truncated" if how == "truncated" else "corrupted") in problem
    s = report.summarize(run)
    if how == "corrupted":  # one record skipped, the ones after it still read
        assert s["last_step"] == complete["last_step"]
        assert sum(map(len, run.scalars.values())) == sum(map(len, intact.scalars.values())) - 1
    else:
        assert s["last_step"] < complete["last_step"]
    out = tmp_path / "r.png"
    assert main(["report", str(nan_free), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["complete"] is False and result["runs"][0]["warnings"] == [problem]
    assert "warning: run '.' is incomplete" in captured.err
    assert out.read_bytes()[:8] == PNG_MAGIC  # the report is still drawn from what could be read
    assert main(["report", str(nan_free), "--no-figure"]) == 1
    assert "incomplete" in capsys.readouterr().err


def write_synthetic_long(log_dir: Path, steps: int = 12) -> None:
    sink = SummaryWriterSink(str(log_dir))
    for step in range(1, steps + 1):
        sink.scalars(step, {tags.TOTAL_NORM: float(step), tags.TRAIN_LOSS: 1.0 / step})
    sink.close()


def test_an_intact_log_exits_0_and_says_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_long(tmp_path)
    assert main(["report", str(tmp_path), "--no-figure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True


# ---------------------------------------------------------------------------- TensorBoard: tags, layout, text


def tensorboard_order(tag_a: str, tag_b: str) -> int:
    """TensorBoard's tag comparison (Time Series and Scalars): digits and '/' sort before other characters."""
    for a, b in zip(tag_a, tag_b):
        if a == b:
            continue
        a_first, b_first = a == "/" or a.isdigit(), b == "/" or b.isdigit()
        if a_first != b_first:
            return -1 if a_first else 1
        return -1 if a < b else 1
    return (len(tag_a) > len(tag_b)) - (len(tag_a) < len(tag_b))


def test_tensorboard_groups_put_what_matters_first() -> None:
    """Issue 15.4: the first group holds losses, floor, norm, gap (and weight decay); diagnostics after."""
    import functools

    every = [
        tags.TRAIN_LOSS,
        tags.VAL_LOSS,
        tags.NOISE_FLOOR,
        tags.TOTAL_NORM,
        tags.GAP,
        tags.VAL_METRIC,
        f"{tags.WEIGHT_DECAY}/group_0",
        tags.GROWTH_EXPONENT,
        tags.RELATIVE_GROWTH,
        tags.GAP_TREND,
        tags.layer_tag("encoder.0"),
        tags.layer_tag("fc", tags.LAYER_INIT_DISTANCE),
        tags.condition_tag("below_floor"),
        tags.condition_tag("streak"),
        tags.event_tag("detector_fired"),
    ]
    assert all(tags.is_normguard_tag(t) for t in every)
    ordered = sorted(every, key=functools.cmp_to_key(tensorboard_order))
    groups = list(dict.fromkeys(t.split("/", 1)[0] for t in ordered))
    assert groups == list(tags.GROUPS)
    first = [t for t in ordered if t.split("/", 1)[0] == tags.PREFIX]
    assert set(first) == {
        tags.TRAIN_LOSS,
        tags.VAL_LOSS,
        tags.NOISE_FLOOR,
        tags.TOTAL_NORM,
        tags.GAP,
        tags.VAL_METRIC,
        f"{tags.WEIGHT_DECAY}/group_0",
    }
    assert len(first) <= 8  # one screen of cards
    second = [t for t in ordered if t.split("/", 1)[0] == tags.GROWTH_GROUP]
    assert set(second) == {tags.GROWTH_EXPONENT, tags.RELATIVE_GROWTH, tags.GAP_TREND}


def test_custom_scalars_layout_first_charts_and_separate_axes() -> None:
    """Issue 15.3/15.4: the losses, gap and norm first; no rate shares an axis with a level or with
    another rate (the gap trend, 1.4–11, clipped the gap, 0.08–3.2, when they shared one). Issue 26.7:
    a Custom Scalars chart colours its lines by run, so each chart holds one quantity (train loss,
    validation loss and the floor in one chart looked alike)."""
    layout = tags.custom_scalars_layout()
    every = [  # every tag a run can log, the noise floor's interval (an estimated floor) included
        tags.TRAIN_LOSS,
        tags.VAL_LOSS,
        tags.GAP,
        tags.TOTAL_NORM,
        tags.NOISE_FLOOR,
        f"{tags.NOISE_FLOOR}_low",
        f"{tags.NOISE_FLOOR}_high",
        tags.VAL_METRIC,
        tags.GROWTH_EXPONENT,
        tags.RELATIVE_GROWTH,
        tags.GAP_TREND,
        tags.DRIFT_SHARE,
        tags.weight_decay_tag(0),
        tags.weight_decay_tag(1),
        tags.layer_tag("a.b"),
        tags.layer_tag("c"),
        *(tags.condition_tag(c.value) for c in Condition),
        tags.condition_tag("streak"),
        tags.event_tag("stop"),
    ]

    def drawn(patterns: list[str]) -> list[str]:  # TensorBoard's custom_scalars plugin: re.match per tag
        return [t for t in every if any(re.match(p, t) for p in patterns)]

    charts = {title: drawn(spec[1]) for category in layout.values() for title, spec in category.items()}
    main_titles = list(layout[tags.PREFIX])
    assert [charts[t] for t in main_titles[:5]] == [
        [tags.TRAIN_LOSS],
        [tags.VAL_LOSS],
        [tags.GAP],
        [tags.TOTAL_NORM],
        [tags.NOISE_FLOOR],  # not its interval's bounds: one line per run
    ]
    for category in layout.values():
        for title, (kind, patterns) in category.items():
            assert kind == "Multiline"
            assert len(patterns) == 1, title  # one quantity (one tag, or one family of tags) per chart
            assert charts[title], title
    families = {
        "weight decay in effect (per optimizer param group)": [tags.weight_decay_tag(0), tags.weight_decay_tag(1)],
        "layer norms": [tags.layer_tag("a.b"), tags.layer_tag("c")],
    }
    assert charts["condition below_floor (1 = held)"] == [tags.condition_tag("below_floor")]
    assert not any(tags.condition_tag("streak") in drawn_tags for drawn_tags in charts.values())  # 0…n, not 0/1
    for title, drawn_tags in charts.items():
        assert drawn_tags == families.get(title, drawn_tags[:1]), title  # the rest draw exactly one tag
    rates = {tags.GROWTH_EXPONENT, tags.RELATIVE_GROWTH, tags.GAP_TREND}
    assert all(sum(r in drawn_tags for r in rates) <= 1 for drawn_tags in charts.values())  # a rate alone
    trend_title = next(t for t, drawn_tags in charts.items() if drawn_tags == [tags.GAP_TREND])
    assert "above 0 = gap widening" in trend_title and "per 1000 steps" in trend_title


def test_event_text_shows_as_written_in_tensorboards_text_tab() -> None:
    """Issue 15.5: TensorBoard renders the Text tab as Markdown; names with markup characters survive."""
    from tensorboard import plugin_util

    lines = [
        "step 80 [detector_fired] signature (streak 3); fastest-growing layers: <root> (0.879), heads.$\\q$ (0.5)",
        "step 80 [stop] stopping: *x* _y_ `z` <b>bold</b> & # 1. a_b_",
    ]
    rendered = plugin_util.markdown_to_safe_html(markdown_text(lines))
    paragraphs = re.findall(r"<p>(.*?)</p>", rendered, flags=re.DOTALL)
    assert [html.unescape(re.sub(r"<[^>]+>", "", p)) for p in paragraphs] == lines


def test_json_events_are_not_in_the_text_tab(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2

    write_synthetic(tmp_path)
    records, _ = report.read_records(event_file(tmp_path))
    plugins = {}
    for record in records:
        for value in event_pb2.Event.FromString(record).summary.value:
            if value.metadata.plugin_data.plugin_name:
                plugins[value.tag] = value.metadata.plugin_data.plugin_name
    assert plugins[tags.EVENTS_TEXT_SHOWN] == "text"
    assert plugins[tags.EVENTS_JSON] == tags.EVENTS_JSON_PLUGIN != "text"
    assert [t for t, p in plugins.items() if p == "text"] == [tags.EVENTS_TEXT_SHOWN]


# ---------------------------------------------------------------------------- the figure


def rendered(fig: Any) -> Any:
    """Draw a pyplot-free figure with Agg; returns the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_events_at_the_same_step_are_all_visible(example_run: tuple[Path, dict[str, Any]]) -> None:
    """Issue 15.6: each event has its own marker (a row per kind) and its own line in every panel;
    lines of one step are side by side, and the detector's red line is drawn on top."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgba

    runs = report.load_runs(example_run[0])
    fig = report.make_figure(runs, top_k=3)
    rendered(fig)
    for run in runs.values():
        column = fig.normguard_axes[run.name]
        ax_events = column["events"]
        rows = report.event_rows(run)
        assert [t.get_text() for t in ax_events.get_yticklabels()] == [report.EVENT_STYLE[k][1] for k in rows]
        by_step: dict[int, list[str]] = {}
        for event in run.events:
            by_step.setdefault(event.step, []).append(event.name)
            [marker] = [ln for ln in ax_events.lines if ln.get_gid() == f"event-marker:{event.name}:{event.step}"]
            assert marker.get_xdata()[0] == event.step and marker.get_ydata()[0] == rows.index(event.name)
            assert to_rgba(marker.get_color()) == to_rgba(report.EVENT_STYLE[event.name][0])
        for panel, ax in column.items():
            if panel == "events":
                continue
            for step, kinds in by_step.items():
                xs, zorders = {}, {}
                for kind in kinds:
                    [line] = [ln for ln in ax.lines if ln.get_gid() == f"event-line:{kind}:{step}"]
                    xs[kind] = line.get_transform().transform((line.get_xdata()[0], 0.5))[0]
                    zorders[kind] = line.get_zorder()
                if "detector_fired" in kinds and len(kinds) > 1:  # the red line is never under another
                    assert zorders.pop("detector_fired") > max(zorders.values())
                positions = sorted(xs.values())
                assert all(b - a >= 2.0 for a, b in itertools.pairwise(positions)), (step, xs)  # pixels apart
    assert {"detector_fired", "stop", "restore"} <= set(report.event_rows(runs["guarded"]))
    assert fig.normguard_axes["guarded"]["events"].get_title().startswith("guarded")


def test_columns_share_the_x_axis_and_keep_their_own_y_axes(example_run: tuple[Path, dict[str, Any]]) -> None:
    """Issue 26.6: one x-axis for every run (a stopped run is drawn as short as it was); issue 15.7:
    a guarded run's norm (2.6–15.6) still fills its own panel, not the bottom of a 0–105 one."""
    pytest.importorskip("matplotlib")
    runs = report.load_runs(example_run[0])
    fig = report.make_figure(runs, top_k=3)
    rendered(fig)
    longest = max(run.last_step for run in runs.values())
    limits = {ax.get_xlim() for column in fig.normguard_axes.values() for ax in column.values()}
    assert len(limits) == 1
    [(left, right)] = limits
    assert left == 0.0 and longest <= right < 1.05 * longest
    assert runs["guarded"].last_step < 0.7 * longest  # stopped early: visibly shorter on the shared axis
    for name, run in runs.items():
        ax = fig.normguard_axes[name]["norm"]
        total = run.series(tags.TOTAL_NORM)
        assert total is not None
        low, high = ax.get_ylim()
        span = total.values.max() - total.values.min()
        assert high - low < 1.3 * span  # the run's own range, a little padding
        line = next(ln for ln in ax.lines if ln.get_label() == "total norm ‖w‖")
        assert line.get_xdata().tolist() == total.steps.tolist()
    assert fig.normguard_axes["guarded"]["norm"].get_ylim() != fig.normguard_axes["unguarded"]["norm"].get_ylim()


def test_legends_do_not_cover_data(example_run: tuple[Path, dict[str, Any]]) -> None:
    """Issue 15.9: every legend sits outside every panel's plotting area."""
    pytest.importorskip("matplotlib")
    runs = report.load_runs(example_run[0])
    for subset in (runs, {"unguarded": runs["unguarded"]}):
        fig = report.make_figure(subset, top_k=5)
        renderer = rendered(fig)
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) >= 4 * len(subset)
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                area = ax.get_window_extent(renderer)
                overlap = min(box.x1, area.x1) - max(box.x0, area.x0), min(box.y1, area.y1) - max(box.y0, area.y0)
                assert min(overlap) <= 0, (legend.get_texts()[0].get_text(), ax.get_ylabel())


def odd_names_run(log_dir: Path) -> None:
    sink = SummaryWriterSink(str(log_dir))
    for step in (1, 2, 3):
        sink.scalars(
            step,
            {
                tags.TOTAL_NORM: float(step),
                tags.layer_tag("heads.$\\q$"): float(step),
                tags.layer_tag("$x^2$"): 2.0 * step,
                tags.layer_tag("a_b*c<d>"): 1.0,
                tags.TRAIN_LOSS: 1.0 / step,
            },
        )
    sink.events(3, [Event(3, EventKind.STOP, "stopping: $\\q$")])
    sink.close()


def test_layer_and_run_names_are_text_never_math(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15.2: `heads.$\\q$` crashed both --out x.png and --out x.html (mathtext: Unknown symbol)."""
    pytest.importorskip("matplotlib")
    odd_names_run(tmp_path / "logs" / "run $\\alpha$")
    for out in (tmp_path / "r.png", tmp_path / "r.html", tmp_path / "r.svg"):
        assert main(["report", str(tmp_path / "logs"), "--out", str(out)]) == 0, capsys.readouterr().err
        assert out.stat().st_size > 1000
    runs = report.load_runs(tmp_path / "logs")
    fig = report.make_figure(runs, top_k=5)
    rendered(fig)
    texts = [t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    shown = {t.get_text() for t in texts}
    assert {"heads.$\\q$: grew ×3", "$x^2$: grew ×3"} <= shown
    for text in [*texts, *(ax.title for ax in fig.axes)]:
        assert text._preprocess_math(text.get_text()) == (text.get_text(), False)  # drawn as plain text
    assert fig.axes[0].get_title().startswith("run $\\alpha$")


# ---------------------------------------------------------------------------- the HTML page and the CLI


def test_html_shows_each_run_at_its_design_size_with_a_full_size_link(
    example_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Issue 15.8: figures no wider than a 1000 px page, shown at half their pixels (never scaled to the
    page), a full-size link each, and the summary's final values after the restore."""
    pytest.importorskip("matplotlib")
    log_dir, results = example_run
    page = tmp_path / "report.html"
    report.plot_report(report.load_runs(log_dir), page)
    body = page.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="normguard report of ([^"]+)" width="(\d+)" height="(\d+)" src="([^"]+)"', body)
    assert [name for name, *_ in images] == ["unguarded", "guarded"]
    for _, width, height, src in images:
        png = base64.b64decode(src.split(",", 1)[1])
        assert page_module._png_size(png) == (2 * int(width), 2 * int(height))
        assert 600 <= int(width) <= 900  # fits a 1000 px window; two fit side by side at 1600 px
    assert body.count('class="full" href="#figure-') == 2
    assert "figure:target img { width: auto; max-width: none; }" in body
    # the summary: the guarded run ended with the restored weights
    rows = re.findall(r"<tr>(<td>.*?)</tr>", body)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows if row.startswith("<td>guarded</td><td>")]
    titles = re.findall(r"<th[^>]*>(.*?)</th>", body.split("<tbody>")[0])
    guarded = dict(zip(titles, cells[0]))
    s = report.summarize(report.load_runs(log_dir)["guarded"])
    assert guarded["final norm"] == f"{s['norm_after_restore']:.4g}"
    assert guarded["final val loss"] == f"{s['best_val_loss']:.4g}"
    assert guarded["norm at the last check"] == f"{s['norm_at_last_check']:.4g}"
    assert float(guarded["final norm"]) == pytest.approx(results["guarded"]["final_norm"], rel=1e-3)


def test_cli_json_png_and_html(
    example_run: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    log_dir, results = example_run
    png = tmp_path / "report.png"
    assert main(["report", str(log_dir), "--out", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figure"] == str(png) and out["complete"] is True
    assert [r["run"] for r in out["runs"]] == ["unguarded", "guarded"]
    assert out["runs"][1]["first_fired_step"] == results["guarded"]["first_fired_step"]
    assert png.read_bytes()[:8] == PNG_MAGIC

    page = tmp_path / "report.html"
    assert main(["report", str(log_dir), "--out", str(page)]) == 0
    text = capsys.readouterr().out
    assert "guarded: " in text and f"wrote {page}" in text
    assert "final norm" in text and "restored to the weights of step" in text
    body = page.read_text(encoding="utf-8")
    assert body.count("data:image/png;base64,") == 2
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


# ---------------------------------------------------------------------------- issue 25.5 / 26.6 / 26.7


def test_event_json_codec_round_trips_through_a_real_event_file(tmp_path: Path) -> None:
    """One codec: inf, -inf and NaN written one way ({"__float__": ...}), read back as floats; a
    string "inf" stays a string; an unknown kind (a newer normguard) is kept as OTHER."""
    from normguard.events import events_from_json, events_to_json, from_json_safe, to_json_safe

    data = {"gap": math.inf, "low": -math.inf, "x": math.nan, "text": "inf", "nested": [1.5, {"y": math.inf}]}
    events = [Event(5, EventKind.DETECTOR_FIRED, "fired", data), Event(5, EventKind.STOP, "stopping: $x$")]
    text = events_to_json(events)
    json.loads(text)  # strict JSON
    assert '{"__float__": "inf"}' in text and '{"__float__": "nan"}' in text and '"text": "inf"' in text
    back = events_from_json(text)
    assert [e.kind for e in back] == [EventKind.DETECTOR_FIRED, EventKind.STOP]
    assert back[0].data["gap"] == math.inf and back[0].data["low"] == -math.inf and math.isnan(back[0].data["x"])
    assert back[0].data["text"] == "inf" and back[0].data["nested"] == [1.5, {"y": math.inf}]
    assert from_json_safe(json.loads(json.dumps(to_json_safe((np.float64("inf"), 2))))) == [math.inf, 2]
    with pytest.raises(TypeError, match="tensors"):
        to_json_safe({"w": torch.zeros(1)})
    [other] = events_from_json('[{"step": 1, "kind": "from_2030", "message": "m"}]')
    assert other.kind is EventKind.OTHER and other.name == "from_2030" and other.line() == "step 1 [from_2030] m"
    # through a real TensorBoard event file, read back by the report: the same events
    sink = SummaryWriterSink(str(tmp_path))
    sink.scalars(5, {tags.TOTAL_NORM: 1.0})
    sink.events(5, events)
    sink.close()
    [run] = report.load_runs(tmp_path).values()
    assert [(e.step, e.kind, e.message) for e in run.events] == [(e.step, e.kind, e.message) for e in events]
    assert run.events[0].data["gap"] == math.inf and math.isnan(run.events[0].data["x"])
    assert isinstance(run.events[0], Event)  # one event type, emitted and read back


def write_baselines(log_dir: Path) -> None:
    """Runs trained without normguard, as Lightning's and Hugging Face's TensorBoard loggers write them."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir / "lightning_plain")) as writer:
        for step in range(0, 100, 10):
            writer.add_scalar("train_loss_step", 2.0 / (1 + step), step)
            writer.add_scalar("epoch", float(step // 50), step)
        for step in (49, 99):
            writer.add_scalar("val_loss", 1.5 - step / 200, step)
    with SummaryWriter(str(log_dir / "hf_plain")) as writer:
        for step in (10, 20, 30):
            writer.add_scalar("train/loss", 3.0 / step, step)
            writer.add_scalar("train/epoch", step / 30, step)
        writer.add_scalar("eval/loss", 0.7, 30)


def test_baselines_without_normguard_are_drawn_from_the_loggers_losses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 26.6: `normguard report runs/hf` shows the plain baseline beside the guarded run."""
    pytest.importorskip("matplotlib")
    write_baselines(tmp_path)
    write_synthetic(tmp_path / "guarded")
    runs = report.load_runs(tmp_path)
    assert set(runs) == {"lightning_plain", "hf_plain", "guarded"}
    light, hf = runs["lightning_plain"], runs["hf_plain"]
    assert not light.has_normguard_data and runs["guarded"].has_normguard_data
    assert (light.train_loss_tag, light.val_loss_tag) == ("train_loss_step", "val_loss")
    assert (hf.train_loss_tag, hf.val_loss_tag) == ("train/loss", "eval/loss")
    s = report.summarize(hf)
    assert s["source"] == "logger"
    assert s["final_train_loss"] == pytest.approx(0.1, rel=1e-6) and s["final_val_loss"] == pytest.approx(0.7, rel=1e-6)
    assert s["events"] == [] and s["checks"] == 0 and s["kept_last_weights"] is False
    fig = report.make_figure(runs)
    rendered(fig)
    for name, run in (("lightning_plain", light), ("hf_plain", hf)):
        ax = fig.normguard_axes[name]["loss"]
        [train] = [ln for ln in ax.lines if ln.get_label() == f"train loss ({run.train_loss_tag})"]
        assert train.get_ydata().tolist() == pytest.approx(run.train_loss().values.tolist())
        assert any(ln.get_label() == f"validation loss ({run.val_loss_tag})" for ln in ax.lines)
        assert "baseline without normguard" in fig.normguard_axes[name]["events"].get_title()
    assert main(["report", str(tmp_path), "--no-figure"]) == 0
    out = capsys.readouterr().out
    assert "hf_plain: 30 steps, baseline without normguard (losses from train/loss / eval/loss)" in out


def test_x_axis_by_epoch_from_what_the_framework_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    write_baselines(tmp_path)
    runs = report.load_runs(tmp_path)
    fig = report.make_figure(runs, x="epoch")
    ax = fig.normguard_axes["hf_plain"]["loss"]
    [train] = [ln for ln in ax.lines if ln.get_label().startswith("train loss")]
    assert train.get_xdata().tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert ax.get_xlim() == fig.normguard_axes["lightning_plain"]["loss"].get_xlim()
    assert fig.normguard_axes["lightning_plain"]["conditions"].get_xlabel() == "epoch"
    assert main(["report", str(tmp_path), "--x", "epoch", "--out", str(tmp_path / "r.png")]) == 0
    write_synthetic(tmp_path / "custom_loop")  # logged no epoch
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--x", "epoch", "--out", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'custom_loop' logged none" in err and "--x epoch" in err


def hold_floor_run(
    log_dir: Path, optimizer: str = "adam", steps: int = 160
) -> tuple[ng.NormGuard, torch.optim.Optimizer]:
    """The paper's linear setting with hold_floor: the training loss dips under the floor, the controller engages."""
    g = torch.Generator().manual_seed(0)
    n, d = 200, 300
    scale = torch.arange(1, d + 1, dtype=torch.float32).pow(-0.75)
    beta = torch.randn(d, generator=g) * math.sqrt(10.0 / d)
    x, xv = torch.randn(n, d, generator=g) * scale, torch.randn(n // 2, d, generator=g) * scale
    y, yv = x @ beta + torch.randn(n, generator=g), xv @ beta + torch.randn(n // 2, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=1e-2, weight_decay=0.0)
    guard = ng.NormGuard(model, opt, log_dir=str(log_dir), every_n_steps=10, noise_floor=1.0, action="hold_floor")
    with guard:
        for step in range(1, steps + 1):
            loss = (model(x).squeeze(-1) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step(loss)
            if step % 20 == 0:
                with torch.no_grad():
                    guard.validation_end((model(xv).squeeze(-1) - yv).pow(2).mean())
    return guard, opt


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_hold_floor_writes_one_weight_decay_tag_per_group_and_draws_one_line(tmp_path: Path, optimizer: str) -> None:
    """Issue 26.7: one weight-decay tag per group, the decay in effect (under Adam hold_floor shrinks the
    weights itself: its λ, not the optimizer's 0); issue 26.6: one λ line and one engage line in the
    figure, not a dashed line per change."""
    pytest.importorskip("matplotlib")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guard, opt = hold_floor_run(tmp_path, optimizer)
    changes = [e for e in guard.events if e.kind is EventKind.WEIGHT_DECAY_CHANGED]
    assert len(changes) > 3
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    decay_tags = [t for t in acc.Tags()["scalars"] if t.startswith(tags.WEIGHT_DECAY + "/")]
    assert decay_tags == [tags.weight_decay_tag(0)] == ["normguard/weight_decay/group_0"]
    logged = {e.step: e.value for e in acc.Scalars(decay_tags[0])}
    lam = guard.monitor.action.decays()["group_0"]  # the λ in effect at the end
    assert logged[max(logged)] == pytest.approx(lam, rel=1e-6) and lam > 0
    if optimizer == "adam":  # the controller shrinks the weights itself: the optimizer's own decay stays 0
        assert opt.param_groups[0]["weight_decay"] == 0.0
    run = report.load_runs(tmp_path)["."]
    engaged = run.engaged_steps()
    assert len(engaged) == 1 and engaged[0] == changes[0].step
    fig = report.make_figure({"hold": run})
    rendered(fig)
    column = fig.normguard_axes["hold"]
    decay_lines = [ln for ax in column.values() for ln in ax.lines if "weight_decay_changed" in str(ln.get_gid())]
    drawn_lines = {ln.get_gid() for ln in decay_lines if ln.get_gid().startswith("event-line:")}
    assert drawn_lines == {f"event-line:weight_decay_changed:{engaged[0]}"}  # one line, where it engaged
    [lam_line] = [ln for ln in column["weight_decay"].lines if ln.get_label() == "λ group 0"]
    assert lam_line.get_ydata()[-1] == pytest.approx(lam, rel=1e-6)
    assert any(ln.get_label() == f"engaged (step {engaged[0]})" for ln in column["weight_decay"].lines)
    assert "weight decay engaged at step" in column["events"].get_title()


def test_honest_wording_for_shrinking_layers_and_restores(tmp_path: Path) -> None:
    """Issue 26.6: a layer that shrank says so; "restored" only after a restore that changed the weights."""
    pytest.importorskip("matplotlib")
    shrinking = {
        tags.layer_tag("grows"): report.Series.from_pairs([(10, 1.0), (20, 1.2)]),
        tags.layer_tag("shrinks"): report.Series.from_pairs([(10, 3.0), (20, 2.0)]),
        tags.TOTAL_NORM: report.Series.from_pairs([(10, 3.2), (20, 2.3)]),
    }
    restore_latest = Event(20, EventKind.RESTORE, "restored the weights of step 20", {"best_step": 20})
    restore_old = Event(20, EventKind.RESTORE, "restored the weights of step 10", {"best_step": 10})
    change = Event(10, EventKind.WEIGHT_DECAY_CHANGED, "hold_floor engaged", {"engaged": True})
    runs = {
        "kept": report.RunData("kept", "", dict(shrinking), [change, restore_latest]),
        "no_restore": report.RunData("no_restore", "", dict(shrinking), [change]),
        "restored": report.RunData("restored", "", dict(shrinking), [restore_old]),
    }
    s = {name: report.summarize(run) for name, run in runs.items()}
    assert [c["change"] for c in s["kept"]["layer_changes"]] == ["shrank ×0.667", "grew ×1.2"]
    assert s["kept"]["restored_to_step"] is None and s["kept"]["kept_last_weights"] is True
    assert s["no_restore"]["restored_to_step"] is None and s["no_restore"]["kept_last_weights"] is True
    assert s["restored"]["restored_to_step"] == 10 and s["restored"]["final_norm"] == 3.2
    fig = report.make_figure(runs)
    rendered(fig)
    titles = {name: fig.normguard_axes[name]["events"].get_title() for name in runs}
    assert "kept the last weights" in titles["kept"] and "restored" not in titles["kept"]
    assert "kept the last weights" in titles["no_restore"]
    assert "restored the weights of step 10" in titles["restored"]
    legend = fig.normguard_axes["kept"]["layers"].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["shrinks: shrank ×0.667", "grows: grew ×1.2"]
    assert "fastest-growing" not in legend.get_title().get_text()
    page = report.report_html(runs, {})
    assert "<td>kept the last weights</td>" in page


def test_four_runs_stay_legible_at_100_percent_zoom(tmp_path: Path) -> None:
    """Issue 26.6: the 4-run figure was 3 344 px wide; now at most 1600 px, the runs wrapped into rows."""
    pytest.importorskip("matplotlib")
    for name in ("a", "b", "c", "d"):
        write_synthetic(tmp_path / "logs" / name)
    out = report.plot_report(report.load_runs(tmp_path / "logs"), tmp_path / "r.png")
    width, height = page_module._png_size(out.read_bytes()) or (0, 0)
    assert 1200 <= width <= 1600 and height > width  # two columns, two rows
    fig = report.make_figure(report.load_runs(tmp_path / "logs"))
    rendered(fig)
    left = {name: round(column["loss"].get_window_extent().x0) for name, column in fig.normguard_axes.items()}
    assert left["a"] == left["c"] and left["b"] == left["d"] and left["a"] < left["b"]
