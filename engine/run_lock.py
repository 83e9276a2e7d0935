"""One writer per run directory: an OS file lock on ``RUN/.writer.lock`` held for the writer's lifetime.

The lock is the kernel's (``flock``), so it dies with its process: a run killed by SIGKILL, an
out-of-memory kill or a lost machine never leaves a stale lock behind, and nothing has to be cleaned
up by hand. The file itself only says who holds it (pid, host, since) so that a refused second writer
can name the first. On Linux the lock is honoured across hosts on NFS (flock is carried as an NFS
lock) — except on mounts with ``nolock`` or ``local_lock=flock|all``, where it only excludes writers
on the same host: :func:`lock_scope` finds that out and the run says so once.

Readers never take the lock for long: :func:`writer_alive` tries a shared lock without waiting and
lets it go at once, which tells a follower on the writer's host, without waiting for the heartbeat,
that a "running" run's process is gone. Two caveats, both harmless as ftdyn uses the lock:

* DataLoader worker processes are forked and share the lock's open file: after a ``kill -9`` of the
  trainer the lock is free once its workers notice and exit (within about five seconds);
* on NFS, Linux emulates ``flock`` with a per-process POSIX lock, which any close of the same file by
  the *holding* process would drop: the writer never probes its own lock.

The lock file is never deleted while it can be held (only a folder that holds nothing else is
removed, by the process holding the lock, before it lets go), and a writer that locked a file which
was meanwhile replaced tries again on the new one: two writers can never hold two different files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.untrusted import CLOEXEC, NOFOLLOW, RunFormatError, open_plain

LOCK = ".writer.lock"
# A reader's probe holds the lock for microseconds; a starting writer retries this long before it
# concludes that another writer is alive.
ACQUIRE_SECONDS = 1.0


class RunLocked(FtdynError):
    """Another live process writes this run directory."""


def lock_scope(path: Path, mountinfo: str | None = None) -> str | None:
    """None when the file system under ``path`` enforces the lock between hosts (or is local); else a
    sentence saying why it only excludes writers on this host. ``mountinfo``: /proc/self/mountinfo's text."""
    try:
        mounts = (mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()).splitlines()
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

    def acquire(self, instead: str = "choose another --out") -> str | None:
        """Take the lock or raise :class:`RunLocked` naming the holder (and ``instead``: what else the user
        can do). Returns a warning when the lock cannot protect the run fully (file system without
        locks, or locks local to this host)."""
        deadline = time.monotonic() + ACQUIRE_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
            except OSError as exc:
                raise FtdynError(f"cannot create the writer lock {self.path} ({exc.strerror}); check that --out is "
                                 f"a writable folder") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if not same_file(fd, self.path):  # replaced while we waited: lock the file that is there now
                    os.close(fd)
                    continue
                break
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    self.fd = fd
                    return (f"the file system under '{self.path.parent}' has no file locks ({exc.strerror}): a second "
                            f"writer of this run cannot be detected")
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = read_holder(fd)
                os.close(fd)
                if time.monotonic() > deadline:  # not a reader's probe: a writer holds it
                    raise RunLocked(f"run directory '{self.path.parent}' is being written by {holder}; wait for it to "
                                    f"finish (or stop it), or {instead}") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        self.fd = fd
        return lock_scope(self.path.parent)

    def release(self, remove_empty_folder: bool = False) -> None:
        """Let go (closing the only descriptor releases the flock). With ``remove_empty_folder``, a run
        folder holding nothing but the lock file is removed first, while still held."""
        if self.fd is None:
            return
        if remove_empty_folder:
            try:
                if [p.name for p in self.path.parent.iterdir()] == [LOCK]:
                    self.path.unlink()
                    self.path.parent.rmdir()
            except OSError:
                pass  # gone already, or something appeared in it: it stays
        os.close(self.fd)
        self.fd = None


def same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


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
    try:
        fd = open_plain(Path(run_dir) / LOCK)
    except (OSError, RunFormatError):
        return None
    if fd is None:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunClaim:
    """The run directory taken for writing: created where missing, its writer lock held (a second
    writer is refused in one line); released, a folder that was created and holds nothing is removed."""

    def __init__(self, run_dir: Path, on_event: Event = quiet, instead: str = "choose another --out"):
        self.created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FtdynError(f"cannot create the run directory '{run_dir}' ({exc.strerror}); {instead}") from None
        self.lock = RunLock(run_dir)
        warning = self.lock.acquire(instead=instead)
        if warning:
            on_event("warning", text=warning)

    def release(self) -> None:
        self.lock.release(remove_empty_folder=self.created)
