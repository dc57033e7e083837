"""Decode and encode HEP v1, v2 and v3 messages.

Owns: the wire formats of HEP-SPEC §2 (v1/v2) and §3 (v3), payload inflation (§7) and the
timestamp repairs of §9. Must never: touch sockets, files or clocks, log, or raise anything
but :class:`~hep2pcap.errors.DecodeError` for bad input. The caller passes the reference
time (file record or receive time) used for timestamp plausibility.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeError, Reason
from .sip import is_start

HEP3_MAGIC = b"HEP3"
EEP3_MAGIC = b"EEP3"  # HEP-SPEC §1: alias in the spec drawing; accepted only when lenient

#: HEP-SPEC §3.1: "HEP3" + u16 total length (including these 6 bytes).
HEP3_HEADER = struct.Struct("!4sH")
#: HEP-SPEC §3.2: vendor id, chunk type, chunk length (including these 6 bytes).
CHUNK_HEADER = struct.Struct("!HHH")
#: HEP-SPEC §2.1: version, header length, family, proto, sport, dport.
V12_HEADER = struct.Struct("!BBBBHH")
#: HEP-SPEC §2.1 / §2.4: v2 time header, little-endian, padded to 12 bytes.
V2_TIME_LE = struct.Struct("<IIH2x")
V2_TIME_BE = struct.Struct(">IIH2x")

MAX_HEP3_LENGTH = 65535
#: HEP-SPEC §7: hard cap on an inflated payload: it came from one packet, and no packet is
#: larger (a 500-byte datagram must not cost 256 KiB of memory and disk).
MAX_INFLATED_PAYLOAD = 65535
#: HEP-SPEC §14: heplify's payload_zip wraps the whole frame as a gzip member (RFC 1952:
#: ID1 ID2 and CM=8, deflate).
GZIP_MAGIC = b"\x1f\x8b\x08"
#: A gzip-wrapped frame inflates to one HEP frame, bounded like the payload inflation (a
#: HEPv3 message, or a UDP datagram, holds no more). Above it: DECOMPRESS_TOO_LARGE.
MAX_UNWRAPPED = MAX_INFLATED_PAYLOAD

AF_INET = 2
#: HEP-SPEC §2.2: AF_INET6 on Linux, FreeBSD, macOS, Windows.
AF_INET6_VALUES = frozenset({10, 28, 30, 23})
AF_INET6_LINUX = 10


class ChunkType(enum.IntEnum):
    """Generic (vendor 0) chunk types, HEP-SPEC §3.4."""

    IP_FAMILY = 0x0001
    IP_PROTO = 0x0002
    SRC_IP4 = 0x0003
    DST_IP4 = 0x0004
    SRC_IP6 = 0x0005
    DST_IP6 = 0x0006
    SRC_PORT = 0x0007
    DST_PORT = 0x0008
    TS_SEC = 0x0009
    TS_USEC = 0x000A
    PAYLOAD_TYPE = 0x000B
    CAPTURE_ID = 0x000C
    KEEPALIVE = 0x000D
    AUTH_KEY = 0x000E
    PAYLOAD = 0x000F
    COMPRESSED_PAYLOAD = 0x0010
    CORRELATION_ID = 0x0011
    VLAN_ID = 0x0012
    NODE_NAME = 0x0013
    SRC_MAC = 0x0014
    DST_MAC = 0x0015
    ETHERNET_TYPE = 0x0016
    TCP_FLAGS = 0x0017
    IP_TOS = 0x0018
    MOS = 0x0020
    R_FACTOR = 0x0021
    GEO_LOCATION = 0x0022
    JITTER = 0x0023
    TRANSACTION_TYPE = 0x0024
    PAYLOAD_JSON_KEYS = 0x0025
    TAG_VALUES = 0x0026
    TAG_TYPE = 0x0027
    EVENT_TYPE = 0x0028
    GROUP_ID = 0x0029
    EXTRA_CORRELATION = 0x0065  # OpenSIPS JSON mode, non-standard


class PayloadType(enum.IntEnum):
    """The payload types hep2pcap names in output (HEP-SPEC §4); others stay numeric."""

    SIP = 0x01
    RTP = 0x04
    RTCP_JSON = 0x05
    LOG = 0x64


#: What output calls each payload type (HEP-SPEC §4; RTCP_JSON reads "RTCP-JSON").
PAYLOAD_TYPE_NAMES: dict[int, str] = {
    PayloadType.SIP: "SIP",
    0x02: "XMPP",
    0x03: "SDP",
    PayloadType.RTP: "RTP",
    PayloadType.RTCP_JSON: "RTCP-JSON",
    0x06: "MGCP",
    0x07: "MEGACO",
    0x08: "M2UA",
    0x09: "M3UA",
    0x0A: "IAX",
    0x0B: "H322",
    0x0C: "H321",
    0x0D: "M2PA",
    0x14: "WebRTC-JSON",
    0x20: "QoS-JSON",
    0x22: "MOS-JSON",
    0x23: "MOS-short-JSON",
    0x26: "horaclifix-JSON",
    0x32: "SIP-JSON",
    0x35: "DNS-JSON",
    0x36: "M3UA-ISUP-JSON",
    0x37: "RTSP-JSON",
    0x38: "Diameter-JSON",
    0x39: "GSM-MAP-JSON",
    0x3A: "RTCP-PION",
    0x3C: "CDR",
    0x3D: "Verto-or-NG-control",
    0x63: "QoS-report-JSON",
    PayloadType.LOG: "LOG",
}


class IpProto(enum.IntEnum):
    """IP protocol values seen in HEP (HEP-SPEC §6)."""

    UNSET = 0
    TCP = 6
    UDP = 17
    TLS = 22  # fake value (IPPROTO_IDP) used by Kamailio, OpenSIPS, FreeSWITCH
    WEBSOCKET = 50  # fake value (IPPROTO_ESP) used by OpenSIPS
    SCTP = 132


KNOWN_IP_PROTOS = frozenset(int(p) for p in IpProto)

# Fixed value sizes of generic chunks (HEP-SPEC §3.4); a mismatch is CHUNK_BAD_SIZE.
_FIXED_SIZE: dict[int, int] = {
    ChunkType.IP_FAMILY: 1,
    ChunkType.IP_PROTO: 1,
    ChunkType.SRC_IP4: 4,
    ChunkType.DST_IP4: 4,
    ChunkType.SRC_IP6: 16,
    ChunkType.DST_IP6: 16,
    ChunkType.SRC_PORT: 2,
    ChunkType.DST_PORT: 2,
    ChunkType.TS_SEC: 4,
    ChunkType.TS_USEC: 4,
    ChunkType.PAYLOAD_TYPE: 1,
    ChunkType.CAPTURE_ID: 4,
    ChunkType.KEEPALIVE: 2,
    ChunkType.VLAN_ID: 2,
    ChunkType.SRC_MAC: 8,
    ChunkType.DST_MAC: 8,
    ChunkType.ETHERNET_TYPE: 2,
    ChunkType.TCP_FLAGS: 1,
    ChunkType.IP_TOS: 1,
    ChunkType.MOS: 2,
    ChunkType.R_FACTOR: 2,
    ChunkType.JITTER: 4,
    ChunkType.TAG_TYPE: 2,
    ChunkType.EVENT_TYPE: 2,
}
_KNOWN_CHUNKS = frozenset(int(c) for c in ChunkType)

# HEP-SPEC §9: plausibility window and the NTP epoch offset.
MIN_PLAUSIBLE_S = 946684800  # 2000-01-01T00:00:00Z
MIN_PLAUSIBLE_US = MIN_PLAUSIBLE_S * 1_000_000
MAX_FUTURE_S = 86400  # at most one day after the reference time
NTP_EPOCH_OFFSET_S = 2208988800
USEC_PER_S = 1_000_000


@dataclass(slots=True)
class HepMessage:
    """One decoded HEP message, whatever its version.

    Addresses are packed (4 or 16 bytes, network order). ``ts_us`` is integer microseconds
    since the Unix epoch, or ``None`` when the message carries no usable time (HEPv1, or
    v3 without a timestamp under ``use_receive_time``): the caller supplies the receive time.
    """

    version: int
    ip_proto: int
    src_ip: bytes
    dst_ip: bytes
    src_port: int
    dst_port: int
    ts_us: int | None
    payload: bytes
    payload_type: int | None = PayloadType.SIP
    capture_id: int | None = None
    auth_key: bytes | None = None
    correlation_id: bytes | None = None
    node_name: str | None = None
    vlan_id: int | None = None
    compressed: bool = False
    warnings: tuple[Reason, ...] = field(default=(), compare=False)
    #: what the packet comment should add when the payload was rendered (render.py)
    note: str | None = None

    @property
    def ip_version(self) -> int:
        """4 or 6, from the address size."""
        return 4 if len(self.src_ip) == 4 else 6


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Decoder switches (all off by default).

    Attributes:
        strict: reject on DUPLICATE_CHUNK and TRAILING_BYTES instead of warning.
        lenient: accept the "EEP3" alias magic.
        use_receive_time: a v3 message without a timestamp (or with both fields zero)
            gets ``ts_us=None`` and a TS_RECEIVE_TIME warning instead of a rejection.
        unknown_proto_udp: an IP protocol value outside HEP-SPEC §6 is kept (built as
            UDP) instead of rejected.
        max_inflated: cap for compressed payloads, in bytes.
        templates: use the template fast path (on by default; results are the same
            either way, so this is only for tests and measurements).
    """

    strict: bool = False
    lenient: bool = False
    use_receive_time: bool = False
    unknown_proto_udp: bool = False
    max_inflated: int = MAX_INFLATED_PAYLOAD
    templates: bool = True


