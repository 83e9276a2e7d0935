"""The run directory: the contract between the process that trains and any process that watches.

    RUN/config.json         the run's full configuration (written once, atomically)
    RUN/status.json         state, pid, host, start/update times, epoch k of T (replaced atomically)
    RUN/records.jsonl       one JSON object per line, appended and fsync'd per record
    RUN/checkpoints/        last.pt, best.pt, optionally epoch-NNN.pt
    RUN/vis/                per-filter images, listed in vis/index.jsonl (appended like records)
    RUN/analyses/           post-hoc results (loss barrier, criticality, UMAP, STIR), one JSON file each,
                            shown by the declaration inside it (engine.results)
    RUN/skipped_files.txt   unreadable data files that were skipped
    RUN/train.log           output of a detached run
    RUN/events.jsonl        what the run said: phases, warnings, epoch summaries (appended)
    RUN/system.jsonl        the training host's CPU, memory, disk and GPUs, every heartbeat (engine.system)

Safe to read while written, on local and network file systems: whole files are published by
writing a temporary file beside them and renaming it over (atomic on POSIX and NFS); records are
only ever appended, so a reader sees a prefix of them, at worst with a partial last line, which
:class:`RunReader` ignores until it is complete. Readers stream the JSON-lines files in bounded chunks
(:class:`JsonlFollower`); a viewer skips a damaged line (not JSON, not an ftdyn entry), names it and
shows the rest. This module imports no torch: the TUI uses it.
"""

from __future__ import annotations

import json
import os
import stat
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from engine.run_lock import writer_alive
from engine.system import SYSTEM, SystemSampler
from engine.jsonl import JsonlFollower
from engine.record_checks import config_problem, is_count, status_problem, vis_entry_problem
from engine.run_files import (CONFIG, EVENTS, HEARTBEAT_SECONDS, RECORDS, SCHEMA_VERSION, STALL_SECONDS, STATES, STATUS,
                              VIS_INDEX, append_lines, clean_json, now, read_json, write_atomic, write_json_atomic)
from engine.untrusted import RunFormatError

class RunWriter:
    """The training process's side. Holds the status and keeps its heartbeat fresh."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.sampler: SystemSampler | None = None
        self.pending_events: list[dict[str, Any]] = []  # said before the run directory was ours to write

    def write_config(self, config: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / CONFIG, {"schema": SCHEMA_VERSION, **config})

    def start(self, total_epochs: int, epoch: int = 0, processes: dict[str, Any] | None = None) -> None:
        """``processes``: a distributed run's world size, backend, hosts and pids (engine.distributed)."""
        started = now()
        self.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), started_at=started,
                           epoch=epoch, total_epochs=total_epochs, message="", **(processes or {}))
        self._stop.clear()
        self.sampler = SystemSampler(self.dir)
        self.record_system()
        events, self.pending_events = self.pending_events, []
        self.append_events(events)
        self._heartbeat = threading.Thread(target=self._beat, name="ftdyn-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.update_status()
            except OSError:
                pass  # a full disk: the training thread meets it at its next write and records it
            self.record_system()

    def record_system(self) -> None:
        """One sample of the host (engine.system) into RUN/system.jsonl; a full disk skips it."""
        try:
            append_lines(self.dir / SYSTEM, [self.sampler.sample()])
        except OSError:
            pass

    def log_event(self, kind: str, text: str) -> None:
        """What the run says (a phase, a warning, an epoch's summary), for viewers: RUN/events.jsonl.
        Kept until :meth:`start` when the run directory is not yet this process's to write."""
        event = {"at": now(), "kind": kind, "text": text}
        if self.sampler is None:
            self.pending_events.append(event)
        else:
            self.append_events([event])

    def append_events(self, events: list[dict[str, Any]]) -> None:
        try:
            if events:
                append_lines(self.dir / EVENTS, events)
        except OSError:
            pass  # the log is for viewers; a full disk is recorded by the training thread's own write

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

    def finish_if_possible(self, state: str, message: str) -> None:
        """:meth:`finish` where the disk allows: a failure's own cause (disk full, a vanished folder)
        must not hide it behind a second error."""
        try:
            self.finish(state, message)
        except OSError:
            pass

    def append_record(self, record: dict[str, Any]) -> None:
        append_lines(self.dir / RECORDS, [record])

    def truncate_records(self, keep: list[dict[str, Any]]) -> None:
        """Rewrite the record file to exactly ``keep`` (on resume: drop a partial epoch's records)."""
        data = "".join(json.dumps(clean_json(r), allow_nan=False, separators=(",", ":")) + "\n" for r in keep)
        write_atomic(self.dir / RECORDS, data.encode())


def mark_stopped(run_dir: str | Path, status: dict[str, Any], state: str, message: str) -> None:
    """Record a run whose processes have all ended, as read in ``status`` (a checked status.json), as
    ``state`` (failed, interrupted) with ``message``: what the launcher of a distributed run does when
    the processes could not (engine.distributed.record_end)."""
    write_json_atomic(Path(run_dir) / STATUS, dict(status, state=state, message=message, finished_at=now(),
                                                   updated_at=now()))


class NoWriter:
    """The writer of a process that does not write the run directory: every process of a distributed
    run but rank 0 (engine.distributed), which runs the same loop and records nothing."""

    def write_config(self, config: dict[str, Any]) -> None:
        pass

    def start(self, total_epochs: int, epoch: int = 0, processes: dict[str, Any] | None = None) -> None:
        pass

    def log_event(self, kind: str, text: str) -> None:
        pass

    def update_status(self, **fields: Any) -> None:
        pass

    def finish(self, state: str, message: str = "") -> None:
        pass

    def finish_if_possible(self, state: str, message: str) -> None:
        pass

    def append_record(self, record: dict[str, Any]) -> None:
        pass

    def truncate_records(self, keep: list[dict[str, Any]]) -> None:
        pass


@dataclass
class RunSnapshot:
    """What a reader sees of a run at one moment."""

    path: Path
    config: dict[str, Any] | None
    status: dict[str, Any] | None
    records: list[dict[str, Any]]  # every epoch record; the step records the reader kept (see read_run)
    problem: str | None = None  # a corrupt or foreign directory, worded for the user
    # Lines of records.jsonl skipped as damaged, a note each ('records.jsonl line 17 is not an ftdyn
    # entry (no 'kind'); skipped'): the run is readable and shown; the notes are shown as warnings.
    damage: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "epoch"]

    @property
    def state(self) -> str:
        return effective_state(self.status, run_dir=self.path)


