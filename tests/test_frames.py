"""Unit and property tests for hep2pcap.frames (HEP-SPEC §12), with scapy as the oracle
for header layouts, lengths and checksums."""

from __future__ import annotations

import ipaddress

import pytest
from hepbuild import TS_US, ip
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from hep2pcap import frames
from hep2pcap.errors import Reason
from hep2pcap.frames import (
    MAX_TCP_SEGMENT,
    MAX_UDP_PAYLOAD,
    FrameBuilder,
    checksum,
    ones_sum,
    transport_of,
)
from hep2pcap.hep import HepMessage
from hep2pcap.pcapng import LINKTYPE_ETHERNET, LINKTYPE_RAW

A4, B4 = ip("192.168.1.1"), ip("10.20.30.40")
A6, B6 = ip("2001:db8::a:1"), ip("fe80::1234:5678:9abc:def0")


def message(src: bytes = A4, dst: bytes = B4, proto: int = 17, payload: bytes = b"INVITE",
            sport: int = 5060, dport: int = 5080) -> HepMessage:  # fmt: skip
    return HepMessage(3, proto, src, dst, sport, dport, TS_US, payload)


def mac(addr: bytes) -> str:
    m = b"\x02\x00" + addr if len(addr) == 4 else b"\x02" + addr[-5:]
    return ":".join(f"{b:02x}" for b in m)


def addr_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def oracle(
    msg: HepMessage,
    linktype: int,
    payload: bytes,
    *,
    ip_id: int = 1,
    seq: int = 0,
    ack: int = 0,
) -> bytes:
    """What scapy builds for the same fields (scapy computes lengths and checksums)."""
    src, dst = addr_text(msg.src_ip), addr_text(msg.dst_ip)
    l3: Packet
    if len(msg.src_ip) == 4:
        l3 = IP(src=src, dst=dst, id=ip_id, flags="DF", ttl=64)
    else:
        l3 = IPv6(src=src, dst=dst, hlim=64)
    l4: Packet
    if transport_of(msg.ip_proto) == 6:
        l4 = TCP(sport=msg.src_port, dport=msg.dst_port, seq=seq, ack=ack, flags="PA", window=65535)
    else:
        l4 = UDP(sport=msg.src_port, dport=msg.dst_port)
    pkt: Packet = l3 / l4 / Raw(payload)
    if linktype == LINKTYPE_ETHERNET:
        pkt = Ether(src=mac(msg.src_ip), dst=mac(msg.dst_ip)) / pkt
    return bytes(pkt)


def tcp_fields(frame: bytes, linktype: int = LINKTYPE_ETHERNET) -> tuple[int, int, int, bytes]:
    pkt: Packet = Ether(frame) if linktype == LINKTYPE_ETHERNET else _raw_ip(frame)
    tcp = pkt[TCP]
    return tcp.seq, tcp.ack, int(tcp.flags), bytes(tcp.payload)


def _raw_ip(frame: bytes) -> Packet:
    return IP(frame) if frame[0] >> 4 == 4 else IPv6(frame)


# --- fixed cases ------------------------------------------------------------------------


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_RAW])
@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [17, 0, 132, 99])
def test_udp_frame_equals_scapy(linktype: int, src: bytes, dst: bytes, proto: int) -> None:
    msg = message(src, dst, proto, b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    got, warning = FrameBuilder(linktype).build(msg)
    assert warning is None
    assert got == [oracle(msg, linktype, msg.payload)]


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_RAW])
@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [6, 22, 50])
def test_tcp_frame_equals_scapy(linktype: int, src: bytes, dst: bytes, proto: int) -> None:
    msg = message(src, dst, proto, b"SIP/2.0 100 Trying\r\n\r\n")
    got, warning = FrameBuilder(linktype).build(msg)
    assert warning is None
    seq, ack, flags, data = tcp_fields(got[0], linktype)
    assert flags == 0x18  # PSH|ACK
    assert data == msg.payload
    assert got == [oracle(msg, linktype, msg.payload, seq=seq, ack=ack)]


def test_macs_show_the_addresses() -> None:
    frame = FrameBuilder().build(message())[0][0]
    eth = Ether(frame)
    assert (eth.src, eth.dst, eth.type) == ("02:00:c0:a8:01:01", "02:00:0a:14:1e:28", 0x0800)
    frame6 = FrameBuilder().build(message(A6, B6))[0][0]
    eth6 = Ether(frame6)
    assert (eth6.src, eth6.dst, eth6.type) == ("02:00:00:0a:00:01", "02:78:9a:bc:de:f0", 0x86DD)


