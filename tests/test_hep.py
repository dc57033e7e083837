"""Unit tests for hep2pcap.hep: golden v1/v2/v3 messages, every decode-time §11 reason,
sender quirks of HEP-SPEC §10, chunk order independence, inflate and timestamp repair."""

from __future__ import annotations

import gzip
import importlib
import inspect
import itertools
import zlib
from collections import Counter
from collections.abc import Callable

import pytest
from hepbuild import (
    SIP,
    TS_SEC,
    TS_US,
    TS_USEC,
    base_chunks,
    chunk,
    hep3,
    ip,
    u8,
    u16,
    u32,
    v2_time,
    v3,
    v12,
)

from hep2pcap.errors import DecodeError, Reason
from hep2pcap.hep import (
    DEFAULT_OPTIONS,
    MAX_INFLATED_PAYLOAD,
    NTP_EPOCH_OFFSET_S,
    ChunkType,
    DecodeOptions,
    HepMessage,
    decode,
    encode,
    inflate,
    repair_timestamp,
)

STRICT = DecodeOptions(strict=True)
LENIENT = DecodeOptions(lenient=True)
RECEIVE_TIME = DecodeOptions(use_receive_time=True)
BASE = v3()
BASE_LEN = len(BASE)
# Offsets of the base message's chunks (see hepbuild.BASE_V3).
OFF_SRC_PORT = 6 + 7 + 7 + 10 + 10
OFF_PAYLOAD = 6 + 7 + 7 + 10 + 10 + 8 + 8 + 10 + 10 + 7 + 10


def expect(
    reason: Reason,
    offset: int,
    data: bytes,
    options: DecodeOptions = DEFAULT_OPTIONS,
    ref_time_us: int | None = None,
) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data, ref_time_us, options)
    assert info.value.reason is reason, info.value
    assert info.value.offset == offset, info.value
    assert str(info.value).startswith(f"{reason.value} at offset {offset}: ")
    return info.value


# --- HEP-SPEC §13 worked example ---------------------------------------------------------

SPEC_EXAMPLE = (
    b"HEP3\x00\x71"  # magic, total length 113
    b"\x00\x00\x00\x01\x00\x07\x02"  # family: AF_INET
    b"\x00\x00\x00\x02\x00\x07\x11"  # IP protocol: 17 (UDP)
    b"\x00\x00\x00\x03\x00\x0a\xd4\xca\x00\x01"  # IPv4 source 212.202.0.1
    b"\x00\x00\x00\x04\x00\x0a\x52\x74\x00\xd3"  # IPv4 destination 82.116.0.211
    b"\x00\x00\x00\x07\x00\x08\x2e\xea"  # source port 12010
    b"\x00\x00\x00\x08\x00\x08\x13\xc4"  # destination port 5060
    b"\x00\x00\x00\x09\x00\x0a\x4e\x49\x82\xcb"  # seconds 1313440459
    b"\x00\x00\x00\x0a\x00\x0a\x00\x01\xd4\xc0"  # microseconds 120000
    b"\x00\x00\x00\x0b\x00\x07\x01"  # payload type: SIP
    b"\x00\x00\x00\x0c\x00\x0a\x00\x00\x00\xe4"  # capture id 228
    b"\x00\x00\x00\x0f\x00\x14INVITE sip:bob"  # payload
)


def test_spec_example_layout() -> None:
    assert len(SPEC_EXAMPLE) == 113
    assert SPEC_EXAMPLE[:6].hex() == "484550330071"
    lengths, pos = [], 6
    while pos < len(SPEC_EXAMPLE):
        lengths.append(int.from_bytes(SPEC_EXAMPLE[pos + 4 : pos + 6], "big"))
        pos += lengths[-1]
    assert lengths == [7, 7, 10, 10, 8, 8, 10, 10, 7, 10, 20]


def test_spec_example_decodes_to_documented_fields() -> None:
    msg = decode(SPEC_EXAMPLE)
    assert msg == HepMessage(
        version=3,
        ip_proto=17,
        src_ip=bytes([212, 202, 0, 1]),
        dst_ip=bytes([82, 116, 0, 211]),
        src_port=12010,
        dst_port=5060,
        ts_us=1313440459_120000,
        payload=b"INVITE sip:bob",
        payload_type=1,
        capture_id=228,
    )
    assert msg.warnings == ()
    assert msg.ip_version == 4


def test_spec_example_encodes_back_to_the_same_bytes() -> None:
    assert encode(decode(SPEC_EXAMPLE)) == SPEC_EXAMPLE


# --- v3 golden cases ----------------------------------------------------------------------

V3_IPV6_TCP = (
    b"HEP3\x00\x98"
    b"\x00\x00\x00\x01\x00\x07\x0a"  # family 10 (Linux AF_INET6)
    b"\x00\x00\x00\x02\x00\x07\x06"  # TCP
    b"\x00\x00\x00\x05\x00\x16\x20\x01\x0d\xb8" + bytes(11) + b"\x01"  # 2001:db8::1
    b"\x00\x00\x00\x06\x00\x16\x20\x01\x0d\xb8" + bytes(11) + b"\x02"  # 2001:db8::2
    b"\x00\x00\x00\x07\x00\x08\x13\xc5"  # 5061
    b"\x00\x00\x00\x08\x00\x08\xc3\x50"  # 50000
    b"\x00\x00\x00\x09\x00\x0a\x65\x53\xf1\x00"  # 1700000000
    b"\x00\x00\x00\x0a\x00\x0a\x00\x00\x00\x07"  # 7 us
    b"\x00\x00\x00\x0b\x00\x07\x01"
    b"\x00\x00\x00\x0e\x00\x0aabcd"  # auth key
    b"\x00\x00\x00\x11\x00\x09c-1"  # correlation id
    b"\x00\x00\x00\x13\x00\x08n1"  # node name
    b"\x00\x00\x00\x12\x00\x08\x00\x64"  # VLAN 100
    b"\x00\x00\x00\x0f\x00\x0aBYE!"
)


