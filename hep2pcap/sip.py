"""Parse the head of a SIP message and find message boundaries in a SIP byte stream.

Owns: recognising a SIP start line (RFC 3261 §7.1 request line, §7.2 status line), reading the
few headers hep2pcap needs (Call-ID, CSeq, From, To, User-Agent/Server, Content-Length, with
the compact forms of §7.3.3 and the folding of §7.3.1), and cutting TCP/TLS streams at message
ends (§18.3: headers through the blank line plus Content-Length bytes of body; RFC 5626 §4.4.1
CRLF keep-alives between messages). Must never: do I/O, log, raise on any input bytes, or look
at more than :data:`MAX_HEAD_BYTES` of headers (work per message is bounded).

Leniency (real senders): bare LF line ends are accepted as well as CRLF, the SIP version is
matched case-insensitively, and runs of spaces in the start line are tolerated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD_BYTES",
    "SipHead",
    "is_start",
    "message_end",
    "parse",
    "skip_keepalive",
    "top_via_branch",
]

#: Headers (start line included) are looked for in this many bytes at most.
MAX_HEAD_BYTES = 64 * 1024
#: Longer digit strings are not a usable Content-Length / CSeq (and int() of very long
#: strings raises ValueError since Python 3.11's int_max_str_digits).
_MAX_DIGITS = 18

# RFC 3261 §25.1: Method = token; Request-Line = Method SP Request-URI SP SIP-Version CRLF.
_REQUEST_LINE = re.compile(
    rb"([!%'*+\-.0-9A-Za-z_`~]+) +[^ \t\r\n]+ +[Ss][Ii][Pp]/2\.0[ \t]*\r?",
)
# RFC 3261 §25.1: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (codes 1xx-6xx;
# an empty reason phrase without its SP is tolerated).
_STATUS_LINE = re.compile(rb"[Ss][Ii][Pp]/2\.0 +([1-6][0-9][0-9])(?:[ \t][^\r\n]*)?\r?")
# A header line with its continuation lines (RFC 3261 §7.3.1 folding): "\n" + name + ":" + value.
# Searches start at the end of the start line, so the leading "\n" is always a line start.
_HEADER_LINE = rb"\n(%b)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)"
#: Header name (lower case, compact forms of RFC 3261 §7.3.3) to the slot it fills.
_WANTED_LOWER = {
    b"call-id": "i",
    b"i": "i",
    b"content-length": "l",
    b"l": "l",
    b"from": "f",
    b"f": "f",
    b"to": "t",
    b"t": "t",
    b"cseq": "cseq",
    b"user-agent": "ua",
    b"server": "ua",
}
# The wanted names factored by first letter, behind a one-letter look-ahead, so that most other
# header lines are rejected at their first byte (a few % faster than the plain alternation).
_HEADER = re.compile(
    _HEADER_LINE
    % rb"(?=[CcFfIiLlSsTtUu])(?:c(?:all-id|seq|ontent-length)|f(?:rom)?|to?|i|l|user-agent|server)",
    re.IGNORECASE,
)
#: Also the usual spellings, which saves a .lower() per header on the hot path.
_WANTED = {
    **_WANTED_LOWER,
    **{name.upper(): slot for name, slot in _WANTED_LOWER.items() if len(name) == 1},
    b"Call-ID": "i",
    b"Call-Id": "i",
    b"Content-Length": "l",
    b"From": "f",
    b"To": "t",
    b"CSeq": "cseq",
    b"User-Agent": "ua",
    b"Server": "ua",
}
# message_end's one scan of the head: whichever comes first, the blank line ending the head
# (group 1 None) or the first Content-Length / "l" header line (group 1 its value). One scan
# instead of a blank-line search plus a header search over the same bytes: 1.7 -> 1.4 us per
# 870-byte message. A header value never runs into the blank line (a folded line starts with
# SP/HT, a blank line with CR or LF), so the blank line after it is found from its end.
_BLANK_OR_LENGTH = re.compile(
    rb"\n(?:\r?\n|(?:content-length|l)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*))", re.IGNORECASE
)
# The blank line ending the head: CRLF or bare LF, and mixes of both.
_BLANK_LINE = re.compile(rb"\n\r?\n")
# RFC 3261 §20.20 / §20.39 tag parameter (after the URI); the value is a token.
_TAG = re.compile(r";[ \t]*tag[ \t]*=([^;]*)", re.IGNORECASE | re.ASCII)
# RFC 3261 §25.1 quoted-string display name, quoted-pair escapes included; the closing quote
# may be missing (then the rest is the display name).
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_KEEPALIVE = re.compile(rb"[\r\n]*")
# Whitespace stripped from header values.
_WS = " \t\r\n"
_WS_B = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class SipHead:
    """What hep2pcap reads from one SIP message head.

    String fields are None when the header is absent or empty. For a repeated header the
    first one counts; User-Agent and Server share one field (the first of them counts).
    """

    method: str | None
    status: int | None
    call_id: str | None
    cseq: int | None
    cseq_method: str | None
    from_uri: str | None
    to_uri: str | None
    from_tag: str | None
    to_tag: str | None
    user_agent: str | None
    content_length: int | None
    head_len: int
    body_len: int

    @property
    def truncated(self) -> bool:
        """True when the body is shorter than the declared Content-Length."""
        return self.content_length is not None and self.body_len < self.content_length


def _head_end(buf: bytes | bytearray, start: int) -> int:
    # Offset just past the blank line ending the head, or -1 when there is none in the first
    # MAX_HEAD_BYTES.
    blank = _BLANK_LINE.search(buf, start, start + MAX_HEAD_BYTES)
    return blank.end() if blank is not None else -1


def _number(value: bytes | None) -> int | None:
    # A non-negative decimal without sign or "_" (int() accepts both); bytes.isdigit() is
    # ASCII-only, so non-ASCII digits (which int() also accepts) are refused too.
    if value is None:
        return None
    digits = value.strip(_WS_B)
    if 0 < len(digits) <= _MAX_DIGITS and digits.isdigit():
        return int(digits)
    return None


def _text(value: bytes | None) -> str | None:
    # A header value as text: folded continuation lines joined by one space, stripped.
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    if "\n" in text:
        return " ".join(part.strip(_WS) for part in text.split("\n")).strip(_WS)
    return text.strip(_WS)


def _name_addr(value: str | None) -> tuple[str | None, str | None]:
    # (addr-spec, tag) of a From/To value, RFC 3261 §20.20 / §20.39:
    #   [display-name] <addr-spec> *(;param)   or   addr-spec *(;param)
    # Without angle brackets everything after ';' is a header parameter (§20.10). Offsets
    # instead of slices: this runs twice per message on the hot path.
    if not value:
        return None, None
    pos = 0
    if value[0] == '"':  # quoted display name: it may hold '<', '>' or ';'
        close = value.find('"', 1)
        if close > 0 and value.find("\\", 1, close) < 0:
            pos = close + 1
        else:
            quoted = _QUOTED.match(value)
            pos = quoted.end() if quoted is not None else len(value)  # it always matches
    lt = value.find("<", pos)
    if lt >= 0:
        gt = value.find(">", lt + 1)
        if gt < 0:
            return value[lt + 1 :].strip(_WS) or None, None
        uri = value[lt + 1 : gt].strip(_WS)
        params = gt + 1
    else:
        params = value.find(";", pos)
        if params < 0:
            return value[pos:].strip(_WS) or None, None
        uri = value[pos:params].strip(_WS)
    at = value.find(";tag=", params)
    if at >= 0:  # the usual spelling: no regex
        end = value.find(";", at + 5)
        tag = value[at + 5 : end if end >= 0 else len(value)].strip(_WS)
        return uri or None, tag or None
    found = _TAG.search(value, params)
    return uri or None, (found.group(1).strip(_WS) or None) if found is not None else None


def parse(payload: bytes) -> SipHead | None:
    """Parse the start line and the headers hep2pcap uses from one SIP message.

    Args:
        payload: one SIP message (a UDP payload, or one message cut from a stream). Leading
            keep-alive CRLFs are not skipped: use :func:`skip_keepalive` first.

    Returns:
        The head, or None when the first line is neither a request line
        (``METHOD URI SIP/2.0``) nor a status line (``SIP/2.0 CODE reason``). Header text is
        decoded as UTF-8 with replacement; only the first :data:`MAX_HEAD_BYTES` are read.

    Raises:
        Nothing, for any bytes.
    """
    size = len(payload)
    end = _head_end(payload, 0)
    head_len = size if end < 0 else end
    scan = min(head_len, MAX_HEAD_BYTES)
    nl = payload.find(b"\n", 0, scan)
    line_end = scan if nl < 0 else nl
    method: str | None = None
    status: int | None = None
    request = _REQUEST_LINE.fullmatch(payload, 0, line_end)
    if request is not None:
        method = request.group(1).decode("ascii")
    else:
        response = _STATUS_LINE.fullmatch(payload, 0, line_end)
        if response is None:
            return None
        status = int(response.group(1))

    values: dict[str, bytes] = {}
    if nl >= 0:
        wanted = _WANTED
        for name, value in _HEADER.findall(payload, nl, scan):
            slot = wanted.get(name)
            if slot is None:
                slot = wanted[name.lower()]
            if slot not in values:  # the first of a repeated header counts
                values[slot] = value

    get = values.get
    cseq: int | None = None
    cseq_method: str | None = None
    cseq_value = get("cseq")
    if cseq_value is not None:
        parts = cseq_value.split(None, 2)
        if parts:
            number = parts[0]  # bytes.isdigit() is ASCII-only
            if len(number) <= _MAX_DIGITS and number.isdigit():
                cseq = int(number)
            if len(parts) > 1:
                cseq_method = parts[1].decode("utf-8", "replace")
    from_uri, from_tag = _name_addr(_text(get("f")))
    to_uri, to_tag = _name_addr(_text(get("t")))
    return SipHead(
        method,
        status,
        _text(get("i")) or None,
        cseq,
        cseq_method,
        from_uri,
        to_uri,
        from_tag,
        to_tag,
        _text(get("ua")) or None,
        _number(get("l")),
        head_len,
        size - head_len,
    )


def message_end(buf: bytes | bytearray, start: int = 0) -> int | None:
    """Find where the SIP message starting at ``buf[start]`` ends, for TCP/TLS streams.

    The message is its head through the blank line plus Content-Length bytes of body; a
    missing (or unusable: negative, not a number) Content-Length means no body (RFC 3261
    §18.3). The first Content-Length / ``l`` header counts, as in :func:`parse`.

    Args:
        buf: stream bytes; the caller has checked :func:`is_start` at ``start``.
        start: offset of the message's first byte (``0 <= start``).

    Returns:
        The offset just past the message, or None while ``buf[start:]`` holds only part of
        it: no blank line yet (within :data:`MAX_HEAD_BYTES`), or a body shorter than its
        Content-Length.

    Raises:
        Nothing, for any bytes.
    """
    limit = start + MAX_HEAD_BYTES
    found = _BLANK_OR_LENGTH.search(buf, start, limit)
    if found is None:
        return None
    value = found.group(1)
    if value is None:  # no Content-Length before the blank line: no body
        end = found.end()
    else:
        blank = _BLANK_LINE.search(buf, found.end(), limit)
        if blank is None:
            return None
        end = blank.end()
        length = _number(value)
        if length is not None:
            end += length
    return end if end <= len(buf) else None


def is_start(buf: bytes | bytearray, start: int = 0) -> bool:
    """Tell whether a SIP message starts at ``buf[start]``.

    Only the first line is looked at, and it must be complete (end in LF): a line still
    being received, even a plausible prefix such as ``b"SIP/2.0 2"``, gives False.

    Args:
        buf: stream or datagram bytes.
        start: offset to look at (``0 <= start``).

    Returns:
        True if a request line or a status line starts there.
    """
    nl = buf.find(b"\n", start, start + MAX_HEAD_BYTES)
    if nl < 0:
        return False
    return (
        _STATUS_LINE.fullmatch(buf, start, nl) is not None
        or _REQUEST_LINE.fullmatch(buf, start, nl) is not None
    )


def skip_keepalive(buf: bytes | bytearray, start: int = 0) -> int:
    """Skip keep-alives (RFC 5626 §4.4.1 CRLF pings, bare LFs, RFC 3261 §7.5 leading CRLFs).

    Args:
        buf: stream bytes.
        start: offset to start at (``0 <= start``).

    Returns:
        The offset of the first byte at or after ``start`` that is neither CR nor LF
        (``len(buf)`` if there is none).
    """
    run = _KEEPALIVE.match(buf, start)
    return run.end() if run is not None else start  # "*" always matches: never None


# RFC 3261 §20.42 / §7.3.3: the first Via header (or its compact form "v") and, in its first
# value (before a comma), the branch parameter (§8.1.1.7: the transaction's id on this hop).
_TOP_VIA = re.compile(rb"\n(?:via|v)[ \t]*:([^\n,]*)", re.IGNORECASE)
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;, \t\r\n]+)", re.IGNORECASE)


def top_via_branch(payload: bytes, head_len: int) -> str | None:
    """The branch of the first Via value of a SIP message: with the CSeq method it names
    the transaction on this hop (a request and its responses carry the same one).

    Args:
        payload: the message.
        head_len: the length of its head (:attr:`SipHead.head_len`); only the head is read.

    Returns:
        The branch as text, or None without a Via or a branch.
    """
    via = _TOP_VIA.search(payload, 0, min(head_len, MAX_HEAD_BYTES))
    if via is None:
        return None
    branch = _BRANCH.search(via.group(1))
    return branch.group(1).decode("utf-8", "replace") if branch is not None else None