def test_ipv4_id_increments_per_packet() -> None:
    fb = FrameBuilder(LINKTYPE_RAW)
    ids = [IP(fb.build(message(proto=p))[0][0]).id for p in (17, 6, 17)]
    assert ids == [1, 2, 3]


def test_ipv4_id_wraps() -> None:
    fb = FrameBuilder(LINKTYPE_RAW)
    for _ in range(0xFFFF):
        fb.build(message())
    assert IP(fb.build(message())[0][0]).id == 0


def test_unsupported_linktype() -> None:
    with pytest.raises(ValueError, match="228"):
        FrameBuilder(228)


@pytest.mark.parametrize(
    ("proto", "transport"), [(6, 6), (22, 6), (50, 6), (17, 17), (0, 17), (132, 17), (99, 17)]
)
def test_transport_of(proto: int, transport: int) -> None:
    assert transport_of(proto) == transport


def test_udp_checksum_zero_is_sent_as_all_ones() -> None:
    # Find the payload word that makes the computed checksum 0: append the checksum itself.
    probe = FrameBuilder(LINKTYPE_RAW).build(message(payload=b"\0\0"))[0][0]
    csum = probe[26:28]
    frame = FrameBuilder(LINKTYPE_RAW).build(message(payload=csum))[0][0]
    assert frame[26:28] == b"\xff\xff"
    assert frame == oracle(message(payload=csum), LINKTYPE_RAW, csum)


def test_ones_sum_and_checksum() -> None:
    # RFC 1071 §3 example words.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(ones_sum(data)) == 0x220D
    assert ones_sum(b"\x01") == 0x0100  # odd length padded with a zero byte
    assert checksum(0) == 0
    assert checksum(0xFFFF) == 0


# --- UDP size limits --------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_udp_payload_at_the_limit_is_kept(src: bytes, dst: bytes) -> None:
    limit = MAX_UDP_PAYLOAD[4 if len(src) == 4 else 6]
    msg = message(src, dst, payload=b"z" * limit)
    got, warning = FrameBuilder(LINKTYPE_RAW).build(msg)
    assert warning is None
    assert got == [oracle(msg, LINKTYPE_RAW, msg.payload)]


@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_udp_payload_truncated(src: bytes, dst: bytes) -> None:
    limit = MAX_UDP_PAYLOAD[4 if len(src) == 4 else 6]
    msg = message(src, dst, payload=bytes(range(256)) * 300)
    got, warning = FrameBuilder(LINKTYPE_RAW).build(msg)
    assert warning is Reason.UDP_PAYLOAD_TRUNCATED
    assert len(got) == 1
    assert got == [oracle(msg, LINKTYPE_RAW, msg.payload[:limit])]
    assert MAX_UDP_PAYLOAD == {4: 65507, 6: 65527}


# --- TCP sequence numbers (HEP-SPEC §12) ---------------------------------------------------


def test_tcp_seq_continuity_both_directions() -> None:
    fb = FrameBuilder()
    a_to_b = [message(proto=6, payload=p) for p in (b"INVITE", b"ACK!!!!")]
    b_to_a = message(B4, A4, proto=22, payload=b"SIP/2.0 200 OK", sport=5080, dport=5060)
    s1, a1, _, _ = tcp_fields(fb.build(a_to_b[0])[0][0])
    s2, a2, _, _ = tcp_fields(fb.build(b_to_a)[0][0])
    s3, a3, _, _ = tcp_fields(fb.build(a_to_b[1])[0][0])
    s4, a4, _, _ = tcp_fields(fb.build(b_to_a)[0][0])
    assert s2 == a1  # B's first segment starts where A acknowledged
    assert a2 == s1 + 6  # B acknowledges everything A sent
    assert (s3, a3) == (s1 + 6, s2 + 14)
    assert (s4, a4) == (s2 + 14, s3 + 7)


