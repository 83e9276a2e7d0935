"""What the training host is doing — CPU, memory, the run directory's disk and every NVIDIA GPU —
sampled by the run's writer into ``RUN/system.jsonl`` (one object a line, every heartbeat), so that a
viewer on another machine sees the training host, not its own.

Sources, each optional and, when absent, *stated* in the sample's ``notes`` rather than faked:

* CPU busy share: the change of ``/proc/stat``'s counters since the previous sample (Linux);
* memory: ``/proc/meminfo`` (MemTotal − MemAvailable is in use; Linux);
* disk: free and total bytes of the file system holding the run directory (any OS);
* GPUs: NVIDIA's management library through its maintained binding ``nvidia-ml-py`` (``pynvml``):
  utilisation, memory and temperature per device.

Torch-free: the TUI reads samples through :func:`read_samples`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from engine.untrusted import RunFormatError, number_or_none, open_plain

SYSTEM = "system.jsonl"
TAIL_BYTES = 256 * 1024  # readers look at the end of the file only: the last samples are the news


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat is not there."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def memory() -> dict[str, int] | None:
    try:
        with open("/proc/meminfo") as f:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:]}
        return {"used": values["MemTotal"] - values["MemAvailable"], "total": values["MemTotal"]}
    except (OSError, ValueError, KeyError, IndexError):
        return None


class SystemSampler:
    """One sample per call of :meth:`sample`; the GPU library is opened once, on the first."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.previous_cpu = cpu_times()
        self.nvml: Any = None
        self.nvml_note: str | None = None
        self.opened = False

    def open_nvml(self) -> None:
        self.opened = True
        try:
            import pynvml
        except ImportError:
            self.nvml_note = "GPU: not sampled (nvidia-ml-py is not installed: pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            self.nvml = pynvml
        except Exception as exc:  # NVMLError and its many subclasses: no driver, no GPU, no permission
            self.nvml_note = f"GPU: not sampled (NVML: {exc})"

    def gpus(self) -> list[dict[str, Any]]:
        nvml = self.nvml
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            used = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append({"index": index, "name": name.decode() if isinstance(name, bytes) else str(name),
                          "utilisation": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                          "memory_used": used.used, "memory_total": used.total,
                          "temperature": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)})
        return found

    def sample(self) -> dict[str, Any]:
        if not self.opened:
            self.open_nvml()
        notes = []
        cpu = cpu_times()
        busy = None
        if cpu is not None and self.previous_cpu is not None and cpu[1] > self.previous_cpu[1]:
            busy = 100.0 * (cpu[0] - self.previous_cpu[0]) / (cpu[1] - self.previous_cpu[1])
        elif cpu is None:
            notes.append("CPU: not sampled (no /proc/stat on this system)")
        self.previous_cpu = cpu
        ram = memory()
        if ram is None:
            notes.append("memory: not sampled (no /proc/meminfo on this system)")
        try:
            usage = shutil.disk_usage(self.dir)
            disk = {"free": usage.free, "total": usage.total}
        except OSError as exc:
            disk, _ = None, notes.append(f"disk: not sampled ({exc.strerror})")
        gpus: list[dict[str, Any]] = []
        if self.nvml is not None:
            try:
                gpus = self.gpus()
            except Exception as exc:  # a GPU fell off the bus, a driver reload: said, and the run goes on
                notes.append(f"GPU: sampling failed (NVML: {exc})")
        elif self.nvml_note:
            notes.append(self.nvml_note)
        return {"at": time.time(), "host": socket.gethostname(), "cpu_percent": busy, "cpus": os.cpu_count(),
                "memory": ram, "disk": disk, "gpus": gpus, "notes": notes}


def read_samples(run_dir: str | Path, limit: int = 120) -> list[dict[str, Any]]:
    """The last ``limit`` samples of a run, oldest first; malformed lines are skipped. The file is
    untrusted: only a plain file inside the run is read (no links, no FIFOs), and only its last TAIL_BYTES."""
    return [s for s in tail_objects(Path(run_dir) / SYSTEM, limit) if number_or_none(s.get("at")) is not None]


def tail_bytes(path: Path) -> bytes | None:
    """The last TAIL_BYTES of the plain file at ``path``, from a line start where the file is longer;
    None when there is no such plain file (absent, a link, a FIFO: a run directory is untrusted)."""
    try:
        fd = open_plain(path)
    except (OSError, RunFormatError):
        return None
    if fd is None:
        return None
    with open(fd, "rb", closefd=True) as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - TAIL_BYTES))
        data = f.read(TAIL_BYTES)
    if size > TAIL_BYTES:  # the first line read is probably cut
        data = data[data.find(b"\n") + 1:]
    return data


def tail_objects(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` JSON objects of a JSON-lines file (within its last TAIL_BYTES), oldest first."""
    found = []
    for line in (tail_bytes(path) or b"").decode("utf-8", "replace").splitlines()[-limit:]:
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.append(value)
    return found
