"""The training host and what the run said: the runs screen's system (s) and log (l) panels — no
Textual, no torch here. Every string from a run directory is shown through visible().
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.untrusted import number_or_none, visible
from engine.system import read_samples, tail_bytes, tail_objects
from engine.record import EVENTS
from ftdyn_tui.workspace import duration

SPARK = "▁▂▃▄▅▆▇█"
LOG = "train.log"


def sparkline(values: list[float | None], high: float = 100.0) -> str:
    """One character per value from 0 to ``high``; a gap where a value is missing."""
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, max(0, int(v / high * len(SPARK))))]
                   for v in values)


def gibibytes(value: Any) -> str:
    number = number_or_none(value)
    return "?" if number is None else f"{number / 2**30:.1f}"


def processes_lines(status: dict[str, Any] | None, width: int = 80) -> list[str]:
    """A distributed run's processes as status.json lists them (none for a run of one process):
    '4 processes (nccl) on 2 hosts: gpu-a ×2, gpu-b ×2'. Host names are shown through visible()."""
    status = status if isinstance(status, dict) else {}
    world, hosts = number_or_none(status.get("world_size")), status.get("hosts")
    if world is None or world <= 1 or not isinstance(hosts, list):
        return []
    counts: dict[str, int] = {}
    for host in hosts:
        counts[str(host)] = counts.get(str(host), 0) + 1
    backend = status.get("backend") if isinstance(status.get("backend"), str) else "?"
    places = ", ".join(f"{host} ×{count}" for host, count in counts.items())
    return [visible(f"{world:.0f} processes ({backend}) on {len(counts)} host{'s' if len(counts) > 1 else ''}: "
                    f"{places} · the samples below are rank 0's host", width)]


def system_lines(run_dir: Path, width: int = 80, at: float | None = None) -> list[str]:
    """The training host as its run recorded it (RUN/system.jsonl): the latest sample, and the CPU and
    GPU load over the last samples. Every string from the file is shown through visible()."""
    samples = read_samples(run_dir)
    if not samples:
        return ["no system samples recorded (a run from before ftdyn recorded them, or one not started yet)"]
    last = samples[-1]
    age = (at if at is not None else time.time()) - float(last["at"])
    lines = [visible(f"host {last.get('host', '?')} · sampled {duration(max(0.0, age))} ago · "
                     f"{len(samples)} samples shown", width)]
    trail = max(8, width - 34)
    cpu = number_or_none(last.get("cpu_percent"))
    cpus = number_or_none(last.get("cpus"))
    lines.append(f"CPU  {'—' if cpu is None else f'{cpu:5.1f} %'}"
                 f"{'' if cpus is None else f' of {cpus:.0f}'}  "
                 + sparkline([number_or_none(s.get("cpu_percent")) for s in samples[-trail:]]))
    ram = last.get("memory") if isinstance(last.get("memory"), dict) else None
    if ram:
        lines.append(f"RAM  {gibibytes(ram.get('used'))} / {gibibytes(ram.get('total'))} GiB")
    disk = last.get("disk") if isinstance(last.get("disk"), dict) else None
    if disk:
        lines.append(f"disk {gibibytes(disk.get('free'))} GiB free of {gibibytes(disk.get('total'))} (the run's file system)")
    gpus = [g for g in last.get("gpus") or [] if isinstance(g, dict)] if isinstance(last.get("gpus"), list) else []
    for gpu in gpus:
        index = gpu.get("index")
        history = []
        for sample in samples[-trail:]:
            same = [g for g in sample.get("gpus") or [] if isinstance(g, dict) and g.get("index") == index] \
                if isinstance(sample.get("gpus"), list) else []
            history.append(number_or_none(same[0].get("utilisation")) if same else None)
        util, temp = number_or_none(gpu.get("utilisation")), number_or_none(gpu.get("temperature"))
        lines.append(visible(f"GPU{index} {gpu.get('name', '?')}: {'—' if util is None else f'{util:.0f} %'} busy, "
                             f"{gibibytes(gpu.get('memory_used'))} / {gibibytes(gpu.get('memory_total'))} GiB, "
                             f"{'—' if temp is None else f'{temp:.0f} °C'}", width - len(history) - 2)
                     + "  " + sparkline(history))
    notes = last.get("notes") if isinstance(last.get("notes"), list) else []
    lines += [visible(note, width) for note in notes if isinstance(note, str)]
    return lines


def log_lines(run_dir: Path, count: int = 12, width: int = 100) -> tuple[str, list[str]]:
    """The end of what the run printed: RUN/train.log for a detached run, else its recorded events
    (RUN/events.jsonl). Returns (which, lines); untrusted text, shown through visible()."""
    data = tail_bytes(run_dir / LOG)
    if data is not None:
        text = data.decode("utf-8", "replace").replace("\r", "\n")  # progress bars redraw with \r
        lines = [line for line in text.splitlines() if line.strip()]
        return LOG, [visible(line, width) for line in lines[-count:]]
    events = tail_objects(run_dir / EVENTS, count)
    shown = []
    for event in events:
        at = number_or_none(event.get("at"))
        stamp = time.strftime("%H:%M:%S", time.localtime(at)) if at is not None else "--:--:--"
        shown.append(visible(f"{stamp} {event.get('kind', '?')}: {event.get('text', '')}", width))
    return EVENTS, shown
