"""Two processes on CPU with gloo: DDP through NormGuardCallback, FSDP2 through NormGuard.

Each run is a subprocess running a script (``_ddp_worker.py``, ``_fsdp_worker.py``): the
most robust way to start process groups from pytest. The workers write one JSON per rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

from normguard import tags

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, *args: str, timeout: int = 240) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


# ---------------------------------------------------------------------------- DDP
@pytest.fixture(scope="module")
def ddp_stop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_stop")
    launch("_ddp_worker.py", str(out), "stop")
    return out


def test_ddp_ranks_decide_alike_and_stop_together(ddp_stop: Path) -> None:
    r0, r1 = ranks(ddp_stop)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["should_stop"] and r1["should_stop"]
    assert r0["global_step"] == r1["global_step"] < 150
    assert r0["events"] == r1["events"]
    assert [e["kind"] for e in r0["events"]] == ["detector_fired", "restore", "stop"]
    assert r0["verdicts"] == r1["verdicts"]  # same decisions, from the same (synced) inputs
    assert r0["weight"] == r1["weight"]  # replicated weights, restored to the same best snapshot


def test_ddp_loss_window_syncs_across_ranks(ddp_stop: Path) -> None:
    r0, r1 = ranks(ddp_stop)
    # each rank sees its own half of the data; the train loss at a validation is the mean over
    # both ranks' steps since the previous validation (LossWindow.totals all-gathers on gloo)
    first_val = next(v for v in r0["verdicts"] if v[0] == 5 and v[1] != "recorded")
    both = r0["step_losses"][:5] + r1["step_losses"][:5]
    assert r0["step_losses"][:5] != r1["step_losses"][:5]
    assert first_val[3] == pytest.approx(sum(both) / len(both), rel=1e-6)


def test_ddp_only_rank_zero_writes_the_event_file(ddp_stop: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r0, r1 = ranks(ddp_stop)
    assert r0["sinks"] == 1 and r1["sinks"] == 0
    files = list((ddp_stop / "tb").rglob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0})
    acc.Reload()
    assert tags.TOTAL_NORM in acc.Tags()["scalars"]
    assert acc.Scalars(tags.event_tag("stop"))[0].step == r0["global_step"]


def test_ddp_one_rank_asking_to_stop_stops_all(tmp_path: Path) -> None:
    launch("_ddp_worker.py", str(tmp_path), "rank1_stops")
    r0, r1 = ranks(tmp_path)
    assert r0["global_step"] == r1["global_step"] < 150
    assert r0["should_stop"] and r1["should_stop"]
    stop0 = [e for e in r0["events"] if e["kind"] == "stop"]
    stop1 = [e for e in r1["events"] if e["kind"] == "stop"]
    assert "another rank" in stop0[0]["message"] and "rank 1 only" in stop1[0]["message"]
    assert stop0[0]["step"] == stop1[0]["step"]


# ---------------------------------------------------------------------------- FSDP2
def test_fsdp2_norms_equal_the_unsharded_model(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2")
    launch("_fsdp_worker.py", str(tmp_path), str(free_port()))
    r0, r1 = ranks(tmp_path)
    assert r0["is_dtensor"] and r1["is_dtensor"]
    assert r1["local_numel"]["4.weight"] == 0  # uneven sharding: an empty local shard on rank 1
    assert r0["logging_rank"] and not r1["logging_rank"]
    for r in (r0, r1):
        for key, value in r["unsharded_at_init"].items():
            assert r["sharded_at_init"][key] == pytest.approx(value, rel=1e-5), key
        for step in r["steps"]:
            assert step["all_reduce"] == 1  # one collective per check
            assert set(step["guard"]) == set(step["reference"]) == {"0", "2", "4", "total"}
            for key, value in step["reference"].items():
                assert step["guard"][key] == pytest.approx(value, rel=1e-5), key
    assert r0["steps"] == r1["steps"]


def test_lightning_model_parallel_strategy_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    launch("_model_parallel_worker.py", str(tmp_path))
    r0, r1 = ranks(tmp_path)
    for r in (r0, r1):
        assert r["sharded"] and r["global_step"] == 4 and r["steps"] == [2, 4]
        assert set(r["guard"]) == {"net.0", "net.2", "total"}
        for key, value in r["reference"].items():
            assert r["guard"][key] == pytest.approx(value, rel=1e-5), key
            assert r["after_restore"][key] == pytest.approx(value, rel=1e-6), key
    assert r0["guard"] == r1["guard"]
