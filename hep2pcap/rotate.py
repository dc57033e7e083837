"""Output files for live capture: whole-block buffering and tcpdump-style rotation.

Owns: opening, naming, rotating (-C size, -G time, -W ring of N files, SIGHUP reopen) and
flushing output files, and keeping a capture from being lost in silence: each file is
locked while written (a second writer is refused), an existing capture is never truncated
(a new pcapng section is appended to it), and a file removed while written is noticed at
the next flush (re-created; if that fails, the run ends with an error). What did not
reach the disk is counted (``lost``).

Every file is a complete pcapng of its own (SHB, then an IDB per capture agent as first
seen in that file). Blocks reach the OS whole — one ``write`` per
batch, never half a block — so the file is valid up to the last completed flush (a SIGKILL
landing inside that ``write`` can leave its batch partly on disk). This module is an I/O
edge like ``sources/``: it opens files and reads the wall clock; the block layouts stay in
``pcapng.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from .accounting import Totals, file_statistics
from .engine import Packet
from .errors import Hep2PcapError
from .pcapng import PcapngWriter

#: Bytes held in memory before they are written, at most (also written on every flush).
BLOCK_BUFFER = 256 * 1024
#: When the next file cannot be created, capture goes on in the current one and the
#: rotation is tried again this much later.
ROTATE_RETRY_S = 5.0
#: An existing capture whose last block was cut short (a crash inside a write) is cut back
#: to its last whole block before a section is appended, if the cut part is at most this
#: long (one write batch); a longer broken tail is not ours to cut: the file is refused.
MAX_CUT_TAIL = 4 * 1024 * 1024
_BLOCK_HEAD = struct.Struct("<II")
_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_EPB = 6  # the first byte of an EPB's block type (little-endian)

log = logging.getLogger("hep2pcap")


def _count_epbs(data: bytes) -> int:
    # A part is one block, or a batch of EPBs from the frame engine: walk the block lengths.
    count = pos = 0
    end = len(data)
    while pos < end:
        count += data[pos] == _EPB
        step = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if step <= 0:
            break
        pos += step
    return count


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
        self._epbs: list[int] = []  # EPBs in each part
        self._size = 0
        self.pending_packets = 0  # EPBs buffered, not yet handed to the OS
        self.lost_packets = 0  # EPBs a failed write did not get into the file
        try:
            self._complete: int | None = raw.tell() if raw.seekable() else None
        except (OSError, ValueError, AttributeError):
            self._complete = None

    def write(self, block: bytes) -> int:
        """Buffer one whole block."""
        self._parts.append(block)
        self._size += len(block)
        epbs = _count_epbs(block) if block[0] == _EPB else 0
        self._epbs.append(epbs)
        self.pending_packets += epbs
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
                whole = self._cut_back(parts, written)
                self.lost_packets += self.pending_packets - sum(self._epbs[:whole])
                raise
            finally:
                parts.clear()
                self._epbs.clear()
                self._size = 0
                self.pending_packets = 0
            if self._complete is not None:
                self._complete += size
        self._raw.flush()

    def discard(self) -> int:
        """Forget what is buffered (the file failed); return how many EPBs that was."""
        n = self.pending_packets
        self._parts.clear()
        self._epbs.clear()
        self._size = 0
        self.pending_packets = 0
        self.lost_packets += n
        return n

    def _cut_back(self, parts: list[bytes], written: int) -> int:
        # The write failed after ``written`` bytes of the batch: keep the blocks that got
        # there whole, cut the one that did not. Returns how many blocks got there whole
        # (none, when the file cannot be cut back).
        whole = count = 0
        for block in parts:
            if whole + len(block) > written:
                break
            whole += len(block)
            count += 1
        if self._complete is None:
            return 0
        try:
            os.ftruncate(self._raw.fileno(), self._complete + whole)
            self._raw.seek(self._complete + whole)
        except (OSError, ValueError):
            return 0
        self._complete += whole
        return count


def open_capture(path: str) -> BinaryIO:
    """Open ``path`` to write a capture: locked, never truncated.

    A new or empty file is written from its start. An existing pcapng gets a new section
    after its last whole block (Wireshark and tshark read every section); a last block cut
    short by a crash (at most MAX_CUT_TAIL bytes) is cut off first.

    Raises:
        Hep2PcapError: the file cannot be opened, another process holds its lock (a second
            ``hep2pcap listen`` writing it), or it exists and is not a pcapng.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise Hep2PcapError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Hep2PcapError(
                f"{path}: another process is writing this capture (it is locked); choose another -w"
            ) from None
        except OSError:
            pass  # no locks on this file system: go on unlocked
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size:
            end = _whole_end(fd, info.st_size)
            if end is None:
                raise Hep2PcapError(
                    f"{path}: exists and is not a pcapng this run can add to; "
                    "not overwriting it (choose another -w, or move it away)"
                )
            if end < info.st_size:
                log.warning(
                    "%s: its last %d bytes are a block cut short (a crash?): cut off",
                    path, info.st_size - end,
                )  # fmt: skip
                os.ftruncate(fd, end)
            os.lseek(fd, end, os.SEEK_SET)
            log.warning("%s exists: its capture is kept, this run adds a new section", path)
    except BaseException:
        os.close(fd)
        raise
    return cast(BinaryIO, os.fdopen(fd, "wb", buffering=0))


