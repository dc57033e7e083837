"""Cut a byte stream (TCP, TLS, a raw dump file) into HEP messages.

Owns: framing by the HEPv3 total-length field (HEP-SPEC §5), and two framings real senders
need (HEP-SPEC §14, issue 11): a gzip member holding a frame (heplify ``payload_zip`` writes
one per TCP write) ends where its deflate stream ends, and a HEPv1/v2 message (Kamailio
siptrace streams them over HEP/TCP) ends where its SIP message ends (fixed header, then the
SIP head through the blank line plus Content-Length bytes). Must never: decode chunks, do
I/O, or buffer more than one message (65535 bytes, or that many inflated for a gzip member)
plus one feed. A v1/v2 first byte whose payload is not SIP is V12_ON_STREAM, anything else
BAD_MAGIC, and after a framing error the rest of the stream cannot be trusted: the deframer
stays failed — unless it resynchronises (HEP-SPEC §11 BAD_MAGIC, lenient mode): then the
bytes up to the next magic are skipped and reported, and framing goes on.
"""

from __future__ import annotations

import zlib

from .errors import DecodeError, Reason
from .hep import (
    EEP3_MAGIC,
    GZIP_MAGIC,
    HEP3_HEADER,
    HEP3_MAGIC,
    MAX_HEP3_LENGTH,
    MAX_UNWRAPPED,
    V12_HEADER,
    hep12_header_size,
)
from .sip import is_start, message_end, parse