def test_tcp_seq_is_per_connection() -> None:
    fb = FrameBuilder()
    first = tcp_fields(fb.build(message(proto=6, payload=b"abc"))[0][0])
    other = tcp_fields(fb.build(message(proto=6, payload=b"xyz", sport=5061))[0][0])
    again = tcp_fields(fb.build(message(proto=6, payload=b"def"))[0][0])
    assert again[0] == first[0] + 3
    assert first[0] == frames._initial_seq((A4, 5060, B4, 5080))
    assert other[0] == frames._initial_seq((A4, 5061, B4, 5080))
    assert other[0] != first[0]


def test_tcp_initial_seq_is_deterministic() -> None:
    a = FrameBuilder().build(message(proto=6))[0]
    b = FrameBuilder().build(message(proto=6))[0]
    assert a == b


def test_tcp_seq_wraps_modulo_2_32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "_initial_seq", lambda key: 0xFFFFFFFE)
    fb = FrameBuilder()
    seq1 = tcp_fields(fb.build(message(proto=6, payload=b"abcd"))[0][0])[0]
    seq2 = tcp_fields(fb.build(message(proto=6, payload=b"efgh"))[0][0])[0]
    assert (seq1, seq2) == (0xFFFFFFFE, 2)


@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_tcp_payload_larger_than_one_packet_is_split(src: bytes, dst: bytes) -> None:
    step = MAX_TCP_SEGMENT[4 if len(src) == 4 else 6]
    payload = bytes(range(256)) * 600  # 153600 bytes
    msg = message(src, dst, proto=6, payload=payload)
    fb = FrameBuilder(LINKTYPE_RAW)
    got, warning = fb.build(msg)
    assert warning is None
    assert len(got) == -(-len(payload) // step)
    seq0, ack, _, _ = tcp_fields(got[0], LINKTYPE_RAW)
    data = b""
    for i, frame in enumerate(got):
        seq, ack_i, _, part = tcp_fields(frame, LINKTYPE_RAW)
        assert (seq, ack_i) == ((seq0 + len(data)) & 0xFFFFFFFF, ack)
        expected = oracle(msg, LINKTYPE_RAW, part, ip_id=i + 1, seq=seq, ack=ack)
        assert frame == expected
        data += part
    assert data == payload
    after = tcp_fields(fb.build(message(src, dst, proto=6, payload=b"x"))[0][0], LINKTYPE_RAW)
    assert after[0] == (seq0 + len(payload)) & 0xFFFFFFFF


# --- properties ---------------------------------------------------------------------------

ipv4 = st.binary(min_size=4, max_size=4)
ipv6 = st.binary(min_size=16, max_size=16)
ports = st.integers(0, 65535)
protos = st.sampled_from([0, 6, 17, 22, 50, 132, 99])


@st.composite
def messages(draw: st.DrawFn) -> HepMessage:
    addr = draw(st.sampled_from([ipv4, ipv6]))
    return HepMessage(
        3,
        draw(protos),
        draw(addr),
        draw(addr),
        draw(ports),
        draw(ports),
        TS_US,
        draw(st.binary(min_size=1, max_size=1500)),
    )


@settings(max_examples=200)
@given(msg=messages(), linktype=st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW]))
def test_frames_equal_scapy(msg: HepMessage, linktype: int) -> None:
    got, warning = FrameBuilder(linktype).build(msg)
    assert warning is None
    assert len(got) == 1
    seq = ack = 0
    if transport_of(msg.ip_proto) == 6:
        seq, ack, flags, data = tcp_fields(got[0], linktype)
        assert (flags, data) == (0x18, msg.payload)
    assert got[0] == oracle(msg, linktype, msg.payload, seq=seq, ack=ack)


@st.composite
def conversations(draw: st.DrawFn) -> list[HepMessage]:
    """TCP messages among three endpoints, in both directions."""
    hosts = [(ip("10.0.0.1"), 5060), (ip("10.0.0.2"), 5061), (ip("10.0.0.3"), 5062)]
    out = []
    for _ in range(draw(st.integers(1, 12))):
        a, b = draw(st.permutations(hosts))[:2]
        payload = draw(st.binary(min_size=1, max_size=40))
        out.append(HepMessage(3, draw(st.sampled_from([6, 22, 50])), a[0], b[0], a[1], b[1], TS_US,
                              payload))  # fmt: skip
    return out


