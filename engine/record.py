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
import math
import os
import stat
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from engine.run_lock import writer_alive
from engine.system import SYSTEM, SystemSampler
from engine.untrusted import NOFOLLOW, RunFormatError, number_or_none, open_plain, read_plain

# 1: feature distances only (records' `layers`); 2: analyses as parts — config.json declares them
# (`analyses`), records gain each part's section and `timing.analyses_s`, RUN/analyses/ holds
# post-hoc results. Schema-1 runs read unchanged (engine.analyses.declared_parts).
SCHEMA_VERSION = 2
CONFIG, STATUS, RECORDS = "config.json", "status.json", "records.jsonl"
EVENTS = "events.jsonl"
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
    """Publish a whole file at once: temp file in the same directory, fsync, rename over. The temp
    file is created afresh (never through a link planted at its name), the rename replaces a link at
    ``path`` rather than writing where it points, and a failed write (disk full) leaves no temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def append_lines(path: Path, objects: list[Any]) -> None:
    """Append JSON objects, one per line, flushed and fsync'd: readers see whole lines or none."""
    data = "".join(json.dumps(clean_json(o), allow_nan=False, separators=(",", ":")) + "\n" for o in objects)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data.encode())
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:  # disk full half-way: no partial line for the next append to run into
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


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


def parse_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        raise RunFormatError(f"{name} is not valid JSON ({reason})") from None


def read_json(path: Path) -> Any:
    """A whole JSON file of a run directory (None when it is not there yet). Links, FIFOs and devices
    are refused: a run directory from someone else must not make us read elsewhere or block."""
    data = read_plain(path)
    return None if data is None else parse_json(data, path.name)


def record_problem(record: Any) -> str | None:
    """Why one line of records.jsonl is not a record ftdyn wrote (None when it is one)."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not an object"
    if not isinstance(record.get("kind"), str):
        return "no 'kind'"
    if record["kind"] in ("epoch", "step") and not is_count(record.get("epoch")):
        return "'epoch' is not a whole number ≥ 0"
    if record.get("step") is not None and not is_count(record["step"]):
        return "'step' is not a whole number ≥ 0"
    for key in ("train", "held_out"):
        split = record.get(key)
        if split is None:
            continue
        if not isinstance(split, dict):
            return f"'{key}' is not an object"
        if not is_number(split.get("accuracy")) or not (split.get("loss") is None or is_number(split["loss"])):
            return f"'{key}' has no numeric accuracy and loss"
    return None


def config_problem(config: Any) -> str | None:
    """Why config.json is not one ftdyn wrote (None when it is): the fields every reader relies on."""
    if not isinstance(config, dict):
        return f"{CONFIG} holds a {type(config).__name__}, not an object"
    shapes = {"run": dict, "model": dict, "dataset": dict, "strategy": dict, "layers": list, "measures": list,
              "analyses": list}
    for key, kind in shapes.items():  # present means well-formed (readers write config.get(key, {}).get(…))
        if key in config and not isinstance(config[key], kind):
            return f"{CONFIG}: '{key}' is not {'an object' if kind is dict else 'a list'}"
    for key, field_name in (("layers", "name"), ("measures", "label")):
        if not all(isinstance(item, dict) and isinstance(item.get(field_name), str) for item in config.get(key) or []):
            return f"{CONFIG}: an entry of '{key}' has no '{field_name}'"
    for key, field_name in (("model", "name"), ("dataset", "root"), ("strategy", "name")):
        value = (config.get(key) or {}).get(field_name)
        if value is not None and not isinstance(value, str):
            return f"{CONFIG}: '{key}.{field_name}' is not text"
    for key, annotation in RUN_SETTINGS_READ.items():  # the settings readers use, not only the trainer
        value = (config.get("run") or {}).get(key)
        if value is not None and not setting_fits(value, annotation):
            return f"{CONFIG}: setting 'run.{key}' is not {annotation}"
    shuffle = (config.get("run") or {}).get("shuffle_blocks")
    if shuffle is not None and shuffle != "pixel" and not (shuffle.isdigit() and shuffle.isascii()):
        return f"{CONFIG}: setting 'run.shuffle_blocks' is neither a block size nor 'pixel'"
    classes = (config.get("dataset") or {}).get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return f"{CONFIG}: 'dataset.classes' is not a list of names"
    for part in config.get("analyses") or []:
        problem = declaration_problem(part)
        if problem:
            return f"{CONFIG}: an analysis declaration {problem}"
    return None


# RunConfig settings that the report and the app read from config.json (the trainer checks all of them).
RUN_SETTINGS_READ = {"model": "str", "weights": "str", "data": "str", "image_size": "int", "epochs": "int",
                     "seed": "int", "strategy": "str", "shuffle_blocks": "str | None"}


def setting_fits(value: Any, annotation: str) -> bool:
    """Whether a setting read from config.json has the declared type (``'float | None'``, ``'list[str]'``)."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
    for option in annotation.split("|"):
        option = option.strip()
        if option.startswith("list["):
            inner = kinds[option[5:-1]]
            if isinstance(value, list) and all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
                return True
        elif isinstance(value, kinds[option]) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def recorded_warnings(config: dict[str, Any] | None) -> list[str]:
    """The warnings a run recorded about its own measures (PWSM at small α where whitening is
    degenerate), shown by `ftdyn report` and the TUI; shown only through :func:`visible`."""
    found = (config or {}).get("warnings")
    return [w for w in found if isinstance(w, str)] if isinstance(found, list) else []


