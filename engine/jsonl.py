"""Following an append-only JSON-lines file (records.jsonl, vis/index.jsonl, events) in bounded chunks:
only complete new lines, started over when the file is replaced, damaged lines named or refused.
Torch-free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.record_checks import record_problem
from engine.run_files import RECORDS, parse_json
from engine.untrusted import RunFormatError, open_plain


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