DEFAULT_OPTIONS = DecodeOptions()


def decode(
    data: bytes, ref_time_us: int | None = None, options: DecodeOptions = DEFAULT_OPTIONS
) -> HepMessage:
    """Decode one HEP message of any version from a datagram or a framed stream unit.

    Args:
        data: exactly one message (a datagram, or one unit cut by the stream deframer).
        ref_time_us: the receive or file-record time, for timestamp plausibility (§9).
            ``None`` (or a time before 2000, a capture clock never set) means "unknown":
            only the fixed window 2000-01-01 … NTP epoch applies.
        options: decoder switches.

    Returns:
        The decoded message; ``warnings`` lists the non-fatal reasons seen.

    Raises:
        DecodeError: the bytes are not a usable HEP message; ``reason`` says why.
    """
    if ref_time_us is not None and ref_time_us < MIN_PLAUSIBLE_US:
        ref_time_us = None  # a capture clock that was never set (1970) is no reference
    if options.templates and type(data) is bytes and data[:4] == HEP3_MAGIC:
        msg = _decode_template(data, ref_time_us)
        if msg is not None:
            return msg
        msg = _decode_v3(data, ref_time_us, options)
        if not msg.warnings and not msg.compressed and msg.ip_proto in KNOWN_IP_PROTOS:
            _learn_regions(data, msg)
        return msg
    if len(data) < 1:
        raise DecodeError(Reason.TRUNCATED_HEADER, 0, "empty datagram")
    first = data[0]
    if first == 0x48 or first == 0x45:  # "H" / "E": v3 magic comes first (HEP-SPEC §1)
        return _decode_v3(data, ref_time_us, options)
    if first == 1 or first == 2:
        return _decode_v12(data, ref_time_us, options)
    if first == 0x1F and data[:3] == GZIP_MAGIC:
        return _decode_wrapped(data, ref_time_us, options)
    raise DecodeError(Reason.UNKNOWN_VERSION, 0, f"first byte {first:#04x} is not HEP")