def declaration_problem(part: Any) -> str | None:
    """Why an analysis part's declaration cannot be drawn (None when it can)."""
    if not isinstance(part, dict) or not isinstance(part.get("name"), str):
        return "has no name"
    if part.get("display") != "series":
        return None
    if not is_text_list(part.get("measures")):
        return f"'{part['name']}' has no list of measures"
    rows = part.get("rows")
    if not isinstance(rows, dict) or not all(isinstance(v, str) and is_text_list(r) for v, r in rows.items()):
        return f"'{part['name']}' has no rows per view"
    for key in ("section", "layout", "title", "unit"):
        if part.get(key) is not None and not isinstance(part[key], str):
            return f"'{part['name']}': '{key}' is not text"
    return None


def status_problem(status: Any) -> str | None:
    """Why status.json is not one ftdyn wrote (None when it is)."""
    if not isinstance(status, dict):
        return f"{STATUS} holds a {type(status).__name__}, not an object"
    for key in ("state", "host", "message"):
        if status.get(key) is not None and not isinstance(status[key], str):
            return f"{STATUS}: '{key}' is not text"
    for key in ("epoch", "total_epochs", "pid", "world_size"):
        if status.get(key) is not None and not is_count(status[key]):
            return f"{STATUS}: '{key}' is not a whole number"
    if status.get("hosts") is not None and not is_text_list(status["hosts"]):
        return f"{STATUS}: 'hosts' is not a list of names"
    for key in ("started_at", "updated_at", "finished_at", "best_accuracy"):
        if status.get(key) is not None and not is_number(status[key]):
            return f"{STATUS}: '{key}' is not a number"
    return None


def is_number(value: Any) -> bool:
    return number_or_none(value) is not None


def is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def vis_entry_problem(entry: Any) -> str | None:
    """Why one line of vis/index.jsonl is not an image entry (None when it is one)."""
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not an object"
    for key in ("layer", "kind", "class", "path"):
        if not isinstance(entry.get(key), str):
            return f"no '{key}'"
    if entry["kind"] not in ("class", "sample"):
        return f"kind '{entry['kind'][:20]}' is neither class nor sample"
    for key in ("filter", "epoch") + (("image",) if entry["kind"] == "sample" else ()):
        if not is_count(entry.get(key)):
            return f"'{key}' is not a whole number ≥ 0"
    return None


