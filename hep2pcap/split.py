"""``hep2pcap split``: one pcapng per call, and an index of the calls.

Owns: the per-call summary learnt in a first pass (start, From, To, method, final
response, messages, Call-IDs of the linked legs), the file names, and writing many pcapng
files at once with bounded memory and open files. This is an edge module (like rotate.py):
it creates files in the output directory and nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .dialogs import Dialogs, Keys, keys_of
from .engine import Packet
from .errors import Hep2PcapError
from .hep import HepMessage
from .items import Stage, Stream, Tick
from .pcapng import PcapngWriter
from .stats import Stats

#: Requests that make a call of their Call-ID (a file of its own); the rest (REGISTER,
#: OPTIONS, MESSAGE, PUBLISH, NOTIFY alone…) is non-dialog traffic.
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
#: Frames held in memory across all calls before they are appended to their files.
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
INDEX_NAME = "index.tsv"
OTHER_NAME = "other.pcapng"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")


@dataclass(slots=True)
class Call:
    """What the index says about one call (one group of linked Call-IDs)."""

    first_us: int
    messages: int = 0
    method: str | None = None  # of the first request seen (an INVITE if there is one)
    from_uri: str | None = None
    to_uri: str | None = None
    final: int | None = None  # last final response to that method
    dialog: bool = False
    call_ids: list[str] = field(default_factory=list)
    file: str | None = None

    def absorb(self, other: Call) -> None:
        """Merge another leg into this call."""
        if other.first_us < self.first_us or self.method is None:
            first, second = other, self
        else:
            first, second = self, other
        self.first_us = min(self.first_us, other.first_us)
        self.method = first.method or second.method
        self.from_uri = first.from_uri or second.from_uri
        self.to_uri = first.to_uri or second.to_uri
        self.final = first.final if first.final is not None else second.final
        self.messages += other.messages
        self.dialog = self.dialog or other.dialog
        self.call_ids.extend(c for c in other.call_ids if c not in self.call_ids)


def file_name(number: int, call_id: str) -> str:
    """A safe, unique file name for a call: ``00042_a84b4c76e66710@pc33.pcapng``."""
    safe = _UNSAFE.sub("_", call_id).strip("._")[:80] or "call"
    return f"{number:05d}_{safe}.pcapng"


class CallIndex:
    """First pass: which calls there are and what the index says about each."""

    def __init__(self) -> None:
        self.dialogs = Dialogs()
        self.calls: dict[str, Call] = {}  # by group root

    def observe(self, ts_us: int, msg: HepMessage, keys: Keys | None = None) -> None:
        """Learn one message (``keys``: its keys_of(), when the caller has them)."""
        keys = keys if keys is not None else keys_of(msg)
        root, absorbed = self.dialogs.observe(keys)
        if root is None:
            return
        calls = self.calls
        call = calls.get(root)
        if call is None:
            call = calls[root] = Call(ts_us)
        if absorbed is not None and absorbed in calls:
            call.absorb(calls.pop(absorbed))
        call.messages += 1
        call.first_us = min(call.first_us, ts_us)
        if keys.call_id and keys.call_id not in call.call_ids and len(call.call_ids) < 16:
            call.call_ids.append(keys.call_id)
        head = keys.head
        if head is None:
            return
        if head.method is not None:
            if head.method in DIALOG_METHODS:
                call.dialog = True
            if call.method is None or (head.method == "INVITE" and call.method != "INVITE"):
                call.method = head.method
                call.from_uri, call.to_uri = head.from_uri, head.to_uri
        elif (
            head.status is not None
            and head.status >= 200
            and head.cseq_method is not None
            and head.cseq_method == (call.method or "INVITE")
        ):
            call.final = head.status

    def plan(self, keep: Callable[[str], bool] | None = None) -> list[Call]:
        """Number the calls by start time and name their files.

        Args:
            keep: when set, only calls whose first Call-ID it accepts get a file (the
                dialog filters' decision), so the numbers have no gaps.
        """
        ordered = sorted(
            (
                c
                for c in self.calls.values()
                if c.dialog and (keep is None or (c.call_ids and keep(c.call_ids[0])))
            ),
            key=lambda c: (c.first_us, c.call_ids),
        )
        for number, call in enumerate(ordered, 1):
            call.file = file_name(number, call.call_ids[0] if call.call_ids else "call")
        return ordered

    def call_of(self, msg: HepMessage) -> Call | None:
        """Second pass: the call a message belongs to (None: non-dialog traffic)."""
        root = self.dialogs.group_of(keys_of(msg))
        call = self.calls.get(root) if root is not None else None
        return call if call is not None and call.file is not None else None

    def calls_only(self, stats: Stats) -> Stage:
        """A pipeline stage that leaves out non-dialog traffic (``split --other drop``)."""

        def stage(items: Stream) -> Stream:
            for item in items:
                if not isinstance(item, Tick) and self.call_of(item[2]) is None:
                    stats.filtered += 1
                    continue
                yield item

        return stage


def write_index(path: str, calls: list[Call]) -> None:
    """The index file: one line per call, tab-separated, with a header line."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("file\tstart\tmethod\tfrom\tto\tfinal\tmessages\tcall_ids\n")
        for c in calls:
            start = datetime.fromtimestamp(c.first_us / 1e6, UTC).isoformat(timespec="milliseconds")
            fields = [
                c.file or "",
                start,
                c.method or "",
                c.from_uri or "",
                c.to_uri or "",
                "" if c.final is None else str(c.final),
                str(c.messages),
                " ".join(c.call_ids),
            ]
            out.write("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n")


class _Spool:
    """A file's pending bytes; appended to the file when the writer flushes."""

    __slots__ = ("data", "owner", "path", "started")

    def __init__(self, path: str, owner: SplitWriter) -> None:
        self.path = path
        self.owner = owner
        self.data = bytearray()
        self.started = False

    def write(self, block: bytes) -> int:
        self.data += block
        self.owner.buffered += len(block)
        return len(block)

    def flush(self) -> None:
        """No-op: PcapngWriter.flush() calls it; the SplitWriter moves the bytes."""


class SplitWriter:
    """Writes each call's frames to its own pcapng (and the rest to other.pcapng).

    Frames are buffered in memory (MAX_BUFFERED_BYTES over all files) and appended to
    their files in bulk; a call whose last message (counted in the first pass) has been
    routed is written out and forgotten. So thousands of calls need neither thousands of
    open files nor memory for more than the calls in progress.

    Args:
        directory: an existing directory.
        index: the first pass's result (after ``plan()``).
        linktype, comments: as for PcapngWriter.

    Non-dialog traffic goes to OTHER_NAME (``calls_only`` leaves it out before).
    """

    def __init__(self, directory: str, index: CallIndex, linktype: int, *, comments: bool) -> None:
        self.directory = directory
        self.index = index
        self.linktype = linktype
        self.comments = comments
        self._writers: dict[str, tuple[PcapngWriter, _Spool]] = {}
        self._names: set[str] = set()  # every file started
        self._left: dict[str, int] = {}  # messages still to come, per call file
        self._done: list[str] = []  # calls complete: write out at the next message
        self.buffered = 0  # bytes held over all files

    def writer_for(self, msg: HepMessage) -> PcapngWriter:
        """Where one message's frames go (the Converter's route)."""
        if self._done:
            self._write_done()
        if self.buffered > MAX_BUFFERED_BYTES:
            self.flush()
        call = self.index.call_of(msg)
        name = call.file if call is not None and call.file else OTHER_NAME
        entry = self._writers.get(name)
        if entry is None and name in self._names:  # more than the first pass saw (input grew)
            name = OTHER_NAME
            entry = self._writers.get(name)
        if entry is None:
            spool = _Spool(os.path.join(self.directory, name), self)
            writer = PcapngWriter(spool, self.linktype, comments=self.comments)  # type: ignore[arg-type]
            entry = self._writers[name] = (writer, spool)
            self._names.add(name)
        if call is not None and name != OTHER_NAME:
            left = self._left.pop(name, call.messages) - 1
            if left > 0:
                self._left[name] = left
            else:
                self._done.append(name)
        return entry[0]

    @property
    def files(self) -> list[str]:
        """The names of the files written (or about to be)."""
        return sorted(self._names)

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        """Not used: every message goes through writer_for()."""
        raise NotImplementedError

    def write_frames(self, packets: Sequence[Packet]) -> None:
        """Not used: every message goes through writer_for()."""
        raise NotImplementedError

    def flush(self) -> None:
        """Append every buffered byte to its file."""
        for _, spool in self._writers.values():
            self._write_out(spool)
        self.buffered = 0

    def _write_out(self, spool: _Spool) -> None:
        if not spool.data:
            return
        try:
            with open(spool.path, "ab" if spool.started else "wb") as out:
                out.write(spool.data)
        except OSError as exc:
            raise Hep2PcapError(f"{spool.path}: cannot write: {exc.strerror or exc}") from exc
        spool.started = True
        self.buffered -= len(spool.data)
        spool.data = bytearray()

    def close(self) -> None:
        """Write everything out (files are complete pcapng at every flush)."""
        self._write_done()
        self.flush()

    def _write_done(self) -> None:
        # The calls whose last message has been written: out to their files, forgotten.
        for done in self._done:
            self._write_out(self._writers.pop(done)[1])
        self._done.clear()
