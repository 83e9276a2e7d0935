"""The run directory's files by name, and how whole files are written and read: published by writing a
temporary file beside them and renaming it over (atomic on POSIX and NFS), appended lines fsync'd,
JSON without NaN. A file read from a run directory is never followed through a link
(engine.untrusted). Torch-free."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from engine.untrusted import NOFOLLOW, RunFormatError, read_plain

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