# Chunk types as plain ints for the hot path (an IntEnum member lookup costs ~0.1 µs).
_C_IP_PROTO = int(ChunkType.IP_PROTO)
_C_SRC_PORT = int(ChunkType.SRC_PORT)
_C_DST_PORT = int(ChunkType.DST_PORT)
_C_TS_SEC = int(ChunkType.TS_SEC)
_C_TS_USEC = int(ChunkType.TS_USEC)
_C_PAYLOAD = int(ChunkType.PAYLOAD)
_C_COMPRESSED_PAYLOAD = int(ChunkType.COMPRESSED_PAYLOAD)
_C_NODE_NAME = int(ChunkType.NODE_NAME)
_C_PAYLOAD_TYPE = int(ChunkType.PAYLOAD_TYPE)
_C_CAPTURE_ID = int(ChunkType.CAPTURE_ID)
_C_AUTH_KEY = int(ChunkType.AUTH_KEY)
_C_CORRELATION_ID = int(ChunkType.CORRELATION_ID)
_C_VLAN_ID = int(ChunkType.VLAN_ID)
_C_SRC_IP4 = int(ChunkType.SRC_IP4)
_C_DST_IP4 = int(ChunkType.DST_IP4)
_C_SRC_IP6 = int(ChunkType.SRC_IP6)
_C_DST_IP6 = int(ChunkType.DST_IP6)
_C_IP_FAMILY = int(ChunkType.IP_FAMILY)


def _decode_v3(data: bytes, ref_time_us: int | None, options: DecodeOptions) -> HepMessage:
    size = len(data)
    if size < HEP3_HEADER.size:
        raise DecodeError(Reason.TRUNCATED_HEADER, 0, f"{size} bytes, a HEP3 header needs 6")
    magic, total = HEP3_HEADER.unpack_from(data)
    warnings: list[Reason] = []
    if magic != HEP3_MAGIC:
        if magic == EEP3_MAGIC and options.lenient:
            warnings.append(Reason.EEP_ALIAS)
        else:
            raise DecodeError(Reason.BAD_MAGIC, 0, f"magic {magic.hex()} is not HEP3")
    if total < HEP3_HEADER.size:
        raise DecodeError(Reason.LENGTH_TOO_SMALL, 4, f"total length {total} < 6")
    if total == HEP3_HEADER.size:
        raise DecodeError(Reason.EMPTY_MESSAGE, 4, "total length 6: no chunks")
    if total > size:
        raise DecodeError(Reason.LENGTH_EXCEEDS_DATA, 4, f"total length {total}, only {size} bytes")
    if total < size:
        if options.strict:
            raise DecodeError(
                Reason.TRAILING_BYTES, total, f"{size - total} bytes after the message"
            )
        warnings.append(Reason.TRAILING_BYTES)

    vals, compressed_at = _scan_chunks(data, total, options.strict, warnings)
    get = vals.get

    src_ip, dst_ip = _pick_addresses(vals, warnings)

    ip_proto = get(_C_IP_PROTO)
    if ip_proto is None:
        ip_proto = 0  # IpProto.UNSET, treated like Asterisk's proto 0: UDP
    elif ip_proto not in KNOWN_IP_PROTOS and not options.unknown_proto_udp:
        raise DecodeError(Reason.UNKNOWN_IP_PROTO, 0, f"IP protocol {ip_proto}")

    src_port = get(_C_SRC_PORT)
    dst_port = get(_C_DST_PORT)
    if src_port is None or dst_port is None:
        which = "source" if src_port is None else "destination"
        raise DecodeError(Reason.MISSING_PORTS, 0, f"no {which} port chunk")

    ts_sec = get(_C_TS_SEC)
    ts_usec = get(_C_TS_USEC)
    ts_us: int | None
    if ts_sec is None or (ts_sec == 0 and not ts_usec):
        if not options.use_receive_time:
            if ts_sec is None:
                raise DecodeError(Reason.MISSING_TIMESTAMP, 0, "no timestamp seconds chunk")
            raise DecodeError(Reason.BAD_TIMESTAMP, 0, "timestamp is zero")
        warnings.append(Reason.TS_RECEIVE_TIME)
        ts_us = None
    elif ts_usec is not None and ts_usec < USEC_PER_S and _plausible(ts_sec, ref_time_us):
        ts_us = ts_sec * USEC_PER_S + ts_usec  # the usual case, without a call
    else:
        if ts_usec is None:
            warnings.append(Reason.MISSING_USEC)
            ts_usec = 0
        ts_us = repair_timestamp(ts_sec, ts_usec, ref_time_us, warnings)

    payload = get(_C_PAYLOAD)
    packed = get(_C_COMPRESSED_PAYLOAD)
    if payload is None:
        if packed is None:
            raise DecodeError(Reason.NO_PAYLOAD, 0, "neither payload chunk 0x000f nor 0x0010")
        payload = inflate(packed, compressed_at, options.max_inflated)
    elif packed is not None:
        raise DecodeError(Reason.AMBIGUOUS_PAYLOAD, 0, "both payload chunks 0x000f and 0x0010")
    if not payload:
        raise DecodeError(Reason.EMPTY_PAYLOAD, 0, "payload is empty")

    node = get(_C_NODE_NAME)
    return HepMessage(
        3,
        ip_proto,
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        ts_us,
        payload,
        get(_C_PAYLOAD_TYPE),
        get(_C_CAPTURE_ID),
        get(_C_AUTH_KEY),
        get(_C_CORRELATION_ID),
        None if node is None else node.decode("utf-8", "replace"),
        get(_C_VLAN_ID),
        packed is not None,
        tuple(warnings),
    )


# --- chunk scanning ------------------------------------------------------------------
#
# The generic scan handles any order. Real senders repeat one chunk order for every
# message, so the leading run of fixed-size chunks seen in a message is remembered as a
# "layout": one struct that reads those chunk headers and values in a single call. A
# message uses a layout only if all its chunk header bytes are equal to the layout's, so
# the result is exactly what the generic scan would give; anything else takes the generic
# scan. A layout is a cache with no effect on results (bounded to MAX_LAYOUTS).

_VALUE_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_ADDRESS_CHUNKS = frozenset({_C_SRC_IP4, _C_DST_IP4, _C_SRC_IP6, _C_DST_IP6})
MAX_LAYOUTS = 8
MIN_LAYOUT_CHUNKS = 4


