"""Unit tests and properties for hep2pcap.sip (SIP head parsing and stream message ends)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hep2pcap import sip
from hep2pcap.sip import SipHead, is_start, message_end, parse, skip_keepalive

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def build(first: bytes, headers: list[bytes], body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    """One SIP message: start line, header lines, blank line, body."""
    return eol.join([first, *headers, b""]) + eol + body


INVITE = build(
    b"INVITE sip:bob@biloxi.example.com SIP/2.0",
    [
        b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
        b"Max-Forwards: 70",
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl',
        b"To: Bob <sip:bob@biloxi.example.com>",
        b"Call-ID: 3848276298220188511@atlanta.example.com",
        b"CSeq: 1 INVITE",
        b"Contact: <sip:alice@client.atlanta.example.com;transport=tcp>",
        b"User-Agent: ExamplePhone/1.2.3",
        b"Content-Type: application/sdp",
        b"Content-Length: %d" % len(SDP),
    ],
    SDP,
)
OK_200 = build(
    b"SIP/2.0 200 OK",
    [
        b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl',
        b"To: Bob <sip:bob@biloxi.example.com>;tag=8321234356",
        b"Call-ID: 3848276298220188511@atlanta.example.com",
        b"CSeq: 1 INVITE",
        b"Server: ExampleServer/9",
        b"Content-Length: %d" % len(SDP),
    ],
    SDP,
)
ACK = build(
    b"ACK sip:bob@client.biloxi.example.com SIP/2.0",
    [
        b"f: <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        b"t: <sip:bob@biloxi.example.com>;tag=8321234356",
        b"i: 3848276298220188511@atlanta.example.com",
        b"CSeq: 1 ACK",
        b"l: 0",
    ],
)
# Keep-alives between messages: RFC 5626 double-CRLF pings and a bare LF.
STREAM_PARTS = [INVITE, b"\r\n\r\n", OK_200, b"\n", ACK]
STREAM = b"".join(STREAM_PARTS)
MESSAGES = [INVITE, OK_200, ACK]


def drain(buf: bytearray) -> list[bytes]:
    """Cut complete messages off the front of buf, the way a stream reader uses this module."""
    out: list[bytes] = []
    while True:
        start = skip_keepalive(buf)
        if start >= len(buf) or not is_start(buf, start):
            del buf[:start]
            return out
        end = message_end(buf, start)
        if end is None:
            del buf[:start]
            return out
        out.append(bytes(buf[start:end]))
        del buf[:end]


# -- parse -----------------------------------------------------------------------------------


def test_parse_request() -> None:
    assert parse(INVITE) == SipHead(
        method="INVITE",
        status=None,
        call_id="3848276298220188511@atlanta.example.com",
        cseq=1,
        cseq_method="INVITE",
        from_uri="sip:alice@atlanta.example.com",
        to_uri="sip:bob@biloxi.example.com",
        from_tag="9fxced76sl",
        to_tag=None,
        user_agent="ExamplePhone/1.2.3",
        content_length=len(SDP),
        head_len=len(INVITE) - len(SDP),
        body_len=len(SDP),
    )


def test_parse_response() -> None:
    head = parse(OK_200)
    assert head is not None
    assert (head.method, head.status) == (None, 200)
    assert (head.cseq, head.cseq_method) == (1, "INVITE")
    assert head.to_tag == "8321234356"
    assert head.user_agent == "ExampleServer/9"
    assert not head.truncated


def test_parse_compact_headers() -> None:
    head = parse(ACK)
    assert head is not None
    assert head.method == "ACK"
    assert head.call_id == "3848276298220188511@atlanta.example.com"
    assert head.from_uri == "sip:alice@atlanta.example.com"
    assert head.to_uri == "sip:bob@biloxi.example.com"
    assert (head.from_tag, head.to_tag) == ("9fxced76sl", "8321234356")
    assert head.content_length == 0
    assert head.head_len == len(ACK)
    assert head.body_len == 0


def test_header_names_are_case_insensitive_with_space_around_colon() -> None:
    msg = build(
        b"BYE sip:b@example.com SIP/2.0",
        [
            b"CALL-ID  :   abc@host  ",
            b"cseq:2 bye",
            b"FROM\t: <sip:a@example.com>;TAG=x1",
            b"tO:sip:b@example.com",
            b"user-agent : UA 1",
            b"CONTENT-LENGTH :  0",
        ],
    )
    head = parse(msg)
    assert head is not None
    assert head.call_id == "abc@host"
    assert (head.cseq, head.cseq_method) == (2, "bye")
    assert (head.from_uri, head.from_tag) == ("sip:a@example.com", "x1")
    assert head.to_uri == "sip:b@example.com"
    assert head.user_agent == "UA 1"
    assert head.content_length == 0


def test_other_headers_that_start_like_wanted_ones_are_ignored() -> None:
    msg = build(
        b"OPTIONS sip:b@example.com SIP/2.0",
        [b"If-Match: x", b"Tox: y", b"Lx: 5", b"Subject: s", b"Call-ID: real", b"Content-Type: a"],
    )
    head = parse(msg)
    assert head is not None
    assert head.call_id == "real"
    assert head.to_uri is None
    assert head.content_length is None


def test_folded_headers() -> None:
    msg = build(
        b"INVITE sip:b@example.com SIP/2.0",
        [
            b"Subject: a",
            b" folded subject",
            b"From: Alice",
            b"\t<sip:alice@example.com>",
            b"  ;tag=ft",
            b"User-Agent: Phone",
            b" 2.0",
            b"Call-ID: c1",
        ],
    )
    head = parse(msg)
    assert head is not None
    assert (head.from_uri, head.from_tag) == ("sip:alice@example.com", "ft")
    assert head.user_agent == "Phone 2.0"
    assert head.call_id == "c1"


def test_lf_only_line_ends() -> None:
    body = SDP.replace(b"\r\n", b"\n")
    msg = build(
        b"INVITE sip:b@example.com SIP/2.0",
        [b"Call-ID: lf", b"i: ignored", b"CSeq: 7 INVITE", b"Content-Length: %d" % len(body)],
        body,
        eol=b"\n",
    )
    head = parse(msg)
    assert head is not None
    assert (head.call_id, head.cseq, head.content_length) == ("lf", 7, len(body))
    assert head.head_len == msg.index(b"\n\n") + 2
    assert head.body_len == len(body)
    assert not head.truncated
    assert message_end(msg) == len(msg)


def test_mixed_line_ends_blank_line() -> None:
    head_part = b"SIP/2.0 100 Trying\r\nCall-ID: x\n\r\n"
    head = parse(head_part + b"body")
    assert head is not None
    assert (head.status, head.call_id) == (100, "x")
    assert (head.head_len, head.body_len) == (len(head_part), 4)
    assert message_end(head_part + b"body") == len(head_part)


def test_repeated_header_first_wins_and_server_or_user_agent() -> None:
    msg = build(
        b"SIP/2.0 180 Ringing",
        [b"Server: S1", b"Call-ID: first", b"i: second", b"User-Agent: U2", b"l: 0", b"l: 9"],
    )
    head = parse(msg)
    assert head is not None
    assert (head.call_id, head.user_agent, head.content_length) == ("first", "S1", 0)


@pytest.mark.parametrize(
    ("value", "uri", "tag"),
    [
        (b'"Alice" <sip:alice@a.com>;tag=1', "sip:alice@a.com", "1"),
        (b"<sip:a@b>", "sip:a@b", None),
        (b"sip:a@b;tag=x", "sip:a@b", "x"),
        (b"sip:a@b;transport=tcp;tag=x;other", "sip:a@b", "x"),
        (b"<sip:a@b;transport=tcp>;tag=y", "sip:a@b;transport=tcp", "y"),
        (b'"A <b> \\" c" <sip:q@b>;x=1; tag = z ', "sip:q@b", "z"),
        (b'"unterminated <sip:a@b>', None, None),
        (b"Alice <sip:a@b", "sip:a@b", None),
        (b"<sip:a@b>;TAG=up", "sip:a@b", "up"),
        (b"<sip:a@b>;tag=", "sip:a@b", None),
        (b"<sip:a@b>;mytag=1", "sip:a@b", None),
        (b"  ", None, None),
    ],
)
def test_from_uri_and_tag(value: bytes, uri: str | None, tag: str | None) -> None:
    head = parse(build(b"MESSAGE sip:x@y SIP/2.0", [b"From: " + value]))
    assert head is not None
    assert (head.from_uri, head.from_tag) == (uri, tag)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"12", 12),
        (b" 007 ", 7),
        (b"-1", None),
        (b"+5", None),
        (b"1_0", None),
        (b"abc", None),
        (b"", None),
        (b"1 2", None),
        ("\u0665".encode(), None),  # a non-ASCII digit int() would accept
        (b"9" * 5000, None),  # int() raises on this many digits
    ],
)
def test_content_length_values(value: bytes, expected: int | None) -> None:
    msg = build(b"NOTIFY sip:x@y SIP/2.0", [b"Content-Length: " + value])
    head = parse(msg)
    assert head is not None
    assert head.content_length == expected
    # message_end reads it the same way; an unusable one means no body
    if not expected:
        assert message_end(msg) == len(msg)
    else:
        assert message_end(msg) is None
        assert message_end(msg + b"x" * (expected + 3)) == len(msg) + expected


def test_missing_content_length() -> None:
    msg = build(b"OPTIONS sip:x@y SIP/2.0", [b"Call-ID: c"], b"stray")
    head = parse(msg)
    assert head is not None
    assert head.content_length is None
    assert head.body_len == 5
    assert not head.truncated
    assert message_end(msg) == len(msg) - 5  # RFC 3261 §18.3: no Content-Length, no body


def test_truncated_body() -> None:
    cut = INVITE[:-10]
    head = parse(cut)
    assert head is not None
    assert head.truncated
    assert head.body_len == len(SDP) - 10
    assert message_end(cut) is None


def test_no_blank_line() -> None:
    msg = b"SIP/2.0 200 OK\r\nCall-ID: c\r\nContent-Length: 5\r\n"
    head = parse(msg)
    assert head is not None
    assert (head.head_len, head.body_len, head.call_id) == (len(msg), 0, "c")
    assert head.truncated
    assert message_end(msg) is None


def test_start_line_only() -> None:
    head = parse(b"SIP/2.0 486 Busy Here")
    assert head is not None
    assert head.status == 486
    assert head.call_id is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 2000 Long\r\n\r\n",
        b"SIP/2.0 200OK\r\n\r\n",
        b"INVITE SIP/2.0\r\n\r\n",
        b"INV(TE sip:a SIP/2.0\r\n\r\n",
        b"INVITE sip:a SIP/3.0\r\n\r\n",
        b"\r\nINVITE sip:a SIP/2.0\r\n\r\n",
        b"HEP3\x00\x10\x00\x00\x00\x01\x00\x07\x02",
    ],
)
def test_not_sip(payload: bytes) -> None:
    assert parse(payload) is None
    assert not is_start(payload)


def test_lenient_start_lines() -> None:
    request = parse(b"register  sip:r@example.com  sip/2.0 \r\n\r\n")
    assert request is not None
    assert request.method == "register"  # as written: methods are case-sensitive tokens
    response = parse(b"SIP/2.0 200\r\n\r\n")
    assert response is not None
    assert response.status == 200


def test_headers_past_the_limit_are_not_read() -> None:
    filler = [b"X-Filler: " + b"a" * 1000] * 70
    msg = build(b"INFO sip:x@y SIP/2.0", [*filler, b"Call-ID: late", b"Content-Length: 0"])
    head = parse(msg)
    assert head is not None
    assert head.call_id is None
    assert head.head_len == len(msg)  # no blank line within the first MAX_HEAD_BYTES
    assert message_end(msg) is None


def test_non_utf8_header_text_is_replaced() -> None:
    head = parse(
        build(b"INVITE sip:x@y SIP/2.0", [b"Call-ID: a\xff\xfeb", b"User-Agent: \xe9t\xe9"])
    )
    assert head is not None
    assert head.call_id == "a\ufffd\ufffdb"
    assert head.user_agent == "\ufffdt\ufffd"


# -- is_start / skip_keepalive ---------------------------------------------------------------


@pytest.mark.parametrize("msg", MESSAGES)
def test_is_start_on_messages(msg: bytes) -> None:
    assert is_start(msg)
    assert is_start(b"\x00junk" + msg, 5)
    assert not is_start(b"\x00junk" + msg, 0)
    assert not is_start(msg, msg.index(b"\n") + 1)  # a header line


@pytest.mark.parametrize(
    "prefix",
    [b"S", b"SIP/2.0", b"SIP/2.0 ", b"SIP/2.0 2", b"SIP/2.0 200 OK", b"INVITE ", b"INVITE sip:a"],
)
def test_is_start_incomplete_first_line_is_false(prefix: bytes) -> None:
    assert not is_start(prefix)
    assert not is_start(prefix + b"\r")


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x01\x02\n",
        b"\xff" * 100 + b"\n",
        b"v=0\r\n",
        b"Call-ID: x\r\n",
        b" SIP/2.0\r\n",
        b"\n",
    ],
)
def test_is_start_on_junk(junk: bytes) -> None:
    assert not is_start(junk)
    assert not is_start(bytearray(junk))


def test_skip_keepalive() -> None:
    assert skip_keepalive(b"") == 0
    assert skip_keepalive(b"INVITE") == 0
    assert skip_keepalive(b"\r\n\r\nINVITE") == 4
    assert skip_keepalive(b"\n\n\r\nX", 1) == 4
    assert skip_keepalive(bytearray(b"\r\n\r\n")) == 4
    assert skip_keepalive(b"ab", 5) == 2


# -- message_end on streams --------------------------------------------------------------------


def test_message_end_walks_the_stream() -> None:
    pos, ends = 0, []
    while pos < len(STREAM):
        start = skip_keepalive(STREAM, pos)
        assert is_start(STREAM, start)
        end = message_end(STREAM, start)
        assert end is not None
        ends.append(end)
        pos = end
    lengths = [len(p) for p in STREAM_PARTS]
    assert ends == [lengths[0], sum(lengths[:3]), len(STREAM)]


def test_message_end_on_bytearray_and_with_trailing_bytes() -> None:
    assert message_end(bytearray(INVITE)) == len(INVITE)
    assert message_end(INVITE + b"INVITE sip:x") == len(INVITE)
    assert message_end(b"xx" + ACK, 2) == 2 + len(ACK)


def test_message_end_every_prefix_is_incomplete() -> None:
    for cut in range(len(INVITE)):
        assert message_end(INVITE[:cut]) is None, cut


def test_stream_whole() -> None:
    buf = bytearray(STREAM)
    assert drain(buf) == MESSAGES
    assert buf == b""


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_stream_ignores_split_point(cut: int) -> None:
    buf = bytearray(STREAM[:cut])
    got = drain(buf)
    buf += STREAM[cut:]
    got += drain(buf)
    assert got == MESSAGES
    assert buf == b""


def test_stream_byte_by_byte() -> None:
    buf = bytearray()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        buf += STREAM[i : i + 1]
        got += drain(buf)
    assert got == MESSAGES
    assert buf == b""


def test_stream_lf_only_byte_by_byte() -> None:
    lf_ack = ACK.replace(b"\r\n", b"\n")
    stream = lf_ack + b"\n\n" + lf_ack + b"\n"
    buf = bytearray()
    got: list[bytes] = []
    for i in range(len(stream)):
        buf += stream[i : i + 1]
        got += drain(buf)
    assert got == [lf_ack, lf_ack]
    assert buf == b""


def test_stream_without_content_length_has_no_body() -> None:
    no_length = OK_200.replace(b"Content-Length", b"X-Length")
    buf = bytearray(no_length)
    assert drain(buf) == [no_length[: -len(SDP)]]
    assert buf == SDP  # the body is not a SIP start: left for the caller to judge


# -- properties --------------------------------------------------------------------------------

SIPISH = st.lists(
    st.sampled_from(
        [
            b"INVITE sip:a@b SIP/2.0",
            b"SIP/2.0 200 OK",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b";tag=",
            b'"',
            b"\\",
            b"<",
            b">",
            b"Content-Length: 3",
            b"l:",
            b"i: x",
            b"From:",
            b"t:",
            b"CSeq: 1 A",
            b"-1",
            b"9" * 30,
            b"\xff",
        ]
    ),
    max_size=40,
).map(b"".join)


@given(st.one_of(st.binary(max_size=2048), SIPISH), st.integers(min_value=0, max_value=2100))
def test_never_raises(data: bytes, start: int) -> None:
    head = parse(data)
    if head is not None:
        assert head.head_len + head.body_len == len(data)
        assert head.content_length is None or head.content_length >= 0
        assert head.truncated in (True, False)
    for buf in (data, bytearray(data)):
        skipped = skip_keepalive(buf, start)
        assert skipped >= min(start, len(buf))
        assert is_start(buf, start) in (True, False)
        end = message_end(buf, start)
        assert end is None or start < end <= len(buf)


@given(SIPISH)
def test_parse_and_message_end_agree(data: bytes) -> None:
    # A message that message_end calls complete is not truncated for parse.
    head = parse(data)
    end = message_end(data)
    if head is not None and end is not None:
        assert end == head.head_len + (head.content_length or 0)
        exact = parse(data[:end])
        assert exact is not None
        assert not exact.truncated


def test_module_constants() -> None:
    assert sip.MAX_HEAD_BYTES == 64 * 1024


@pytest.mark.parametrize(
    ("head", "branch"),
    [
        (
            b"INVITE sip:a SIP/2.0\r\nVia: SIP/2.0/TLS h:5061;branch=z9hG4bK-1;rport\r\n\r\n",
            "z9hG4bK-1",
        ),
        (
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;rport=5;BRANCH = z9-2\r\nVia: x;branch=3\r\n\r\n",
            "z9-2",
        ),
        (b"BYE sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h, SIP/2.0/UDP g;branch=z9-4\r\n\r\n", None),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n", None),
    ],
)
def test_top_via_branch(head: bytes, branch: str | None) -> None:
    h = sip.parse(head)
    assert h is not None
    assert sip.top_via_branch(head, h.head_len) == branch