def test_v3_ipv6_golden() -> None:
    assert len(V3_IPV6_TCP) == 0x98
    msg = decode(V3_IPV6_TCP)
    assert msg == HepMessage(
        version=3,
        ip_proto=6,
        src_ip=ip("2001:db8::1"),
        dst_ip=ip("2001:db8::2"),
        src_port=5061,
        dst_port=50000,
        ts_us=1_700_000_000_000_007,
        payload=b"BYE!",
        payload_type=1,
        capture_id=None,
        auth_key=b"abcd",
        correlation_id=b"c-1",
        node_name="n1",
        vlan_id=100,
    )
    assert msg.warnings == ()
    assert msg.ip_version == 6


COMPRESSED_SIP = b"INVITE sip:bob SIP/2.0\r\n\r\n"
ZLIB_SIP = (
    b"x\x9c\xf3\xf4\x0b\xf3\x0cqU(\xce,\xb0J\xcaOR\x08\xf6\x0c\xd07\xd23\xe0\xe5\xe2\xe5\x02"
    b"\x00h\xf2\x06\xa2"
)
GZIP_SIP = (
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xf3\xf4\x0b\xf3\x0cqU(\xce,\xb0J\xcaOR\x08\xf6"
    b"\x0c\xd07\xd23\xe0\xe5\xe2\xe5\x02\x00o\x88y5\x1a\x00\x00\x00"
)
DEFLATE_SIP = (
    b"\xf3\xf4\x0b\xf3\x0cqU(\xce,\xb0J\xcaOR\x08\xf6\x0c\xd07\xd23\xe0\xe5\xe2\xe5\x02\x00"
)


@pytest.mark.parametrize("packed", [ZLIB_SIP, GZIP_SIP, DEFLATE_SIP], ids=["zlib", "gzip", "raw"])
def test_v3_compressed_payload(packed: bytes) -> None:
    msg = decode(v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, packed)))
    assert msg.payload == COMPRESSED_SIP
    assert msg.compressed is True
    assert msg.warnings == ()


def test_compressed_literals_are_what_they_claim() -> None:
    assert zlib.decompress(ZLIB_SIP) == COMPRESSED_SIP
    assert gzip.decompress(GZIP_SIP) == COMPRESSED_SIP
    assert zlib.decompress(DEFLATE_SIP, -15) == COMPRESSED_SIP


def test_v3_base_message_decodes() -> None:
    msg = decode(BASE)
    assert (msg.src_ip, msg.dst_ip) == (ip("192.0.2.1"), ip("192.0.2.2"))
    assert (msg.src_port, msg.dst_port, msg.ts_us) == (5060, 5080, TS_US)
    assert (msg.payload, msg.payload_type, msg.capture_id) == (SIP, 1, 2001)
    assert msg.warnings == ()


def test_empty_value_chunks_are_allowed() -> None:
    # HEP-SPEC §3.2: a value may be empty (length exactly 6).
    msg = decode(v3({}, (0, ChunkType.CORRELATION_ID, b""), (0, ChunkType.NODE_NAME, b"")))
    assert msg.correlation_id == b""
    assert msg.node_name == ""


def test_missing_ip_proto_is_treated_as_unset() -> None:
    assert decode(v3({ChunkType.IP_PROTO: None})).ip_proto == 0


def test_unknown_ip_proto_kept_with_udp_fallback() -> None:
    msg = decode(v3({ChunkType.IP_PROTO: u8(99)}), None, DecodeOptions(unknown_proto_udp=True))
    assert msg.ip_proto == 99


@pytest.mark.parametrize("proto", [0, 6, 17, 22, 50, 132])
def test_known_ip_protos_accepted(proto: int) -> None:
    assert decode(v3({ChunkType.IP_PROTO: u8(proto)})).ip_proto == proto


def test_node_name_invalid_utf8_is_replaced() -> None:
    msg = decode(v3({}, (0, ChunkType.NODE_NAME, b"n\xff")))
    assert msg.node_name == "n\ufffd"


# --- v1 / v2 golden cases (HEP-SPEC §2) ------------------------------------------------------

V1_IPV4 = (
    b"\x01\x10\x02\x11"  # v1, header length 16, AF_INET, UDP
    b"\x13\xc4\x13\xd8"  # 5060 -> 5080
    b"\xc0\x00\x02\x01"  # 192.0.2.1
    b"\xc0\x00\x02\x02"  # 192.0.2.2
    b"SIP/2.0 200 OK\r\n\r\n"
)
V1_IPV6 = (
    b"\x01\x28\x0a\x06"  # v1, header length 40, AF_INET6 (Linux), TCP
    b"\x13\xc4\x13\xd8"
    b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01"
    b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02"
    b"SIP/2.0 200 OK\r\n\r\n"
)
V2_IPV4 = (
    b"\x02\x10\x02\x11"  # v2, header length 16 (Kamailio: time header not counted)
    b"\x13\xc4\x13\xd8"
    b"\xc0\x00\x02\x01"
    b"\xc0\x00\x02\x02"
    b"\x00\xf1\x53\x65"  # seconds 1700000000, little-endian
    b"\x40\xe2\x01\x00"  # microseconds 123456, little-endian
    b"\xd1\x07"  # capture node 2001, little-endian
    b"\xab\xcd"  # padding (junk)
    b"SIP/2.0 200 OK\r\n\r\n"
)
V2_IPV6 = (
    b"\x02\x34\x0a\x16"  # v2, header length 52 (FreeSWITCH: time header counted), TLS (22)
    b"\x13\xc5\x13\xc5"  # 5061 -> 5061
    b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01"
    b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02"
    b"\x00\xf1\x53\x65"
    b"\x40\xe2\x01\x00"
    b"\xd1\x07"
    b"\x00\x00"
    b"SIP/2.0 200 OK\r\n\r\n"
)
REPLY = b"SIP/2.0 200 OK\r\n\r\n"


def test_v1_ipv4_golden() -> None:
    msg = decode(V1_IPV4)
    assert msg == HepMessage(1, 17, ip("192.0.2.1"), ip("192.0.2.2"), 5060, 5080, None, REPLY)
    assert msg.capture_id is None
    assert msg.warnings == (Reason.TS_RECEIVE_TIME,)  # v1 has no time: the caller's is used


def test_v1_ipv6_golden() -> None:
    msg = decode(V1_IPV6)
    assert msg == HepMessage(1, 6, ip("2001:db8::1"), ip("2001:db8::2"), 5060, 5080, None, REPLY)
    assert msg.warnings == (Reason.TS_RECEIVE_TIME,)


