"""message_end's one-scan head search equals the two-scan reference it replaced."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hep2pcap import repair, sip
from hep2pcap.sip import MAX_HEAD_BYTES, message_end

# The code before the one-scan change, kept verbatim as the reference.
_REF_BLANK_LINE = re.compile(rb"\n\r?\n")
_REF_CONTENT_LENGTH = re.compile(
    rb"\n((?:content-length|l))[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.IGNORECASE
)


def ref_message_end(buf: bytes | bytearray, start: int = 0) -> int | None:
    blank = _REF_BLANK_LINE.search(buf, start, start + MAX_HEAD_BYTES)
    if blank is None:
        return None
    end = blank.end()
    declared = _REF_CONTENT_LENGTH.search(buf, start, end)
    if declared is not None:
        length = sip._number(declared.group(2))
        if length is not None:
            end += length
    return end if end <= len(buf) else None


PIECES = [
    b"INVITE sip:a@b SIP/2.0",
    b"SIP/2.0 200 OK",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"Content-Length",
    b"content-length",
    b"CONTENT-length",
    b"CoNtEnT-LeNgTh",
    b"Content-Lengthx",
    b"l",
    b"L",
    b"Call-ID: x",
    b"Content-Type: a",
    b"0",
    b"3",
    b"12",
    b"-1",
    b"9" * 30,
    "\u0665".encode(),
    b"x",
    b"\xff",
]
NAMES = [b"Content-Length", b"content-length", b"CONTENT-length", b"CoNtEnT-LeNgTh", b"l", b"L"]
NAMES += [b"Call-ID", b"Content-Type", b"Lx", b"Content-Lengthx", b"X-Length"]
VALUES = [b"0", b"3", b" 12 ", b"-1", b"", b"9" * 30, "\u0665".encode(), b"1 2", b"x"]
EOLS = [b"\r\n", b"\n", b"\r", b""]
# One header line: name, optional SP/HT before ':', value, and maybe a folded continuation.
HEADER = st.builds(
    lambda name, ws, value, fold, eol: name + ws + b":" + value + fold + eol,
    st.sampled_from(NAMES),
    st.sampled_from([b"", b" ", b"\t", b" \t"]),
    st.sampled_from(VALUES),
    st.sampled_from([b"", b"\r\n 4", b"\n\t", b"\r\n\r\n"]),
    st.sampled_from(EOLS),
)
# A message: start line, header lines with stray pieces between, blank line (or not), body.
SIPISH = st.builds(
    lambda first, parts, blank, body: first + b"".join(parts) + blank + body,
    st.sampled_from([b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\n", b""]),
    st.lists(st.one_of(HEADER, st.sampled_from(PIECES)), max_size=12),
    st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\n\r\n", b"\n\n", b""]),
    st.binary(max_size=20),
)


@given(
    st.one_of(SIPISH, st.binary(max_size=300)),
    st.integers(min_value=0, max_value=40),
    st.booleans(),
)
def test_message_end_equals_reference(data: bytes, start: int, as_bytearray: bool) -> None:
    buf: bytes | bytearray = bytearray(data) if as_bytearray else data
    assert message_end(buf, start) == ref_message_end(buf, start)


@settings(max_examples=50)
@given(SIPISH, st.integers(min_value=-8, max_value=8), st.integers(min_value=0, max_value=3))
def test_message_end_equals_reference_past_head_limit(tail: bytes, shift: int, start: int) -> None:
    # Heads around MAX_HEAD_BYTES: the blank line just inside or just outside the limit.
    filler = b"INFO sip:x@y SIP/2.0\r\nX: " + b"a" * (MAX_HEAD_BYTES - 40 + shift)
    buf = b"\n" * start + filler + tail
    assert message_end(buf, start) == ref_message_end(buf, start)


@given(SIPISH)
def test_is_truncated_equals_reference(data: bytes) -> None:
    expected = sip.is_start(data) and ref_message_end(data) is None
    assert repair.is_truncated(data) == expected


@pytest.mark.parametrize(
    ("msg", "end"),
    [
        (b"SIP/2.0 200 OK\r\nl: 2\r\n\r\nabc", 26),
        (b"SIP/2.0 200 OK\r\nCONTENT-length : 1\r\nl: 2\r\n\r\nab", 45),
        (b"SIP/2.0 200 OK\r\nContent-Length:\r\n 3\r\n\r\nabc", 42),  # folded onto the next line
        (b"SIP/2.0 200 OK\n\r\nContent-Length: 3\r\n\r\n", 17),  # blank line first
        (b"SIP/2.0 200 OK\r\nl:\n\nab", 20),  # empty value: no body
        (b"SIP/2.0 200 OK\r\nContent-Length: 3\r\n", None),  # no blank line
        (b"SIP/2.0 200 OK\r\nContent-Length: 9\r\n\r\nabc", None),  # body short
    ],
)
def test_message_end_examples(msg: bytes, end: int | None) -> None:
    assert message_end(msg) == end == ref_message_end(msg)
    assert message_end(bytearray(b"zz" + msg), 2) == (None if end is None else end + 2)
