"""Cut a byte stream (TCP, TLS, a raw dump file) into HEPv3 messages.

Owns: framing by the HEPv3 total-length field (HEP-SPEC §5). Must never: decode chunks,
do I/O, or buffer more than one message (65535 bytes) plus one feed. Only v3 can be framed
on a stream; a v1/v2 first byte is V12_ON_STREAM, anything else BAD_MAGIC, and after a
framing error the rest of the stream cannot be trusted: the deframer stays failed — unless
it resynchronises (HEP-SPEC §11 BAD_MAGIC, lenient mode): then the bytes up to the next
magic are skipped and reported, and framing goes on.
"""

from __future__ import annotations

from .errors import DecodeError, Reason
from .hep import EEP3_MAGIC, HEP3_HEADER, HEP3_MAGIC

#: Pieces of an unfinished message kept apart before they are joined into one.
MAX_PIECES = 64


class HepDeframer:
    """Incremental HEPv3 deframer.

    ``feed()`` returns the complete messages found so far, as bytes. ``offset`` is the
    stream offset of the first byte not yet returned (the start of the pending message).

    Args:
        lenient: also frame messages that start with the "EEP3" alias.
        resync: after a framing error, skip to the next magic instead of failing; each
            resynchronisation is reported once in ``problems`` (to be taken by the caller).

    After each ``feed()``, ``starts`` lists the stream offset of every message it returned.
    """

    __slots__ = (
        "_failed",
        "_have",
        "_magics",
        "_need",
        "_parts",
        "_raised",
        "_resync",
        "_scanning",
        "offset",
        "problems",
        "starts",
    )

    def __init__(self, *, lenient: bool = False, resync: bool = False) -> None:
        # The unfinished message is kept as a list of pieces and joined only once it is
        # complete, so feeding a message in many small pieces stays linear; past MAX_PIECES
        # the pieces are joined into one, so a peer dripping single bytes costs its bytes,
        # not an object per byte (1,000 TCP peers dripping grew a receiver to 764 MB).
        self._parts: list[bytes] = []
        self._have = 0  # bytes in _parts
        self._need = 0  # bytes needed before parsing is worth trying again
        self._failed: DecodeError | None = None
        self._raised = False
        self._magics = (HEP3_MAGIC, EEP3_MAGIC) if lenient else (HEP3_MAGIC,)
        self._resync = resync
        self._scanning = False  # resync: skipping bytes, the error already reported
        self.problems: list[DecodeError] = []
        self.starts: list[int] = []
        self.offset = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every message now complete, in order.

        Raises:
            DecodeError: BAD_MAGIC, V12_ON_STREAM or LENGTH_TOO_SMALL at the stream offset
                of the broken header. When complete messages precede the broken header in
                the same call, they are returned and the error is raised by the next
                ``feed()`` or ``eof()``, so nothing before a desync is lost. Any call after
                the error has been raised raises STREAM_DESYNC.
        """
        if self._failed is not None:
            raise self._raise_failed()
        starts = self.starts = []
        if self._parts:
            parts = self._parts
            parts.append(data)
            self._have += len(data)
            if len(parts) > MAX_PIECES:
                parts[:] = [b"".join(parts)]
            # Still short of a whole message: wait — unless even the header is incomplete,
            # then look at it now (a few bytes), so a short tail that can never become HEP3
            # fails the same however the stream was cut.
            if self._have < self._need and self._need > HEP3_HEADER.size:
                return []
            buf = b"".join(self._parts)
            self._parts = []
            self._have = 0
        else:
            buf = data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        unpack = HEP3_HEADER.unpack_from
        magics = self._magics
        if self._resync:
            return self._feed_resync(buf, out)
        while size - pos >= HEP3_HEADER.size:
            magic, total = unpack(buf, pos)
            if magic not in magics or total < HEP3_HEADER.size:
                return self._fail(out, buf, pos, magic, total)
            if size - pos < total:
                break
            starts.append(self.offset + pos)
            out.append(buf[pos : pos + total])
            pos += total
        tail = bytes(buf[pos : pos + 4])
        if tail and not any(m.startswith(tail) for m in magics):
            # A short tail that can never become HEP3: fail now rather than at EOF.
            return self._fail(out, buf, pos, tail, HEP3_HEADER.size)
        self._keep(buf, pos)
        return out

    def _keep(self, buf: bytes, pos: int) -> None:
        """Hold ``buf[pos:]`` (the start of the next message) and account for the rest."""
        if pos < len(buf):
            rest = buf[pos:]
            self._parts = [rest]
            self._have = len(rest)
            self._need = (
                HEP3_HEADER.unpack_from(rest)[1]
                if len(rest) >= HEP3_HEADER.size
                else HEP3_HEADER.size
            )
        self.offset += pos

    def _feed_resync(self, buf: bytes, out: list[bytes]) -> list[bytes]:
        # The same framing, but a bad header skips to the next magic instead of failing.
        pos, size, magics = 0, len(buf), self._magics
        starts = self.starts
        while True:
            if size - pos >= HEP3_HEADER.size:
                magic, total = HEP3_HEADER.unpack_from(buf, pos)
                if magic in magics and total >= HEP3_HEADER.size:
                    if size - pos < total:
                        break
                    self._scanning = False
                    starts.append(self.offset + pos)
                    out.append(buf[pos : pos + total])
                    pos += total
                    continue
            else:
                magic, total = bytes(buf[pos : pos + 4]), HEP3_HEADER.size
                if not magic or any(m.startswith(magic) for m in magics):
                    break
            if not self._scanning:
                error = self._framing_error(buf, pos, magic, total)
                self.problems.append(
                    DecodeError(
                        error.reason, error.offset, f"{error.detail}; skipping to the next HEP3"
                    )
                )
                self._scanning = True
            found = [i for i in (buf.find(m, pos + 1) for m in magics) if i >= 0]
            pos = min(found) if found else max(pos + 1, size - 3)
        self._keep(buf, pos)
        return out

    def _fail(
        self, out: list[bytes], buf: bytes, pos: int, magic: bytes, total: int
    ) -> list[bytes]:
        self._parts = []
        self._have = 0
        self._failed = self._framing_error(buf, pos, magic, total)
        self.offset += pos
        if out:
            return out
        raise self._raise_failed()

    def _raise_failed(self) -> DecodeError:
        failed = self._failed
        assert failed is not None
        if self._raised:
            return DecodeError(
                Reason.STREAM_DESYNC, failed.offset, "stream already failed to frame"
            )
        self._raised = True
        return failed

    def _framing_error(self, buf: bytes, pos: int, magic: bytes, total: int) -> DecodeError:
        where = self.offset + pos
        if magic in self._magics:
            return DecodeError(Reason.LENGTH_TOO_SMALL, where, f"total length {total} < 6")
        if buf[pos] in (1, 2):
            return DecodeError(
                Reason.V12_ON_STREAM, where, f"HEPv{buf[pos]} cannot be framed on a stream"
            )
        return DecodeError(
            Reason.BAD_MAGIC, where, f"expected HEP3, found {bytes(buf[pos : pos + 4]).hex()}"
        )

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return self._have

    def eof(self) -> None:
        """Declare the end of the stream.

        Raises:
            DecodeError: STREAM_TRUNCATED_AT_EOF when a partial message is left over.
        """
        if self._failed is not None:
            if not self._raised:
                raise self._raise_failed()
            return
        if self._scanning:  # junk after a reported desync, not a cut message
            self._parts = []
            self._have = 0
            return
        if self._have:
            left = self._have
            self._parts = []
            self._have = 0
            raise DecodeError(
                Reason.STREAM_TRUNCATED_AT_EOF,
                self.offset,
                f"stream ends {left} bytes into a message",
            )
