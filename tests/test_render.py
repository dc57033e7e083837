"""Unit tests for hep2pcap.render: RTCP-JSON reports rebuilt as RTCP (checked byte by byte
against RFC 3550 layouts written out here, and parsed back with scapy as an oracle), LOG as
syslog, every RenderError reason, and payload type names."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib.rtcp import RTCP

from hep2pcap.errors import Reason
from hep2pcap.hep import HepMessage
from hep2pcap.render import (
    RTCP_NOTE,
    RenderError,
    decode_rtcp_json,
    encode_rtcp,
    parse_payload_type,
    render,
)

# What rtpengine 10.5 sends for an SR + SDES compound (daemon/rtcp.c homer_*: "{ " at the
# start, " }" at the end, a space before "packets", "sdes_information": [ ... ]).
RTPENGINE_SR = (
    b'{ "sender_information":{"ntp_timestamp_sec":3930000001,"ntp_timestamp_usec":2147483648,'
    b'"octets":16000,"rtp_timestamp":160000, "packets":100},"ssrc":305419896,"type":200,'
    b'"report_count":1,"report_blocks":[{"source_ssrc":2271560481,"highest_seq_no":65636,'
    b'"fraction_lost":25,"ia_jitter":17,"packets_lost":3,"lsr":1234567,"dlsr":65536}],'
    b'"sdes_report_count":1,"sdes_information": [ {"sdes_chunk_ssrc":305419896,"type":1,'
    b'"text":"alice@192.0.2.1"}] }'
)
# The same packet as RFC 3550 lays it out, written by hand.
RTPENGINE_SR_BYTES = bytes.fromhex(
    "81c8000c"  # V=2 P=0 RC=1, PT=200 SR, length 12 words
    "12345678"  # sender SSRC 305419896
    "ea3f0a81"
    "80000000"  # NTP msw 3930000001, lsw 0x80000000
    "00027100"
    "00000064"
    "00003e80"  # RTP ts 160000, packets 100, octets 16000
    "87654321"  # block SSRC 2271560481
    "19000003"  # fraction lost 25, cumulative lost 3
    "00010064"
    "00000011"
    "0012d687"
    "00010000"  # highest seq, jitter, LSR, DLSR
    "81ca0006"  # V=2 SC=1, PT=202 SDES, length 6 words
    "12345678"
    "010f" + b"alice@192.0.2.1".hex() + "0000000000"[:6]
    # chunk: SSRC, CNAME item (type 1, 15 bytes), END, padding to 32 bits
)

RR_TWO_BLOCKS: dict[str, Any] = {
    "ssrc": 1,
    "type": 201,
    "report_count": 2,
    "report_blocks": [
        {
            "source_ssrc": 2,
            "highest_seq_no": 10,
            "fraction_lost": 0,
            "ia_jitter": 0,
            "packets_lost": 0xFFFFFF,  # -1 as a signed 24-bit count: its bits are kept
            "lsr": 0,
            "dlsr": 0,
        },
        {
            "source_ssrc": 0xFFFFFFFF,
            "highest_seq_no": 0xFFFFFFFF,
            "fraction_lost": 255,
            "ia_jitter": 0xFFFFFFFF,
            "packets_lost": 5,
            "lsr": 0xFFFFFFFF,
            "dlsr": 0xFFFFFFFF,
        },
    ],
}


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def msg(payload: bytes, ptype: int, *, proto: int = 17) -> HepMessage:
    return HepMessage(
        3, proto, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02", 40001, 30001, 10, payload, ptype,
        correlation_id=b"call-1",
    )  # fmt: skip


def test_rtpengine_sr_byte_exact() -> None:
    assert encode_rtcp(decode_rtcp_json(RTPENGINE_SR)) == RTPENGINE_SR_BYTES


def test_rtpengine_sr_scapy_reads_every_field() -> None:
    sr = RTCP(RTPENGINE_SR_BYTES)
    assert (sr.packet_type, sr.count, sr.sourcesync) == (200, 1, 305419896)
    info = sr.sender_info
    assert (info.ntp_timestamp, info.rtp_timestamp, info.sender_packet_count) == (
        3930000001 << 32 | 0x80000000,
        160000,
        100,
    )
    assert info.sender_octet_count == 16000
    (block,) = sr.report_blocks
    assert (block.sourcesync, block.fraction_lost, block.cumulative_lost) == (2271560481, 25, 3)
    assert (block.highest_seqnum_recv, block.interarrival_jitter) == (65636, 17)
    assert (block.last_SR_timestamp, block.delay_since_last_SR) == (1234567, 65536)
    sdes = RTCP(bytes(sr.payload))
    assert (sdes.packet_type, sdes.count) == (202, 1)
    (chunk,) = sdes.sdes_chunks
    assert chunk.sourcesync == 305419896
    assert next((i.chunk_type, i.value) for i in chunk.items) == (1, b"alice@192.0.2.1")


def test_receiver_report_two_blocks() -> None:
    data = encode_rtcp(decode_rtcp_json(js(RR_TWO_BLOCKS)))
    assert data[:8] == bytes.fromhex("82c9000d00000001")  # RC=2, PT=201, 13 words, SSRC 1
    assert data[8:16] == bytes.fromhex("0000000200ffffff")
    assert data[32:40] == bytes.fromhex("ffffffffff000005")
    assert len(data) == 4 * 14


@pytest.mark.parametrize("size", range(0, 9))
def test_sdes_chunk_padding(size: int) -> None:
    # RFC 3550 §6.5: an END byte, then zeros to the next 32-bit boundary (1..4 zero bytes).
    doc = {"sdes_report_count": 1, "sdes_information": [
        {"sdes_chunk_ssrc": 7, "type": 2, "text": "x" * size}]}  # fmt: skip
    data = encode_rtcp(decode_rtcp_json(js(doc)))
    chunk = data[4:]
    assert len(chunk) % 4 == 0
    assert chunk[:4] == b"\0\0\0\x07"
    assert chunk[4 : 6 + size] == bytes((2, size)) + b"x" * size
    assert set(chunk[6 + size :]) == {0}
    assert 1 <= len(chunk) - 6 - size <= 4
    assert int.from_bytes(data[2:4], "big") == len(data) // 4 - 1


def test_sdes_several_chunks_and_items() -> None:
    doc = {
        "sdes_report_count": 2,
        "sdes_information": [
            {"sdes_chunk_ssrc": 1, "type": 1, "text": "a@h"},
            {"sdes_chunk_ssrc": 1, "type": 6, "text": "tool"},
            {"sdes_chunk_ssrc": 2, "type": 1, "text": "b@h"},
        ],
    }
    report = decode_rtcp_json(js(doc))
    assert [(c.ssrc, c.items) for c in report.sdes] == [
        (1, ((1, b"a@h"), (6, b"tool"))),
        (2, ((1, b"b@h"),)),
    ]
    assert encode_rtcp(report) == bytes.fromhex(
        "82ca0007"  # SC=2, PT=202, 7 words
        "00000001"
        "0103614068"
        "0604746f6f6c"
        "00"  # a@h, tool, END (no more padding)
        "00000002"
        "0103624068"
        "000000"
    )


def test_sdes_chunk_without_items_is_left_out_and_noted() -> None:
    # rtpengine writes nothing for a chunk without items: its SSRC cannot be known.
    doc = {"ssrc": 1, "type": 201, "report_count": 0, "report_blocks": [],
           "sdes_report_count": 2,
           "sdes_information": [{"sdes_chunk_ssrc": 1, "type": 1, "text": "a"}]}  # fmt: skip
    out = render(msg(js(doc), 5))
    assert out.note is not None
    assert "1 of 2 chunks had no items" in out.note
    assert out.payload.endswith(bytes.fromhex("81ca00020000000101016100"))


def test_older_sdes_ssrc_form() -> None:
    # older rtpengine / captagent: "sdes_ssrc" once, items without a chunk SSRC
    doc = {"ssrc": 9, "type": 201, "report_count": 0, "report_blocks": [], "sdes_ssrc": 9,
           "sdes_report_count": 1, "sdes_information": [{"type": 1, "text": "c"}]}  # fmt: skip
    (chunk,) = decode_rtcp_json(js(doc)).sdes
    assert (chunk.ssrc, chunk.items) == (9, ((1, b"c"),))


def test_render_rtcp_message() -> None:
    out = render(msg(RTPENGINE_SR, 5, proto=0))  # Asterisk reports proto 0
    assert out.payload == RTPENGINE_SR_BYTES
    assert (out.ip_proto, out.src_port, out.dst_port, out.ts_us) == (17, 40001, 30001, 10)
    assert out.correlation_id == b"call-1"
    assert out.note is not None
    assert out.note.startswith(RTCP_NOTE)
    assert "written as UDP (HEP proto 0)" in out.note


def test_render_log_as_syslog() -> None:
    out = render(msg(b"call routed to bob", 100))
    assert out.payload == b"<14>call routed to bob"
    assert (out.src_port, out.dst_port, out.ip_proto) == (40001, 514, 17)
    assert out.note == "LOG as syslog to port 514 (HEP ports 40001 -> 30001)"


@pytest.mark.parametrize("ptype", [1, 4, 32, 200])
def test_other_types_unchanged(ptype: int) -> None:
    m = msg(b"\x80\x00payload", ptype)
    assert render(m) is m


# --- what the mapping does not understand: a named reason, never a half-right packet ------

UNMAPPED = {
    "unknown top key": {**RR_TWO_BLOCKS, "report_blocks_xr": {}},
    "unknown block key": {
        "ssrc": 1,
        "type": 201,
        "report_blocks": [{**RR_TWO_BLOCKS["report_blocks"][0], "extra": 1}],
    },
    "numeric string": {**RR_TWO_BLOCKS, "ssrc": "1"},
    "float": {**RR_TWO_BLOCKS, "ssrc": 1.0},
    "bool": {**RR_TWO_BLOCKS, "ssrc": True},
    "negative lsr (hepgen)": {
        "ssrc": 1,
        "type": 201,
        "report_blocks": [{**RR_TWO_BLOCKS["report_blocks"][0], "lsr": -1097006646}],
    },
    "fraction over 8 bits": {
        "ssrc": 1,
        "type": 201,
        "report_blocks": [{**RR_TWO_BLOCKS["report_blocks"][0], "fraction_lost": 256}],
    },
    "lost over 24 bits": {
        "ssrc": 1,
        "type": 201,
        "report_blocks": [{**RR_TWO_BLOCKS["report_blocks"][0], "packets_lost": 1 << 24}],
    },
    "ntp fraction over 32 bits": {
        "ssrc": 1,
        "type": 200,
        "sender_information": {
            "ntp_timestamp_sec": 1,
            "ntp_timestamp_usec": 13217348104192,
            "octets": 0,
            "rtp_timestamp": 0,
            "packets": 0,
        },
    },
    "report_count mismatch": {**RR_TWO_BLOCKS, "report_count": 0},
    "SDES type": {"ssrc": 1, "type": 202},
    "BYE type": {"ssrc": 1, "type": 203},
    "SR without sender info": {"ssrc": 1, "type": 200},
    "RR with sender info": {**RR_TWO_BLOCKS, "sender_information": {}},
    "missing ssrc": {"type": 201},
    "nothing": {},
    "END item": {"sdes_information": [{"sdes_chunk_ssrc": 1, "type": 0, "text": ""}]},
    "long text": {"sdes_information": [{"sdes_chunk_ssrc": 1, "type": 1, "text": "x" * 256}]},
    "no chunk ssrc": {"sdes_information": [{"type": 1, "text": "x"}]},
    "more chunks than counted": {
        "sdes_report_count": 0,
        "sdes_information": [{"sdes_chunk_ssrc": 1, "type": 1, "text": "x"}],
    },
    "blocks not a list": {"ssrc": 1, "type": 201, "report_blocks": {}},
    "block not an object": {"ssrc": 1, "type": 201, "report_blocks": [1]},
}


@pytest.mark.parametrize("doc", UNMAPPED.values(), ids=UNMAPPED.keys())
def test_unmapped(doc: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as info:
        render(msg(js(doc), 5))
    assert info.value.reason is Reason.RTCP_JSON_UNMAPPED


def test_duplicate_key_is_unmapped() -> None:
    # two RR packets in one compound: rtpengine writes "ssrc", "type", … twice
    with pytest.raises(RenderError) as info:
        decode_rtcp_json(b'{"ssrc":1,"type":201,"report_blocks":[],"ssrc":2,"type":201}')
    assert info.value.reason is Reason.RTCP_JSON_UNMAPPED
    assert "twice" in info.value.detail


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1, 2]", b"42", b'"text"', b"\xff\xfe", b"{" * 2000, b"[" * 100_000],
)
def test_invalid(payload: bytes) -> None:
    with pytest.raises(RenderError) as info:
        render(msg(payload, 5))
    assert info.value.reason is Reason.RTCP_JSON_INVALID


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_render_or_render_error(data: bytes) -> None:
    with contextlib.suppress(RenderError):
        render(msg(data, 5))


U32 = st.integers(0, 0xFFFFFFFF)
BLOCK = st.fixed_dictionaries(
    {
        "source_ssrc": U32,
        "highest_seq_no": U32,
        "fraction_lost": st.integers(0, 255),
        "ia_jitter": U32,
        "packets_lost": st.integers(0, 0xFFFFFF),
        "lsr": U32,
        "dlsr": U32,
    }
)


@given(
    st.sampled_from([200, 201]),
    U32,
    st.lists(BLOCK, max_size=31),
    st.tuples(U32, U32, U32, U32, U32),
    st.lists(st.tuples(st.integers(1, 8), st.text("abc@. ", max_size=40)), max_size=5),
)  # scapy 2.5 misreads SDES (the END byte and several chunks): checked by hand above
def test_any_report_scapy_agrees(
    ptype: int,
    ssrc: int,
    blocks: list[dict[str, int]],
    sender: tuple[int, int, int, int, int],
    items: list[tuple[int, str]],
) -> None:
    doc: dict[str, Any] = {"ssrc": ssrc, "type": ptype, "report_count": len(blocks),
                           "report_blocks": blocks}  # fmt: skip
    if ptype == 200:
        doc["sender_information"] = dict(
            zip(("ntp_timestamp_sec", "ntp_timestamp_usec", "rtp_timestamp", "packets",
                 "octets"), sender, strict=True))  # fmt: skip
    if items:
        doc["sdes_report_count"] = 1
        doc["sdes_information"] = [
            {"sdes_chunk_ssrc": ssrc, "type": t, "text": x} for t, x in items
        ]
    data = encode_rtcp(decode_rtcp_json(js(doc)))
    pkt = RTCP(data)
    assert (pkt.packet_type, pkt.count, pkt.sourcesync) == (ptype, len(blocks), ssrc)
    assert (pkt.length + 1) * 4 == len(data) - (len(bytes(pkt.payload)) if items else 0)
    got = [
        (b.sourcesync, b.fraction_lost, b.cumulative_lost, b.highest_seqnum_recv,
         b.interarrival_jitter, b.last_SR_timestamp, b.delay_since_last_SR)
        for b in pkt.report_blocks
    ]  # fmt: skip
    keys = ("source_ssrc", "fraction_lost", "packets_lost", "highest_seq_no", "ia_jitter", "lsr",
            "dlsr")  # fmt: skip
    assert got == [tuple(b[k] for k in keys) for b in blocks]
    if ptype == 200:
        info = pkt.sender_info
        assert info.ntp_timestamp == sender[0] << 32 | sender[1]
        assert (info.rtp_timestamp, info.sender_packet_count) == sender[2:4]
        assert info.sender_octet_count == sender[4]
    if items:  # the SDES packet follows, its items in order
        sdes = data[(pkt.length + 1) * 4 :]
        body = b"".join(bytes((t, len(x))) + x.encode() for t, x in items)
        assert sdes[4 : 8 + len(body)] == ssrc.to_bytes(4, "big") + body
        assert sdes[:2] == bytes((0x81, 202))


# --- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [("100", 100), ("0x64", 100), ("log", 100), ("LOG", 100), ("rtcp", 5), ("RTCP-JSON", 5),
     ("rtp", 4), ("sip", 1), ("qos-json", 0x20), ("m3ua", 9), ("255", 255)],
)  # fmt: skip
def test_parse_payload_type(text: str, code: int) -> None:
    assert parse_payload_type(text) == code


@pytest.mark.parametrize("text", ["256", "-1", "syslog", ""])
def test_parse_payload_type_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="payload type"):
        parse_payload_type(text)


@pytest.mark.parametrize(
    ("ptype", "name", "ppid"), [(8, "M2UA", 2), (9, "M3UA", 3), (13, "M2PA", 5)]
)
def test_sigtran_marked_for_sctp(ptype: int, name: str, ppid: int) -> None:
    out = render(msg(b"\x01\x00\x03\x01\x00\x00\x00\x08", ptype, proto=132))
    assert out.payload == b"\x01\x00\x03\x01\x00\x00\x00\x08"
    assert out.note == f"{name} as SCTP DATA (PPID {ppid})"
    assert render(msg(b"x", ptype)).note == f"{name} as SCTP DATA (PPID {ppid}); HEP proto 17"
