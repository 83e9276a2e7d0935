"""One writer per run directory: an OS file lock on ``RUN/.writer.lock`` held for the writer's lifetime.

The lock is the kernel's (``flock``), so it dies with its process: a run killed by SIGKILL, an
out-of-memory kill or a lost machine never leaves a stale lock behind, and nothing has to be cleaned
up by hand. The file itself only says who holds it (pid, host, since) so that a refused second writer
can name the first. On Linux the lock is honoured across hosts on NFS (flock is carried as an NFS
lock) — except on mounts with ``nolock`` or ``local_lock=flock|all``, where it only excludes writers
on the same host: :func:`lock_scope` finds that out and the run says so once.

Readers never take the lock for long: :func:`writer_alive` tries a shared lock without waiting and
lets it go at once, which tells a follower on the writer's host, without waiting for the heartbeat,
that a "running" run's process is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

from engine.errors import FtdynError

LOCK = ".writer.lock"
# A reader's probe holds the lock for microseconds; a starting writer retries this long before it
# concludes that another writer is alive.
ACQUIRE_SECONDS = 1.0


class RunLocked(FtdynError):
    """Another live process writes this run directory."""


def lock_scope(path: Path) -> str | None:
    """None when the file system under ``path`` enforces the lock between hosts (or is local); else a
    sentence saying why it only excludes writers on this host."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        target = str(path.resolve())
    except OSError:
        return None
    best, best_point = None, ""
    for line in mounts:
        fields = line.split(" ")
        if " - " not in line or len(fields) < 6:
            continue
        point = fields[4]
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best_point):
            best, best_point = line, point
    if best is None:
        return None
    head, _, tail = best.partition(" - ")
    fs_type, options = tail.split(" ")[0], ",".join([head.split(" ")[5]] + tail.split(" ")[2:3])
    local = [o for o in options.split(",") if o in ("nolock", "local_lock=flock", "local_lock=all")]
    if fs_type.startswith("nfs") and local:
        return (f"'{path}' is on NFS mounted with {local[0]}: the writer lock only excludes a second writer on this "
                f"host, not on others")
    return None


class RunLock:
    """The writer's side: :meth:`acquire` before anything is written, :meth:`release` (or process exit)
    after the final status."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock or raise :class:`RunLocked` naming the holder. Returns a warning when the lock
        cannot protect the run fully (file system without locks, or locks local to this host)."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise FtdynError(f"cannot create the writer lock {self.path} ({exc.strerror}); check that --out is a "
                             f"writable folder") from None
        deadline = time.monotonic() + ACQUIRE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    self.fd = fd
                    return (f"the file system under '{self.path.parent}' has no file locks ({exc.strerror}): a second "
                            f"writer of this run cannot be detected")
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:  # not a reader's probe: a writer holds it
                    holder = read_holder(fd)
                    os.close(fd)
                    raise RunLocked(f"run directory '{self.path.parent}' is being written by {holder}; wait for it to "
                                    f"finish (or stop it), or choose another --out") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        self.fd = fd
        return lock_scope(self.path.parent)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def read_holder(fd: int) -> str:
    """'pid 123 on host gpu7 (since 14:02)' from the lock file's contents (written by its holder)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])} on host {str(info['host'])[:64]} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def writer_alive(run_dir: str | Path) -> bool | None:
    """True while a writer holds the run's lock, False when the lock file is there and free (the writer
    is gone), None when it cannot be told (a run from before the lock, a file that is not a plain file)."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