class _Layout:
    __slots__ = ("headers", "reader", "size", "types")

    def __init__(self, chunks: list[tuple[int, int]]) -> None:
        fmt = "!"
        for ctype, vlen in chunks:
            fmt += "6s" + (f"{vlen}s" if ctype in _ADDRESS_CHUNKS else _VALUE_CODES[vlen])
        self.reader = struct.Struct(fmt)
        self.size = self.reader.size
        self.types = tuple(ctype for ctype, _ in chunks)
        self.headers = tuple(CHUNK_HEADER.pack(0, t, CHUNK_HEADER.size + n) for t, n in chunks)


_layouts: list[_Layout] = []


def _scan_chunks(
    data: bytes, total: int, strict: bool, warnings: list[Reason]
) -> tuple[dict[int, Any], int]:
    """Read every chunk; return generic values by type and the compressed payload offset."""
    vals: dict[int, Any] = {}
    pos = HEP3_HEADER.size
    for layout in _layouts:
        if total - pos >= layout.size:
            fields = layout.reader.unpack_from(data, pos)
            if fields[0::2] == layout.headers:
                vals = dict(zip(layout.types, fields[1::2], strict=True))
                pos += layout.size
                break
    learn: list[tuple[int, int]] | None = (
        [] if pos == HEP3_HEADER.size and len(_layouts) < MAX_LAYOUTS else None
    )
    compressed_at = 0
    unpack_chunk = CHUNK_HEADER.unpack_from
    while pos < total:
        if total - pos < CHUNK_HEADER.size:
            raise DecodeError(
                Reason.CHUNK_HEADER_TRUNCATED, pos, f"{total - pos} bytes left for a chunk header"
            )
        vendor, ctype, clen = unpack_chunk(data, pos)
        if clen < CHUNK_HEADER.size:
            raise DecodeError(
                Reason.CHUNK_LENGTH_TOO_SMALL, pos, f"chunk {ctype:#06x} claims length {clen}"
            )
        end = pos + clen
        if end > total:
            raise DecodeError(
                Reason.CHUNK_OVERRUN,
                pos,
                f"chunk {ctype:#06x} claims {clen} bytes, {total - pos} left",
            )
        want = _FIXED_SIZE.get(ctype)
        if vendor != 0:
            warnings.append(Reason.VENDOR_CHUNK_SKIPPED)
            want = None
        elif ctype not in _KNOWN_CHUNKS:
            if ctype == 0:
                raise DecodeError(Reason.CHUNK_TYPE_ZERO, pos, "generic chunk type 0")
            warnings.append(Reason.UNKNOWN_CHUNK)
            want = None
        else:
            vlen = clen - CHUNK_HEADER.size
            if want is not None and vlen != want:
                raise DecodeError(
                    Reason.CHUNK_BAD_SIZE,
                    pos,
                    f"chunk {ctype:#06x} value is {vlen} bytes, expected {want}",
                )
            raw = data[pos + CHUNK_HEADER.size : end]
            value = int.from_bytes(raw, "big") if want and ctype not in _ADDRESS_CHUNKS else raw
            if ctype in vals:
                if strict:
                    raise DecodeError(Reason.DUPLICATE_CHUNK, pos, f"chunk {ctype:#06x} twice")
                warnings.append(Reason.DUPLICATE_CHUNK)
                want = None  # a duplicate ends the layout being learned
            vals[ctype] = value
            if ctype == _C_COMPRESSED_PAYLOAD:
                compressed_at = pos + CHUNK_HEADER.size
        if learn is not None:
            if want is None:
                _learn(learn)
                learn = None
            else:
                learn.append((ctype, want))
        pos = end
    if learn is not None:
        _learn(learn)
    return vals, compressed_at


def _learn(chunks: list[tuple[int, int]]) -> None:
    if len(chunks) >= MIN_LAYOUT_CHUNKS and len(_layouts) < MAX_LAYOUTS:
        layout = _Layout(chunks)
        if all(known.headers != layout.headers for known in _layouts):
            _layouts.append(layout)


# --- template decode -----------------------------------------------------------------
#
# Senders repeat themselves byte for byte: for one direction the chunks before the time
# (family, proto, addresses, ports: "R1") are the same bytes in every message, headers
# included, and so are one agent's chunks between the time and the payload (payload type,
# capture id, node name, ...: "R2"). So a message of the shape
#
#     HEP3 header | R1 | TS_SEC | TS_USEC | R2 | PAYLOAD (last, ends the message)
#
# is decoded by looking R1 and R2 up as raw bytes in tables learned from earlier messages,
# reading only the time and the payload chunk header. A region is learned only from a
# message the full decoder accepted without warnings (so no duplicates, no vendor or
# unknown chunks, no trailing bytes, no repaired time), uncompressed, with a known IP
# protocol, and with R1 and R2 holding only the chunk types below (disjoint sets, so two
# regions learned from different messages cannot hold the same chunk twice). Equal bytes
# give equal values: what R1 and R2 decode to does not depend on the options, the reference
# time or the other chunks. The time is checked per message exactly as the full decoder's
# usual case checks it (exact chunk headers, usec < 10**6, plausible seconds for this
# reference time). Anything else returns None and takes the full decoder, which also
# raises every DecodeError: the fast path never raises.

_R1_TYPES = frozenset(
    {_C_IP_FAMILY, _C_IP_PROTO, _C_SRC_IP4, _C_DST_IP4, _C_SRC_IP6, _C_DST_IP6}
    | {_C_SRC_PORT, _C_DST_PORT}
)
_R2_TYPES = frozenset(
    {_C_PAYLOAD_TYPE, _C_CAPTURE_ID, _C_AUTH_KEY, _C_CORRELATION_ID, _C_NODE_NAME, _C_VLAN_ID}
)
_TIME_CHUNKS = struct.Struct("!6sI6sI")  # TS_SEC and TS_USEC chunks, HEP-SPEC §3.4
_TS_SEC_HEAD = CHUNK_HEADER.pack(0, _C_TS_SEC, CHUNK_HEADER.size + 4)
_TS_USEC_HEAD = CHUNK_HEADER.pack(0, _C_TS_USEC, CHUNK_HEADER.size + 4)
_PAYLOAD_HEAD = CHUNK_HEADER.pack(0, _C_PAYLOAD, 0)[:4]  # vendor 0, type 0x000f; length varies
_HEAD_AND_TIME = HEP3_HEADER.size + _TIME_CHUNKS.size
#: Entries per generation of each region table (a table holds at most twice this).
TEMPLATE_CAPACITY = 32768
#: Distinct region lengths per table (a sender uses a few: IPv4/IPv6, node name lengths).
MAX_REGION_LENGTHS = 16