def test_v2_ipv4_golden() -> None:
    msg = decode(V2_IPV4)
    assert msg == HepMessage(
        2, 17, ip("192.0.2.1"), ip("192.0.2.2"), 5060, 5080, TS_US, REPLY, capture_id=2001
    )
    assert msg.warnings == ()


def test_v2_ipv6_golden() -> None:
    msg = decode(V2_IPV6)
    assert msg == HepMessage(
        2, 22, ip("2001:db8::1"), ip("2001:db8::2"), 5061, 5061, TS_US, REPLY, capture_id=2001
    )
    assert msg.warnings == ()


@pytest.mark.parametrize(
    ("fam", "src", "hdr_len", "warned"),
    [
        (2, "192.0.2.1", 16, False),
        (2, "192.0.2.1", 28, False),
        (2, "192.0.2.1", 0x55, True),  # sngrep writes junk
        (2, "192.0.2.1", 0, True),
        (10, "2001:db8::1", 40, False),
        (28, "2001:db8::1", 52, False),
        (30, "2001:db8::1", 40, False),
        (23, "2001:db8::1", 52, False),
        (10, "2001:db8::1", 16, False),  # advisory only: 16 is a valid value, just not for v6
        (23, "2001:db8::1", 0xFF, True),
    ],
)
def test_v2_header_length_and_af_inet6_values(
    fam: int, src: str, hdr_len: int, warned: bool
) -> None:
    s = ip(src)
    d = bytes(len(s) - 1) + b"\x09"
    data = v12(2, fam, s, d, hdr_len=hdr_len, time=v2_time(TS_SEC, TS_USEC, 7), payload=REPLY)
    msg = decode(data)
    assert (msg.version, msg.src_ip, msg.dst_ip, msg.ts_us) == (2, s, d, TS_US)
    assert (msg.capture_id, msg.payload) == (7, REPLY)
    assert msg.warnings == ((Reason.V12_HEADER_LENGTH,) if warned else ())


@pytest.mark.parametrize("fam", [10, 28, 30, 23])
def test_v1_af_inet6_values(fam: int) -> None:
    msg = decode(v12(1, fam, ip("::1"), ip("::2"), payload=REPLY))
    assert (msg.src_ip, msg.dst_ip, msg.payload, msg.ts_us) == (ip("::1"), ip("::2"), REPLY, None)


def test_v2_payload_starts_after_time_header_whatever_the_header_length_byte() -> None:
    # HEP-SPEC §2.3: offsets come from version + family, never from the header-length byte.
    data = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), hdr_len=28, time=v2_time(TS_SEC, 0, 1))
    assert decode(data).payload == SIP


def test_v2_big_endian_time_is_detected() -> None:
    data = v12(
        2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, TS_USEC, 2001, order="big")
    )
    msg = decode(data)
    assert (msg.ts_us, msg.capture_id) == (TS_US, 2001)
    assert msg.warnings == (Reason.V2_TIME_BIG_ENDIAN,)


# --- HEP-SPEC §10 sender quirks ----------------------------------------------------------------


def test_hepjs_ipv4_chunks_with_ipv6_family() -> None:
    # hep-js always writes IPv4 address chunks and a node name, even if the family says IPv6.
    msg = decode(v3({ChunkType.IP_FAMILY: u8(10)}, (0, ChunkType.NODE_NAME, b"hepjs")))
    assert (msg.src_ip, msg.dst_ip) == (ip("192.0.2.1"), ip("192.0.2.2"))
    assert msg.node_name == "hepjs"
    assert msg.warnings == (Reason.FAMILY_MISMATCH,)


def test_ipv6_chunks_with_ipv4_family_trusts_addresses() -> None:
    data = v3(
        {ChunkType.SRC_IP4: None, ChunkType.DST_IP4: None},
        (0, ChunkType.SRC_IP6, ip("2001:db8::1")),
        (0, ChunkType.DST_IP6, ip("2001:db8::2")),
    )
    msg = decode(data)
    assert msg.src_ip == ip("2001:db8::1")
    assert msg.warnings == (Reason.FAMILY_MISMATCH,)


def test_both_families_present_family_chunk_picks() -> None:
    six = [(0, ChunkType.SRC_IP6, ip("2001:db8::1")), (0, ChunkType.DST_IP6, ip("2001:db8::2"))]
    assert decode(v3({}, *six)).src_ip == ip("192.0.2.1")
    assert decode(v3({ChunkType.IP_FAMILY: u8(10)}, *six)).src_ip == ip("2001:db8::1")


def test_freeswitch_all_zero_ipv6_addresses_accepted() -> None:
    data = v3(
        {
            ChunkType.IP_FAMILY: u8(10),
            ChunkType.SRC_IP4: None,
            ChunkType.DST_IP4: None,
            ChunkType.CAPTURE_ID: u32(200),
        },
        (0, ChunkType.SRC_IP6, bytes(16)),
        (0, ChunkType.DST_IP6, bytes(16)),
    )
    msg = decode(data)
    assert (msg.src_ip, msg.dst_ip, msg.capture_id) == (bytes(16), bytes(16), 200)
    assert msg.warnings == ()


def test_wildcard_ipv4_local_address_accepted() -> None:
    assert decode(v3({ChunkType.SRC_IP4: bytes(4)})).src_ip == bytes(4)


def test_freeswitch_windows_ntp_epoch_repaired() -> None:
    msg = decode(v3({ChunkType.TS_SEC: u32(TS_SEC + NTP_EPOCH_OFFSET_S)}))
    assert msg.ts_us == TS_US
    assert msg.warnings == (Reason.TS_NTP_EPOCH,)


def test_sngrep_shifted_capture_id_reported_as_is() -> None:
    # sngrep 1.6 writes capture id 2002 as 07d2 0000.
    msg = decode(v3({ChunkType.CAPTURE_ID: b"\x07\xd2\x00\x00"}))
    assert msg.capture_id == 131203072
    assert msg.warnings == ()


