"""Progress bars: drawn on a terminal only, with tqdm or without it, and off on request."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from normguard.progress import progress, progress_enabled


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORMGUARD_PROGRESS", raising=False)


def test_off_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress(5, "work", file=stream) as bar:
        bar.update(5)
    assert not bar.enabled and bar.n == 5
    assert stream.getvalue() == ""


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_drawn_on_a_terminal_and_wiped_at_the_end(use_tqdm: bool) -> None:
    if use_tqdm:
        pytest.importorskip("tqdm")
    screen = Terminal()
    with progress(4, "fits", unit="fit", file=screen, use_tqdm=use_tqdm, min_interval=0.0) as bar:
        for _ in range(4):
            bar.update()
    text = screen.getvalue()
    assert "fits" in text and "4/4" in text
    # the bar leaves no line behind: the last thing written returns to the start of a blank line
    assert text.split("\r")[-1].strip() == ""


def test_the_builtin_bar_shows_count_percent_and_time_left() -> None:
    screen = Terminal()
    bar = progress(10, "model pilot", unit="sample", file=screen, use_tqdm=False, min_interval=0.0)
    bar.update(3)
    last = screen.getvalue().split("\r")[-1]
    assert last.startswith("model pilot:  30% 3/10 samples [0:00 elapsed, ")
    assert last.rstrip().endswith("left]")
    bar.set_description("model pilot n=40")
    assert screen.getvalue().split("\r")[-1].startswith("model pilot n=40:  30%")
    bar.close()
    bar.update(1)  # after close: counts, draws nothing
    assert bar.n == 4 and screen.getvalue().endswith("\r")


def test_a_bar_without_total_shows_its_label_and_the_time() -> None:
    screen = Terminal()
    with progress(None, "normguard spectrum: reading x.npy", file=screen, use_tqdm=False, tick=0.01) as bar:
        bar.set_description("normguard spectrum: alpha of 10 x 3")
    assert "normguard spectrum: alpha of 10 x 3 [0:00 elapsed]" in screen.getvalue()


def test_enabled_and_the_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress_enabled(True, io.StringIO())
    assert not progress_enabled(False, Terminal())
    assert progress_enabled(None, Terminal())
    monkeypatch.setenv("NORMGUARD_PROGRESS", "1")  # on where left to the default, not against False
    assert progress_enabled(None, io.StringIO()) and not progress_enabled(False, Terminal())
    monkeypatch.setenv("NORMGUARD_PROGRESS", "0")  # off everywhere
    assert not progress_enabled(True, Terminal())
    screen = Terminal()
    with progress(3, "x", file=screen) as bar:
        bar.update(3)
    assert screen.getvalue() == ""


def test_enabled_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"Expected argument `progress` to be a bool but got 'yes'\."):
        progress(3, "x", enabled="yes")  # type: ignore[arg-type]


def test_model_pilot_draws_a_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("scipy")
    from normguard.science.pilot import linear_pilot, model_pilot, paper_generator

    def factory(d: int) -> torch.nn.Module:
        return torch.nn.Linear(d, 1)

    kwargs = {"tau": 0.2, "sizes": [10, 20, 30], "lr": 5e-2, "max_steps": 400, "seeds": (0,)}
    first = model_pilot(factory, paper_generator(2.0), None, progress=True, **kwargs)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "model pilot n=30 (3/3)" in err
    second = model_pilot(factory, paper_generator(2.0), None, progress=False, **kwargs)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(first.steps, second.steps)  # the bar changes nothing
    linear_pilot(paper_generator(2.0), None, tau=0.2, sizes=[20, 30, 40], n_seeds=2, progress=True)
    assert "linear pilot n=40 (6/6)" in capsys.readouterr().err