def is_count(value: Any) -> bool:
    """A whole number ≥ 0 that fits the int64 arrays readers put epochs and steps in."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


# Record files are read in chunks of this many bytes, a line that spans two chunks carried over: a
# reader holds what it keeps and one line, never the file (10k step records are 250 MB).
READ_CHUNK = 1 << 20
# A longer line is skipped as damaged without being held (ftdyn's largest records are a few MB).
MAX_LINE = 64 << 20
# Damaged lines named one by one per file; any more are counted in one note.
MAX_NOTES = 10


def parse_line(line: bytes, number: int, check=record_problem, name: str = RECORDS) -> Any:
    """One line of a JSON-lines file (without its "\\n") as the object it holds; a line that is not JSON,
    or not what ``check`` accepts, raises :class:`RunFormatError` naming the file and the line number
    (never the line itself: it may be anything)."""
    record = parse_json(line, f"{name} line {number}")
    problem = check(record)
    if problem:
        raise RunFormatError(f"{name} line {number} is not an ftdyn entry ({problem})")
    return record


class JsonlFollower:
    """Follows an append-only JSON-lines file: :meth:`poll` returns only the complete lines added (and
    kept, below) since the last call, and starts over if the file was replaced or truncated (a resume:
    another inode, or shorter than what was read). A last line without its "\\n" is left for the next
    poll: a writer caught mid-append, not damage.

    The file is read in chunks of ``READ_CHUNK`` bytes, streaming: memory holds ``items`` and one line,
    whatever the file's size. What is kept:

    * ``skip_damaged`` — what viewers do: a line that is not JSON, or not what ``check`` accepts, is
      skipped and named in :attr:`damage` ('records.jsonl line 17 is not an ftdyn entry (no 'kind');
      skipped'), and every other line is read. Without it — what a resume does, as it rewrites the file
      from what it read — such a line raises :class:`RunFormatError` naming it, everything before it read.
    * ``steps`` — how many records other than epoch records are kept (step records, written every
      --every-steps steps: the part of a run's record that grows without bound): None, all of them; 0,
      none (the report and the figures use epoch records only); N, at most N, thinned evenly: every
      ``stride``-th is kept, and each time more than N are kept the stride doubles and every other kept
      one is dropped, so between N/2 and N of them remain, evenly spread over the run. Epoch records are
      always all kept (one per epoch). Meant for the record file; the image index keeps all (None).
    * ``slim`` — applied to each step record kept, what is kept of it (the app keeps the values it
      draws); what it returns must keep the record's 'kind'.
    """

    def __init__(self, path: Path, check=record_problem, name: str | None = None, *, skip_damaged: bool = False,
                 steps: int | None = None, slim=None):
        self.path = path
        self.check = check
        self.name = name or path.name  # as errors name it: 'vis/index.jsonl line 19 …'
        self.skip_damaged, self.steps, self.slim = skip_damaged, steps, slim
        self.changes = 0  # polls that read something or started over: what a viewer compares to redraw
        self._start()

    def _start(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.skipped = 0  # damaged lines skipped
        self._notes: list[str] = []
        self._offset = 0  # bytes of complete lines read
        self._lines = 0
        self._inode: int | None = None
        self._steps_seen = 0  # step records read, kept or not: the next one's ordinal
        self._steps_kept = 0
        self._stride = 1
        self._fresh = 0  # items added by this poll, the last of ``items``

    @property
    def damage(self) -> list[str]:
        """The damaged lines skipped, a note each (the first ``MAX_NOTES``; then how many more)."""
        more = self.skipped - len(self._notes)
        return self._notes + ([f"{self.name}: {more} more damaged lines skipped"] if more else [])

    def poll(self) -> list[dict[str, Any]]:
        try:
            info = self.path.stat(follow_symlinks=False)
        except FileNotFoundError:
            return []
        if self._inode is not None and (info.st_ino != self._inode or info.st_size < self._offset):
            self._start()
            self.changes += 1
        self._inode = info.st_ino
        if info.st_size == self._offset:
            return []
        fd = open_plain(self.path)  # a link, FIFO or device: RunFormatError
        if fd is None:
            return []
        with open(fd, "rb", buffering=0, closefd=True) as f:
            info = os.fstat(fd)  # the file opened, which may have been replaced since the stat above
            if self._inode is not None and (info.st_ino != self._inode or info.st_size < self._offset):
                self._start()
                self.changes += 1
            self._inode, offset = info.st_ino, self._offset
            f.seek(offset)
            self._fresh = 0
            try:
                self._read(f, info.st_size - offset)
            finally:
                self.changes += self._offset != offset
        return self.items[len(self.items) - self._fresh:]

    def _read(self, f, count: int) -> None:
        """Every complete line of the next ``count`` bytes (the file as it was when opened: lines appended
        since are the next poll's), chunk by chunk; a line longer than ``MAX_LINE`` is not held (its
        pieces are dropped as they come) and is skipped as damaged once it ends."""
        pieces: list[bytes] = []  # the line in progress, when it began in an earlier chunk
        size = 0  # its length so far
        while count > 0 and (chunk := f.read(min(READ_CHUNK, count))):
            count -= len(chunk)
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                length = size + end - start
                if length > MAX_LINE:
                    line = None
                else:
                    line = b"".join(pieces) + chunk[start:end] if pieces else chunk[start:end]
                self._take(line, length + 1)
                pieces, size, start = [], 0, end + 1
            if start < len(chunk):
                size += len(chunk) - start
                pieces = [*pieces, chunk[start:]] if size <= MAX_LINE else []

    def _take(self, line: bytes | None, length: int) -> None:
        """One complete line (None: one too long to hold) of ``length`` bytes with its "\\n"."""
        number = self._lines + 1
        try:
            if line is None:
                limit = f"{MAX_LINE >> 20} MiB" if MAX_LINE >= 1 << 20 else f"{MAX_LINE} bytes"
                raise RunFormatError(f"{self.name} line {number} is longer than {limit}")
            record = parse_line(line, number, self.check, self.name) if line.strip() else None
        except RunFormatError as exc:
            if not self.skip_damaged:
                raise  # the offset stays at the start of this line
            self.skipped += 1
            if len(self._notes) < MAX_NOTES:
                self._notes.append(f"{exc}; skipped")
            record = None
        self._offset += length
        self._lines += 1
        if record is not None:
            self._keep(record)

    def _keep(self, record: dict[str, Any]) -> None:
        if self.steps is not None and record.get("kind") != "epoch":
            ordinal, self._steps_seen = self._steps_seen, self._steps_seen + 1
            if self.steps <= 0 or ordinal % self._stride:
                return
            record = self.slim(record) if self.slim is not None else record
            self._steps_kept += 1
        self.items.append(record)
        self._fresh += 1
        if self.steps is not None and self._steps_kept > self.steps:
            self._thin()

    def _thin(self) -> None:
        """Double the stride: every other step record kept so far is dropped (the first one stays), so the
        ones kept are still those whose ordinal is a multiple of the stride."""
        self._stride *= 2
        boundary, kept, fresh, take = len(self.items) - self._fresh, [], 0, False
        for i, record in enumerate(self.items):
            if record.get("kind") != "epoch":
                take = not take
                if not take:
                    continue
            kept.append(record)
            fresh += i >= boundary
        self.items, self._fresh, self._steps_kept = kept, fresh, (self._steps_kept + 1) // 2


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
