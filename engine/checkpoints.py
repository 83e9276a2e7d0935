"""Checkpoints in a run directory: written atomically, read without unpickling (a run directory
may come from someone else), found by epoch without following links out of the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from engine.errors import FtdynError, exception_line
from engine.untrusted import NOFOLLOW


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file renamed over ``path``: a reader never sees half a checkpoint, and a
    failed save (disk full) leaves the previous checkpoint and no temp file."""
    tmp = path.with_name(f".{path.name}.tmp")
    target = WriteChecked(tmp)
    try:
        try:
            torch.save(state, target)
            os.fsync(target.fd)
        finally:
            target.close()
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if target.error is not None and target.error is not exc:
            raise target.error from None  # torch reports a failed write as "unexpected pos …": say what it was
        raise


class WriteChecked:
    """The file torch.save writes a checkpoint through. torch turns a failed write (disk full, quota)
    into a bare RuntimeError; this keeps the OSError, with its errno, for the one-line message."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o644)
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            exc.filename = exc.filename or str(self.path)
            self.error = self.error or exc
            raise
        return len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_checkpoint(path: Path, device: torch.device | str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of a run directory, which may come from someone else: never unpickled (weights
    only), and a damaged or foreign file is a one-line error naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for truncated, foreign or unsafe files
        raise FtdynError(f"cannot read checkpoint '{path}' ({type(exc).__name__}: "
                         f"{exception_line(exc)[:160]}); it is damaged or not an ftdyn "
                         f"checkpoint — move it away and use another (runs keep every epoch with --save-every-epoch)") \
            from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or \
            not isinstance(state.get("epoch"), int):
        raise FtdynError(f"checkpoint '{path}' is not an ftdyn checkpoint (no model state and epoch)")
    return state


def available_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Epoch → checkpoint file, from epoch-NNN.pt, best.pt and last.pt. Links are not followed: a run
    directory from someone else must not make us read files outside it."""
    found: dict[int, Path] = {}
    folder = run_dir / "checkpoints"
    if folder.is_symlink():
        return found
    for path in sorted(folder.glob("*.pt")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            state = load_checkpoint(path, mmap=True)  # only the epoch is read
        except FtdynError:
            continue  # a damaged file is not offered; the ones that load are
        found.setdefault(state["epoch"], path)
    return found


def last_epoch(run_dir: Path) -> int:
    """The newest epoch a checkpoint holds (0 when there is none: the source)."""
    return max(available_checkpoints(Path(run_dir)), default=0)


def require_checkpoints(wanted: list[int], checkpoints: dict[int, Path]) -> None:
    """A one-line error for the first of the ``wanted`` epochs that has no checkpoint (0, the source,
    needs none)."""
    missing = [e for e in wanted if e != 0 and e not in checkpoints]
    if missing:
        raise FtdynError(f"no checkpoint for epoch {missing[0]} (available: source 0 and "
                         f"{', '.join(map(str, sorted(checkpoints))) or 'none'}); run with --save-every-epoch "
                         f"to keep them all")