#: What a v1/v2 message still being received waits for: the end of its SIP start line, or
#: the blank line ending its SIP head (bare LF accepted, as sip.py does).
_LINE_END = (b"\n",)
_HEAD_END = (b"\n\n", b"\n\r\n")
#: Compressed bytes one gzip member may take on a stream: a deflate stream of stored blocks
#: holding MAX_UNWRAPPED bytes, with the gzip header and trailer, fits easily.
MAX_MEMBER_BYTES = MAX_UNWRAPPED + 4096

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
        "_member",
        "_member_out",
        "_member_parts",
        "_need",
        "_parts",
        "_raised",
        "_resync",
        "_scanning",
        "_v12_line_ok",
        "_v12_need",
        "_v12_scanned",
        "_v12_wait",
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
        # A gzip member still being received: its inflater, inflated size, and its bytes.
        self._member: zlib._Decompress | None = None
        self._member_out = 0
        self._member_parts: list[bytes] = []
        # A v1/v2 message still being received: bytes to wait for, bytes known head-only.
        self._v12_need = 0
        self._v12_scanned = 0
        self._v12_line_ok = False
        self._v12_wait: tuple[bytes, ...] = ()  # what the pending v1/v2 message waits for

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
        out: list[bytes] = []
        if self._member is not None:
            try:
                rest = self._member_more(data, out)
            except DecodeError:
                raise self._raise_failed() from None
            if rest is None:
                return out
            data = rest
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
                return out
            wait = self._v12_wait
            if wait and self._have < MAX_HEP3_LENGTH:
                # A v1/v2 message whose SIP start line or head is not whole yet: look at the
                # new bytes only (and the 3 before them), not at everything held again.
                want = len(data) + 3
                probe = b""
                for piece in reversed(parts):  # parts ends with data (maybe joined into it)
                    probe = piece[-(want - len(probe)) :] + probe
                    if len(probe) >= want:
                        break
                if not any(w in probe for w in wait):
                    self._v12_scanned = self._have
                    self._need = self._have + 1
                    return out
            buf = b"".join(self._parts)
            self._parts = []
            self._have = 0
        else:
            buf = data
        pos = 0
        size = len(buf)
        unpack = HEP3_HEADER.unpack_from
        magics = self._magics
        if self._resync:
            return self._feed_resync(buf, out)
        while size - pos >= HEP3_HEADER.size:
            magic, total = unpack(buf, pos)
            if magic not in magics or total < HEP3_HEADER.size:
                first = buf[pos]
                if first == 0x1F and buf[pos : pos + 3] == GZIP_MAGIC:
                    try:
                        end = self._member_start(buf, pos, out)
                    except DecodeError:
                        if out:  # the error is raised by the next feed() or eof()
                            return out
                        raise self._raise_failed() from None
                    if end < 0:
                        return out
                    pos = end
                    continue
                if first == 1 or first == 2:
                    end = self._v12_end(buf, pos)
                    if end > 0:
                        starts.append(self.offset + pos)
                        out.append(buf[pos:end])
                        pos = end
                        continue
                    if end == 0:  # a v1/v2 message not yet complete: _v12_need says when
                        self._keep(buf, pos, self._v12_need)
                        return out
                return self._fail(out, buf, pos, magic, total)
            if size - pos < total:
                break
            starts.append(self.offset + pos)
            out.append(buf[pos : pos + total])
            pos += total
        tail = bytes(buf[pos : pos + 4])
        if (
            tail
            and not any(m.startswith(tail) for m in magics)
            and not GZIP_MAGIC.startswith(tail[:3])
            and tail[0] not in (1, 2)
        ):
            # A short tail that can never become HEP3: fail now rather than at EOF.
            return self._fail(out, buf, pos, tail, HEP3_HEADER.size)
        self._keep(buf, pos)
        return out

    def _keep(self, buf: bytes, pos: int, need: int = 0) -> None:
        """Hold ``buf[pos:]`` (the start of the next message) and account for the rest;
        look again once ``need`` bytes are held (default: what its HEP3 header says)."""
        if pos < len(buf):
            rest = buf[pos:]
            self._parts = [rest]
            self._have = len(rest)
            if need:
                self._need = need
            elif len(rest) >= HEP3_HEADER.size and rest[:4] in self._magics:
                self._need = HEP3_HEADER.unpack_from(rest)[1]
            else:
                self._need = HEP3_HEADER.size
        self.offset += pos

    def _v12_end(self, buf: bytes, pos: int) -> int:
        """A HEPv1/v2 message at ``buf[pos]`` (Kamailio siptrace streams them over TCP):
        the offset just past it; 0 while incomplete (then ``_v12_need`` is how many bytes
        from ``pos`` to wait for); -1 when it cannot be framed (its payload is not a SIP
        message, or it would be longer than a HEPv3 message).

        Linear however the bytes are cut: the search for the end of the SIP head resumes
        where the last one stopped, and once the head is whole the exact length is known.
        """
        held = len(buf) - pos
        self._v12_need = held + 1
        if held < V12_HEADER.size:
            return 0
        fixed = hep12_header_size(buf, pos)
        if fixed is None:
            return -1
        start = pos + fixed
        resume = max(start, pos + self._v12_scanned - 3)
        if not self._v12_line_ok:  # the SIP start line, checked once it is whole
            if buf.find(b"\n", resume) < 0:
                self._v12_scanned = held
                self._v12_wait = _LINE_END
                return 0 if held < MAX_HEP3_LENGTH else -1
            if not is_start(buf, start):
                return -1
            self._v12_line_ok = True
        if buf.find(b"\n\n", resume) < 0 and buf.find(b"\n\r\n", resume) < 0:
            self._v12_scanned = held  # no blank line up to here: the head goes on
            self._v12_wait = _HEAD_END
            return 0 if held < MAX_HEP3_LENGTH else -1
        self._v12_wait = ()
        end = message_end(buf, start)
        if end is None:
            head = parse(buf[start:])
            if head is None or held >= MAX_HEP3_LENGTH:
                return -1
            self._v12_need = fixed + head.head_len + (head.content_length or 0)
            return 0
        self._v12_scanned = 0
        self._v12_line_ok = False
        self._v12_wait = ()
        return end if end - pos <= MAX_HEP3_LENGTH else -1

    def _member_start(self, buf: bytes, pos: int, out: list[bytes]) -> int:
        """A gzip member starts at ``buf[pos]``: the offset just past it, or -1 while it
        is incomplete (its bytes are then held until :meth:`_member_more` finishes it)."""
        self._member = zlib.decompressobj(wbits=31)
        self._member_out = 0
        self._member_parts = []
        self.offset += pos
        rest = self._member_more(buf[pos:], out)
        if rest is None:
            return -1
        self.offset -= len(buf) - pos - len(rest)  # _frame counts from buf's start
        self.offset -= pos
        return len(buf) - len(rest)

    def _member_more(self, data: bytes, out: list[bytes]) -> bytes | None:
        """Inflate more of the pending gzip member (bounded); when it ends, add it to
        ``out`` and return the bytes after it, else None."""
        inflater = self._member
        assert inflater is not None
        try:
            produced = inflater.decompress(data, MAX_UNWRAPPED + 1 - self._member_out)
        except zlib.error as exc:
            raise self._member_failed(
                DecodeError(Reason.DECOMPRESS_FAILED, self.offset, f"gzip member: {exc}")
            ) from None
        self._member_out += len(produced)
        if self._member_out > MAX_UNWRAPPED or inflater.unconsumed_tail:
            raise self._member_failed(
                DecodeError(
                    Reason.DECOMPRESS_TOO_LARGE,
                    self.offset,
                    f"gzip member inflates past the {MAX_UNWRAPPED}-byte cap",
                )
            )
        if not inflater.eof:
            self._member_parts.append(data)
            self._have += len(data)
            if self._have > MAX_MEMBER_BYTES:
                raise self._member_failed(
                    DecodeError(
                        Reason.DECOMPRESS_TOO_LARGE,
                        self.offset,
                        f"gzip member longer than {MAX_MEMBER_BYTES} bytes",
                    )
                )
            return None
        used = len(data) - len(inflater.unused_data)
        self._member_parts.append(data[:used])
        member = b"".join(self._member_parts)
        self.starts.append(self.offset)
        out.append(member)
        self.offset += len(member)
        self._member = None
        self._member_parts = []
        self._have = 0
        return data[used:]

    def _member_failed(self, error: DecodeError) -> DecodeError:
        self._member = None
        self._member_parts = []
        self._have = 0
        self._failed = error
        return error

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
            self._member = None
            self._member_parts = []
            self._have = 0
            raise DecodeError(
                Reason.STREAM_TRUNCATED_AT_EOF,
                self.offset,
                f"stream ends {left} bytes into a message",
            )
