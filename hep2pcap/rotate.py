"""Output files for live capture: whole-block buffering and tcpdump-style rotation.

Owns: opening, naming, rotating (-C size, -G time, -W ring of N files, SIGHUP reopen) and
flushing output files. Every file is a complete pcapng of its own (SHB, then an IDB per
capture agent as first seen in that file). Blocks reach the OS whole — one ``write`` per
batch, never half a block — so the file is valid up to the last completed flush (a SIGKILL
landing inside that ``write`` can leave its batch partly on disk). This module is an I/O
edge like ``sources/``: it opens files and reads the wall clock; the block layouts stay in
``pcapng.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from .accounting import Totals, file_statistics
from .errors import Hep2PcapError
from .pcapng import PcapngWriter

#: Bytes held in memory before they are written, at most (also written on every flush).
BLOCK_BUFFER = 256 * 1024
#: When the next file cannot be created, capture goes on in the current one and the
#: rotation is tried again this much later.
ROTATE_RETRY_S = 5.0

log = logging.getLogger("hep2pcap")


class BlockFile:
    """A write buffer that passes only whole blocks to ``raw`` (one ``write`` per batch).

    When a write fails half-way (disk full), a regular file is cut back to the end of the
    last batch written whole, so it stays a valid pcapng up to its last complete block.

    Args:
        raw: where bytes go; ``flush()`` is called on it after every batch.
        limit: buffered bytes that trigger a write.
    """

    def __init__(self, raw: BinaryIO, limit: int = BLOCK_BUFFER) -> None:
        self._raw = raw
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        try:
            self._complete: int | None = raw.tell() if raw.seekable() else None
        except (OSError, ValueError, AttributeError):
            self._complete = None

    def write(self, block: bytes) -> int:
        """Buffer one whole block."""
        self._parts.append(block)
        self._size += len(block)
        if self._size >= self._limit:
            self.flush()
        return len(block)

    def flush(self) -> None:
        """Hand everything buffered to the OS."""
        parts = self._parts
        if parts:
            data = memoryview(b"".join(parts))
            size = len(data)
            written = 0
            try:
                while written < size:  # raw files may write less than asked
                    n = self._raw.write(data[written:])
                    written += size - written if n is None else n
            except OSError:
                self._cut_back(parts, written)
                raise
            finally:
                parts.clear()
                self._size = 0
            if self._complete is not None:
                self._complete += size
        self._raw.flush()

    def _cut_back(self, parts: list[bytes], written: int) -> None:
        # The write failed after ``written`` bytes of the batch: keep the blocks that got
        # there whole, cut the one that did not.
        if self._complete is None:
            return
        whole = 0
        for block in parts:
            if whole + len(block) > written:
                break
            whole += len(block)
        with contextlib.suppress(OSError, ValueError):
            os.ftruncate(self._raw.fileno(), self._complete + whole)
            self._raw.seek(self._complete + whole)
            self._complete += whole


def indexed(path: str, index: int) -> str:
    """``calls.pcapng`` → ``calls.00003.pcapng`` (the index goes before the extension)."""
    p = Path(path)
    return (
        str(p.with_name(f"{p.stem}.{index:05d}{p.suffix}")) if p.suffix else f"{path}.{index:05d}"
    )


class RotatingWriter:
    """A :class:`~hep2pcap.pcapng.PacketWriter` that writes a series of pcapng files.

    Names: with ``interval_s`` the name is passed through ``strftime`` (local time) when
    each file is opened; with ``max_bytes`` or ``max_files`` (or a time name without a
    ``%`` pattern) a 5-digit index goes before the extension. A SIGHUP-style ``reopen()``
    without any of these reopens the same name — after logrotate moved the old file away;
    if it is still there, an index is added rather than overwrite it.

    Args:
        template: the output path (maybe with strftime patterns).
        linktype: link type of every file.
        comments: write per-packet comments.
        max_bytes: start a new file once the current one reaches this size (-C).
        interval_s: start a new file this many seconds after the current one opened (-G).
        max_files: keep at most this many files of this run, deleting the oldest (-W).
        clock: wall clock in seconds (tests pass their own).
        totals: the run's counters now (:func:`hep2pcap.accounting.snapshot`); when given,
            each file ends with Interface Statistics Blocks for the time it was open.

    Raises:
        Hep2PcapError: a file cannot be created.
    """

    def __init__(
        self,
        template: str,
        linktype: int,
        *,
        comments: bool = True,
        max_bytes: int | None = None,
        interval_s: float | None = None,
        max_files: int | None = None,
        clock: Callable[[], float] = time.time,
        totals: Callable[[], Totals] | None = None,
    ) -> None:
        self.template = template
        self.linktype = linktype
        self.comments = comments
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.max_files = max_files
        self.clock = clock
        self.totals = totals
        self._start: Totals | None = None  # the counters when the current file was opened
        self.files_opened = 0
        #: rotations that could not create the next file (capture went on in the old one)
        self.rotate_failures = 0
        self._retry_at = 0.0
        self._numbered = (
            max_bytes is not None
            or max_files is not None
            or (interval_s is not None and "%" not in template)
        )
        self._index = 0
        self._paths: deque[str] = deque()
        self._reopen = False
        self._file: BinaryIO | None = None
        self._out: BlockFile | None = None
        self._writer: PcapngWriter | None = None
        self._rotate_at = 0.0
        self.current_path = ""
        self._open_next()

    def reopen(self) -> None:
        """Close the current file and start a new one at the next write or flush.

        Only sets a flag: safe to call from a signal handler.
        """
        self._reopen = True

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        """Write one frame, rotating first when a limit is reached."""
        writer = self._writer
        assert writer is not None
        if (
            self._reopen
            or (self.max_bytes is not None and writer.bytes_written >= self.max_bytes)
            or (self.interval_s is not None and self.clock() >= self._rotate_at)
        ) and (not self.rotate_failures or self.clock() >= self._retry_at):
            self._rotate()
            writer = self._writer
            assert writer is not None
        writer.write_packet(agent, node, ts_us, frame, comment)

    def flush(self) -> None:
        """Write buffered blocks to the OS (and honour a pending reopen)."""
        if self._reopen:
            self._rotate()
        elif self._out is not None:
            self._out.flush()

    def close(self) -> None:
        """Flush and close the current file."""
        self._close_current()

    @property
    def bytes_written(self) -> int:
        """Size of the current file so far."""
        return self._writer.bytes_written if self._writer is not None else 0

    def _rotate(self) -> None:
        # The next file is opened before the current one is closed: when it cannot be
        # (directory removed or read-only, disk full), capture goes on where it was.
        self._reopen = False
        old = (self._file, self._out, self._writer, self.current_path, self._start)
        now = self.totals() if self.totals is not None else None
        try:
            self._open_next(now)
        except Hep2PcapError as exc:
            self.rotate_failures += 1
            self._retry_at = self.clock() + ROTATE_RETRY_S
            log.warning("%s; still writing to %s", exc, old[3])
            return
        file, out, writer, _, start = old
        if out is not None and file is not None:
            try:
                out.flush()
                self._write_statistics(out, writer, start, now)
            finally:
                file.close()

    @staticmethod
    def _write_statistics(
        out: BlockFile, writer: PcapngWriter | None, start: Totals | None, end: Totals | None
    ) -> None:
        # The file's last blocks: what was received and lost while it was the current file.
        # After the packets are flushed, and best effort: a full disk keeps the packets (the
        # cut-back leaves the file valid without the statistics).
        if writer is not None and start is not None and end is not None:
            with contextlib.suppress(OSError):
                writer.write_statistics(file_statistics(start, end, writer))
                out.flush()

    def _close_current(self) -> None:
        if self._out is not None and self._file is not None:
            try:
                self._out.flush()
                if self.totals is not None:
                    self._write_statistics(self._out, self._writer, self._start, self.totals())
            finally:
                self._file.close()
        self._out = self._file = self._writer = None

    def _next_name(self) -> str:
        now = self.clock()
        name = (
            time.strftime(self.template, time.localtime(now))
            if self.interval_s is not None
            else self.template
        )
        if self._numbered:
            self._index += 1
            return indexed(name, self._index - 1)
        base = name
        while name in self._paths and os.path.exists(name):  # still there: do not overwrite
            name = indexed(base, self._index)
            self._index += 1
        return name

    def _open_next(self, now: Totals | None = None) -> None:
        path = self._next_name()
        try:
            raw = cast(BinaryIO, open(path, "wb", buffering=0))  # noqa: SIM115
        except OSError as exc:
            raise Hep2PcapError(f"{path}: cannot write: {exc.strerror or exc}") from exc
        out = BlockFile(raw)
        try:
            writer = PcapngWriter(cast(BinaryIO, out), self.linktype, comments=self.comments)
            out.flush()  # the SHB: even an empty file is a valid pcapng
        except OSError:
            raw.close()
            raise
        self._file, self._out, self._writer = raw, out, writer
        self._start = now if now is not None or self.totals is None else self.totals()
        self.current_path = path
        self.files_opened += 1
        if self.interval_s is not None:
            self._rotate_at = self.clock() + self.interval_s
        if path in self._paths:
            self._paths.remove(path)
        self._paths.append(path)
        while self.max_files is not None and len(self._paths) > self.max_files:
            with contextlib.suppress(OSError):
                os.unlink(self._paths.popleft())
