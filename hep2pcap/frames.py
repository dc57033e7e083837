"""Build synthetic Ethernet / IPv4 / IPv6 / UDP / TCP frames from HEP fields.

Owns: HEP-SPEC §12 — header layouts, checksums (RFC 791/768/793/8200), the mapping of
HEP IP protocol values to a transport (§6), per-connection TCP sequence state, and the
splitting of payloads too large for one IP packet. Must never: do I/O or read clocks.
Frames are built in the order they are written, so TCP sequence numbers follow that order.
"""

from __future__ import annotations

import itertools
import struct
import zlib

from .engine.reference import (
    ETH_IPV4_HEADER,
    ETH_IPV6_HEADER,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_DONT_FRAGMENT,
    IPV4_HEADER,
    IPV6_HEADER,
    SCTP_PACKET,
    TCP_DATA_OFFSET,
    TCP_FLAGS_PSH_ACK,
    TCP_HEADER,
    TCP_WINDOW,
    TTL,
    UDP_HEADER,
    build_frame,
    checksum,
    ones_sum,
)
from .errors import Reason
from .hep import HepMessage, IpProto
from .pcapng import LINKTYPE_ETHERNET, LINKTYPE_RAW

#: One frame's values beyond the message's addresses and ports: (ip_id, seq, ack, payload);
#: seq is -1 for UDP, SCTP_PACKET for a whole SCTP packet (payload), else the TCP sequence.
Segment = tuple[int, int, int, bytes]

#: RFC 9260 §3.1: source port, destination port, verification tag, checksum (CRC32c).
SCTP_COMMON_HEADER = struct.Struct("!HHII")
#: RFC 9260 §3.3.1 DATA chunk: type 0, flags, length, TSN, stream id, stream seq, PPID.
SCTP_DATA_HEADER = struct.Struct("!BBHIHHI")
SCTP_DATA_UNFRAGMENTED = 0x03  # B and E: the whole user message in one chunk
#: IANA SCTP payload protocol identifiers of the HEP payload types carried over SCTP
#: (HEP-SPEC §4): M2UA 2 (RFC 3331), M3UA 3 (RFC 4666), M2PA 5 (RFC 4165).
SCTP_PPIDS = {0x08: 2, 0x09: 3, 0x0D: 5}
#: Not a HEP value: what the summary counts a message built as SCTP under (HEP proto 132
#: alone is built as UDP, see transport_of).
BUILT_AS_SCTP = 0x100 | IPPROTO_SCTP

# The frame's bytes are the engine's (engine/reference.py); its layouts are re-exported.
__all__ = [
    "BUILT_AS_SCTP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETH_IPV4_HEADER",
    "ETH_IPV6_HEADER",
    "IPPROTO_SCTP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV4_DONT_FRAGMENT",
    "IPV4_HEADER",
    "IPV6_HEADER",
    "MAX_TCP_SEGMENT",
    "MAX_UDP_PAYLOAD",
    "SCTP_COMMON_HEADER",
    "SCTP_DATA_HEADER",
    "SCTP_DATA_UNFRAGMENTED",
    "SCTP_PPIDS",
    "TCP_DATA_OFFSET",
    "TCP_FLAGS_PSH_ACK",
    "TCP_HEADER",
    "TCP_PROTOS",
    "TCP_WINDOW",
    "TTL",
    "UDP_HEADER",
    "FrameBuilder",
    "Segment",
    "build_frame",
    "checksum",
    "crc32c",
    "ones_sum",
    "proto_label",
    "proto_name",
    "transport_label",
    "transport_of",
]

MAX_IP_PACKET = 65535  # IPv4 total length / IPv6 payload length are 16-bit fields
#: The largest UDP payload one IP packet can carry (IPv4: 65535-20-8, IPv6: 65535-8).
MAX_UDP_PAYLOAD = {
    4: MAX_IP_PACKET - IPV4_HEADER.size - UDP_HEADER.size,
    6: MAX_IP_PACKET - UDP_HEADER.size,
}
#: The largest TCP segment payload per IP packet.
MAX_TCP_SEGMENT = {
    4: MAX_IP_PACKET - IPV4_HEADER.size - TCP_HEADER.size,
    6: MAX_IP_PACKET - TCP_HEADER.size,
}

