"""A run directory from someone else is untrusted input: what may be read from it, and how it is shown.

Run directories are copied between machines and shared, so everything in one — file names, strings in
config.json, status.json, records, the image index — may have been written to do harm:

* **paths** read from it (``vis/index.jsonl`` names image files) are resolved and must stay inside the
  run directory (:func:`inside`): no absolute paths, no ``..``, no symlink that leads out;
* **files ftdyn writes** into it (exports) never follow a link planted at their name and take their
  names from sanitised labels (:func:`safe_file_name`, :func:`engine.record.write_atomic`);
* **strings** are shown as plain text, never parsed as Rich markup, with control characters made
  visible (:func:`visible`): an escape sequence in a model name must not clear the screen, set the
  window title or write the clipboard;
* **structure** is checked where it is read (:mod:`engine.record`): a malformed run is shown as
  *corrupt* with its reason, and every other run goes on working.

This module imports no torch: the TUI uses it.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_SHOWN = 400  # characters of one untrusted string shown (a 1 MB model name fills no screen)
MESSAGE_LIMIT = 4000  # characters of an error or notice that quotes untrusted strings
NOFOLLOW, CLOEXEC = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_CLOEXEC", 0)


class RunFormatError(ValueError):
    """A file of a run directory is not what ftdyn writes (worded for the user: which file, what)."""


def visible(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as one printable line: control characters as ``\\xNN`` / ``\\uNNNN`` escapes (a tab or
    newline too: a name is one line), cut to ``limit`` characters with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def safe_file_name(label: str, limit: int = 80) -> str:
    """A label (a measure, a run name) as a file-name part: letters, digits and ``._+-`` only, no leading
    dot, never empty. ``pwsm:0.5@positions`` → ``pwsm0.5_positions``; ``../../x`` → ``x``."""
    text = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode()
    text = _UNSAFE_NAME.sub("_", text.replace(":", "").replace("@", "_")).strip("._")
    return (text or "unnamed")[:limit]


def inside(run_dir: Path, relative: object) -> Path | None:
    """``run_dir / relative`` when that names a file inside ``run_dir`` after every link is resolved;
    None for anything else (not a string, absolute, ``..`` leading out, a link that points out)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    candidate = Path(relative)
    if candidate.is_absolute():
        return None
    try:
        root = run_dir.resolve()
        resolved = (run_dir / candidate).resolve()
    except (OSError, RuntimeError):  # a link loop
        return None
    return resolved if resolved.is_relative_to(root) and resolved != root else None


def open_plain(path: Path, flags: int = os.O_RDONLY) -> int | None:
    """A descriptor of the plain file at ``path`` (None when there is none). A link, FIFO or device is a
    :class:`RunFormatError`: a run directory must not make us read elsewhere, or block forever on a
    FIFO planted under a file's name (the open itself does not wait: non-blocking)."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | NOFOLLOW | CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunFormatError(f"{path.name} is a link; a run directory's files must be plain files") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunFormatError(f"{path.name} is not a plain file")
    return fd


def read_plain(path: Path, offset: int = 0) -> bytes | None:
    """The bytes of the plain file at ``path`` from ``offset`` (None when absent); see :func:`open_plain`."""
    fd = open_plain(path)
    if fd is None:
        return None
    with open(fd, "rb", closefd=True) as f:
        f.seek(offset)
        return f.read()


def number_or_none(value: Any) -> float | None:
    """A finite number read from a run directory as a float; anything else (text, NaN, a list) None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
