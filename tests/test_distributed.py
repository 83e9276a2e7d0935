"""torch.distributed (engine.distributed): sharded analyses and evaluation equal one process's, and
runs of two gloo processes on the CPU record, fail and resume as runs of one do."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.distributed import Processes, batch_shard, shard

WORKER = Path(__file__).with_name("sharded_worker.py")


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("n", [1, 2, 7, 11, 64, 257])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_image_once_in_order(n, world):
    shares = [shard(n, world, rank) for rank in range(world)]
    assert [i for share in shares for i in share] == list(range(n))  # no padding, no image twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("n,batch", [(1, 4), (7, 4), (11, 4), (256, 64), (257, 64), (300, 7)])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_batch_shards_are_whole_batches_of_one_process(n, batch, world):
    shares = [batch_shard(n, batch, world, rank) for rank in range(world)]
    assert [i for share, _ in shares for i in share] == list(range(n))
    size = shares[0][1]
    assert all(s == size for _, s in shares) and (size == batch or size == max(1, n // world) < batch)
    for share, _ in shares:
        assert share.start % size == 0 and (share.stop % size == 0 or share.stop == n)  # batch boundaries
        assert len(share) > 0 or n < world


def close(a, b, tolerance=1e-10) -> bool:
    """Equal records: the same keys and lists, numbers within ``tolerance`` (absolute, float64)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tolerance
    return a == b