#: HEP-SPEC §6: which synthetic transport each HEP protocol value becomes.
TCP_PROTOS = frozenset({IpProto.TCP, IpProto.TLS, IpProto.WEBSOCKET})

#: Bound on remembered TCP directions. The least recently used are forgotten first; a
#: forgotten direction that speaks again restarts at its initial sequence number.
MAX_TCP_DIRECTIONS = 200_000


_PROTO_NAMES: dict[int, str] = {
    IpProto.UNSET: "unset",
    IpProto.TCP: "TCP",
    IpProto.UDP: "UDP",
    IpProto.TLS: "TLS",
    IpProto.WEBSOCKET: "WebSocket",
    IpProto.SCTP: "SCTP",
}


def proto_label(ip_proto: int) -> str:
    """``"22 (TLS)"`` — the original HEP protocol value with its meaning."""
    name = _PROTO_NAMES.get(ip_proto)
    return f"{ip_proto} ({name})" if name else str(ip_proto)


def proto_name(ip_proto: int) -> str:
    """The HEP protocol value's name: UDP, TCP, TLS, WebSocket, SCTP, proto-N."""
    return _PROTO_NAMES.get(ip_proto, f"proto-{ip_proto}")


def transport_label(ip_proto: int) -> str:
    """What the summary calls a message's transport: UDP, TCP, TLS(as TCP), SCTP, …"""
    if ip_proto == BUILT_AS_SCTP:
        return "SCTP"
    name = proto_name(ip_proto)
    built = "TCP" if transport_of(ip_proto) == IPPROTO_TCP else "UDP"
    return name if name in ("UDP", "TCP") else f"{name}(as {built})"


def transport_of(ip_proto: int) -> int:
    """IPPROTO_TCP for TCP / TLS (22) / WebSocket (50), IPPROTO_UDP for everything else."""
    return IPPROTO_TCP if ip_proto in TCP_PROTOS else IPPROTO_UDP