def test_opensips_chunks_after_payload_and_gzip() -> None:
    chunks = base_chunks({ChunkType.PAYLOAD: None, ChunkType.IP_PROTO: u8(50)})
    data = hep3(
        *chunks,
        (0, ChunkType.COMPRESSED_PAYLOAD, GZIP_SIP),
        (0, ChunkType.CORRELATION_ID, b"call-1@host"),
        (0, ChunkType.EXTRA_CORRELATION, b'{"x":1}'),
    )
    msg = decode(data)
    assert (msg.payload, msg.compressed) == (COMPRESSED_SIP, True)
    assert msg.correlation_id == b"call-1@host"
    assert msg.ip_proto == 50
    assert msg.warnings == ()


@pytest.mark.parametrize("vendor", [1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFFFF])
def test_vendor_chunks_skipped_not_interpreted(vendor: int) -> None:
    # A vendor chunk that reuses generic type numbers with nonsense sizes must not be read.
    data = v3(
        {},
        (vendor, ChunkType.PAYLOAD, b"not the payload"),
        (vendor, ChunkType.SRC_PORT, b"\x01\x02\x03"),
        (vendor, 0, b""),
    )
    msg = decode(data)
    assert msg.payload == SIP
    assert msg.src_port == 5060
    assert msg.warnings == (Reason.VENDOR_CHUNK_SKIPPED,) * 3


def test_asterisk_proto_zero_rtcp_json_with_correlation() -> None:
    data = v3(
        {ChunkType.IP_PROTO: u8(0), ChunkType.PAYLOAD_TYPE: u8(5), ChunkType.PAYLOAD: b"{}"},
        (0, ChunkType.CORRELATION_ID, b"PJSIP/alice-0001"),
    )
    msg = decode(data)
    assert (msg.ip_proto, msg.payload_type, msg.payload) == (0, 5, b"{}")


def test_rtpengine_byte_swapped_timestamp_repaired() -> None:
    swapped = {
        ChunkType.TS_SEC: TS_SEC.to_bytes(4, "little"),
        ChunkType.TS_USEC: TS_USEC.to_bytes(4, "little"),
    }
    msg = decode(v3(swapped))
    assert msg.ts_us == TS_US
    assert msg.warnings == (Reason.TS_BYTE_SWAPPED,)


def test_heplify_extra_chunks() -> None:
    extra = [
        (0, ChunkType.VLAN_ID, u16(0)),
        (0, ChunkType.NODE_NAME, b"heplify"),
        (0, ChunkType.TCP_FLAGS, u8(0x18)),
        (0, ChunkType.IP_TOS, u8(0)),
        (0, ChunkType.MOS, u16(438)),
        (0, ChunkType.SRC_MAC, bytes(8)),
        (0, ChunkType.DST_MAC, bytes(8)),
        (0, ChunkType.ETHERNET_TYPE, u16(0x0800)),
    ]
    msg = decode(v3({}, *extra))
    assert (msg.vlan_id, msg.node_name) == (0, "heplify")
    assert msg.warnings == ()


def test_bare_lf_payload_accepted() -> None:
    assert decode(v3({ChunkType.PAYLOAD: b"OPTIONS sip:a SIP/2.0\n\n"})).payload.endswith(b"\n\n")


# --- chunk order independence (HEP-SPEC §10 "never depend on chunk order") -----------------


def test_every_permutation_of_a_small_message_decodes_identically() -> None:
    chunks = [
        (0, ChunkType.SRC_IP4, ip("10.1.1.1")),
        (0, ChunkType.DST_IP4, ip("10.1.1.2")),
        (0, ChunkType.SRC_PORT, u16(1)),
        (0, ChunkType.DST_PORT, u16(2)),
        (0, ChunkType.TS_SEC, u32(TS_SEC)),
        (0, ChunkType.TS_USEC, u32(5)),
        (0, ChunkType.PAYLOAD, b"x"),
    ]
    reference = decode(hep3(*chunks))
    seen = 0
    for perm in itertools.permutations(chunks):
        msg = decode(hep3(*perm))
        assert msg == reference
        assert msg.warnings == ()
        seen += 1
    assert seen == 5040


# --- HEP-SPEC §11: one test per reason decode() produces -----------------------------------


def test_truncated_header_empty() -> None:
    expect(Reason.TRUNCATED_HEADER, 0, b"")


@pytest.mark.parametrize("data", [b"H", b"HEP3", b"HEP3\x00", b"EEP3\x00"])
def test_truncated_header(data: bytes) -> None:
    expect(Reason.TRUNCATED_HEADER, 0, data)


@pytest.mark.parametrize("magic", [b"HEP2", b"HEPX", b"Hep3", b"EEP3", b"EXXX"])
def test_bad_magic(magic: bytes) -> None:
    expect(Reason.BAD_MAGIC, 0, magic + BASE[4:])


def test_eep_alias_rejected_unless_lenient() -> None:
    data = b"EEP3" + BASE[4:]
    expect(Reason.BAD_MAGIC, 0, data)
    msg = decode(data, None, LENIENT)
    assert msg == decode(BASE)
    assert msg.warnings == (Reason.EEP_ALIAS,)


@pytest.mark.parametrize("total", [0, 1, 5])
def test_length_too_small(total: int) -> None:
    expect(Reason.LENGTH_TOO_SMALL, 4, b"HEP3" + u16(total) + BASE[6:])


def test_empty_message() -> None:
    expect(Reason.EMPTY_MESSAGE, 4, b"HEP3\x00\x06")
    expect(Reason.EMPTY_MESSAGE, 4, b"HEP3\x00\x06" + BASE[6:])  # with trailing bytes


@pytest.mark.parametrize("missing", [1, 7, BASE_LEN - 7])
def test_length_exceeds_data(missing: int) -> None:
    expect(Reason.LENGTH_EXCEEDS_DATA, 4, BASE[:-missing])


def test_trailing_bytes_warns_and_keeps_message() -> None:
    msg = decode(BASE + b"\0\0\0")
    assert msg == decode(BASE)
    assert msg.warnings == (Reason.TRAILING_BYTES,)


def test_trailing_bytes_rejected_in_strict_mode() -> None:
    expect(Reason.TRAILING_BYTES, BASE_LEN, BASE + b"HEP3", STRICT)


@pytest.mark.parametrize("left", [b"\x00", b"\x00\x00\x00\x11\x00"])
def test_chunk_header_truncated(left: bytes) -> None:
    expect(Reason.CHUNK_HEADER_TRUNCATED, BASE_LEN, v3({}, left))