class _Regions:
    """Region bytes -> ``(length, *values)``, bounded by two generations.

    New and recalled entries go to ``hot``; when ``hot`` is full it becomes ``old`` and the
    previous ``old`` is dropped, so an entry used at least once per generation stays (an
    approximate LRU without per-hit bookkeeping; clearing a full table instead thrashes when
    there are more live directions than entries, bench/README.md).
    """

    __slots__ = ("capacity", "hot", "lengths", "old")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hot: dict[bytes, tuple[Any, ...]] = {}
        self.old: dict[bytes, tuple[Any, ...]] = {}
        self.lengths: list[int] = []

    def find(self, data: bytes, pos: int) -> tuple[Any, ...] | None:
        """The values of the learned region at ``data[pos:]``, longest first (see learn);
        a hit in the old generation moves to the hot one."""
        hot = self.hot
        for n in self.lengths:
            value = hot.get(data[pos : pos + n])
            if value is not None:
                return value
        old = self.old
        for n in self.lengths:
            key = data[pos : pos + n]
            value = old.pop(key, None)
            if value is not None:
                self._put(key, value)
                return value
        return None

    def learn(self, key: bytes, value: tuple[Any, ...]) -> None:
        """Remember ``value`` for the region bytes ``key``."""
        if len(key) not in self.lengths:
            if len(self.lengths) >= MAX_REGION_LENGTHS:
                return
            # Longest first: a learned region holds whole chunks of its own types only, so
            # a longer key cannot match across the chunk that ends a shorter region (the
            # time, or the payload); a shorter key can be a prefix of the real region.
            self.lengths.append(len(key))
            self.lengths.sort(reverse=True)
        self._put(key, value)

    def _put(self, key: bytes, value: tuple[Any, ...]) -> None:
        hot = self.hot
        if len(hot) >= self.capacity:
            self.old = hot
            self.hot = hot = {}
        hot[key] = value


_r1 = _Regions(TEMPLATE_CAPACITY)
_r2 = _Regions(TEMPLATE_CAPACITY)


def reset_templates(capacity: int = TEMPLATE_CAPACITY) -> None:
    """Forget every learned region and set the table capacity (for tests and benchmarks).

    Results never depend on what was learned; this only changes speed and memory.
    """
    global _r1, _r2
    _r1 = _Regions(capacity)
    _r2 = _Regions(capacity)


def _decode_template(data: bytes, ref_time_us: int | None) -> HepMessage | None:
    """The message from learned regions, or None: then the full decoder decides."""
    size = len(data)
    if size <= _HEAD_AND_TIME + CHUNK_HEADER.size or data[4] << 8 | data[5] != size:
        return None
    t1 = _r1.find(data, HEP3_HEADER.size)
    if t1 is None:
        return None
    pos = HEP3_HEADER.size + t1[0]
    if size - pos <= _TIME_CHUNKS.size + CHUNK_HEADER.size:
        return None
    sec_head, sec, usec_head, usec = _TIME_CHUNKS.unpack_from(data, pos)
    if (
        sec_head != _TS_SEC_HEAD
        or usec_head != _TS_USEC_HEAD
        or usec >= USEC_PER_S
        or not _plausible(sec, ref_time_us)
    ):
        return None
    pos += _TIME_CHUNKS.size
    t2 = _r2.find(data, pos)
    if t2 is None:
        return None
    pos += t2[0]
    if (
        size - pos <= CHUNK_HEADER.size
        or data[pos : pos + 4] != _PAYLOAD_HEAD
        or data[pos + 4] << 8 | data[pos + 5] != size - pos
    ):
        return None
    return HepMessage(
        3,
        t1[1],
        t1[2],
        t1[3],
        t1[4],
        t1[5],
        sec * USEC_PER_S + usec,
        data[pos + CHUNK_HEADER.size :],
        t2[1],
        t2[2],
        t2[3],
        t2[4],
        t2[5],
        t2[6],
        False,
        (),
    )


def _learn_regions(data: bytes, msg: HepMessage) -> None:
    """Learn R1 and R2 of a cleanly decoded message if it has the template shape."""
    size = len(data)
    unpack_chunk = CHUNK_HEADER.unpack_from
    pos = HEP3_HEADER.size
    # The message decoded without warnings: every chunk header is in bounds and generic.
    while True:
        _, ctype, clen = unpack_chunk(data, pos)
        if ctype == _C_TS_SEC:
            break
        if ctype not in _R1_TYPES:
            return
        pos += clen
    r1_end = pos
    if data[pos : pos + 6] != _TS_SEC_HEAD or data[pos + 10 : pos + 16] != _TS_USEC_HEAD:
        return
    pos += _TIME_CHUNKS.size
    r2_start = pos
    while pos < size:
        _, ctype, clen = unpack_chunk(data, pos)
        if ctype == _C_PAYLOAD:
            break
        if ctype not in _R2_TYPES:
            return
        pos += clen
    else:
        return
    if pos + clen != size:
        return
    r1 = (
        r1_end - HEP3_HEADER.size,
        msg.ip_proto,
        msg.src_ip,
        msg.dst_ip,
        msg.src_port,
        msg.dst_port,
    )
    r2 = (
        pos - r2_start,
        msg.payload_type,
        msg.capture_id,
        msg.auth_key,
        msg.correlation_id,
        msg.node_name,
        msg.vlan_id,
    )
    _r1.learn(data[HEP3_HEADER.size : r1_end], r1)
    _r2.learn(data[r2_start:pos], r2)


