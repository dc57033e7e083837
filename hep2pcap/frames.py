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

from .errors import Reason
from .hep import HepMessage, IpProto
from .pcapng import LINKTYPE_ETHERNET, LINKTYPE_RAW

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

#: RFC 791 header without options: ver/ihl, tos, total length, id, flags/frag, ttl, proto,
#: checksum, source, destination.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
#: RFC 8200: ver/class/flow, payload length, next header, hop limit, source, destination.
IPV6_HEADER = struct.Struct("!IHBB16s16s")
#: RFC 768.
UDP_HEADER = struct.Struct("!HHHH")
#: RFC 793 header without options: ports, seq, ack, data offset, flags, window, csum, urg.
TCP_HEADER = struct.Struct("!HHIIBBHHH")
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
#: Ethernet (dst MAC, src MAC, ethertype) + IP in one pack: one call on the hot path.
ETH_IPV4_HEADER = struct.Struct("!6s6sHBBHHHBBH4s4s")
ETH_IPV6_HEADER = struct.Struct("!6s6sHIHBB16s16s")

TTL = 64
IPV4_DONT_FRAGMENT = 0x4000
TCP_FLAGS_PSH_ACK = 0x18
TCP_WINDOW = 65535
TCP_DATA_OFFSET = TCP_HEADER.size // 4 << 4

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
        v = 4 if len(msg.src_ip) == 4 else 6
        if msg.ip_proto in TCP_PROTOS:
            return self._build_tcp(msg, v), None
        payload = msg.payload
        if msg.note is not None:  # rendered by render.py: only those can be SCTP user messages
            ppid = SCTP_PPIDS.get(msg.payload_type) if msg.payload_type is not None else None
            if ppid is not None:
                return self._build_sctp(msg, v, ppid)
        warning = None
        limit = MAX_UDP_PAYLOAD[v]
        if len(payload) > limit:
            payload = payload[:limit]
            warning = Reason.UDP_PAYLOAD_TRUNCATED
        return [self._build_udp(msg, v, payload)], warning

    def _ip_and_link(
        self, v: int, proto: int, src: bytes, dst: bytes, l4len: int, addr_sum: int
    ) -> bytes:
        # addr_sum is ones_sum(src + dst), shared with the pseudo-header checksum.
        eth = self.linktype == LINKTYPE_ETHERNET
        if v == 4:
            self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
            total = IPV4_HEADER.size + l4len
            csum = checksum(
                0x4500 + total + ip_id + IPV4_DONT_FRAGMENT + (TTL << 8 | proto) + addr_sum
            )
            if eth:
                return ETH_IPV4_HEADER.pack(
                    _mac(dst), _mac(src), ETHERTYPE_IPV4,
                    0x45, 0, total, ip_id, IPV4_DONT_FRAGMENT, TTL, proto, csum, src, dst,
                )  # fmt: skip
            return IPV4_HEADER.pack(
                0x45, 0, total, ip_id, IPV4_DONT_FRAGMENT, TTL, proto, csum, src, dst
            )
        if eth:
            return ETH_IPV6_HEADER.pack(
                _mac(dst), _mac(src), ETHERTYPE_IPV6, 0x60000000, l4len, proto, TTL, src, dst
            )
        return IPV6_HEADER.pack(0x60000000, l4len, proto, TTL, src, dst)

    def _build_udp(self, msg: HepMessage, v: int, payload: bytes) -> bytes:
        src, dst, sport, dport = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
        l4len = UDP_HEADER.size + len(payload)
        addr_sum = ones_sum(src + dst)
        # RFC 768 pseudo header (RFC 8200 §8.1 for IPv6: same sum, l4len < 65536) + header.
        residue = addr_sum + IPPROTO_UDP + l4len + sport + dport + l4len + ones_sum(payload)
        csum = checksum(residue) or 0xFFFF  # RFC 768: a computed 0 is sent as all ones
        return b"".join(
            (
                self._ip_and_link(v, IPPROTO_UDP, src, dst, l4len, addr_sum),
                UDP_HEADER.pack(sport, dport, l4len, csum),
                payload,
            )
        )

    def _build_sctp(self, msg: HepMessage, v: int, ppid: int) -> tuple[list[bytes], Reason | None]:
        # One DATA chunk per message on stream 0; TSN and stream sequence number count up per
        # direction (no INIT was captured, so Wireshark checks neither against a handshake).
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
        limit = MAX_UDP_PAYLOAD[v] - SCTP_COMMON_HEADER.size - SCTP_DATA_HEADER.size - 3
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
        packet = head[:8] + crc + chunk
        addr_sum = ones_sum(src + dst)
        ip = self._ip_and_link(v, IPPROTO_SCTP, src, dst, len(packet), addr_sum)
        return [ip + packet], warning

    def _build_tcp(self, msg: HepMessage, v: int) -> list[bytes]:
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
        step = MAX_TCP_SEGMENT[v]
        addr_sum = ones_sum(src + dst)
        fixed = (
            addr_sum + IPPROTO_TCP + sport + dport + (ack >> 16) + (ack & 0xFFFF)
            + (TCP_DATA_OFFSET << 8 | TCP_FLAGS_PSH_ACK) + TCP_WINDOW
        )  # fmt: skip
        frames = []
        for start in range(0, len(payload), step):
            chunk = payload[start : start + step]
            l4len = TCP_HEADER.size + len(chunk)
            # pseudo header (l4len counted once) + TCP header + data
            residue = fixed + l4len + (seq >> 16) + (seq & 0xFFFF) + ones_sum(chunk)
            tcp = TCP_HEADER.pack(
                sport, dport, seq, ack, TCP_DATA_OFFSET, TCP_FLAGS_PSH_ACK, TCP_WINDOW,
                checksum(residue), 0,
            )  # fmt: skip
            frames.append(
                b"".join((self._ip_and_link(v, IPPROTO_TCP, src, dst, l4len, addr_sum), tcp, chunk))
            )
            seq = (seq + len(chunk)) & 0xFFFFFFFF
        table[key] = seq
        return frames


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