@pytest.mark.parametrize("length", [0, 1, 5])
def test_chunk_length_too_small(length: int) -> None:
    expect(Reason.CHUNK_LENGTH_TOO_SMALL, BASE_LEN, v3({}, chunk(0, 0x11, b"ab", length)))


def test_chunk_length_too_small_in_first_chunk() -> None:
    expect(Reason.CHUNK_LENGTH_TOO_SMALL, 6, hep3(chunk(0, 1, b"\x02", 0), *base_chunks()))


@pytest.mark.parametrize("length", [9, 100, 0xFFFF])
def test_chunk_overrun(length: int) -> None:
    expect(Reason.CHUNK_OVERRUN, BASE_LEN, v3({}, chunk(0, 0x11, b"ab", length)))


def test_chunk_overrun_of_vendor_chunk() -> None:
    expect(Reason.CHUNK_OVERRUN, BASE_LEN, v3({}, chunk(3, 0x11, b"ab", 9)))


def test_chunk_type_zero() -> None:
    expect(Reason.CHUNK_TYPE_ZERO, BASE_LEN, v3({}, (0, 0, b"x")))


@pytest.mark.parametrize(
    ("ctype", "value"),
    [
        (ChunkType.IP_FAMILY, b"\x00\x02"),  # u8
        (ChunkType.IP_PROTO, b""),
        (ChunkType.SRC_IP4, ip("::1")),  # inet4
        (ChunkType.SRC_IP6, ip("10.0.0.1")),  # inet6
        (ChunkType.SRC_PORT, b"\x13\xc4\x00"),  # u16
        (ChunkType.TS_SEC, b"\x65\x53\xf1"),  # u32
        (ChunkType.CAPTURE_ID, bytes(8)),
        (ChunkType.SRC_MAC, bytes(6)),  # u64
        (ChunkType.VLAN_ID, b"\x01"),
    ],
)
def test_chunk_bad_size(ctype: int, value: bytes) -> None:
    expect(Reason.CHUNK_BAD_SIZE, BASE_LEN, v3({}, (0, ctype, value)))


def test_chunk_bad_size_offset_inside_message() -> None:
    expect(Reason.CHUNK_BAD_SIZE, OFF_SRC_PORT, v3({ChunkType.SRC_PORT: b"\x13"}))


def test_duplicate_chunk_warns_and_keeps_last() -> None:
    msg = decode(v3({}, (0, ChunkType.DST_PORT, u16(9999))))
    assert msg.dst_port == 9999
    assert msg.warnings == (Reason.DUPLICATE_CHUNK,)


def test_duplicate_chunk_rejected_in_strict_mode() -> None:
    expect(Reason.DUPLICATE_CHUNK, BASE_LEN, v3({}, (0, ChunkType.DST_PORT, u16(9999))), STRICT)


def test_vendor_chunk_skipped() -> None:
    msg = decode(v3({}, (1, 0x0999, b"freeswitch private")))
    assert msg == decode(BASE)
    assert msg.warnings == (Reason.VENDOR_CHUNK_SKIPPED,)


@pytest.mark.parametrize("ctype", [0x0019, 0x001F, 0x002A, 0x0064, 0x0066, 0xFFFF])
def test_unknown_chunk_skipped(ctype: int) -> None:
    msg = decode(v3({}, (0, ctype, b"\x01\x02\x03")))
    assert msg == decode(BASE)
    assert msg.warnings == (Reason.UNKNOWN_CHUNK,)


def test_missing_src_addr() -> None:
    expect(Reason.MISSING_SRC_ADDR, 0, v3({ChunkType.SRC_IP4: None}))


def test_missing_dst_addr() -> None:
    expect(Reason.MISSING_DST_ADDR, 0, v3({ChunkType.DST_IP4: None}))


def test_missing_both_addresses() -> None:
    expect(Reason.MISSING_SRC_ADDR, 0, v3({ChunkType.SRC_IP4: None, ChunkType.DST_IP4: None}))


def test_missing_dst_addr_ipv6() -> None:
    data = v3(
        {ChunkType.SRC_IP4: None, ChunkType.DST_IP4: None},
        (0, ChunkType.SRC_IP6, ip("::1")),
    )
    expect(Reason.MISSING_DST_ADDR, 0, data)


def test_mixed_address_family() -> None:
    expect(
        Reason.MIXED_ADDRESS_FAMILY,
        0,
        v3({ChunkType.DST_IP4: None}, (0, ChunkType.DST_IP6, ip("2001:db8::2"))),
    )


def test_family_mismatch_warns() -> None:
    msg = decode(v3({ChunkType.IP_FAMILY: u8(28)}))
    assert msg.src_ip == ip("192.0.2.1")
    assert msg.warnings == (Reason.FAMILY_MISMATCH,)


def test_unknown_family_value_is_a_mismatch_warning() -> None:
    assert decode(v3({ChunkType.IP_FAMILY: u8(7)})).warnings == (Reason.FAMILY_MISMATCH,)


def test_missing_family_chunk_is_fine() -> None:
    assert decode(v3({ChunkType.IP_FAMILY: None})).warnings == ()


@pytest.mark.parametrize("ctype", [ChunkType.SRC_PORT, ChunkType.DST_PORT])
def test_missing_ports(ctype: int) -> None:
    expect(Reason.MISSING_PORTS, 0, v3({ctype: None}))


def test_zero_ports_accepted() -> None:
    msg = decode(v3({ChunkType.SRC_PORT: u16(0), ChunkType.DST_PORT: u16(0)}))
    assert (msg.src_port, msg.dst_port) == (0, 0)


def test_missing_timestamp() -> None:
    expect(Reason.MISSING_TIMESTAMP, 0, v3({ChunkType.TS_SEC: None}))


def test_missing_usec_warns_and_uses_zero() -> None:
    msg = decode(v3({ChunkType.TS_USEC: None}))
    assert msg.ts_us == TS_SEC * 1_000_000
    assert msg.warnings == (Reason.MISSING_USEC,)


def test_ts_receive_time_when_seconds_missing() -> None:
    msg = decode(v3({ChunkType.TS_SEC: None}), None, RECEIVE_TIME)
    assert msg.ts_us is None
    assert msg.warnings == (Reason.TS_RECEIVE_TIME,)


