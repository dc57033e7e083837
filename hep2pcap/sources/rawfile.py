"""Raw HEPv3 dumps: concatenated messages, framed like a TCP stream (HEP-SPEC §5).

Owns: reading a binary stream in blocks and cutting it with :class:`HepDeframer`.
Must never: decode messages. A framing error ends the file (counted, with its offset);
the messages before it are kept. With ``lenient`` the reader skips to the next HEP3
header instead (a dump from ``nc -lu`` may hold a stray non-HEP datagram).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import DecodeError
from ..pipeline import Problem, Record
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