@settings(max_examples=200)
@given(conversations())
def test_tcp_seq_model(msgs: list[HepMessage]) -> None:
    # Model: each direction starts somewhere and advances by the bytes sent; the ACK is
    # always the other direction's next sequence number.
    fb = FrameBuilder(LINKTYPE_RAW)
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    for msg in msgs:
        key = (msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port)
        rkey = (msg.dst_ip, msg.dst_port, msg.src_ip, msg.src_port)
        (frame,), _ = fb.build(msg)
        seq, ack, _, data = tcp_fields(frame, LINKTYPE_RAW)
        assert data == msg.payload
        assert seq == next_seq.setdefault(key, seq)
        assert ack == next_seq.setdefault(rkey, ack)
        next_seq[key] = (seq + len(msg.payload)) & 0xFFFFFFFF
        assert frame == oracle(msg, LINKTYPE_RAW, msg.payload, ip_id=ip_id(frame), seq=seq, ack=ack)


def ip_id(frame: bytes) -> int:
    return int.from_bytes(frame[4:6], "big")


def test_tcp_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MAX_TCP_DIRECTIONS", 100)
    fb = FrameBuilder(LINKTYPE_RAW)
    for port in range(1, 1000):
        fb.build(message(proto=6, sport=port))
    assert len(fb._next_seq) <= 102


def test_tcp_table_keeps_an_active_connections_reverse_direction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bug repro: only the sending direction was refreshed in the LRU table, so while A kept
    # sending (and other flows came and went) B's direction was evicted and A's ACK fell
    # back to B's initial sequence number: ACK regression, then B's seq restarted too.
    monkeypatch.setattr(frames, "MAX_TCP_DIRECTIONS", 100)
    fb = FrameBuilder(LINKTYPE_RAW)
    a_to_b = message(proto=6, payload=b"INVITE")
    b_to_a = message(B4, A4, proto=6, payload=b"SIP/2.0 100 Trying", sport=5080, dport=5060)
    fb.build(a_to_b)
    b_seq = tcp_fields(fb.build(b_to_a)[0][0], LINKTYPE_RAW)[0]
    b_next = b_seq + len(b_to_a.payload)
    for port in range(1, 200):
        fb.build(message(A6, B6, proto=6, sport=port))  # other connections come and go
        assert tcp_fields(fb.build(a_to_b)[0][0], LINKTYPE_RAW)[1] == b_next
    assert tcp_fields(fb.build(b_to_a)[0][0], LINKTYPE_RAW)[0] == b_next


# --- SCTP DATA for M2UA / M3UA / M2PA (issue 15) -------------------------------------------


def test_crc32c_known_vector() -> None:
    # RFC 3720 B.4 / the common check value of CRC-32C
    assert frames.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(("ptype", "ppid"), [(8, 2), (9, 3), (13, 5)])
def test_sctp_data_chunk_for_sigtran(ptype: int, ppid: int) -> None:
    from scapy.layers.sctp import SCTP, SCTPChunkData

    aspup = bytes.fromhex("0100030100000008") + b"x"  # 9 bytes: 3 padding bytes follow
    msg = HepMessage(3, 132, A4, B4, 2905, 2906, TS_US, aspup, ptype, note="rendered")
    builder = FrameBuilder(LINKTYPE_RAW)
    (frame,), warning = builder.build(msg)
    (again,), _ = builder.build(msg)
    assert warning is None
    pkt = IP(frame)
    assert pkt.proto == 132
    sctp = pkt[SCTP]
    assert (sctp.sport, sctp.dport) == (2905, 2906)
    data = sctp[SCTPChunkData]
    assert (data.proto_id, bytes(data.data), data.len) == (ppid, aspup, 16 + len(aspup))
    assert (data.beginning, data.ending) == (1, 1)
    assert IP(again)[SCTPChunkData].tsn == (data.tsn + 1) & 0xFFFFFFFF
    # the checksum: CRC32c of the packet with a zero checksum field, least significant byte first
    raw = bytes(sctp)
    assert raw[8:12] == frames.crc32c(raw[:8] + b"\0" * 4 + raw[12:]).to_bytes(4, "little")
    assert len(raw) % 4 == 0


def test_sigtran_type_without_render_note_stays_udp() -> None:
    # --include-type all of an unrendered message, or SIP over SCTP (proto 132): UDP as before
    msg = HepMessage(3, 132, A4, B4, 2905, 2906, TS_US, b"x", 1)
    (frame,), _ = FrameBuilder(LINKTYPE_RAW).build(msg)
    assert IP(frame).proto == 17