def test_ts_receive_time_when_both_zero() -> None:
    data = v3({ChunkType.TS_SEC: u32(0), ChunkType.TS_USEC: u32(0)})
    expect(Reason.BAD_TIMESTAMP, 0, data)
    msg = decode(data, None, RECEIVE_TIME)
    assert msg.ts_us is None
    assert msg.warnings == (Reason.TS_RECEIVE_TIME,)


@pytest.mark.parametrize(
    ("sec", "usec", "ref_s"),
    [
        (0, 5, None),  # 1970
        (946684799, 0, None),  # one second before 2000-01-01
        (TS_SEC + 86401, 0, TS_SEC),  # more than a day after the receive time
        (TS_SEC, 1_000_000, None),  # usec out of range, byte swap not plausible either
        (0xFFFFFFFF, 0, TS_SEC),  # not even as an NTP-epoch value
    ],
)
def test_bad_timestamp(sec: int, usec: int, ref_s: int | None) -> None:
    ref = None if ref_s is None else ref_s * 1_000_000
    data = v3({ChunkType.TS_SEC: u32(sec), ChunkType.TS_USEC: u32(usec)})
    expect(Reason.BAD_TIMESTAMP, 0, data, ref_time_us=ref)


def test_timestamp_window_edges() -> None:
    assert decode(v3({ChunkType.TS_SEC: u32(946684800)})).ts_us == 946684800_000000 + TS_USEC
    ref = TS_SEC * 1_000_000
    late = v3({ChunkType.TS_SEC: u32(TS_SEC + 86400)})
    assert decode(late, ref).ts_us == (TS_SEC + 86400) * 1_000_000 + TS_USEC


def test_no_payload() -> None:
    expect(Reason.NO_PAYLOAD, 0, v3({ChunkType.PAYLOAD: None}))


def test_ambiguous_payload() -> None:
    expect(Reason.AMBIGUOUS_PAYLOAD, 0, v3({}, (0, ChunkType.COMPRESSED_PAYLOAD, ZLIB_SIP)))


def test_empty_payload() -> None:
    expect(Reason.EMPTY_PAYLOAD, 0, v3({ChunkType.PAYLOAD: b""}))


def test_empty_payload_after_inflate() -> None:
    data = v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, zlib.compress(b"")))
    expect(Reason.EMPTY_PAYLOAD, 0, data)


@pytest.mark.parametrize(
    "packed",
    [b"", b"not compressed at all", ZLIB_SIP[:-6], b"\x1f\x8b\x08\x00garbage"],
    ids=["empty", "text", "truncated-zlib", "bad-gzip"],
)
def test_decompress_failed(packed: bytes) -> None:
    data = v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, packed))
    expect(Reason.DECOMPRESS_FAILED, OFF_PAYLOAD + 6, data)


def test_decompress_too_large_zip_bomb() -> None:
    bomb = zlib.compress(bytes(10_000_000), 9)
    assert len(bomb) < 65000
    data = v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, bomb))
    expect(Reason.DECOMPRESS_TOO_LARGE, OFF_PAYLOAD + 6, data)


def test_decompress_cap_is_configurable() -> None:
    data = v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, ZLIB_SIP))
    opts = DecodeOptions(max_inflated=len(COMPRESSED_SIP))
    assert decode(data, None, opts).payload == COMPRESSED_SIP
    opts = DecodeOptions(max_inflated=len(COMPRESSED_SIP) - 1)
    expect(Reason.DECOMPRESS_TOO_LARGE, OFF_PAYLOAD + 6, data, opts)


def test_unknown_ip_proto_v3() -> None:
    expect(Reason.UNKNOWN_IP_PROTO, 0, v3({ChunkType.IP_PROTO: u8(99)}))


def test_unknown_ip_proto_v1() -> None:
    expect(Reason.UNKNOWN_IP_PROTO, 3, v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), proto=99))


@pytest.mark.parametrize(
    "data",
    [
        b"\x01",
        b"\x02\x10\x02\x11\x13\xc4\x13",  # 7 bytes: not even the common header
        V1_IPV4[:15],  # v1 IPv4 needs 16
        V1_IPV6[:39],  # v1 IPv6 needs 40
        V2_IPV4[:27],  # v2 IPv4 needs 28
        V2_IPV6[:51],  # v2 IPv6 needs 52
    ],
)
def test_v12_truncated(data: bytes) -> None:
    expect(Reason.V12_TRUNCATED, 0, data)


@pytest.mark.parametrize("family", [0, 1, 3, 24, 255])
def test_v12_bad_family(family: int) -> None:
    expect(Reason.V12_BAD_FAMILY, 2, V1_IPV4[:2] + bytes([family]) + V1_IPV4[3:])


def test_v12_header_length_warns() -> None:
    msg = decode(V1_IPV4[:1] + b"\x99" + V1_IPV4[2:])
    assert msg == decode(V1_IPV4)
    assert msg.warnings == (Reason.V12_HEADER_LENGTH, Reason.TS_RECEIVE_TIME)


@pytest.mark.parametrize(
    ("data", "offset"),
    [(V1_IPV4[:16], 16), (V1_IPV6[:40], 40), (V2_IPV4[:28], 28), (V2_IPV6[:52], 52)],
)
def test_v12_empty_payload(data: bytes, offset: int) -> None:
    expect(Reason.EMPTY_PAYLOAD, offset, data)


@pytest.mark.parametrize(("data", "offset"), [(V2_IPV4, 16), (V2_IPV6, 40)])
def test_v2_bad_timestamp_offset_is_time_header(data: bytes, offset: int) -> None:
    broken = data[:offset] + bytes(8) + data[offset + 8 :]
    expect(Reason.BAD_TIMESTAMP, offset, broken)


def test_v2_big_endian_time_with_large_le_usec() -> None:
    # LE reading has usec >= 1e6 and an implausible time; BE reading is right.
    data = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, 999_999, 3, order="big"))
    msg = decode(data)
    assert msg.ts_us == TS_SEC * 1_000_000 + 999_999
    assert msg.warnings == (Reason.V2_TIME_BIG_ENDIAN,)


def test_v2_ntp_epoch_repaired() -> None:
    t = v2_time(TS_SEC + NTP_EPOCH_OFFSET_S, TS_USEC, 1)
    msg = decode(v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=t), TS_US)
    assert msg.ts_us == TS_US
    assert msg.warnings == (Reason.TS_NTP_EPOCH,)