def _pick_addresses(vals: dict[int, Any], warnings: list[Reason]) -> tuple[bytes, bytes]:
    # HEP-SPEC §10: the address chunks decide the family; the family chunk is a hint
    # (hep-js writes IPv4 chunks even when the family says IPv6).
    get = vals.get
    family = get(_C_IP_FAMILY)
    src4: bytes | None = get(_C_SRC_IP4)
    dst4: bytes | None = get(_C_DST_IP4)
    src6: bytes | None = get(_C_SRC_IP6)
    dst6: bytes | None = get(_C_DST_IP6)
    fam6 = family in AF_INET6_VALUES
    if src4 is not None and dst4 is not None and (not fam6 or src6 is None or dst6 is None):
        return _check_family(src4, dst4, family, fam6, warnings)
    if src6 is not None and dst6 is not None:
        return _check_family(src6, dst6, family, fam6, warnings)
    src = src4 if src4 is not None else src6
    dst = dst4 if dst4 is not None else dst6
    if src is None:
        raise DecodeError(Reason.MISSING_SRC_ADDR, 0, "no source address chunk")
    if dst is None:
        raise DecodeError(Reason.MISSING_DST_ADDR, 0, "no destination address chunk")
    raise DecodeError(
        Reason.MIXED_ADDRESS_FAMILY,
        0,
        f"source is IPv{4 if len(src) == 4 else 6}, destination IPv{4 if len(dst) == 4 else 6}",
    )


def _check_family(
    src: bytes, dst: bytes, family: int | None, fam6: bool, warnings: list[Reason]
) -> tuple[bytes, bytes]:
    if family is not None and (fam6 != (len(src) == 16) or not (fam6 or family == AF_INET)):
        warnings.append(Reason.FAMILY_MISMATCH)
    return src, dst


def inflate(packed: bytes, offset: int = 0, cap: int = MAX_INFLATED_PAYLOAD) -> bytes:
    """Inflate a compressed payload chunk (HEP-SPEC §7): zlib or gzip, then raw deflate.

    Raises:
        DecodeError: DECOMPRESS_FAILED, or DECOMPRESS_TOO_LARGE past ``cap`` bytes.
    """
    # wbits 47 = auto-detect zlib or gzip header; -15 = raw deflate as a last resort.
    for wbits in (47, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(packed, cap + 1)
        except zlib.error:
            continue
        if len(out) > cap or inflater.unconsumed_tail:
            raise DecodeError(
                Reason.DECOMPRESS_TOO_LARGE, offset, f"inflates past the {cap}-byte cap"
            )
        if inflater.eof:
            return out
    raise DecodeError(
        Reason.DECOMPRESS_FAILED, offset, f"{len(packed)} bytes are not zlib, gzip or deflate"
    )


def _plausible(sec: int, ref_time_us: int | None) -> bool:
    upper = NTP_EPOCH_OFFSET_S if ref_time_us is None else ref_time_us // USEC_PER_S + MAX_FUTURE_S
    return MIN_PLAUSIBLE_S <= sec <= upper


def _bswap32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "big"), "little")


def repair_timestamp(sec: int, usec: int, ref_time_us: int | None, warnings: list[Reason]) -> int:
    """Turn HEP seconds/microseconds into microseconds, applying HEP-SPEC §9's repairs.

    Args:
        sec, usec: the values as decoded.
        ref_time_us: receive/record time for the upper plausibility bound, if known.
        warnings: a repair appends its reason here.

    Returns:
        Microseconds since the Unix epoch.

    Raises:
        DecodeError: BAD_TIMESTAMP when no repair gives a plausible time.
    """
    if usec >= USEC_PER_S:
        # rtpengine 2025 wrote both fields little-endian (§9.2).
        sec2, usec2 = _bswap32(sec), _bswap32(usec)
        if usec2 < USEC_PER_S and _plausible(sec2, ref_time_us):
            warnings.append(Reason.TS_BYTE_SWAPPED)
            return sec2 * USEC_PER_S + usec2
        raise DecodeError(Reason.BAD_TIMESTAMP, 0, f"microseconds {usec} >= 1000000")
    if _plausible(sec, ref_time_us):
        return sec * USEC_PER_S + usec
    if sec >= NTP_EPOCH_OFFSET_S and _plausible(sec - NTP_EPOCH_OFFSET_S, ref_time_us):
        warnings.append(Reason.TS_NTP_EPOCH)  # FreeSWITCH on Windows (§9.3)
        return (sec - NTP_EPOCH_OFFSET_S) * USEC_PER_S + usec
    raise DecodeError(Reason.BAD_TIMESTAMP, 0, f"seconds {sec} outside the plausible window")