def effective_state(status: dict[str, Any] | None, at: float | None = None, run_dir: Path | None = None) -> str:
    """The recorded state, or 'stalled' for a run whose writer is gone (killed, machine lost): at once
    when the writer ran on this host and its lock is free, else once its heartbeat is older than
    ``STALL_SECONDS``; 'suspended' while a writer on this host that still holds its lock is stopped
    (SIGSTOP, Ctrl-Z)."""
    if not isinstance(status, dict):
        return "unknown"
    state = status.get("state", "unknown")
    state = state if state in STATES else "unknown"
    if state != "running":
        return state
    if run_dir is not None and status.get("host") == socket.gethostname():
        alive = writer_alive(run_dir)
        if alive is False:
            return "stalled"
        if alive and process_suspended(status.get("pid")):  # however long ago it last beat
            return "suspended"
    updated = status.get("updated_at")
    if not isinstance(updated, (int, float)) or (at or now()) - float(updated) > STALL_SECONDS:
        return "stalled"
    return state


def process_suspended(pid: Any) -> bool:
    """True when process ``pid`` of this host is stopped (SIGSTOP, Ctrl-Z: state T in /proc): a writer
    that holds its lock and will go on when continued (SIGCONT, ``fg``), but writes nothing until then."""
    if not is_count(pid) or pid == 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read(4096).rpartition(b")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] in (b"T", b"t")


def recorded_warnings(config: dict[str, Any] | None) -> list[str]:
    """The warnings a run recorded about its own measures (PWSM at small α where whitening is
    degenerate), shown by `ftdyn report` and the TUI; shown only through :func:`visible`."""
    found = (config or {}).get("warnings")
    return [w for w in found if isinstance(w, str)] if isinstance(found, list) else []


class RunReader:
    """Follows one run directory: :meth:`poll` returns only what is new since the last call.

    By default (what a resume needs, as it rewrites the record from what it read) every record is kept
    and a damaged line raises. Viewers pass ``skip_damaged`` (a damaged line is skipped and named in
    the snapshot's ``damage``; the run is still shown) and ``steps``/``slim`` (how many step records
    they keep, and what of each): see :class:`JsonlFollower`."""

    def __init__(self, run_dir: str | Path, *, skip_damaged: bool = False, steps: int | None = None, slim=None):
        self.dir = Path(run_dir)
        self._records = JsonlFollower(self.dir / RECORDS, skip_damaged=skip_damaged, steps=steps, slim=slim)
        self._config: dict[str, Any] | None = None
        self._config_problem: str | None = None  # checked once: the config is written once

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._records.items

    @property
    def damage(self) -> list[str]:
        """The lines of records.jsonl skipped as damaged (with ``skip_damaged``), a note each."""
        return self._records.damage

    @property
    def changes(self) -> int:
        """Counts the polls that read records or started over (a thinned record list may keep its length)."""
        return self._records.changes

    @property
    def checked_config(self) -> dict[str, Any] | None:
        """The configuration as last read, where it is one ftdyn wrote (None before it is there); reads nothing."""
        return None if self._config_problem else self._config

    def config(self) -> dict[str, Any] | None:
        """The run's configuration; written once, atomically, so it is read until it is there."""
        if self._config is None:
            self._config = read_json(self.dir / CONFIG)
            self._config_problem = None if self._config is None else config_problem(self._config)
        return self._config

    def status(self) -> dict[str, Any] | None:
        return read_json(self.dir / STATUS)

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last poll (the file may also have been rewritten on resume)."""
        return self._records.poll()

    def snapshot(self) -> RunSnapshot:
        """Config, status and records as they are now, or — for a corrupt run — what could be read
        and the reason (``problem``): one malformed file never raises into the caller. Damaged lines
        skipped (``skip_damaged``) are in ``damage``, not ``problem``: the run is readable."""
        try:
            config, status = self.config(), self.status()
            self.poll()
        except (RunFormatError, UnicodeDecodeError, OSError) as exc:
            reason = str(exc) if isinstance(exc, RunFormatError) else f"{type(exc).__name__}: {exc}"
            config = None if self._config_problem else self._config
            return RunSnapshot(self.dir, config, None, list(self.records),
                               f"'{self.dir}' is not a readable ftdyn run ({reason})", list(self.damage))
        status_reason = None if status is None else status_problem(status)
        reason = self._config_problem or status_reason
        if reason:  # what is well-formed is still shown: a corrupt status must not hide the records
            return RunSnapshot(self.dir, None if self._config_problem else config,
                               None if status_reason else status, list(self.records),
                               f"'{self.dir}' is not a readable ftdyn run ({reason})", list(self.damage))
        problem = None
        if config is None and status is None:
            problem = f"'{self.dir}' is not an ftdyn run directory (no {CONFIG} or {STATUS})"
        return RunSnapshot(self.dir, config, status, list(self.records), problem, list(self.damage))


def read_vis_index(run_dir: str | Path) -> list[dict[str, Any]]:
    """Entries of RUN/vis/index.jsonl (complete lines only): one per written image; a damaged line is
    skipped (an image it named is drawn again, or not shown)."""
    follower = JsonlFollower(Path(run_dir) / VIS_INDEX, vis_entry_problem, VIS_INDEX, skip_damaged=True)
    follower.poll()
    return follower.items


def read_run(run_dir: str | Path, steps: int | None = 0) -> RunSnapshot:
    """A run as the report and the figures read it: every epoch record, damaged lines skipped and named
    in ``damage``, and ``steps`` step records — none by default (nothing that reads a snapshot uses
    them, and they are what grows without bound); None keeps them all (see :class:`JsonlFollower`)."""
    return RunReader(run_dir, skip_damaged=True, steps=steps).snapshot()


# Discovery of runs below a folder is bounded: a runs folder is shallow, and a shared one may hold
# links that loop or lead into a whole file system.
MAX_DEPTH, MAX_FOLDERS = 8, 20_000


def find_runs(root: str | Path) -> Iterator[Path]:
    """Run directories at or below ``root`` (a directory holding config.json or status.json). Links
    are followed once: each real folder is visited at most once (no loops, no run listed twice), at
    most ``MAX_DEPTH`` levels down and ``MAX_FOLDERS`` folders in all."""
    visited: set[tuple[int, int]] = set()
    pending = [(Path(root), 0)]
    while pending and len(visited) < MAX_FOLDERS:
        folder, depth = pending.pop()
        try:
            info = folder.stat()
            if not stat.S_ISDIR(info.st_mode) or (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            if (folder / CONFIG).exists() or (folder / STATUS).exists():
                yield folder
                continue
            if depth < MAX_DEPTH:
                children = sorted(folder.iterdir(), reverse=True)
                pending += [(child, depth + 1) for child in children]
        except (OSError, RuntimeError):  # unreadable, vanished, a link loop
            continue
