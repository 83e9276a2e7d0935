"""The run directory: the contract between the process that trains and any process that watches.

    RUN/config.json         the run's full configuration (written once, atomically)
    RUN/status.json         state, pid, host, start/update times, epoch k of T (replaced atomically)
    RUN/records.jsonl       one JSON object per line, appended and fsync'd per record
    RUN/checkpoints/        last.pt, best.pt, optionally epoch-NNN.pt
    RUN/vis/                per-filter images, listed in vis/index.jsonl (appended like records)
    RUN/analyses/           post-hoc results (loss barrier, module criticality), one JSON file each
    RUN/skipped_files.txt   unreadable data files that were skipped
    RUN/train.log           output of a detached run

Safe to read while written, on local and network file systems: whole files are published by
writing a temporary file beside them and renaming it over (atomic on POSIX and NFS); records are
only ever appended, so a reader sees a prefix of them, at worst with a partial last line, which
:class:`RunReader` ignores until it is complete. This module imports no torch: the TUI uses it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# 1: feature distances only (records' `layers`); 2: analyses as parts — config.json declares them
# (`analyses`), records gain each part's section and `timing.analyses_s`, RUN/analyses/ holds
# post-hoc results. Schema-1 runs read unchanged (engine.analyses.declared_parts).
SCHEMA_VERSION = 2
CONFIG, STATUS, RECORDS = "config.json", "status.json", "records.jsonl"
VIS_INDEX = "vis/index.jsonl"
STATES = ("running", "finished", "failed", "interrupted")
# A running run whose heartbeat is older than this is shown as stalled.
STALL_SECONDS = 120.0
HEARTBEAT_SECONDS = 10.0


def clean_json(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN, and no NaN may reach a table or a plot)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return clean_json(value.tolist())
    return value


def fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Publish a whole file at once: temp file in the same directory, fsync, rename over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def append_lines(path: Path, objects: list[Any]) -> None:
    """Append JSON objects, one per line, flushed and fsync'd: readers see whole lines or none."""
    data = "".join(json.dumps(clean_json(o), allow_nan=False, separators=(",", ":")) + "\n" for o in objects)
    with open(path, "ab") as f:
        f.write(data.encode())
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(clean_json(obj), indent=1, allow_nan=False) + "\n").encode())


def now() -> float:
    return time.time()


class RunWriter:
    """The training process's side. Holds the status and keeps its heartbeat fresh."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / CONFIG, {"schema": SCHEMA_VERSION, **config})

    def start(self, total_epochs: int, epoch: int = 0) -> None:
        started = now()
        self.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), started_at=started,
                           epoch=epoch, total_epochs=total_epochs, message="")
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="ftdyn-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.update_status()

    def update_status(self, **fields: Any) -> None:
        with self._lock:
            self.status.update(fields)
            self.status["updated_at"] = now()
            write_json_atomic(self.dir / STATUS, self.status)

    def finish(self, state: str, message: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.update_status(state=state, message=message, finished_at=now())

    def append_record(self, record: dict[str, Any]) -> None:
        append_lines(self.dir / RECORDS, [record])

    def truncate_records(self, keep: list[dict[str, Any]]) -> None:
        """Rewrite the record file to exactly ``keep`` (on resume: drop a partial epoch's records)."""
        data = "".join(json.dumps(clean_json(r), allow_nan=False, separators=(",", ":")) + "\n" for r in keep)
        write_atomic(self.dir / RECORDS, data.encode())


@dataclass
class RunSnapshot:
    """What a reader sees of a run at one moment."""

    path: Path
    config: dict[str, Any] | None
    status: dict[str, Any] | None
    records: list[dict[str, Any]]
    problem: str | None = None  # a corrupt or foreign directory, worded for the user

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "epoch"]

    @property
    def state(self) -> str:
        return effective_state(self.status)


def effective_state(status: dict[str, Any] | None, at: float | None = None) -> str:
    """The recorded state, or 'stalled' for a run whose heartbeat stopped (killed, machine gone)."""
    if not status:
        return "unknown"
    state = status.get("state", "unknown")
    if state == "running" and (at or now()) - float(status.get("updated_at", 0)) > STALL_SECONDS:
        return "stalled"
    return state


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def parse_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Complete lines of a record file → (records, bytes consumed). A partial last line is left."""
    records, consumed = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        consumed += len(line)
        if line.strip():
            records.append(json.loads(line))
    return records, consumed


class JsonlFollower:
    """Follows an append-only JSON-lines file: :meth:`poll` returns only the complete lines added
    since the last call, and starts over if the file was replaced or truncated (a resume)."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[dict[str, Any]] = []
        self._offset = 0
        self._inode: int | None = None

    def poll(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
            self.items, self._offset = [], 0
        self._inode = stat.st_ino
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            new, consumed = parse_records(f.read())
        self._offset += consumed
        self.items += new
        return new


class RunReader:
    """Follows one run directory: :meth:`poll` returns only what is new since the last call."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self._records = JsonlFollower(self.dir / RECORDS)
        self._config: dict[str, Any] | None = None

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._records.items

    def config(self) -> dict[str, Any] | None:
        """The run's configuration; written once, atomically, so it is read until it is there."""
        if self._config is None:
            self._config = read_json(self.dir / CONFIG)
        return self._config

    def status(self) -> dict[str, Any] | None:
        return read_json(self.dir / STATUS)

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last poll (the file may also have been rewritten on resume)."""
        return self._records.poll()

    def snapshot(self) -> RunSnapshot:
        try:
            config, status = self.config(), self.status()
            self.poll()
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            return RunSnapshot(self.dir, self._config, None, list(self.records),
                               f"'{self.dir}' is not a readable ftdyn run ({type(exc).__name__}: {exc})")
        problem = None
        if config is None and status is None:
            problem = f"'{self.dir}' is not an ftdyn run directory (no {CONFIG} or {STATUS})"
        return RunSnapshot(self.dir, config, status, list(self.records), problem)


def read_vis_index(run_dir: str | Path) -> list[dict[str, Any]]:
    """Entries of RUN/vis/index.jsonl (complete lines only): one per written image."""
    follower = JsonlFollower(Path(run_dir) / VIS_INDEX)
    follower.poll()
    return follower.items


def read_run(run_dir: str | Path) -> RunSnapshot:
    return RunReader(run_dir).snapshot()


def find_runs(root: str | Path) -> Iterator[Path]:
    """Run directories at or below ``root`` (a directory holding config.json or status.json)."""
    root = Path(root)
    if (root / CONFIG).exists() or (root / STATUS).exists():
        yield root
        return
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir():
                yield from find_runs(child)
