"""The reference frame engine, in pure Python: validated values in, frames and blocks out.

Owns: the bytes of a synthetic frame (HEP-SPEC §12: Ethernet or raw IP, IPv4 / IPv6, UDP /
TCP, RFC 791/768/793/8200 checksums) and of a batch of pcapng EPBs or classic pcap records.
Must never: parse untrusted bytes, keep state between calls, do I/O. Its input is values the
decoder and the frame planner (frames.FrameBuilder.plan) already checked: 4- or 16-byte
addresses, ports and IP ids below 2**16, sequence numbers below 2**32, payloads that fit one
IP packet. The native engine (``_native.c``) implements the same three functions and must
give the same bytes for every input (tests/test_engine.py); this module is what it is
compared with, and what runs where no compiler was available.

A packet is a tuple (see :data:`Packet`): ``(agent, node, ts_us, src, dst, sport, dport,
ip_id, seq, ack, payload, comment)``; ``seq`` is -1 for UDP, SCTP_PACKET (-2) when the payload
is a whole SCTP packet, else the TCP sequence number.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from ..pcapng import LINKTYPE_ETHERNET, PCAP_RECORD_HEADER, encode_epb

NAME = "python"

#: (agent, node, ts_us, src, dst, sport, dport, ip_id, seq, ack, payload, comment)
Packet = tuple[
    int | None, str | None, int, bytes, bytes, int, int, int, int, int, bytes, str | None
]

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132
#: ``seq`` of a packet whose payload is a whole SCTP packet (RFC 9260, built by
#: frames.FrameBuilder): the engine only puts it in an IP packet.
SCTP_PACKET = -2

#: RFC 791 header without options: ver/ihl, tos, total length, id, flags/frag, ttl, proto,
#: checksum, source, destination.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
#: RFC 8200: ver/class/flow, payload length, next header, hop limit, source, destination.
IPV6_HEADER = struct.Struct("!IHBB16s16s")
#: RFC 768.
UDP_HEADER = struct.Struct("!HHHH")
#: RFC 793 header without options: ports, seq, ack, data offset, flags, window, csum, urg.
TCP_HEADER = struct.Struct("!HHIIBBHHH")
#: Ethernet (dst MAC, src MAC, ethertype) + IP in one pack.
ETH_IPV4_HEADER = struct.Struct("!6s6sHBBHHHBBH4s4s")
ETH_IPV6_HEADER = struct.Struct("!6s6sHIHBB16s16s")

TTL = 64
IPV4_DONT_FRAGMENT = 0x4000
TCP_FLAGS_PSH_ACK = 0x18
TCP_WINDOW = 65535
TCP_DATA_OFFSET = TCP_HEADER.size // 4 << 4


def ones_sum(data: bytes) -> int:
    """RFC 1071 sum of 16-bit big-endian words, reduced modulo 0xFFFF.

    Because 2**16 ≡ 1 (mod 0xFFFF), the big integer of the bytes has the same residue as the
    sum of its words, and ``int.from_bytes`` does that in C. Residues of even-length parts
    can be added. 0 stands for both 0x0000 and 0xFFFF, which is fine for checksums of data
    that is never all zeros (every pseudo header here has a non-zero protocol).
    """
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(residue: int) -> int:
    """Turn a ones-complement residue (sum of :func:`ones_sum` values) into a checksum field."""
    residue %= 0xFFFF
    return 0xFFFF - residue if residue else 0


def _mac(ip: bytes) -> bytes:
    # Locally administered unicast MAC that shows the address it stands for:
    # 02:00:c0:a8:01:01 for 192.168.1.1, 02 + the last five bytes for IPv6.
    return b"\x02\x00" + ip if len(ip) == 4 else b"\x02" + ip[-5:]


def build_frame(
    linktype: int,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    ip_id: int,
    seq: int,
    ack: int,
    payload: bytes,
) -> bytes:
    """One frame: link header (Ethernet or none), IP header, UDP (seq -1) or TCP header (or
    none: seq SCTP_PACKET), payload. ``ip_id`` is used for IPv4 only."""
    addr_sum = ones_sum(src + dst)
    if seq == SCTP_PACKET:
        proto = IPPROTO_SCTP
        l4len = len(payload)
        l4 = b""
    elif seq < 0:
        proto = IPPROTO_UDP
        l4len = UDP_HEADER.size + len(payload)
        # RFC 768 pseudo header (RFC 8200 §8.1 for IPv6: same sum, l4len < 65536) + header.
        residue = addr_sum + IPPROTO_UDP + l4len + sport + dport + l4len + ones_sum(payload)
        csum = checksum(residue) or 0xFFFF  # RFC 768: a computed 0 is sent as all ones
        l4 = UDP_HEADER.pack(sport, dport, l4len, csum)
    else:
        proto = IPPROTO_TCP
        l4len = TCP_HEADER.size + len(payload)
        # pseudo header (l4len counted once) + TCP header + data
        residue = (
            addr_sum + IPPROTO_TCP + sport + dport + (ack >> 16) + (ack & 0xFFFF)
            + (TCP_DATA_OFFSET << 8 | TCP_FLAGS_PSH_ACK) + TCP_WINDOW
            + l4len + (seq >> 16) + (seq & 0xFFFF) + ones_sum(payload)
        )  # fmt: skip
        l4 = TCP_HEADER.pack(
            sport, dport, seq, ack, TCP_DATA_OFFSET, TCP_FLAGS_PSH_ACK, TCP_WINDOW,
            checksum(residue), 0,
        )  # fmt: skip
    eth = linktype == LINKTYPE_ETHERNET
    if len(src) == 4:
        total = IPV4_HEADER.size + l4len
        csum = checksum(0x4500 + total + ip_id + IPV4_DONT_FRAGMENT + (TTL << 8 | proto) + addr_sum)
        if eth:
            head = ETH_IPV4_HEADER.pack(
                _mac(dst), _mac(src), ETHERTYPE_IPV4,
                0x45, 0, total, ip_id, IPV4_DONT_FRAGMENT, TTL, proto, csum, src, dst,
            )  # fmt: skip
        else:
            head = IPV4_HEADER.pack(
                0x45, 0, total, ip_id, IPV4_DONT_FRAGMENT, TTL, proto, csum, src, dst
            )
    elif eth:
        head = ETH_IPV6_HEADER.pack(
            _mac(dst), _mac(src), ETHERTYPE_IPV6, 0x60000000, l4len, proto, TTL, src, dst
        )
    else:
        head = IPV6_HEADER.pack(0x60000000, l4len, proto, TTL, src, dst)
    return b"".join((head, l4, payload))


def frames(linktype: int, packets: Sequence[Packet]) -> list[bytes]:
    """The frame of each packet (for writers that take one frame at a time)."""
    return [build_frame(linktype, *p[3:11]) for p in packets]


def encode_epbs(
    linktype: int,
    comments: bool,
    interfaces: Mapping[int | None, int],
    shared: int,
    packets: Sequence[Packet],
    start: int,
) -> tuple[bytes, int]:
    """EPBs for ``packets[start:]``, up to the first whose agent has no interface yet.

    Args:
        linktype: of the frames.
        comments: write each packet's comment (when it has one).
        interfaces: agent -> interface id.
        shared: interface id of an agent missing from ``interfaces``; -1 to stop there.
        packets: the batch.
        start: index of the first packet to encode.

    Returns:
        The blocks, and the index where encoding stopped (``len(packets)`` when done):
        the caller writes that agent's interface description and calls again.
    """
    out: list[bytes] = []
    get = interfaces.get
    for i in range(start, len(packets)):
        p = packets[i]
        iface = get(p[0])
        if iface is None:
            if shared < 0:
                return b"".join(out), i
            iface = shared
        frame = build_frame(linktype, *p[3:11])
        out.append(encode_epb(iface, p[2], frame, p[11] if comments else None))
    return b"".join(out), len(packets)


def encode_records(linktype: int, packets: Sequence[Packet]) -> bytes:
    """Classic pcap records (microsecond time; agents and comments are not kept)."""
    out: list[bytes] = []
    for p in packets:
        frame = build_frame(linktype, *p[3:11])
        sec, usec = divmod(p[2], 1_000_000)
        out.append(PCAP_RECORD_HEADER.pack(sec, usec, len(frame), len(frame)) + frame)
    return b"".join(out)
