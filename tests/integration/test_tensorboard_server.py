"""A real TensorBoard server over a real normguard run: what a user sees through its HTTP API.

The server is started as a subprocess on loopback (``python -m tensorboard.main``, default
loader), in its own process group so that the group (with TensorBoard's data server) is
killed at the end whatever happens. Waits are generous; nothing here asserts a speed.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import normguard as ng
from normguard import tags

RUN = "guarded"
HOLD = "hold_floor"  # a second run: hold_floor under Adam (the controller shrinks the weights itself)
STARTUP_TIMEOUT_S = 240.0


@dataclass
class RealRun:
    log_dir: Path
    norms: dict[int, float] = field(default_factory=dict)  # step -> total norm at the last check of that step
    val_losses: dict[int, float] = field(default_factory=dict)
    events: list[ng.Event] = field(default_factory=list)
    decays: dict[str, float] = field(default_factory=dict)  # the action's weight decay in effect at the end
    optimizer_decays: list[float] = field(default_factory=list)  # each group's own weight_decay at the end


def train_real_run(log_dir: Path, steps: int = 300, action: str = "stop", name: str = RUN) -> RealRun:
    """The paper's linear setting (n = 400, d = 1.5 n, alpha = 1.5, sigma^2 = 1), stop + restore
    (or another action)."""
    g = torch.Generator().manual_seed(0)
    n, d = 400, 600
    scale = torch.arange(1, d + 1, dtype=torch.float32).pow(-0.75)
    beta = torch.randn(d, generator=g) * math.sqrt(10.0 / d)
    x, xv = torch.randn(n, d, generator=g) * scale, torch.randn(n // 2, d, generator=g) * scale
    y, yv = x @ beta + torch.randn(n, generator=g), xv @ beta + torch.randn(n // 2, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = RealRun(log_dir / name)
    with ng.NormGuard(model, opt, log_dir=str(out.log_dir), every_n_steps=10, noise_floor=1.0, action=action) as guard:
        for step in range(1, steps + 1):
            loss = (model(x).squeeze(-1) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if guard.step(loss) is not None:
                out.norms[step] = guard.last_norms()["total"]
            if step % 20 == 0:
                with torch.no_grad():
                    val = (model(xv).squeeze(-1) - yv).pow(2).mean()
                guard.validation_end(val)
                # the check's own measurement (after a restore, last_norms() shows the restored weights)
                out.norms[step] = guard.monitor.last_host.total
                out.val_losses[step] = val.item()
                if guard.should_stop:
                    break
        out.events = list(guard.events)
        out.decays = dict(guard.monitor.action.decays())
        out.optimizer_decays = [float(g["weight_decay"]) for g in opt.param_groups]
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.proc, self.log = base, proc, log

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.base}{path}{query}", timeout=60) as response:
            return json.loads(response.read().decode("utf-8"))

    def wait_for(self, what: str, probe: Any) -> Any:
        """Poll ``probe()`` until it returns something truthy (the server loads logs in the background)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"TensorBoard exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')}")
            try:
                result = probe()
                if result:
                    return result
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last_error = exc
            time.sleep(1.0)
        pytest.fail(
            f"TensorBoard did not serve {what} in {STARTUP_TIMEOUT_S:.0f}s (last error: {last_error}):\n"
            f"{self.log.read_text(errors='replace')[-2000:]}"
        )


@pytest.fixture(scope="module")
def real_run(hold_run: RealRun) -> RealRun:
    return train_real_run(hold_run.log_dir.parent)


