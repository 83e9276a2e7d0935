"""A failure of the environment — memory, disk, a file, another process — worded as what happened and
what to do, for the run's status and the command line (a defect keeps its traceback)."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import torch

from engine.data import UnreadableImage
from engine.distributed import PEER_STOPPED, Processes
from engine.errors import FtdynError, exception_line


def failure_message(exc: BaseException, out: str | Path, processes: Processes | None = None,
                    batch_size: int | None = None, resume: str = "--resume") -> str | None:
    """A failure of the environment (memory, disk, a file, another process) worded as what happened and
    what to do; None for anything else (a defect, whose traceback is needed). Recorded epochs are
    always kept. ``batch_size``: the loop's (`ftdyn run` suggests half of it)."""
    kept = f"recorded epochs are kept, continue with {resume}"
    if processes is not None and processes.distributed and collective_failure(exc):
        # gloo and NCCL prefix their messages with their source file: '[…/pair.cc:545] Read error …'
        said = re.sub(r"^\[[^\]]*\]\s*", "", exception_line(exc)).split(". ")[0]
        return f"{PEER_STOPPED} ({type(exc).__name__}: {said[:160]}); {kept}"
    if isinstance(exc, UnreadableImage):
        return exc.one_line()
    if isinstance(exc, FtdynError):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        if batch_size is None:
            return f"CUDA out of memory; try a smaller batch (or fewer probe images); {kept}"
        return (f"CUDA out of memory at batch size {batch_size}; try --batch-size "
                f"{max(1, batch_size // 2)} (or a smaller --probe-size / --image-size); {kept}")
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            "DefaultCPUAllocator" in str(exc) or "not enough memory" in str(exc))):
        if batch_size is None:
            return f"out of memory (CPU RAM); try a smaller batch or fewer probe images; {kept}"
        return (f"out of memory (CPU RAM) at batch size {batch_size}; try a smaller --batch-size, "
                f"--probe-size, --image-size or --workers; {kept}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing '{exc.filename}'" if exc.filename else ""
        return f"disk full{where} ({exc.strerror}); free space under '{out}', then {kept}"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"'{out}' is on a read-only file system; remount it writable, then {kept}"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{f' on {exc.filename!r}' if exc.filename else ''}; fix its permissions, then {kept}"
    return None


def collective_failure(exc: BaseException) -> bool:
    """A collective operation that failed because a peer went away (its connection closed)."""
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in text for sign in ("connection closed by peer", "connection reset by peer", "broken pipe"))