@pytest.mark.parametrize("first", [0, 3, 4, 0x30, 0x49, 0xFF])
def test_unknown_version(first: int) -> None:
    expect(Reason.UNKNOWN_VERSION, 0, bytes([first]) + V1_IPV4[1:])


# --- inflate() and repair_timestamp() directly --------------------------------------------


def test_inflate_exact_cap_and_one_over() -> None:
    packed = zlib.compress(b"a" * 100)
    assert inflate(packed, 0, 100) == b"a" * 100
    with pytest.raises(DecodeError) as info:
        inflate(packed, 17, 99)
    assert (info.value.reason, info.value.offset) == (Reason.DECOMPRESS_TOO_LARGE, 17)


def test_inflate_default_cap() -> None:
    assert len(inflate(zlib.compress(bytes(MAX_INFLATED_PAYLOAD)))) == MAX_INFLATED_PAYLOAD
    with pytest.raises(DecodeError) as info:
        inflate(zlib.compress(bytes(MAX_INFLATED_PAYLOAD + 1)))
    assert info.value.reason is Reason.DECOMPRESS_TOO_LARGE


def test_inflate_gzip_bomb() -> None:
    with pytest.raises(DecodeError) as info:
        inflate(gzip.compress(bytes(10_000_000), mtime=0), 3)
    assert (info.value.reason, info.value.offset) == (Reason.DECOMPRESS_TOO_LARGE, 3)


def test_repair_timestamp_plain_and_repairs() -> None:
    warnings: list[Reason] = []
    assert repair_timestamp(TS_SEC, 1, None, warnings) == TS_SEC * 1_000_000 + 1
    assert warnings == []
    swapped = repair_timestamp(
        int.from_bytes(u32(TS_SEC)[::-1], "big"),
        int.from_bytes(u32(7)[::-1], "big"),
        None,
        warnings,
    )
    assert swapped == TS_SEC * 1_000_000 + 7
    assert warnings == [Reason.TS_BYTE_SWAPPED]


def test_repair_timestamp_ntp_needs_plausible_result() -> None:
    with pytest.raises(DecodeError) as info:
        repair_timestamp(NTP_EPOCH_OFFSET_S + 10, 0, TS_US, [])
    assert info.value.reason is Reason.BAD_TIMESTAMP


# --- encode() -----------------------------------------------------------------------------


def test_encode_rejects_what_it_cannot_represent() -> None:
    msg = decode(BASE)
    with pytest.raises(ValueError, match="timestamp"):
        encode(HepMessage(3, 17, msg.src_ip, msg.dst_ip, 1, 2, None, b"x"))
    with pytest.raises(ValueError, match="timestamp"):
        encode(HepMessage(2, 17, msg.src_ip, msg.dst_ip, 1, 2, None, b"x"))
    with pytest.raises(ValueError, match="65535"):
        encode(HepMessage(3, 17, msg.src_ip, msg.dst_ip, 1, 2, TS_US, bytes(65530)))


def test_encode_v1_v2_goldens() -> None:
    assert encode(decode(V1_IPV4)) == V1_IPV4
    assert encode(decode(V1_IPV6)) == V1_IPV6
    # encode writes Kamailio's header length and zero padding
    assert encode(decode(V2_IPV4)) == V2_IPV4[:26] + b"\0\0" + V2_IPV4[28:]


def test_encode_compress_flag() -> None:
    data = encode(decode(BASE), compress=True)
    msg = decode(data)
    assert (msg.payload, msg.compressed) == (SIP, True)


# --- every Reason member is covered by some test --------------------------------------------