def _whole_end(fd: int, size: int) -> int | None:
    # The end of the last whole block of a pcapng file, or None when it is not one.
    if os.pread(fd, 4, 0) != _SHB_MAGIC:
        return None
    tail = os.pread(fd, 4, size - 4)
    if len(tail) == 4:  # the usual case: the last block is whole (its two lengths agree)
        for order in ("<", ">"):
            (total,) = struct.unpack(order + "I", tail)
            if 12 <= total <= size and total % 4 == 0:
                head = os.pread(fd, 8, size - total)
                if len(head) == 8 and struct.unpack(order + "I", head[4:])[0] == total:
                    return size
    # Walk the blocks from the start (the byte order is each section's own).
    pos, order = 0, "<"
    while pos + 12 <= size:
        head = os.pread(fd, 12, pos)
        if head[:4] == _SHB_MAGIC:
            order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        (total,) = struct.unpack(order + "I", head[4:8])
        if total < 12 or total % 4 or pos + total > size:
            break
        pos += total
    return pos if pos and size - pos <= MAX_CUT_TAIL else None


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
        #: frames that are not on disk, by cause: output_removed (the file was removed
        #: while written), output_failed (a write failed: disk full)
        self.lost: Counter[str] = Counter()
        self._packets = 0  # frames written to the current file
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
        if self._writer is None:  # the output failed or was removed: counted, not written
            self.lost["output_failed"] += 1
            return
        writer = self._current()
        self._packets += 1
        writer.write_packet(agent, node, ts_us, frame, comment)

    def write_frames(self, packets: Sequence[Packet]) -> None:
        """Write a batch of packets; with a size or time limit, one at a time, rotating
        first when a limit is reached (as for write_packet)."""
        if self._writer is None:  # the output failed or was removed: counted, not written
            self.lost["output_failed"] += len(packets)
            return
        if self.max_bytes is None and self.interval_s is None:
            writer = self._current()
            self._packets += len(packets)
            writer.write_frames(packets)
            return
        for i in range(len(packets)):
            writer = self._current()
            self._packets += 1
            writer.write_frames(packets[i : i + 1])

    def _current(self) -> PcapngWriter:
        # The file to write to now: a new one first when a limit is reached.
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
        return writer

    def flush(self) -> None:
        """Write buffered blocks to the OS (and honour a pending reopen); notice a file
        removed while written (re-created; when that fails, Hep2PcapError).

        Raises:
            Hep2PcapError: the current file was removed and cannot be created again.
            OSError: a write failed (disk full); what did not get there is in ``lost``.
        """
        if self._reopen:
            self._rotate()
        elif self._out is not None:
            self._guarded_flush(self._out)
            self._check_removed()

    def close(self) -> None:
        """Flush and close the current file."""
        self._close_current()

    def abandon(self) -> None:
        """The output failed: close the current file without writing what is buffered
        (counted in ``lost`` as output_failed)."""
        if self._out is not None:
            self.lost["output_failed"] += self._out.discard()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._out = self._file = self._writer = None

    def _guarded_flush(self, out: BlockFile) -> None:
        before = out.lost_packets
        try:
            out.flush()
        finally:
            if out.lost_packets != before:
                self.lost["output_failed"] += out.lost_packets - before

    def _check_removed(self, *, recreate: bool = True) -> None:
        # A file unlinked (or its folder removed) while written has no links left: what
        # was written to it is gone. Say so, and (recreate) start the same name again.
        file = self._file
        if file is None:
            return
        try:
            removed = os.fstat(file.fileno()).st_nlink == 0
        except OSError:
            return
        if not removed:
            return
        path, packets = self.current_path, self._packets
        self.lost["output_removed"] += packets
        with contextlib.suppress(OSError):
            file.close()
        self._out = self._file = self._writer = None
        if not recreate:
            log.warning(
                "%s was removed while being written: %d packets in it are lost", path, packets
            )
            return
        try:
            self._open(path)
        except Hep2PcapError as exc:
            raise Hep2PcapError(
                f"{path} was removed while being written ({packets} packets in it are lost) "
                f"and cannot be created again: {exc}"
            ) from exc
        log.warning(
            "%s was removed while being written: %d packets in it are lost; "
            "writing a new %s", path, packets, path,
        )  # fmt: skip

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
                self._guarded_flush(out)
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
                self._guarded_flush(self._out)
                self._check_removed(recreate=False)
                if self.totals is not None and self._out is not None:
                    self._write_statistics(self._out, self._writer, self._start, self.totals())
            finally:
                if self._file is not None:
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
        self._open(path, now)
        if self.interval_s is not None:
            self._rotate_at = self.clock() + self.interval_s
        if path in self._paths:
            self._paths.remove(path)
        self._paths.append(path)
        while self.max_files is not None and len(self._paths) > self.max_files:
            with contextlib.suppress(OSError):
                os.unlink(self._paths.popleft())

    def _open(self, path: str, now: Totals | None = None) -> None:
        raw = open_capture(path)
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
        self._packets = 0