class FrameBuilder:
    """Stateful builder: one per output, called in write order.

    Args:
        linktype: LINKTYPE_ETHERNET or LINKTYPE_RAW.
    """

    def __init__(self, linktype: int = LINKTYPE_ETHERNET) -> None:
        if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
            raise ValueError(f"unsupported link type {linktype}")
        self.linktype = linktype
        self._ip_id = 0
        # (src, sport, dst, dport) -> next sequence number to send in that direction
        self._next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
        # (src, sport, dst, dport) -> next SCTP TSN in that direction
        self._next_tsn: dict[tuple[bytes, int, bytes, int], int] = {}

    def build(self, msg: HepMessage) -> tuple[list[bytes], Reason | None]:
        """Build the frame(s) for one message.

        Returns:
            The frames (more than one only for a TCP payload larger than one IP packet)
            and UDP_PAYLOAD_TRUNCATED if a UDP payload had to be cut to fit one datagram.
        """
        segments, warning = self.plan(msg)
        src, dst, sport, dport = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
        lt = self.linktype
        return [build_frame(lt, src, dst, sport, dport, *s) for s in segments], warning

    def plan(self, msg: HepMessage) -> tuple[list[Segment], Reason | None]:
        """The values of one message's frame(s), in write order: what the engine builds.

        Advances this builder's state (IPv4 id, TCP sequence numbers) as if the frames were
        written now. Each segment is ``(ip_id, seq, ack, payload)``: ``seq`` is -1 for UDP,
        ``ip_id`` 0 for IPv6; a TCP payload larger than one IP packet gives several, an empty
        one none. A UDP payload too large for one datagram is cut (UDP_PAYLOAD_TRUNCATED).
        """
        v4 = len(msg.src_ip) == 4
        payload = msg.payload
        if msg.ip_proto in TCP_PROTOS:
            return self._plan_tcp(msg, v4), None
        if msg.note is not None:  # rendered by render.py: only those can be SCTP user messages
            ppid = SCTP_PPIDS.get(msg.payload_type) if msg.payload_type is not None else None
            if ppid is not None:
                return self._plan_sctp(msg, v4, ppid)
        warning = None
        limit = MAX_UDP_PAYLOAD[4 if v4 else 6]
        if len(payload) > limit:
            payload = payload[:limit]
            warning = Reason.UDP_PAYLOAD_TRUNCATED
        if v4:
            self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
            return [(ip_id, -1, 0, payload)], warning
        return [(0, -1, 0, payload)], warning

    def _plan_sctp(
        self, msg: HepMessage, v4: bool, ppid: int
    ) -> tuple[list[Segment], Reason | None]:
        # One DATA chunk per message on stream 0; TSN and stream sequence number count up per
        # direction (no INIT was captured, so Wireshark checks neither against a handshake).
        # The whole SCTP packet is built here; the engine puts it in an IP packet.
        src, dst, sport, dport = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
        key = (src, sport, dst, dport)
        tsn = self._next_tsn.pop(key, None)
        if tsn is None:
            tsn = _initial_seq(key)
            if len(self._next_tsn) >= MAX_TCP_DIRECTIONS:
                for old in list(itertools.islice(self._next_tsn, MAX_TCP_DIRECTIONS // 10)):
                    del self._next_tsn[old]
        self._next_tsn[key] = (tsn + 1) & 0xFFFFFFFF
        payload, warning = msg.payload, None
        headers = SCTP_COMMON_HEADER.size + SCTP_DATA_HEADER.size
        limit = MAX_UDP_PAYLOAD[4 if v4 else 6] - headers - 3
        if len(payload) > limit:
            payload, warning = payload[:limit], Reason.UDP_PAYLOAD_TRUNCATED
        chunk = SCTP_DATA_HEADER.pack(
            0, SCTP_DATA_UNFRAGMENTED, SCTP_DATA_HEADER.size + len(payload), tsn, 0,
            tsn & 0xFFFF, ppid,
        ) + payload + b"\0" * (-len(payload) % 4)  # fmt: skip
        tag = _initial_seq((dst, dport, src, sport))  # the receiver's tag, per direction
        head = SCTP_COMMON_HEADER.pack(sport, dport, tag, 0)
        # RFC 9260 Appendix A: CRC32c over the packet with a zero checksum, sent LSB first
        crc = crc32c(head + chunk).to_bytes(4, "little")
        ip_id = 0
        if v4:
            self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
        return [(ip_id, SCTP_PACKET, 0, head[:8] + crc + chunk)], warning

    def _plan_tcp(self, msg: HepMessage, v4: bool) -> list[Segment]:
        src, dst, sport, dport = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
        key = (src, sport, dst, dport)
        rkey = (dst, dport, src, sport)
        table = self._next_seq
        seq = table.pop(key, None)  # re-inserted below: the dict stays in LRU order
        if seq is None:
            seq = _initial_seq(key)
            if len(table) >= MAX_TCP_DIRECTIONS:
                for old in list(itertools.islice(table, MAX_TCP_DIRECTIONS // 10)):
                    del table[old]
        # Reading the other direction is a use of the connection too: move it to the recent
        # end, or a long one-sided run would evict it and the ACK would jump backwards.
        ack = table.pop(rkey, None)
        if ack is None:
            # The other side has sent nothing yet: acknowledge its initial sequence number,
            # so Wireshark sees no "ACKed unseen segment".
            ack = _initial_seq(rkey)
        table[rkey] = ack
        payload = msg.payload
        step = MAX_TCP_SEGMENT[4 if v4 else 6]
        segments = []
        for start in range(0, len(payload), step):
            chunk = payload[start : start + step]
            ip_id = 0
            if v4:
                self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
            segments.append((ip_id, seq, ack, chunk))
            seq = (seq + len(chunk)) & 0xFFFFFFFF
        table[key] = seq
        return segments


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected Castagnoli
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli, RFC 9260 Appendix A), bytewise: SCTP packets are rare here."""
    crc, table = 0xFFFFFFFF, _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _initial_seq(key: tuple[bytes, int, bytes, int]) -> int:
    # Deterministic per direction (Python's hash() is salted per run; crc32 is not), so the
    # same input always gives the same output file.
    src, sport, dst, dport = key
    return zlib.crc32(src + dst + sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))