def _decode_v12(data: bytes, ref_time_us: int | None, options: DecodeOptions) -> HepMessage:
    size = len(data)
    if size < V12_HEADER.size:
        raise DecodeError(Reason.V12_TRUNCATED, 0, f"{size} bytes, a v1/v2 header needs 8")
    version, hdr_len, family, proto, sport, dport = V12_HEADER.unpack_from(data)
    if family == AF_INET:
        alen = 4
    elif family in AF_INET6_VALUES:
        alen = 16
    else:
        raise DecodeError(Reason.V12_BAD_FAMILY, 2, f"address family {family}")
    addr_end = V12_HEADER.size + 2 * alen
    fixed = addr_end + (V2_TIME_LE.size if version == 2 else 0)
    if size < fixed:
        raise DecodeError(
            Reason.V12_TRUNCATED,
            0,
            f"{size} bytes, HEPv{version} IPv{alen // 4 * 2 + 2} needs {fixed}",
        )
    if proto not in KNOWN_IP_PROTOS and not options.unknown_proto_udp:
        raise DecodeError(Reason.UNKNOWN_IP_PROTO, 3, f"IP protocol {proto}")
    warnings: list[Reason] = []
    if hdr_len not in (16, 28, 40, 52):  # §2.3: advisory only
        warnings.append(Reason.V12_HEADER_LENGTH)
    src = data[V12_HEADER.size : V12_HEADER.size + alen]
    dst = data[V12_HEADER.size + alen : addr_end]
    ts_us: int | None = None
    capture_id: int | None = None
    if version == 2:
        sec, usec, capture_id = V2_TIME_LE.unpack_from(data, addr_end)
        if usec >= USEC_PER_S or not _plausible(sec, ref_time_us):
            bsec, busec, bcid = V2_TIME_BE.unpack_from(data, addr_end)
            if busec < USEC_PER_S and _plausible(bsec, ref_time_us):  # §2.4
                warnings.append(Reason.V2_TIME_BIG_ENDIAN)
                sec, usec, capture_id = bsec, busec, bcid
        try:
            ts_us = repair_timestamp(sec, usec, ref_time_us, warnings)
        except DecodeError as exc:
            raise DecodeError(exc.reason, addr_end, exc.detail) from None
    else:
        warnings.append(Reason.TS_RECEIVE_TIME)  # HEPv1 has no time: the caller's is used
    payload = data[fixed:]
    if not payload:
        raise DecodeError(Reason.EMPTY_PAYLOAD, fixed, "payload is empty")
    return HepMessage(
        version=version,
        ip_proto=proto,
        src_ip=src,
        dst_ip=dst,
        src_port=sport,
        dst_port=dport,
        ts_us=ts_us,
        payload=payload,
        capture_id=capture_id,
        warnings=tuple(warnings),
    )


def _decode_wrapped(data: bytes, ref_time_us: int | None, options: DecodeOptions) -> HepMessage:
    inner = unwrap_gzip(data)
    if inner[:3] == GZIP_MAGIC:
        raise DecodeError(Reason.DECOMPRESS_FAILED, 0, "a gzip member inside a gzip member")
    try:
        msg = decode(inner, ref_time_us, options)
    except DecodeError as exc:
        raise DecodeError(exc.reason, exc.offset, f"{exc.detail} (inside gzip)") from None
    msg.warnings = (*msg.warnings, Reason.GZIP_WRAPPED)
    return msg


def unwrap_gzip(data: bytes) -> bytes:
    """The HEP frame inside a gzip-wrapped one (HEP-SPEC §14, heplify ``payload_zip``).

    ``data`` is exactly one gzip member (a datagram, a dump record, or a unit the stream
    deframer cut); it may inflate to at most :data:`MAX_UNWRAPPED` bytes.

    Raises:
        DecodeError: DECOMPRESS_FAILED (not one whole gzip member), DECOMPRESS_TOO_LARGE.
    """
    inflater = zlib.decompressobj(wbits=31)  # gzip only
    try:
        out = inflater.decompress(data, MAX_UNWRAPPED + 1)
    except zlib.error as exc:
        raise DecodeError(Reason.DECOMPRESS_FAILED, 0, f"gzip-wrapped frame: {exc}") from None
    if len(out) > MAX_UNWRAPPED or inflater.unconsumed_tail:
        raise DecodeError(
            Reason.DECOMPRESS_TOO_LARGE,
            0,
            f"gzip-wrapped frame inflates past the {MAX_UNWRAPPED}-byte cap",
        )
    if not inflater.eof:
        raise DecodeError(Reason.DECOMPRESS_FAILED, 0, "gzip-wrapped frame is cut short")
    if inflater.unused_data:
        raise DecodeError(
            Reason.DECOMPRESS_FAILED,
            len(data) - len(inflater.unused_data),
            f"{len(inflater.unused_data)} bytes after the gzip member",
        )
    return out


def gzip_holds_hep3(data: bytes) -> bool:
    """Whether ``data`` starts a gzip member whose first inflated bytes are "HEP3" (at most
    4 bytes are inflated: a cheap test for a datagram or stream on an unknown port)."""
    if data[:3] != GZIP_MAGIC:
        return False
    try:
        return zlib.decompressobj(wbits=31).decompress(data, 4) == HEP3_MAGIC
    except zlib.error:
        return False


#: HEP-SPEC §6 protocols a v1/v2 datagram may claim when it is recognised by its signature
#: alone (0, "unset", is no sign of anything).
_SIGNATURE_PROTOS = KNOWN_IP_PROTOS - {int(IpProto.UNSET)}


def hep12_header_size(data: bytes, pos: int = 0) -> int | None:
    """The fixed header size of a HEPv1/v2 message at ``data[pos]`` (HEP-SPEC §2.1), or None
    when version, address family (§2.2) or IP protocol (§6, not 0) do not fit."""
    if len(data) - pos < V12_HEADER.size:
        return None
    version, family, proto = data[pos], data[pos + 2], data[pos + 3]
    if (version != 1 and version != 2) or proto not in _SIGNATURE_PROTOS:
        return None
    if family == AF_INET:
        size = V12_HEADER.size + 8
    elif family in AF_INET6_VALUES:
        size = V12_HEADER.size + 32
    else:
        return None
    return size + V2_TIME_LE.size if version == 2 else size


def hep12_signature(data: bytes) -> tuple[int, bool] | None:
    """Whether a datagram looks like HEPv1/v2 wherever it was found (HEP-SPEC §1).

    The header must fit: version 1 or 2, an address family of §2.2, a known IP protocol,
    the datagram at least as long as the fixed header of that version and family. It is
    *certain* when, besides, a v2 time is plausible (little- or big-endian, §2.4) and the
    payload begins with a whole SIP start line. The header-length byte is not looked at:
    sngrep 1.6 writes junk there (fixtures/README.md).

    Returns:
        ``(version, certain)``, or ``None`` when the header does not fit.
    """
    fixed = hep12_header_size(data)
    if fixed is None or len(data) <= fixed:
        return None
    version = data[0]
    if version == 2:
        addr_end = fixed - V2_TIME_LE.size
        sec_le, usec_le, _ = V2_TIME_LE.unpack_from(data, addr_end)
        sec_be, usec_be, _ = V2_TIME_BE.unpack_from(data, addr_end)
        if not (
            (usec_le < USEC_PER_S and _plausible(sec_le, None))
            or (usec_be < USEC_PER_S and _plausible(sec_be, None))
        ):
            return version, False
    return version, is_start(data, fixed)