#: Reason -> "module::test" that makes the code produce it. Reasons owned by the capture-file
#: readers (sources/pcapfile.py) are tested in test_pcapfile.py, written separately.
COVERAGE: dict[Reason, str] = {
    Reason.TRUNCATED_HEADER: "test_hep::test_truncated_header",
    Reason.BAD_MAGIC: "test_hep::test_bad_magic",
    Reason.LENGTH_TOO_SMALL: "test_hep::test_length_too_small",
    Reason.LENGTH_EXCEEDS_DATA: "test_hep::test_length_exceeds_data",
    Reason.TRAILING_BYTES: "test_hep::test_trailing_bytes_rejected_in_strict_mode",
    Reason.EMPTY_MESSAGE: "test_hep::test_empty_message",
    Reason.EEP_ALIAS: "test_hep::test_eep_alias_rejected_unless_lenient",
    Reason.CHUNK_HEADER_TRUNCATED: "test_hep::test_chunk_header_truncated",
    Reason.CHUNK_LENGTH_TOO_SMALL: "test_hep::test_chunk_length_too_small",
    Reason.CHUNK_OVERRUN: "test_hep::test_chunk_overrun",
    Reason.CHUNK_TYPE_ZERO: "test_hep::test_chunk_type_zero",
    Reason.CHUNK_BAD_SIZE: "test_hep::test_chunk_bad_size",
    Reason.DUPLICATE_CHUNK: "test_hep::test_duplicate_chunk_rejected_in_strict_mode",
    Reason.VENDOR_CHUNK_SKIPPED: "test_hep::test_vendor_chunk_skipped",
    Reason.UNKNOWN_CHUNK: "test_hep::test_unknown_chunk_skipped",
    Reason.MISSING_SRC_ADDR: "test_hep::test_missing_src_addr",
    Reason.MISSING_DST_ADDR: "test_hep::test_missing_dst_addr",
    Reason.MIXED_ADDRESS_FAMILY: "test_hep::test_mixed_address_family",
    Reason.FAMILY_MISMATCH: "test_hep::test_family_mismatch_warns",
    Reason.MISSING_PORTS: "test_hep::test_missing_ports",
    Reason.MISSING_TIMESTAMP: "test_hep::test_missing_timestamp",
    Reason.MISSING_USEC: "test_hep::test_missing_usec_warns_and_uses_zero",
    Reason.BAD_TIMESTAMP: "test_hep::test_bad_timestamp",
    Reason.NO_PAYLOAD: "test_hep::test_no_payload",
    Reason.AMBIGUOUS_PAYLOAD: "test_hep::test_ambiguous_payload",
    Reason.EMPTY_PAYLOAD: "test_hep::test_empty_payload",
    Reason.DECOMPRESS_FAILED: "test_hep::test_decompress_failed",
    Reason.DECOMPRESS_TOO_LARGE: "test_hep::test_decompress_too_large_zip_bomb",
    Reason.UNKNOWN_IP_PROTO: "test_hep::test_unknown_ip_proto_v3",
    Reason.TS_RECEIVE_TIME: "test_hep::test_ts_receive_time_when_seconds_missing",
    Reason.TS_BYTE_SWAPPED: "test_hep::test_rtpengine_byte_swapped_timestamp_repaired",
    Reason.TS_NTP_EPOCH: "test_hep::test_freeswitch_windows_ntp_epoch_repaired",
    Reason.V2_TIME_BIG_ENDIAN: "test_hep::test_v2_big_endian_time_is_detected",
    Reason.V12_TRUNCATED: "test_hep::test_v12_truncated",
    Reason.V12_BAD_FAMILY: "test_hep::test_v12_bad_family",
    Reason.V12_HEADER_LENGTH: "test_hep::test_v12_header_length_warns",
    Reason.UNKNOWN_VERSION: "test_hep::test_unknown_version",
    Reason.V12_ON_STREAM: "test_stream::test_v12_whose_payload_is_not_sip_on_stream",
    Reason.GZIP_WRAPPED: "test_signatures::test_gzip_wrapped_frame_decodes_and_says_so",
    Reason.STREAM_TRUNCATED_AT_EOF: "test_stream::test_stream_truncated_at_eof",
    Reason.STREAM_DESYNC: "test_stream::test_stream_desync_after_error_was_raised",
    Reason.UNSUPPORTED_PAYLOAD_TYPE: "test_pipeline::test_unsupported_payload_type_skipped",
    Reason.MISSING_PAYLOAD_TYPE: "test_pipeline::test_missing_payload_type",
    Reason.AUTH_MISSING: "test_pipeline::test_auth_missing",
    Reason.AUTH_MISMATCH: "test_pipeline::test_auth_mismatch",
    Reason.V12_AUTH_REQUIRED: "test_pipeline::test_v12_auth_required",
    Reason.UDP_PAYLOAD_TRUNCATED: "test_frames::test_udp_payload_truncated",
    Reason.NOT_HEP: "test_pipeline::test_source_problems_counted_not_hep_is_quiet",
    Reason.SIP_SPLIT: "test_repair::test_packed_messages_are_split_one_per_frame",
    Reason.SIP_JOINED: "test_repair::test_byte_by_byte_stream_is_rebuilt",
    Reason.SIP_TRUNCATED: "test_repair::test_truncated_udp_message_is_written_and_marked",
    Reason.DUPLICATE: "test_repair::test_drop_copies_counts_duplicates_as_skipped",
    Reason.REDACTED: "test_pipeline::test_redact_masks_in_place_and_says_so",
    Reason.RTCP_JSON_INVALID: "test_render::test_invalid",
    Reason.RTCP_JSON_UNMAPPED: "test_render::test_unmapped",
}
#: Produced by no core module (hep, stream, frames, pcapng, stats, pipeline).
NOT_CORE: dict[Reason, str] = {
    Reason.LENGTH_TOO_LARGE: "no configurable maximum exists; 65535 is the u16 field's limit",
    Reason.PCAP_TRUNCATED_RECORD: "sources/pcapfile.py",
    Reason.PCAP_BAD_BLOCK: "sources/pcapfile.py",
    Reason.PCAP_SNAPLEN_EXCEEDED: "sources/pcapfile.py",
    Reason.PCAP_CAPTURE_TRUNCATED: "sources/pcapfile.py",
    Reason.UNSUPPORTED_LINKTYPE: "sources/pcapfile.py",
    Reason.BAD_IP_PACKET: "sources/pcapfile.py",
    Reason.IP_FRAGMENT_OVERLAP: "sources/pcapfile.py",
    Reason.IP_FRAGMENT_INCOMPLETE: "sources/pcapfile.py",
    Reason.TCP_STREAM_GAP: "sources/pcapfile.py",
    Reason.TCP_MIDSTREAM_START: "sources/pcapfile.py",
    Reason.NOT_ALLOWED: "sources (hep2pcap listen --allow)",
    Reason.NO_HEP: "sources/pcapfile.py (test_pcapfile::test_no_hep_diagnosis_*)",
}


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.value)
def test_every_reason_has_a_test(reason: Reason) -> None:
    assert (reason in COVERAGE) != (reason in NOT_CORE), f"{reason} needs a row in COVERAGE"
    if reason in COVERAGE:
        module, name = COVERAGE[reason].split("::")
        test = getattr(importlib.import_module(module), name, None)
        assert callable(test), f"{COVERAGE[reason]} does not exist"
        assert reason.name in _source_of(test), f"{COVERAGE[reason]} never mentions {reason}"


def _source_of(func: Callable[..., object]) -> str:
    return inspect.getsource(func)


def test_reason_values_are_lower_case_names() -> None:
    # HEP-SPEC §11: the counter is the lower-case form of the code.
    assert Counter(r.value == r.name.lower() for r in Reason) == Counter({True: len(Reason)})


# --- cheap rejection before decoding (issue 16) ---------------------------------------------


def test_precheck_auth_tells_the_reasons_apart_without_decoding() -> None:
    from hep2pcap.hep import auth_needle, precheck_auth

    needle = auth_needle(b"s3cret")
    key = (0, ChunkType.AUTH_KEY)
    assert precheck_auth(v3({}, (*key, b"s3cret")), needle) is None
    assert precheck_auth(v3({}, (*key, b"wrong!")), needle) is Reason.AUTH_MISMATCH
    assert precheck_auth(v3({}, (*key, b"s3cret+")), needle) is Reason.AUTH_MISMATCH  # exact
    assert precheck_auth(v3(), needle) is Reason.AUTH_MISSING
    assert precheck_auth(bytes([2, 16]) + bytes(30), needle) is Reason.V12_AUTH_REQUIRED
    # a slice of a larger buffer (the receiver checks datagrams where they landed)
    buf = bytearray(b"junk" + v3({}, (*key, b"s3cret")) + b"tail")
    assert precheck_auth(buf, needle, 4, len(buf) - 4) is None
    assert precheck_auth(buf, needle, 4, 40) is Reason.AUTH_MISSING
