"""Inputs: open a path (or ``-``), detect its format from its first bytes, return a Source.

Owns: the edge where files are opened, gzip is undone and formats are told apart. Must
never: decode HEP itself (that is the pipeline's job) or guess from the file name.
"""

from __future__ import annotations

import logging
import os
import sys
import zlib
from contextlib import ExitStack
from typing import BinaryIO, Protocol

from ..errors import InputError
from ..hep import hep12_header_size
from ..items import Source
from ..pcapng import PCAPNG_MAGIC
from .rawfile import BufferFileSource, RawHepSource, looks_like_buffer_file

log = logging.getLogger("hep2pcap")

PCAP_MAGICS = frozenset(bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1"))
GZIP_MAGIC = b"\x1f\x8b"


class Readable(Protocol):
    """The one method sources need from a byte stream."""

    def read(self, size: int = -1, /) -> bytes: ...


class Prepended:
    """A read-only stream that yields ``head`` and then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        """Read like ``BinaryIO.read``."""
        head = self._head
        if not head:
            return self._stream.read(size)
        if size < 0:
            self._head = b""
            return head + self._stream.read()
        if size <= len(head):
            self._head = head[size:]
            return head[:size]
        self._head = b""
        return head + self._stream.read(size - len(head))


class ByteCounter:
    """Counts the bytes read from a file, for the progress display."""

    def __init__(self, stream: Readable, total: int | None) -> None:
        self._stream = stream
        self.total = total
        self.done = 0
        self.compressed = False  # a gzip file: done and total count its compressed bytes

    def read(self, size: int = -1, /) -> bytes:
        """Read like ``BinaryIO.read`` and count."""
        data = self._stream.read(size)
        self.done += len(data)
        return data


def read_up_to(stream: Readable, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream (pipes return short reads)."""
    out = b""
    while len(out) < size:
        part = stream.read(size - len(out))
        if not part:
            break
        out += part
    return out


def open_input(
    path: str,
    stack: ExitStack,
    counters: list[ByteCounter] | None = None,
    *,
    lenient: bool = False,
    hep_ports: frozenset[int] | None = None,
) -> Source:
    """Open one input and return the source that reads it.

    Args:
        path: a file path, or ``-`` for standard input.
        stack: owns the opened files; closing it closes them.
        counters: if given, a byte counter for this input is appended (progress display).
        lenient: raw dumps may use the "EEP3" alias and are resynchronised at the next
            magic after a framing error.
        hep_ports: pcap inputs: ports whose UDP/TCP traffic is HEP even without a "HEP3"
            start (HEPv1/v2); ``None`` keeps the reader's default (9060).

    Raises:
        InputError: unreadable, or not a format hep2pcap reads (one clear line).
    """
    name = "stdin" if path == "-" else path
    try:
        raw: BinaryIO = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(raw.fileno()).st_size if path != "-" else None
        counted = ByteCounter(Guarded(name, raw), size or None)
        if counters is not None:
            counters.append(counted)
        head = read_up_to(counted, 4)
        stream = Prepended(head, counted)
        if head[:2] == GZIP_MAGIC:
            counted.compressed = True
            unzipped = Gunzip(name, stream)
            head = read_up_to(unzipped, 4)
            stream = Prepended(head, unzipped)
    except (OSError, EOFError) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from exc
    return _detect(name, head, stream, lenient, hep_ports)


class Guarded:
    """Turns read failures of an input into :class:`InputError`, never a traceback."""

    def __init__(self, name: str, stream: Readable) -> None:
        self._name = name
        self._stream = stream

    def read(self, size: int = -1, /) -> bytes:
        """Read like ``BinaryIO.read``."""
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise InputError(f"{self._name}: cannot read: {exc.strerror or exc}") from exc


class Gunzip:
    """Streaming gzip reader (RFC 1952, several members allowed).

    Unlike ``gzip.GzipFile``, a file cut short — a dump still being written — gives every
    byte that was there, then a warning and the end of input; corrupt data is an
    :class:`InputError`. Output per call is bounded, so a gzip bomb cannot fill memory.
    """

    BLOCK = 64 * 1024

    def __init__(self, name: str, raw: Readable) -> None:
        self._name = name
        self._raw = raw
        self._inflater = zlib.decompressobj(wbits=31)
        self._pending = b""  # compressed bytes not yet given to the inflater
        self._eof = False

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` decompressed bytes (all that is left if negative)."""
        parts: list[bytes] = []
        have = 0
        while (size < 0 or have < size) and not self._eof:
            part = self._inflate(self.BLOCK if size < 0 else max(size - have, 1))
            parts.append(part)
            have += len(part)
        return b"".join(parts)

    def _inflate(self, limit: int) -> bytes:
        inflater = self._inflater
        data = inflater.unconsumed_tail or self._pending or self._raw.read(self.BLOCK)
        self._pending = b""
        if not data:
            if not inflater.eof:
                log.warning(
                    "%s: compressed data ends early (cut short?); read up to there", self._name
                )
            self._eof = True
            return b""
        try:
            out = inflater.decompress(data, limit)
        except zlib.error as exc:
            raise InputError(f"{self._name}: corrupt gzip data: {exc}") from exc
        if inflater.eof:  # a member ended; another may follow (cat a.gz b.gz)
            self._pending = inflater.unused_data
            self._inflater = zlib.decompressobj(wbits=31)
            if not self._pending:
                self._pending = self._raw.read(self.BLOCK)
                if not self._pending:
                    self._eof = True
        return out


def _detect(
    name: str, head: bytes, stream: Readable, lenient: bool, hep_ports: frozenset[int] | None
) -> Source:
    if head in PCAP_MAGICS or head == PCAPNG_MAGIC:
        from .pcapfile import PcapSource  # only pcap inputs pay for this import

        if hep_ports is None:
            return PcapSource(name, stream)
        return PcapSource(name, stream, hep_ports=hep_ports)
    if head[:4] == b"EEP3" and not lenient:
        raise InputError(f"{name}: starts with the 'EEP3' alias of HEP3; --lenient accepts it")
    if head[:4] in (b"HEP3", b"EEP3") or not head:
        return RawHepSource(name, stream, lenient=lenient)
    head = read_up_to(stream, 8)  # the same 4 bytes again, and 4 more: a heplify buffer
    stream = Prepended(head, stream)
    if looks_like_buffer_file(head):
        return BufferFileSource(name, stream)
    if hep12_header_size(head) is not None:
        # HEPv1/v2 back to back, as Kamailio streams them over HEP/TCP: framed by their SIP.
        return RawHepSource(name, stream, lenient=lenient)
    raise InputError(
        f"{name}: unknown format (first bytes {head.hex()}); expected a raw HEPv3 dump, "
        "a heplify buffer file, pcap or pcapng, optionally gzip-compressed"
    )


def open_inputs(
    paths: tuple[str, ...],
    stack: ExitStack,
    counters: list[ByteCounter] | None = None,
    *,
    lenient: bool = False,
    hep_ports: frozenset[int] | None = None,
) -> list[Source]:
    """Open every input up front, so a bad path fails before anything is written."""
    return [open_input(p, stack, counters, lenient=lenient, hep_ports=hep_ports) for p in paths]
