"""The training host's samples (engine.system) and the run's event log, as the writer records them."""

import json
import os
import sys
import types

import pytest

from engine.record import EVENTS, RunWriter
from engine.system import SYSTEM, TAIL_BYTES, SystemSampler, read_samples


def fake_nvml(fail_init: bool = False) -> types.ModuleType:
    """A stand-in for nvidia-ml-py with two GPUs."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0

    def init():
        if fail_init:
            raise RuntimeError("Driver Not Loaded")

    nvml.nvmlInit = init
    nvml.nvmlDeviceGetCount = lambda: 2
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100" if h == 0 else "NVIDIA H100"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=90 - 10 * h)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)
    nvml.nvmlDeviceGetTemperature = lambda h, kind: 60 + h
    return nvml


def test_gpus_cpu_memory_and_disk_are_sampled(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    sampler = SystemSampler(tmp_path)
    first, second = sampler.sample(), sampler.sample()
    assert [g["name"] for g in second["gpus"]] == ["NVIDIA H100", "NVIDIA H100"]
    assert [(g["utilisation"], g["memory_used"], g["temperature"]) for g in second["gpus"]] == \
        [(90, 2**30, 60), (80, 2 * 2**30, 61)]
    assert second["notes"] == [] and 0 < second["disk"]["free"] <= second["disk"]["total"]
    if os.path.exists("/proc/stat"):  # Linux: CPU and memory from /proc
        assert first["cpu_percent"] is None or 0 <= first["cpu_percent"] <= 100
        assert 0 < second["memory"]["used"] < second["memory"]["total"]


@pytest.mark.parametrize("module, note", [(None, "nvidia-ml-py is not installed"),
                                          (fake_nvml(fail_init=True), "NVML: Driver Not Loaded")])
def test_an_absent_gpu_source_is_stated_not_faked(tmp_path, monkeypatch, module, note):
    monkeypatch.setitem(sys.modules, "pynvml", module)  # None: `import pynvml` raises ImportError
    sample = SystemSampler(tmp_path).sample()
    assert sample["gpus"] == [] and any(note in n for n in sample["notes"])


def test_the_writer_records_samples_and_events_only_once_the_run_is_its_own(tmp_path):
    writer = RunWriter(tmp_path / "run")
    writer.log_event("phase", "scanning images")  # before start: the directory is not ours yet
    assert not (tmp_path / "run").exists()
    writer.write_config({"run": {}})
    writer.start(total_epochs=1)
    writer.log_event("warning", "a warning")
    writer.finish("finished")
    events = [json.loads(line) for line in (tmp_path / "run" / EVENTS).read_text().splitlines()]
    assert [(e["kind"], e["text"]) for e in events] == [("phase", "scanning images"), ("warning", "a warning")]
    assert len(read_samples(tmp_path / "run")) == 1


def test_reading_samples_from_a_damaged_or_hostile_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    good = json.dumps({"at": 5.0, "host": "h"})
    (run / SYSTEM).write_text("\n".join(["{not json", "[1, 2]", json.dumps({"at": "soon"}), good, ""]))
    assert [s["at"] for s in read_samples(run)] == [5.0]
    # a long file: only its tail is read, from a whole line on
    (run / SYSTEM).write_text("\n".join(json.dumps({"at": float(i), "pad": "x" * 200}) for i in range(4000)) + "\n")
    tail = read_samples(run, limit=10_000)
    assert tail[-1]["at"] == 3999.0 and len(tail) < 4000 and len(tail) * 200 <= TAIL_BYTES
    (run / SYSTEM).unlink()
    (run / SYSTEM).symlink_to("/etc/passwd")  # never followed out of the run
    assert read_samples(run) == []