def test_two_processes_measure_what_one_does(tmp_path):
    """Moments, per-filter sums, kept images and jackknife groups sharded over 2 gloo processes
    (an odd probe set in batches of 4: shards of 4 and 7 images) give one process's distances within 1e-10, and the
    same held-out loss and accuracy (with rank 0's BatchNorm statistics on every process); so does the
    visualisation's gathered evidence."""
    import sharded_worker

    out = tmp_path / "two.pkl"
    done = torchrun("--nproc-per-node", "2", str(WORKER), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, "rb") as file:  # written by the worker this test started
        two = pickle.load(file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each of its processes: float32 kernels block by thread count
    try:
        one = sharded_worker.measure(Processes())
    finally:
        torch.set_num_threads(threads)
    assert two["world"] == 2 and len(two["hosts"]) == 2
    assert two["images"] == [list(range(0, 4)), list(range(4, 11))]
    for sharded, single in zip(two["epochs"], one["epochs"]):
        layers = single["sections"]["layers"]
        assert sharded["sections"]["layers"].keys() == layers.keys() == {"1", "4"}
        for layer, views in layers.items():
            assert set(views) == {"positions", "pooled", "filter-map", "flat", "filter"}
            for view, entry in views.items():
                assert any(v not in (None, 0.0) for v in entry["values"].values()), (layer, view)
                assert len(next(iter(entry["jackknife"].values()))) == 3, (layer, view)
                assert close(sharded["sections"]["layers"][layer][view], entry), (layer, view)
        assert sharded["evaluation"]["accuracy"] == single["evaluation"]["accuracy"]
        assert sharded["evaluation"]["loss"] == pytest.approx(single["evaluation"]["loss"], abs=1e-12)
        assert sharded["seen"] == single["seen"] == sharded_worker.PROBE_IMAGES
        for key, (values, places) in single["peaks"].items():
            assert np.array_equal(sharded["peaks"][key][0], values) and np.array_equal(sharded["peaks"][key][1], places)
        for key, maps in single["samples"].items():
            assert sorted(sharded["samples"][key]) == sorted(maps) == sharded_worker.SAMPLES
            assert all(np.array_equal(sharded["samples"][key][i], maps[i]) for i in maps)
        for layer, sums in single["moments"].items():
            assert np.allclose(sharded["moments"][layer].numpy(), sums.numpy(), rtol=1e-12, atol=1e-12)


def ftdyn_process(*args: str) -> subprocess.Popen:
    """`ftdyn ARGS` in its own process group, as a terminal runs a command (Ctrl-C reaches every process)."""
    return subprocess.Popen([sys.executable, "-m", "ftdyn_tui.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_epoch(run_dir: Path, epoch: int, process: subprocess.Popen, timeout: float = 240) -> list[str]:
    """The record file's lines once it holds ``epoch`` (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = (run_dir / "records.jsonl").read_text().splitlines() if (run_dir / "records.jsonl").exists() else []
        if any(json.loads(line)["epoch"] >= epoch for line in lines):
            return lines
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no epoch {epoch} within {timeout} s")


def recorded(run_dir: Path) -> list[str]:
    return (run_dir / "records.jsonl").read_text().splitlines()


def test_two_process_run_fails_cleanly_stops_on_ctrl_c_and_resumes(tmp_path, shapes_data, cli):
    """`ftdyn run --nproc-per-node 2` on gloo: rank 0 alone writes; killing process 1 fails the run with
    its name and keeps every recorded epoch; --resume continues it, each epoch recorded once; Ctrl-C
    stops every process and the run is recorded as interrupted; one process finishes it."""
    from conftest import TINY_RUN

    run_dir = tmp_path / "two"
    start = ["run", "--data", str(shapes_data), "--out", str(run_dir), "--epochs", "5", "--device", "cpu", *TINY_RUN]
    process = ftdyn_process(*start, "--nproc-per-node", "2")
    before = wait_for_epoch(run_dir, 1, process)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and status["world_size"] == 2 and len(status["hosts"]) == 2
    os.kill(status["pids"][1], signal.SIGKILL)
    output = process.communicate(timeout=240)[0]
    assert process.returncode != 0 and "process 1 of 2 was killed by SIGKILL" in output, output[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["message"].startswith("process 1 of 2 was killed by SIGKILL")
    kept = recorded(run_dir)
    assert kept[:len(before)] == before and 2 <= len(kept) < 6  # nothing recorded lost
    config = json.loads((run_dir / "config.json").read_text())
    assert config["processes"]["world_size"] == 2 and config["processes"]["effective_batch"] == 8
    assert config["processes"]["batch_per_process"] == 4 and config["processes"]["backend"] == "gloo"

    process = ftdyn_process("run", "--out", str(run_dir), "--resume", "--nproc-per-node", "2")
    before = wait_for_epoch(run_dir, len(kept), process)  # resumed: the next epoch is recorded
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the launcher and both processes
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 130 and "interrupted" in output, output[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    stopped = recorded(run_dir)
    assert stopped[:len(kept)] == kept and stopped[:len(before)] == before

    # finished on one process: the effective batch is the same, and config.json says who ran it now
    result = cli("run", "--out", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    final = recorded(run_dir)
    assert final[:len(stopped)] == stopped
    assert [json.loads(line)["epoch"] for line in final] == list(range(6))  # each epoch once
    config = json.loads((run_dir / "config.json").read_text())
    assert config["processes"]["world_size"] == 1 and config["processes"]["batch_per_process"] == 8
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_a_process_that_fails_names_itself_in_the_run_status(tmp_path, shapes_data):
    """Under plain torchrun (no ftdyn launcher): process 1's one-line error reaches rank 0, which
    records the run as failed with it, after the epoch it had recorded."""
    from conftest import TINY_RUN
    import failing_worker

    run_dir = tmp_path / "run"
    # as the README advises: torchrun's default 30 s before it kills the stopped processes can cut a
    # slow rank 0 off before it records the failure (the suspected cause of one CI run that found the
    # status left 'running'; not reproduced here, under load or not)
    done = torchrun("--nproc-per-node", "2", "--shutdown-timeout", "120", str(WORKER.with_name("failing_worker.py")), "run", "--data",
                    str(shapes_data), "--out", str(run_dir), "--epochs", "2", "--device", "cpu", *TINY_RUN)
    assert done.returncode != 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["message"].startswith("process 1 of 2 (")
    assert failing_worker.MESSAGE in status["message"]
    assert [json.loads(line)["epoch"] for line in recorded(run_dir)] == [0]
