"""Raw HEP dumps: concatenated messages, framed like a TCP stream (HEP-SPEC §5), and
heplify's disk buffer: records of a u32 big-endian length and one HEP frame (HEP-SPEC §14,
sipcapture/heplify docs/HEP_BUFFERING.md).

Owns: reading a binary stream in blocks and cutting it with :class:`HepDeframer`, or by the
buffer file's length prefixes. Must never: decode messages. A framing error ends the file
(counted, with its offset); the messages before it are kept. With ``lenient`` the reader
skips to the next HEP3 header instead (a dump from ``nc -lu`` may hold a stray non-HEP
datagram).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import DecodeError, Reason
from ..hep import AF_INET, AF_INET6_VALUES, GZIP_MAGIC, HEP3_MAGIC, MAX_HEP3_LENGTH
from ..items import Problem, Record
from ..stream import HepDeframer

if TYPE_CHECKING:
    from . import Readable

READ_SIZE = 256 * 1024


class RawHepSource:
    """Records from a raw HEPv3 dump; ``pos`` is the byte offset of each message."""

    unit = "offset"

    def __init__(self, name: str, stream: Readable, *, lenient: bool = False) -> None:
        self.name = name
        self._stream = stream
        self._lenient = lenient

    def __iter__(self) -> Iterator[Record | Problem]:
        lenient = self._lenient
        deframer = HepDeframer(lenient=lenient, resync=lenient)
        read = self._stream.read
        while True:
            block = read(READ_SIZE)
            if not block:
                break
            try:
                messages = deframer.feed(block)
            except DecodeError as exc:
                yield Problem(exc.reason, exc.offset, exc.detail)
                return
            for skipped in deframer.problems:  # --lenient: bytes skipped to the next HEP3
                yield Problem(skipped.reason, skipped.offset, skipped.detail)
            deframer.problems.clear()
            for msg, start in zip(messages, deframer.starts, strict=True):
                yield Record(msg, None, start)
        try:
            deframer.eof()
        except DecodeError as exc:
            yield Problem(exc.reason, exc.offset, exc.detail)


#: heplify buffer record header: the length of the frame that follows, big-endian.
BUFFER_LENGTH = struct.Struct("!I")
#: Shortest frame a buffer record can hold (a HEP3 header with one empty chunk is 12 bytes;
#: HEPv1 IPv4 is 16 bytes of header plus a payload).
MIN_BUFFER_FRAME = 12


def looks_like_buffer_file(head: bytes) -> bool:
    """Whether a file's first 8 bytes are a heplify buffer record: a plausible length, then
    the start of a HEP3 frame, a HEPv1/v2 header, or a gzip member."""
    if len(head) < 8:
        return False
    (length,) = BUFFER_LENGTH.unpack_from(head)
    frame = head[4:8]
    return MIN_BUFFER_FRAME <= length <= MAX_HEP3_LENGTH and (
        frame == HEP3_MAGIC
        or frame[:3] == GZIP_MAGIC
        or (frame[0] in (1, 2) and (frame[2] == AF_INET or frame[2] in AF_INET6_VALUES))
    )


class BufferFileSource:
    """Records from a heplify disk buffer (``hep-buffer.dump``, ``HEP-Buffer.dump``);
    ``pos`` is the byte offset of each record's length prefix."""

    unit = "offset"

    def __init__(self, name: str, stream: Readable) -> None:
        self.name = name
        self._stream = stream

    def __iter__(self) -> Iterator[Record | Problem]:
        read = self._stream.read
        buf = b""
        base = 0  # file offset of buf[0]
        while True:
            block = read(READ_SIZE)
            buf = buf + block if block else buf
            pos = 0
            size = len(buf)
            while size - pos >= BUFFER_LENGTH.size:
                (length,) = BUFFER_LENGTH.unpack_from(buf, pos)
                if not MIN_BUFFER_FRAME <= length <= MAX_HEP3_LENGTH:
                    yield Problem(
                        Reason.STREAM_DESYNC,
                        base + pos,
                        f"buffer record length {length} is not a HEP frame's "
                        f"({MIN_BUFFER_FRAME}..{MAX_HEP3_LENGTH}); the rest is not read",
                    )
                    return
                end = pos + BUFFER_LENGTH.size + length
                if end > size:
                    break
                yield Record(buf[pos + BUFFER_LENGTH.size : end], None, base + pos)
                pos = end
            buf = buf[pos:]
            base += pos
            if not block:
                break
        if buf:
            yield Problem(
                Reason.STREAM_TRUNCATED_AT_EOF,
                base,
                f"file ends {len(buf)} bytes into a buffer record",
            )