@pytest.fixture(scope="module")
def hold_run(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    return train_real_run(tmp_path_factory.mktemp("tb") / "logs", steps=200, action="hold_floor", name=HOLD)


@pytest.fixture(scope="module")
def server(real_run: RealRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tb-server") / "tensorboard.log"
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(real_run.log_dir.parent)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        srv = Server(f"http://127.0.0.1:{port}", proc, log)
        srv.wait_for("the plugin listing", lambda: srv.get("/data/plugins_listing"))
        srv.wait_for(
            "normguard's scalars",
            lambda: all(tags.TOTAL_NORM in srv.get("/data/plugin/scalars/tags").get(r, {}) for r in (RUN, HOLD)),
        )
        yield srv
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_the_run_fired_and_stopped(real_run: RealRun) -> None:
    kinds = [e.kind for e in real_run.events]
    assert ng.EventKind.DETECTOR_FIRED in kinds and ng.EventKind.STOP in kinds and ng.EventKind.RESTORE in kinds


def test_plugins_and_runs(server: Server) -> None:
    listing = server.get("/data/plugins_listing")
    for plugin in ("scalars", "custom_scalars", "text"):
        assert listing[plugin]["enabled"], plugin
    assert sorted(server.get("/data/runs")) == sorted([RUN, HOLD])


def test_normguard_scalar_tags_are_served(server: Server) -> None:
    served = set(server.get("/data/plugin/scalars/tags")[RUN])
    expected = {
        tags.TOTAL_NORM,
        tags.GROWTH_EXPONENT,
        tags.RELATIVE_GROWTH,
        tags.layer_tag("<root>"),
        tags.TRAIN_LOSS,
        tags.VAL_LOSS,
        tags.NOISE_FLOOR,
        tags.GAP,
        tags.GAP_TREND,
        tags.condition_tag("below_floor"),
        tags.condition_tag("norm_growing"),
        tags.condition_tag("gap_widening"),
        tags.condition_tag("streak"),
        tags.event_tag("detector_fired"),
        tags.event_tag("stop"),
        tags.event_tag("restore"),
    }
    assert expected <= served, sorted(expected - served)
    # action="stop" never changes the weight decay, so none is logged (it would only flatten
    # the axis of a run whose action raises it)
    assert not any(tag.startswith(tags.WEIGHT_DECAY) for tag in served)
    assert all(tags.is_normguard_tag(tag) for tag in served)


def test_served_values_are_the_runs_values(server: Server, real_run: RealRun) -> None:
    rows = server.get("/data/plugin/scalars/scalars", run=RUN, tag=tags.TOTAL_NORM)  # [wall_time, step, value]
    served = {int(step): value for _, step, value in rows}
    assert served.keys() == real_run.norms.keys()
    for step, norm in real_run.norms.items():
        assert served[step] == pytest.approx(norm, rel=1e-6), step
    rows = server.get("/data/plugin/scalars/scalars", run=RUN, tag=tags.VAL_LOSS)
    assert {int(step): pytest.approx(value, rel=1e-6) for _, step, value in rows} == real_run.val_losses
    rows = server.get("/data/plugin/scalars/scalars", run=RUN, tag=tags.NOISE_FLOOR)
    assert {value for *_, value in rows} == {1.0}
    for event in real_run.events:
        rows = server.get("/data/plugin/scalars/scalars", run=RUN, tag=tags.event_tag(event.kind.value))
        assert [(int(step), value) for _, step, value in rows] == [(event.step, 1.0)], event.kind


def test_custom_scalars_layout_is_served(server: Server) -> None:
    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {
        chart["title"]: chart["multiline"]["tag"]
        for category in layout["category"]
        if category["title"] == tags.PREFIX
        for chart in category["chart"]
    }
    expected = {title: spec[1] for title, spec in tags.custom_scalars_layout()[tags.PREFIX].items()}
    assert charts == expected
    # each chart's tags (regular expressions) match served scalars of the run, and the server draws them
    served = set(server.get("/data/plugin/scalars/tags")[RUN])
    for title, patterns in charts.items():
        for pattern in patterns:
            if pattern.startswith(tags.WEIGHT_DECAY):  # not logged by a stop-only run (see above)
                continue
            assert any(re.match(pattern, tag) for tag in served), (title, pattern)
            data = server.get("/data/plugin/custom_scalars/scalars", run=RUN, tag=pattern)
            assert data["regex_valid"] and data["tag_to_events"], (title, pattern)
            assert all(re.match(pattern, tag) for tag in data["tag_to_events"]), (title, pattern)
            if not any(c in pattern for c in "*(?["):  # one tag (anchored: "normguard/loss/train$"), not a family
                # one quantity per chart: the lines of one run are one series, told apart from the
                # other runs' by colour (issue 26.7: train, validation and floor in one chart looked alike)
                tag = pattern.removesuffix("$").replace("\\.", ".")
                assert list(data["tag_to_events"]) == [tag], (title, data["tag_to_events"].keys())


def test_hold_floor_serves_one_weight_decay_tag_per_group(server: Server, hold_run: RealRun) -> None:
    """Issue 26.7: under Adam, hold_floor applies the shrink itself; the one weight-decay tag of the group
    is its λ (it used to write the optimizer's 0 beside it, in one chart)."""
    served = [t for t in server.get("/data/plugin/scalars/tags")[HOLD] if t.startswith(tags.WEIGHT_DECAY + "/")]
    assert served == [tags.weight_decay_tag(0)]
    changes = [e for e in hold_run.events if e.kind is ng.EventKind.WEIGHT_DECAY_CHANGED]
    assert changes, "hold_floor never engaged"
    rows = server.get("/data/plugin/scalars/scalars", run=HOLD, tag=served[0])
    assert rows[-1][2] == pytest.approx(hold_run.decays["group_0"], rel=1e-6) and rows[-1][2] > 0
    assert hold_run.optimizer_decays == [0.0]  # Adam's own decay: not what the tag shows
    layout = tags.custom_scalars_layout()[tags.PREFIX]
    [pattern] = next(spec[1] for title, spec in layout.items() if title.startswith("weight decay"))
    data = server.get("/data/plugin/custom_scalars/scalars", run=HOLD, tag=pattern)
    assert list(data["tag_to_events"]) == [tags.weight_decay_tag(0)]  # one line per group, not two


def test_event_text_is_served(server: Server, real_run: RealRun) -> None:
    text_tag = tags.EVENTS_TEXT_SHOWN  # torch's add_text appends /text_summary; the JSON is not text
    assert server.get("/data/plugin/text/tags")[RUN] == [text_tag]
    rows = server.get("/data/plugin/text/text", run=RUN, tag=text_tag)
    served: dict[int, list[str]] = {}
    for row in rows:
        served.setdefault(int(row["step"]), []).append(row["text"])
    by_step: dict[int, list[str]] = {}
    for event in real_run.events:
        by_step.setdefault(event.step, []).append(event.line())
    assert served.keys() == by_step.keys()
    for step, lines in by_step.items():
        # normguard writes one text entry per step holding every event line of that step, because
        # TensorBoard's default (fast) loader keeps only one text value per step and tag.
        shown = [html.unescape(re.sub(r"<[^>]+>", "", p)) for t in served[step] for p in re.findall(r"<p>(.*?)</p>", t)]
        assert shown == lines, (step, served[step])  # a paragraph per event, exactly as written