# --- encoding (used by tests, the benchmark generator and fixtures) -------------------


def _chunk(ctype: int, value: bytes) -> bytes:
    size = CHUNK_HEADER.size + len(value)
    if size > MAX_HEP3_LENGTH:
        raise ValueError(f"chunk {ctype:#06x} would be {size} bytes (max {MAX_HEP3_LENGTH})")
    return CHUNK_HEADER.pack(0, ctype, size) + value


def encode(msg: HepMessage, *, compress: bool = False) -> bytes:
    """Encode a message as HEP ``msg.version`` (1, 2 or 3).

    Args:
        msg: the message; ``ts_us`` must be set for v2 and v3.
        compress: v3 only: put the payload zlib-compressed into chunk 0x0010.

    Returns:
        The wire bytes.

    Raises:
        ValueError: the message cannot be represented (too long, no timestamp for v2/v3).
    """
    if msg.version in (1, 2):
        return _encode_v12(msg)
    if msg.ts_us is None:
        raise ValueError("HEPv3 needs a timestamp")
    six = len(msg.src_ip) == 16
    sec, usec = _split_ts(msg.ts_us)
    parts = [
        _chunk(ChunkType.IP_FAMILY, bytes([AF_INET6_LINUX if six else AF_INET])),
        _chunk(ChunkType.IP_PROTO, bytes([msg.ip_proto])),
        _chunk(ChunkType.SRC_IP6 if six else ChunkType.SRC_IP4, msg.src_ip),
        _chunk(ChunkType.DST_IP6 if six else ChunkType.DST_IP4, msg.dst_ip),
        _chunk(ChunkType.SRC_PORT, msg.src_port.to_bytes(2, "big")),
        _chunk(ChunkType.DST_PORT, msg.dst_port.to_bytes(2, "big")),
        _chunk(ChunkType.TS_SEC, sec.to_bytes(4, "big")),
        _chunk(ChunkType.TS_USEC, usec.to_bytes(4, "big")),
    ]
    if msg.payload_type is not None:
        parts.append(_chunk(ChunkType.PAYLOAD_TYPE, bytes([msg.payload_type])))
    if msg.capture_id is not None:
        parts.append(_chunk(ChunkType.CAPTURE_ID, msg.capture_id.to_bytes(4, "big")))
    if msg.auth_key is not None:
        parts.append(_chunk(ChunkType.AUTH_KEY, msg.auth_key))
    if msg.correlation_id is not None:
        parts.append(_chunk(ChunkType.CORRELATION_ID, msg.correlation_id))
    if msg.node_name is not None:
        parts.append(_chunk(ChunkType.NODE_NAME, msg.node_name.encode()))
    if msg.vlan_id is not None:
        parts.append(_chunk(ChunkType.VLAN_ID, msg.vlan_id.to_bytes(2, "big")))
    if compress or msg.compressed:
        parts.append(_chunk(ChunkType.COMPRESSED_PAYLOAD, zlib.compress(msg.payload)))
    else:
        parts.append(_chunk(ChunkType.PAYLOAD, msg.payload))
    body = b"".join(parts)
    total = HEP3_HEADER.size + len(body)
    if total > MAX_HEP3_LENGTH:
        raise ValueError(f"HEPv3 message would be {total} bytes (max {MAX_HEP3_LENGTH})")
    return HEP3_HEADER.pack(HEP3_MAGIC, total) + body


def _split_ts(ts_us: int) -> tuple[int, int]:
    sec, usec = divmod(ts_us, USEC_PER_S)
    if not 0 <= sec <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {ts_us} us does not fit a u32 of seconds")
    return sec, usec


def _encode_v12(msg: HepMessage) -> bytes:
    six = len(msg.src_ip) == 16
    family = AF_INET6_LINUX if six else AF_INET
    hdr_len = 40 if six else 16  # Kamailio convention: time header not counted (§2.3)
    head = V12_HEADER.pack(msg.version, hdr_len, family, msg.ip_proto, msg.src_port, msg.dst_port)
    head += msg.src_ip + msg.dst_ip
    if msg.version == 2:
        if msg.ts_us is None:
            raise ValueError("HEPv2 needs a timestamp")
        sec, usec = _split_ts(msg.ts_us)
        head += V2_TIME_LE.pack(sec, usec, msg.capture_id or 0)
    return head + msg.payload


def auth_needle(password: bytes) -> bytes:
    """The bytes a HEPv3 message carrying exactly ``password`` contains: its auth-key chunk
    (vendor 0, type 0x000e, length, key), for :func:`precheck_auth`."""
    return CHUNK_HEADER.pack(0, ChunkType.AUTH_KEY, CHUNK_HEADER.size + len(password)) + password


#: The auth-key chunk header without its length (HEP-SPEC §3.4, 0x000e).
_AUTH_CHUNK = CHUNK_HEADER.pack(0, ChunkType.AUTH_KEY, 0)[:4]


def precheck_auth(
    data: bytes | bytearray, needle: bytes, start: int = 0, end: int = -1
) -> Reason | None:
    """Cheap rejection before decoding (HEP-SPEC §8): ``None`` when ``data[start:end]`` may
    carry the right key (the full check after decoding decides), else why it cannot.

    A message without the key's chunk bytes anywhere cannot carry the key; the reason tells
    a v1/v2 message, a missing key and a wrong one apart as the full check would (a message
    without any auth chunk header counts as missing).
    """
    if end < 0:
        end = len(data)
    if data.find(needle, start, end) >= 0:
        return None
    if data[start : start + 4] != HEP3_MAGIC:
        return (
            Reason.V12_AUTH_REQUIRED
            if end > start and data[start] in (1, 2)
            else Reason.AUTH_MISSING
        )
    return Reason.AUTH_MISMATCH if data.find(_AUTH_CHUNK, start, end) >= 0 else Reason.AUTH_MISSING
