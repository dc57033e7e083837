"""Read pcap and pcapng captures that carry HEP over UDP or TCP (HEP-SPEC §5, "Saved files").

Owns: the classic pcap and pcapng container formats, the link layers HEP captures use
(Ethernet with 802.1Q/QinQ tags, Linux cooked SLL/SLL2, raw IP, BSD null/loop), IPv4 and
IPv6 (extension headers, fragment reassembly), UDP datagram selection and per-direction TCP
stream reassembly fed to :class:`~hep2pcap.stream.HepDeframer`. It yields one
:class:`~hep2pcap.items.Record` per HEP datagram or framed HEP message, with the capture
time in integer microseconds and the 1-based frame number (Wireshark's ``frame.number``).

Must never: decode HEP itself (the pipeline does), use float timestamps, import dpkt or
scapy (test oracles only), keep unbounded state (fragments, flows and out-of-order bytes are
capped), or raise for bad content. Only a file whose global header is unreadable raises
:class:`~hep2pcap.errors.InputError` from the constructor; everything else becomes a counted
:class:`~hep2pcap.items.Problem` and reading goes on where it can.

Formats: pcap (tcpdump.org "pcap" file format, all four magics), pcapng (IETF
draft-ietf-opsawg-pcapng: SHB, IDB with if_tsresol/if_tsoffset, EPB, SPB, obsolete PB),
link types from the tcpdump.org LINKTYPE registry. Interface Statistics Blocks (§4.6) are
collected in ``PcapSource.statistics`` for ``hep2pcap info``.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Literal

from ..errors import DecodeError, InputError, Reason
from ..frames import ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP
from ..hep import (
    AF_INET,
    AF_INET6_VALUES,
    EEP3_MAGIC,
    GZIP_MAGIC,
    HEP3_MAGIC,
    gzip_holds_hep3,
    hep12_signature,
)
from ..items import Problem, Record
from ..pcapng import (
    BLOCK_TYPE_EPB,
    BLOCK_TYPE_IDB,
    BLOCK_TYPE_ISB,
    BLOCK_TYPE_SHB,
    ISB_COUNTERS,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    OPT_COMMENT,
    OPT_IF_NAME,
    OPT_ISB_ENDTIME,
    OPT_ISB_STARTTIME,
    PCAP_MAGIC_US,
    PCAPNG_MAGIC,
    InterfaceStatistics,
)
from ..sip import is_start
from ..stream import HepDeframer
from . import read_up_to

if TYPE_CHECKING:
    from . import Readable

READ_SIZE = 1024 * 1024

# --- container formats --------------------------------------------------------------------

PCAP_MAGIC_NS = 0xA1B23C4D
#: pcap global header after the magic: major, minor, thiszone, sigfigs, snaplen, linktype.
PCAP_HEADER_LE = struct.Struct("<HHiIII")
PCAP_HEADER_BE = struct.Struct(">HHiIII")
PCAP_HEADER_SIZE = 24
#: pcap record header: ts seconds, ts fraction (µs or ns), captured length, original length.
PCAP_RECORD_LE = struct.Struct("<IIII")
PCAP_RECORD_BE = struct.Struct(">IIII")

BLOCK_TYPE_PB = 0x00000002  # obsolete Packet Block
BLOCK_TYPE_SPB = 0x00000003
PCAPNG_BOM_LE = bytes.fromhex("4d3c2b1a")
PCAPNG_BOM_BE = bytes.fromhex("1a2b3c4d")
#: pcapng generic block header: block type, block total length.
BLOCK_HEADER_LE = struct.Struct("<II")
BLOCK_HEADER_BE = struct.Struct(">II")
#: SHB body start: byte-order magic, major, minor (section length follows).
SHB_VERSION_LE = struct.Struct("<HH")
SHB_VERSION_BE = struct.Struct(">HH")
SHB_MIN_SIZE = 28
#: IDB body start: link type, reserved, snaplen.
IDB_LE = struct.Struct("<HHI")
IDB_BE = struct.Struct(">HHI")
#: EPB body start: interface id, timestamp high, timestamp low, captured len, original len.
EPB_LE = struct.Struct("<IIIII")
EPB_BE = struct.Struct(">IIIII")
#: ISB body start: interface id, timestamp high, timestamp low.
ISB_LE = struct.Struct("<III")
ISB_BE = struct.Struct(">III")
#: Interface Statistics Blocks kept per file, at most (a rotated capture has one per
#: interface per file; a hostile file cannot grow the list without bound).
MAX_STATISTICS = 4096
#: obsolete PB body start: interface id, drops count, ts high, ts low, captured, original.
PB_LE = struct.Struct("<HHIIII")
PB_BE = struct.Struct(">HHIIII")
#: option header: code, length (value padded to 32 bits).
OPTION_LE = struct.Struct("<HH")
OPTION_BE = struct.Struct(">HH")
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
#: A pcapng block larger than this is treated as corrupt (no HEP capture needs more).
MAX_BLOCK_SIZE = 16 * 1024 * 1024
#: Sanity limit on one captured packet (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD).
MAX_CAPLEN = 256 * 1024

# --- link types (tcpdump.org LINKTYPE_* values, not platform DLT_* values) ----------------

LINKTYPE_NULL = 0
LINKTYPE_RAW_DLT12 = 12  # DLT_RAW as written by some writers on most BSDs
LINKTYPE_RAW_DLT14 = 14  # DLT_RAW as written on OpenBSD
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

#: 802.1Q, 802.1ad (QinQ) and the pre-standard QinQ tag protocol identifiers.
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
ETH_HEADER_SIZE = 14
SLL_HEADER_SIZE = 16  # protocol field at offset 14
SLL2_HEADER_SIZE = 20  # protocol field at offset 0

# --- IP / UDP / TCP (RFC 791, RFC 8200, RFC 768, RFC 9293) ------------------------------

#: IPv4 header: ver/ihl, tos, total length, id, flags/fragment offset, ttl, proto, csum, src, dst.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
#: IPv6 header: ver/class/flow, payload length, next header, hop limit, src, dst.
IPV6_HEADER = struct.Struct("!IHBB16s16s")
#: UDP header: source port, destination port, length (checksum not needed).
UDP_HEADER = struct.Struct("!HHH")
#: TCP header: ports, sequence, acknowledgment, data offset + flags.
TCP_HEADER = struct.Struct("!HHIIH")
IPV6_HOPOPTS = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_DSTOPTS = 60
IPV6_EXTENSIONS = frozenset({IPV6_HOPOPTS, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_AH, IPV6_DSTOPTS})
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
SEQ_MOD = 1 << 32
SEQ_HALF = 1 << 31
#: BSD null/loop family values: AF_INET and AF_INET6 on every BSD, macOS, Linux, Windows.
NULL_IPV6_FAMILIES = frozenset({10, 23, 24, 28, 30})
#: HEP-SPEC §2.2: the v1/v2 plausibility check on byte 2 (address family).
HEP12_FAMILIES = frozenset({AF_INET}) | AF_INET6_VALUES

# --- bounds -------------------------------------------------------------------------------

DEFAULT_HEP_PORTS = frozenset({9060})
#: Distinct (kind, transport, port) of non-HEP traffic tallied for the no-HEP diagnosis.
MAX_SEEN_KINDS = 4096
MAX_FRAGMENT_DATAGRAMS = 1024
MAX_FRAGMENT_BYTES = 16 * 1024 * 1024
#: Fragments of a datagram older than this (capture time) are given up (Linux ipfrag_time).
FRAGMENT_TIMEOUT_US = 30_000_000
MAX_FLOWS = 10_000
MAX_OUT_OF_ORDER_BYTES = 1024 * 1024
#: Out-of-order bytes held over all flows, at most (10k flows x 1 MiB would be 10 GB). The
#: sum is taken only when a direction holds more than OOO_SUM_FROM bytes, which normal
#: captures never do.
MAX_OUT_OF_ORDER_TOTAL = 64 * 1024 * 1024
OOO_SUM_FROM = 64 * 1024
#: A TCP hole still open this long (capture time) after data beyond it arrived never fills.
GAP_TIMEOUT_US = 10_000_000

# TCP direction states
_NEW = 0  # no in-order payload seen yet: not classified
_HEP = 1  # carries HEP; bytes go to the deframer
_IGNORED = 2  # not HEP: ignored quietly
_FAILED = 3  # framing error or unrecoverable gap: the rest is dropped
_CLOSED = 4  # FIN/RST seen and flushed; late retransmissions are ignored

_Handler = Callable[[bytes, int, int, "int | None", int, bool], None]


def _ip_text(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def _endpoint(addr: bytes, port: int) -> str:
    return f"{_ip_text(addr)}:{port}" if len(addr) == 4 else f"[{_ip_text(addr)}]:{port}"


def _flow_text(key: tuple[bytes, int, bytes, int]) -> str:
    return f"TCP {_endpoint(key[0], key[1])} -> {_endpoint(key[2], key[3])}"


class _Buffer:
    """Large reads from a non-seekable stream; records are parsed in place from ``buf``."""

    __slots__ = ("_read", "buf", "off")

    def __init__(self, head: bytes, stream: Readable) -> None:
        self.buf = head
        self.off = 0
        self._read = stream.read

    def fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``off`` (``buf`` may be replaced, ``off`` reset)."""
        have = len(self.buf) - self.off
        parts = [self.buf[self.off :]] if have else []
        while have < need:
            chunk = self._read(max(READ_SIZE, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        self.off = 0
        return have >= need

    @property
    def available(self) -> int:
        return len(self.buf) - self.off


class _Interface:
    """A pcapng interface (or the single interface of a classic pcap)."""

    __slots__ = ("div", "handler", "linktype", "mul", "name", "offset_us", "snaplen")

    def __init__(self, linktype: int, snaplen: int, handler: _Handler | None) -> None:
        self.name = ""
        self.linktype = linktype
        self.snaplen = snaplen
        self.handler = handler
        self.mul = 1  # timestamp units -> µs: ts * mul // div + offset_us
        self.div = 1
        self.offset_us = 0


class _Fragments:
    """Fragments of one IP datagram waiting for the rest."""

    __slots__ = ("first_pos", "first_ts", "pieces", "size", "total")

    def __init__(self, ts: int | None, pos: int) -> None:
        self.first_ts = ts
        self.first_pos = pos
        self.pieces: list[tuple[int, bytes]] = []
        self.size = 0
        self.total: int | None = None


class _Half:
    """One direction of one TCP connection."""

    __slots__ = (
        "deframer",
        "fin_seq",
        "gap_ts",
        "head",
        "isn",
        "last_pos",
        "next_seq",
        "ooo",
        "ooo_bytes",
        "scanned",
        "skip",
        "state",
    )

    def __init__(self, pos: int) -> None:
        self.state = _NEW
        self.isn: int | None = None
        self.next_seq: int | None = None
        self.fin_seq: int | None = None
        self.ooo: dict[int, tuple[bytes, int | None, int]] = {}
        self.ooo_bytes = 0
        self.gap_ts: int | None = None
        self.deframer: HepDeframer | None = None
        self.last_pos = pos
        self.head = b""  # first bytes (up to 6) of the message the deframer is waiting on
        self.skip = 0  # bytes still to drop before the next message boundary (resync)
        self.scanned = 0  # capture started mid-connection: bytes searched for a HEP3 start


_FlowKey = tuple[bytes, int, bytes, int]

#: A flow first seen mid-connection is searched this far for a HEP3 start, then ignored.
MIDSTREAM_SCAN_LIMIT = 256 * 1024
HEP3_HEADER_SIZE = 6


def _find_hep3_start(buf: bytes, trusted: bool) -> tuple[int, int]:
    """Find the first plausible HEP3 message start in ``buf``.

    Plausible: the magic, a total length with room for a chunk, a first chunk header whose
    length fits, and HEP3 again where the next message starts. Without that confirmation
    (the next start lies beyond ``buf``) a candidate is taken on a HEP port (``trusted``) or
    when it ends exactly where ``buf`` ends; otherwise the caller waits for more bytes.

    Returns:
        ``(start, -1)`` when found, else ``(-1, keep)``: ``buf[keep:]`` must be kept and
        searched again with the bytes that follow.
    """
    size = len(buf)
    i = buf.find(HEP3_MAGIC)
    while i >= 0:
        if size - i < HEP3_HEADER_SIZE + 6:
            return -1, i  # not enough bytes to judge this candidate yet
        total = int.from_bytes(buf[i + 4 : i + 6], "big")
        first_chunk = int.from_bytes(buf[i + 10 : i + 12], "big")
        if total >= HEP3_HEADER_SIZE + 6 and 6 <= first_chunk <= total - HEP3_HEADER_SIZE:
            nxt = i + total
            if nxt + 4 <= size:
                if buf[nxt : nxt + 4] == HEP3_MAGIC:
                    return i, -1
            elif trusted or nxt == size:
                return i, -1
            else:
                return -1, i  # wait for the next message's start
        i = buf.find(HEP3_MAGIC, i + 1)
    return -1, max(size - 3, 0)


def _certain_hep12(data: bytes) -> bool:
    """A HEPv1/v2 message by its strict signature (Kamailio streams them over TCP)."""
    sig = hep12_signature(data) if data[:1] in (b"\x01", b"\x02") else None
    return sig is not None and sig[1]


def _ends_inside(left: int, pos: int, what: str) -> Iterator[Problem]:
    """End of file: a problem if it came inside a header (``left`` bytes of it)."""
    if left:
        yield Problem(Reason.PCAP_TRUNCATED_RECORD, pos, f"file ends {left} bytes into a {what}")


class PcapSource:
    """Records from a pcap or pcapng file of HEP traffic over UDP or TCP.

    Args:
        name: the input's name, for messages.
        stream: the file's bytes from the start (not seekable; may be gzip or stdin).
        hep_ports: UDP/TCP ports whose traffic is taken as HEP even without a "HEP3" start
            (HEPv1/v2 datagrams; TCP streams that are then framed strictly).
        max_flows: TCP directions tracked at once (the least recently active is flushed).
        max_out_of_order_bytes: per direction, out-of-order bytes held waiting for a hole.
        max_fragment_datagrams: IP datagrams being reassembled at once.
        max_fragment_bytes: bytes held in fragments of incomplete datagrams.

    Raises:
        InputError: the global header (pcap) or first section header (pcapng) is unusable.
    """

    unit = "record"

    def __init__(
        self,
        name: str,
        stream: Readable,
        *,
        hep_ports: Collection[int] = DEFAULT_HEP_PORTS,
        max_flows: int = MAX_FLOWS,
        max_out_of_order_bytes: int = MAX_OUT_OF_ORDER_BYTES,
        max_fragment_datagrams: int = MAX_FRAGMENT_DATAGRAMS,
        max_fragment_bytes: int = MAX_FRAGMENT_BYTES,
    ) -> None:
        self.name = name
        self._hep_ports = frozenset(hep_ports)
        self._max_flows = max_flows
        self._max_ooo = max_out_of_order_bytes
        self._max_frag_datagrams = max_fragment_datagrams
        self._max_frag_bytes = max_fragment_bytes
        self._out: list[Record | Problem] = []
        self._frags: dict[tuple[bytes, bytes, int, int], _Fragments] = {}
        self._frag_bytes = 0
        self._flows: dict[_FlowKey, _Half] = {}
        self._handlers: dict[int, _Handler] = {
            LINKTYPE_NULL: self._null,
            LINKTYPE_LOOP: self._null,
            LINKTYPE_ETHERNET: self._ethernet,
            LINKTYPE_RAW: self._raw,
            LINKTYPE_RAW_DLT12: self._raw,
            LINKTYPE_RAW_DLT14: self._raw,
            LINKTYPE_IPV4: self._raw,
            LINKTYPE_IPV6: self._raw,
            LINKTYPE_LINUX_SLL: self._sll,
            LINKTYPE_LINUX_SLL2: self._sll2,
        }
        self._used = False
        #: (interface id, interface name, statistics) of each Interface Statistics Block read
        self.statistics: list[tuple[int, str, InterfaceStatistics]] = []
        #: What non-HEP traffic looked like, for the one-line diagnosis when no HEP is found:
        #: (kind, transport, port) -> datagrams (UDP) or connections (TCP).
        self.seen_instead: Counter[tuple[str, str, int]] = Counter()
        self._found_hep = False
        head = read_up_to(stream, PCAP_HEADER_SIZE)
        magic = head[:4]
        if magic == PCAPNG_MAGIC:
            self._pcapng = True
            head += read_up_to(stream, SHB_MIN_SIZE - len(head))
            self._check_shb(head)
            self._little = True
            self._iface: _Interface | None = None
            self._nano = False
        else:
            self._pcapng = False
            if len(head) < PCAP_HEADER_SIZE:
                raise InputError(f"{name}: pcap global header cut short ({len(head)} of 24 bytes)")
            if int.from_bytes(magic, "little") in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                self._little = True
            elif int.from_bytes(magic, "big") in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                self._little = False
            else:
                raise InputError(f"{name}: not a pcap or pcapng file (magic {magic.hex()})")
            self._nano = int.from_bytes(magic, "little" if self._little else "big") == (
                PCAP_MAGIC_NS
            )
            hdr = PCAP_HEADER_LE if self._little else PCAP_HEADER_BE
            major, minor, _zone, _sigfigs, snaplen, linktype = hdr.unpack_from(head, 4)
            if major != 2:
                raise InputError(f"{name}: unsupported pcap version {major}.{minor}")
            # The upper bits of the link-type field carry FCS information, not the type.
            linktype &= 0xFFFF
            self._iface = _Interface(linktype, snaplen, self._handlers.get(linktype))
            head = b""
        self._buffer = _Buffer(head, stream)

    def _check_shb(self, head: bytes) -> None:
        if len(head) < 12:
            raise InputError(f"{self.name}: pcapng section header cut short")
        bom = head[8:12]
        if bom == PCAPNG_BOM_LE:
            little = True
        elif bom == PCAPNG_BOM_BE:
            little = False
        else:
            raise InputError(f"{self.name}: pcapng section header has a bad byte-order magic")
        length = int.from_bytes(head[4:8], "little" if little else "big")
        if length < SHB_MIN_SIZE or length % 4 or length > MAX_BLOCK_SIZE:
            raise InputError(f"{self.name}: pcapng section header has a bad length {length}")
        if len(head) < SHB_MIN_SIZE:
            raise InputError(f"{self.name}: pcapng section header cut short")
        major, _minor = (SHB_VERSION_LE if little else SHB_VERSION_BE).unpack_from(head, 12)
        if major != 1:
            raise InputError(f"{self.name}: unsupported pcapng version {major}")

    # --- iteration --------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record | Problem]:
        if self._used:
            return
        self._used = True
        yield from self._iter_pcapng() if self._pcapng else self._iter_pcap()
        out = self._out
        for key, half in list(self._flows.items()):
            self._close(key, half, half.last_pos, "end of file")
            if out:
                yield from out
                out.clear()
        self._flows.clear()
        for fkey, frags in list(self._frags.items()):
            self._drop_fragments(fkey, frags, "end of file")
        yield from out
        out.clear()
        if not self._found_hep and self.seen_instead:
            yield Problem(Reason.NO_HEP, 0, no_hep_diagnosis(self.seen_instead))

    def _iter_pcap(self) -> Iterator[Record | Problem]:
        iface = self._iface
        assert iface is not None
        unpack = (PCAP_RECORD_LE if self._little else PCAP_RECORD_BE).unpack_from
        nano = self._nano
        snaplen = iface.snaplen
        linktype = iface.linktype
        handler = iface.handler
        src = self._buffer
        out = self._out
        pos = 0
        while True:
            buf, off = src.buf, src.off
            if len(buf) - off < 16:
                if not src.fill(16):
                    yield from _ends_inside(src.available, pos + 1, "record header")
                    return
                buf, off = src.buf, 0
            sec, frac, caplen, origlen = unpack(buf, off)
            pos += 1
            if caplen > MAX_CAPLEN:
                yield Problem(
                    Reason.PCAP_SNAPLEN_EXCEEDED,
                    pos,
                    f"record claims {caplen} captured bytes (limit {MAX_CAPLEN});"
                    " the rest of the file cannot be trusted",
                )
                return
            end = off + 16 + caplen
            if end > len(buf):
                if not src.fill(16 + caplen):
                    yield Problem(
                        Reason.PCAP_TRUNCATED_RECORD,
                        pos,
                        f"file ends inside a record: {src.available - 16} of {caplen} bytes",
                    )
                    return
                buf, off = src.buf, 0
                end = 16 + caplen
            src.off = end
            if caplen > snaplen > 0:
                yield Problem(
                    Reason.PCAP_SNAPLEN_EXCEEDED,
                    pos,
                    f"record has {caplen} captured bytes, snap length is {snaplen}",
                )
                continue
            if handler is None:
                yield Problem(
                    Reason.UNSUPPORTED_LINKTYPE, pos, f"link type {linktype} is not supported"
                )
                continue
            ts = sec * 1_000_000 + (frac // 1000 if nano else frac)
            handler(buf, off + 16, end, ts, pos, caplen < origlen)
            if out:
                yield from out
                out.clear()

    def _iter_pcapng(self) -> Iterator[Record | Problem]:
        src = self._buffer
        out = self._out
        interfaces: list[_Interface] = []
        little = True
        header = BLOCK_HEADER_LE
        pos = 0
        while True:
            buf, off = src.buf, src.off
            if len(buf) - off < 12:
                if not src.fill(12):
                    yield from _ends_inside(src.available, pos + 1, "block header")
                    return
                buf, off = src.buf, 0
            btype, blen = header.unpack_from(buf, off)
            if btype == BLOCK_TYPE_SHB:
                bom = buf[off + 8 : off + 12]
                if bom == PCAPNG_BOM_LE:
                    little = True
                elif bom == PCAPNG_BOM_BE:
                    little = False
                else:
                    yield Problem(
                        Reason.PCAP_BAD_BLOCK,
                        pos + 1,
                        f"section header with bad byte-order magic {bom.hex()}; reading stops",
                    )
                    return
                header = BLOCK_HEADER_LE if little else BLOCK_HEADER_BE
                btype, blen = header.unpack_from(buf, off)
                interfaces = []
            if blen < 12 or blen % 4 or blen > MAX_BLOCK_SIZE:
                yield Problem(
                    Reason.PCAP_BAD_BLOCK,
                    pos + 1,
                    f"block type {btype:#x} has bad length {blen}; reading stops",
                )
                return
            if len(buf) - off < blen:
                if not src.fill(blen):
                    yield Problem(
                        Reason.PCAP_TRUNCATED_RECORD,
                        pos + 1,
                        f"file ends inside a block of type {btype:#x}:"
                        f" {src.available} of {blen} bytes",
                    )
                    return
                buf, off = src.buf, 0
            end = off + blen
            trailer = int.from_bytes(buf[end - 4 : end], "little" if little else "big")
            if trailer != blen:
                yield Problem(
                    Reason.PCAP_BAD_BLOCK,
                    pos + 1,
                    f"block type {btype:#x}: leading length {blen} != trailing length"
                    f" {trailer}; reading stops",
                )
                return
            src.off = end
            body = off + 8
            body_end = end - 4
            if btype == BLOCK_TYPE_EPB:
                pos += 1
                if body_end - body < 20:
                    yield Problem(Reason.PCAP_BAD_BLOCK, pos, f"packet block of {blen} bytes")
                    continue
                if_id, hi, lo, caplen, origlen = (EPB_LE if little else EPB_BE).unpack_from(
                    buf, body
                )
                data = body + 20
            elif btype == BLOCK_TYPE_SPB:
                pos += 1
                if body_end - body < 4 or not interfaces:
                    yield Problem(
                        Reason.PCAP_BAD_BLOCK, pos, "simple packet block without an interface"
                    )
                    continue
                origlen = int.from_bytes(buf[body : body + 4], "little" if little else "big")
                data = body + 4
                snap = interfaces[0].snaplen
                caplen = min(origlen, body_end - data, snap if snap > 0 else origlen)
                iface = interfaces[0]
                if iface.handler is None:
                    yield Problem(
                        Reason.UNSUPPORTED_LINKTYPE,
                        pos,
                        f"link type {iface.linktype} is not supported",
                    )
                    continue
                # No timestamp in an SPB: the pipeline falls back to the HEP time.
                iface.handler(buf, data, data + caplen, None, pos, caplen < origlen)
                if out:
                    yield from out
                    out.clear()
                continue
            elif btype == BLOCK_TYPE_PB:
                pos += 1
                if body_end - body < 20:
                    yield Problem(Reason.PCAP_BAD_BLOCK, pos, f"packet block of {blen} bytes")
                    continue
                if_id, _drops, hi, lo, caplen, origlen = (PB_LE if little else PB_BE).unpack_from(
                    buf, body
                )
                data = body + 20
            elif btype == BLOCK_TYPE_IDB:
                iface_or_problem = self._parse_idb(buf, body, body_end, little, pos + 1)
                if isinstance(iface_or_problem, Problem):
                    yield iface_or_problem
                    return
                interfaces.append(iface_or_problem)
                if out:
                    yield from out
                    out.clear()
                continue
            elif btype == BLOCK_TYPE_SHB:
                major, minor = (
                    (SHB_VERSION_LE if little else SHB_VERSION_BE).unpack_from(buf, body + 4)
                    if body_end - body >= 8
                    else (0, 0)
                )
                if major != 1:
                    yield Problem(
                        Reason.PCAP_BAD_BLOCK,
                        pos + 1,
                        f"section header version {major}.{minor}; reading stops",
                    )
                    return
                continue
            elif btype == BLOCK_TYPE_ISB:
                self._parse_isb(buf, body, body_end, little, interfaces)
                continue
            else:
                continue  # name resolution, custom, unknown blocks
            # EPB / PB
            if if_id >= len(interfaces):
                yield Problem(
                    Reason.PCAP_BAD_BLOCK,
                    pos,
                    f"packet on interface {if_id}, section has {len(interfaces)} interface(s)",
                )
                continue
            if caplen > body_end - data:
                yield Problem(
                    Reason.PCAP_BAD_BLOCK,
                    pos,
                    f"packet claims {caplen} captured bytes, block holds {body_end - data}",
                )
                continue
            iface = interfaces[if_id]
            if caplen > MAX_CAPLEN or caplen > iface.snaplen > 0:
                yield Problem(
                    Reason.PCAP_SNAPLEN_EXCEEDED,
                    pos,
                    f"packet has {caplen} captured bytes, snap length is {iface.snaplen}",
                )
                continue
            handler = iface.handler
            if handler is None:
                yield Problem(
                    Reason.UNSUPPORTED_LINKTYPE, pos, f"link type {iface.linktype} is not supported"
                )
                continue
            ts = (hi << 32) | lo
            if iface.mul != iface.div:
                ts = ts * iface.mul // iface.div
            ts += iface.offset_us
            handler(buf, data, data + caplen, ts, pos, caplen < origlen)
            if out:
                yield from out
                out.clear()

    def _parse_idb(
        self, buf: bytes, body: int, end: int, little: bool, pos: int
    ) -> _Interface | Problem:
        if end - body < 8:
            return Problem(
                Reason.PCAP_BAD_BLOCK, pos, "interface description block too short; reading stops"
            )
        linktype, _reserved, snaplen = (IDB_LE if little else IDB_BE).unpack_from(buf, body)
        iface = _Interface(linktype, snaplen, self._handlers.get(linktype))
        order: Literal["little", "big"] = "little" if little else "big"
        option = OPTION_LE if little else OPTION_BE
        p = body + 8
        while end - p >= 4:
            code, olen = option.unpack_from(buf, p)
            p += 4
            if code == OPT_ENDOFOPT:
                break
            if olen > end - p:
                self._out.append(
                    Problem(
                        Reason.PCAP_BAD_BLOCK,
                        pos,
                        f"interface option {code} claims {olen} bytes, {end - p} left",
                    )
                )
                break
            if code == OPT_IF_TSRESOL and olen >= 1:
                res = buf[p]
                if res & 0x80:  # negative power of 2
                    iface.mul, iface.div = 1_000_000, 1 << (res & 0x7F)
                elif res >= 6:  # negative power of 10
                    iface.mul, iface.div = 1, 10 ** (res - 6)
                else:
                    iface.mul, iface.div = 10 ** (6 - res), 1
            elif code == OPT_IF_NAME:
                iface.name = buf[p : p + olen].decode("utf-8", "replace")
            elif code == OPT_IF_TSOFFSET and olen >= 8:
                seconds = int.from_bytes(buf[p : p + 8], order, signed=True)
                iface.offset_us = seconds * 1_000_000
            p += (olen + 3) & ~3
        return iface

    def _parse_isb(
        self, buf: bytes, body: int, end: int, little: bool, interfaces: list[_Interface]
    ) -> None:
        # Statistics are information, not packets: a malformed ISB is skipped, not counted.
        if end - body < ISB_LE.size or len(self.statistics) >= MAX_STATISTICS:
            return
        if_id, hi, lo = (ISB_LE if little else ISB_BE).unpack_from(buf, body)
        iface = interfaces[if_id] if if_id < len(interfaces) else None
        mul, div, offset_us = (iface.mul, iface.div, iface.offset_us) if iface else (1, 1, 0)

        def us(ticks: int) -> int:
            return ticks * mul // div + offset_us

        order: Literal["little", "big"] = "little" if little else "big"
        option = OPTION_LE if little else OPTION_BE
        counters = dict(ISB_COUNTERS)
        values: dict[str, int | str] = {}
        p = body + ISB_LE.size
        while end - p >= 4:
            code, olen = option.unpack_from(buf, p)
            p += 4
            if code == OPT_ENDOFOPT or olen > end - p:
                break
            value = buf[p : p + olen]
            if code == OPT_COMMENT:
                values["comment"] = value.decode("utf-8", "replace")
            elif code in (OPT_ISB_STARTTIME, OPT_ISB_ENDTIME) and olen == 8:
                t = us((int.from_bytes(value[:4], order) << 32) | int.from_bytes(value[4:], order))
                values["start_us" if code == OPT_ISB_STARTTIME else "end_us"] = t
            elif code in counters and olen == 8:
                values[counters[code]] = int.from_bytes(value, order)
            p += (olen + 3) & ~3
        end_us = us((hi << 32) | lo)
        stats = InterfaceStatistics(
            start_us=int(values.pop("start_us", end_us)),
            end_us=int(values.pop("end_us", end_us)),
            comment=str(values.pop("comment")) if "comment" in values else None,
            **{k: int(v) for k, v in values.items()},
        )
        self.statistics.append((if_id, iface.name if iface is not None else "", stats))

    # --- link layers ------------------------------------------------------------------

    def _problem(self, reason: Reason, pos: int, detail: str) -> None:
        self._out.append(Problem(reason, pos, detail))

    def _short(self, what: str, need: int, have: int, pos: int, cut: bool) -> None:
        if cut:
            self._problem(
                Reason.PCAP_CAPTURE_TRUNCATED,
                pos,
                f"{what} cut by the snap length ({have} of {need} bytes captured)",
            )
        else:
            self._problem(Reason.BAD_IP_PACKET, pos, f"{what} needs {need} bytes, {have} left")

    def _ethernet(
        self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool
    ) -> None:
        if end - off < ETH_HEADER_SIZE:
            self._short("Ethernet header", ETH_HEADER_SIZE, end - off, pos, cut)
            return
        etype = (buf[off + 12] << 8) | buf[off + 13]
        if etype == ETHERTYPE_IPV4:  # the common case, without the VLAN loop
            self._ipv4(buf, off + ETH_HEADER_SIZE, end, ts, pos, cut)
        else:
            self._ethertype(etype, buf, off + ETH_HEADER_SIZE, end, ts, pos, cut)

    def _sll(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        if end - off < SLL_HEADER_SIZE:
            self._short("Linux cooked header", SLL_HEADER_SIZE, end - off, pos, cut)
            return
        etype = (buf[off + 14] << 8) | buf[off + 15]
        self._ethertype(etype, buf, off + SLL_HEADER_SIZE, end, ts, pos, cut)

    def _sll2(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        if end - off < SLL2_HEADER_SIZE:
            self._short("Linux cooked v2 header", SLL2_HEADER_SIZE, end - off, pos, cut)
            return
        etype = (buf[off] << 8) | buf[off + 1]
        self._ethertype(etype, buf, off + SLL2_HEADER_SIZE, end, ts, pos, cut)

    def _ethertype(
        self, etype: int, buf: bytes, p: int, end: int, ts: int | None, pos: int, cut: bool
    ) -> None:
        while etype in VLAN_TPIDS:
            if end - p < 4:
                self._short("VLAN tag", 4, end - p, pos, cut)
                return
            etype = (buf[p + 2] << 8) | buf[p + 3]
            p += 4
        if etype == ETHERTYPE_IPV4:
            self._ipv4(buf, p, end, ts, pos, cut)
        elif etype == ETHERTYPE_IPV6:
            self._ipv6(buf, p, end, ts, pos, cut)
        else:
            self._problem(Reason.NOT_HEP, pos, f"not IP (ethertype {etype:#06x})")

    def _raw(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        version = buf[off] >> 4 if end > off else 0
        if version == 4:
            self._ipv4(buf, off, end, ts, pos, cut)
        elif version == 6:
            self._ipv6(buf, off, end, ts, pos, cut)
        else:
            self._problem(Reason.BAD_IP_PACKET, pos, f"raw IP packet with IP version {version}")

    def _null(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        if end - off < 4:
            self._short("loopback header", 4, end - off, pos, cut)
            return
        # The family word is in the writer's byte order (null) or network order (loop);
        # a family value fits in 16 bits, so the order that gives a small number is right.
        family = int.from_bytes(buf[off : off + 4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(buf[off : off + 4], "big")
        if family == AF_INET:
            self._ipv4(buf, off + 4, end, ts, pos, cut)
        elif family in NULL_IPV6_FAMILIES:
            self._ipv6(buf, off + 4, end, ts, pos, cut)
        else:
            self._problem(Reason.NOT_HEP, pos, f"not IP (loopback family {family})")

    # --- IP -------------------------------------------------------------------------------

    def _ipv4(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        avail = end - off
        if avail < 20:
            self._short("IPv4 header", 20, avail, pos, cut)
            return
        vihl, _tos, total, ident, frag, _ttl, proto, _csum, src, dst = IPV4_HEADER.unpack_from(
            buf, off
        )
        ihl = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl < 20:
            self._problem(
                Reason.BAD_IP_PACKET, pos, f"bad IPv4 version/header length byte {vihl:#04x}"
            )
            return
        if total == 0:
            total = avail  # TCP segmentation offload: captured before the length was set
        if total < ihl:
            self._problem(Reason.BAD_IP_PACKET, pos, f"IPv4 total length {total} < header {ihl}")
            return
        truncated = False
        if total > avail:
            if not cut:
                self._problem(
                    Reason.BAD_IP_PACKET,
                    pos,
                    f"IPv4 total length {total}, frame holds {avail} bytes",
                )
                return
            truncated = True
            pend = end
        else:
            pend = off + total  # drops Ethernet padding and trailers
        if ihl > pend - off:
            self._short("IPv4 header with options", ihl, pend - off, pos, cut)
            return
        if frag & 0x3FFF:  # more-fragments flag or a fragment offset
            if truncated:
                self._problem(
                    Reason.PCAP_CAPTURE_TRUNCATED,
                    pos,
                    f"IPv4 fragment {_ip_text(src)} -> {_ip_text(dst)} cut by the snap length",
                )
                return
            self._fragment(
                src,
                dst,
                proto,
                ident,
                (frag & 0x1FFF) << 3,
                not frag & 0x2000,
                buf[off + ihl : pend],
                ts,
                pos,
            )
            return
        if proto == IPPROTO_UDP:
            self._udp(src, dst, buf, off + ihl, pend, ts, pos, truncated)
        elif proto == IPPROTO_TCP:
            self._tcp(src, dst, buf, off + ihl, pend, ts, pos, truncated)
        else:
            self._problem(Reason.NOT_HEP, pos, f"IP protocol {proto}")

    def _ipv6(self, buf: bytes, off: int, end: int, ts: int | None, pos: int, cut: bool) -> None:
        avail = end - off
        if avail < 40:
            self._short("IPv6 header", 40, avail, pos, cut)
            return
        first, plen, nh, _hops, src, dst = IPV6_HEADER.unpack_from(buf, off)
        if first >> 28 != 6:
            self._problem(Reason.BAD_IP_PACKET, pos, f"IP version {first >> 28} in an IPv6 frame")
            return
        p = off + 40
        truncated = False
        if plen == 0:
            pend = end  # jumbogram, or segmentation offload
        elif plen > end - p:
            if not cut:
                self._problem(
                    Reason.BAD_IP_PACKET,
                    pos,
                    f"IPv6 payload length {plen}, frame holds {end - p} bytes",
                )
                return
            truncated = True
            pend = end
        else:
            pend = p + plen
        self._ipv6_payload(nh, src, dst, buf, p, pend, ts, pos, truncated, True)

    def _ipv6_payload(
        self,
        nh: int,
        src: bytes,
        dst: bytes,
        buf: bytes,
        p: int,
        pend: int,
        ts: int | None,
        pos: int,
        truncated: bool,
        first_pass: bool,
    ) -> None:
        while nh in IPV6_EXTENSIONS:
            if pend - p < 8:
                self._short(f"IPv6 extension header {nh}", 8, pend - p, pos, truncated)
                return
            if nh == IPV6_FRAGMENT:
                nxt = buf[p]
                field = (buf[p + 2] << 8) | buf[p + 3]
                ident = int.from_bytes(buf[p + 4 : p + 8], "big")
                p += 8
                if field & 0xFFF9:  # an offset or the M flag: a real fragment
                    if not first_pass:
                        self._problem(Reason.BAD_IP_PACKET, pos, "IPv6 fragment inside a fragment")
                    elif truncated:
                        self._problem(
                            Reason.PCAP_CAPTURE_TRUNCATED,
                            pos,
                            f"IPv6 fragment {_ip_text(src)} -> {_ip_text(dst)}"
                            " cut by the snap length",
                        )
                    else:
                        self._fragment(
                            src,
                            dst,
                            nxt,
                            ident,
                            field & 0xFFF8,
                            not field & 1,
                            buf[p:pend],
                            ts,
                            pos,
                        )
                    return
                nh = nxt  # atomic fragment (RFC 6946): offset 0, no M flag
                continue
            size = (buf[p + 1] + 2) << 2 if nh == IPV6_AH else (buf[p + 1] + 1) << 3
            if size > pend - p:
                self._short(f"IPv6 extension header {nh}", size, pend - p, pos, truncated)
                return
            nh = buf[p]
            p += size
        if nh == IPPROTO_UDP:
            self._udp(src, dst, buf, p, pend, ts, pos, truncated)
        elif nh == IPPROTO_TCP:
            self._tcp(src, dst, buf, p, pend, ts, pos, truncated)
        else:
            self._problem(Reason.NOT_HEP, pos, f"IPv6 next header {nh}")

    def _fragment(
        self,
        src: bytes,
        dst: bytes,
        proto: int,
        ident: int,
        start: int,
        last: bool,
        data: bytes,
        ts: int | None,
        pos: int,
    ) -> None:
        stop = start + len(data)
        version = 4 if len(src) == 4 else 6
        if stop > 65535 or (not last and (not data or len(data) % 8)):
            self._problem(
                Reason.BAD_IP_PACKET,
                pos,
                f"IPv{version} fragment id {ident:#x} covers bytes {start}-{stop}"
                + ("" if last else " (not a multiple of 8, or empty, before the last)"),
            )
            return
        frags = self._frags
        if ts is not None:
            while frags:
                oldest_key = next(iter(frags))
                oldest = frags[oldest_key]
                if oldest.first_ts is None or ts - oldest.first_ts <= FRAGMENT_TIMEOUT_US:
                    break
                self._drop_fragments(oldest_key, oldest, "timed out")
        key = (src, dst, proto, ident)
        entry = frags.get(key)
        if entry is None:
            if len(frags) >= self._max_frag_datagrams:
                oldest_key = next(iter(frags))
                self._drop_fragments(oldest_key, frags[oldest_key], "too many pending datagrams")
            entry = frags[key] = _Fragments(ts, pos)
        conflict = ""
        if last:
            if entry.total is not None and entry.total != stop:
                conflict = f"two last fragments end at {entry.total} and {stop}"
            elif any(o + len(d) > stop for o, d in entry.pieces):
                conflict = f"data beyond the last fragment's end {stop}"
        elif entry.total is not None and stop > entry.total:
            conflict = f"fragment ends at {stop}, after the datagram's end {entry.total}"
        if not conflict:
            for o, d in entry.pieces:
                lo = o if o > start else start
                hi = o + len(d)
                if hi > stop:
                    hi = stop
                if lo < hi and d[lo - o : hi - o] != data[lo - start : hi - start]:
                    conflict = f"bytes {lo}-{hi} differ between overlapping fragments"
                    break
        if conflict:
            del frags[key]
            self._frag_bytes -= entry.size
            self._problem(
                Reason.IP_FRAGMENT_OVERLAP,
                pos,
                f"IPv{version} {_ip_text(src)} -> {_ip_text(dst)} id {ident:#x}: {conflict};"
                " datagram dropped",
            )
            return
        if last:
            entry.total = stop
        entry.pieces.append((start, data))
        entry.size += len(data)
        self._frag_bytes += len(data)
        while self._frag_bytes > self._max_frag_bytes and frags:
            oldest_key = next(iter(frags))
            self._drop_fragments(oldest_key, frags[oldest_key], "fragment memory limit")
        if key not in frags or entry.total is None:
            return
        total = entry.total
        pieces = sorted(entry.pieces, key=itemgetter(0))
        covered = 0
        for o, d in pieces:
            if o > covered:
                return  # a hole remains
            if o + len(d) > covered:
                covered = o + len(d)
        del frags[key]
        self._frag_bytes -= entry.size
        whole = bytearray(total)
        for o, d in pieces:
            whole[o : o + len(d)] = d
        datagram = bytes(whole)
        if version == 6:
            self._ipv6_payload(proto, src, dst, datagram, 0, total, ts, pos, False, False)
        elif proto == IPPROTO_UDP:
            self._udp(src, dst, datagram, 0, total, ts, pos, False)
        elif proto == IPPROTO_TCP:
            self._tcp(src, dst, datagram, 0, total, ts, pos, False)
        else:
            self._problem(Reason.NOT_HEP, pos, f"IP protocol {proto}")

    def _drop_fragments(
        self, key: tuple[bytes, bytes, int, int], entry: _Fragments, why: str
    ) -> None:
        del self._frags[key]
        self._frag_bytes -= entry.size
        src, dst, _proto, ident = key
        need = f"{entry.total}" if entry.total is not None else "?"
        self._problem(
            Reason.IP_FRAGMENT_INCOMPLETE,
            entry.first_pos,
            f"IPv{4 if len(src) == 4 else 6} {_ip_text(src)} -> {_ip_text(dst)} id {ident:#x}:"
            f" {len(entry.pieces)} fragment(s), {entry.size} of {need} bytes; {why}",
        )

    # --- UDP ------------------------------------------------------------------------------

    def _udp(
        self,
        src: bytes,
        dst: bytes,
        buf: bytes,
        p: int,
        pend: int,
        ts: int | None,
        pos: int,
        truncated: bool,
    ) -> None:
        if pend - p < 8:
            self._short("UDP header", 8, pend - p, pos, truncated)
            return
        sport, dport, ulen = UDP_HEADER.unpack_from(buf, p)
        if ulen == 0 and len(src) == 16:
            ulen = pend - p  # IPv6 jumbogram (RFC 2675)
        if ulen < 8:
            self._problem(Reason.BAD_IP_PACKET, pos, f"UDP length {ulen} < 8")
            return
        s = p + 8
        dend = p + ulen
        cut = False
        if dend > pend:
            if not truncated:
                self._problem(
                    Reason.BAD_IP_PACKET,
                    pos,
                    f"UDP length {ulen}, IP payload holds {pend - p} bytes",
                )
                return
            cut = True
            dend = pend
        head = buf[s : s + 4 if dend - s >= 4 else dend]  # never peek into frame padding
        ports = self._hep_ports
        on_port = sport in ports or dport in ports
        if head == HEP3_MAGIC or (
            on_port
            and (
                head == EEP3_MAGIC
                or (dend - s >= 3 and buf[s] in (1, 2) and buf[s + 2] in HEP12_FAMILIES)
                or (cut and dend - s < 4)
            )
        ):
            if cut:
                self._problem(
                    Reason.PCAP_CAPTURE_TRUNCATED,
                    pos,
                    f"HEP datagram {_endpoint(src, sport)} -> {_endpoint(dst, dport)} cut by"
                    f" the snap length ({dend - s} of {ulen - 8} bytes captured)",
                )
                return
            self._found_hep = True
            self._out.append(Record(buf[s:dend], ts, pos))
            return
        # Not HEP3 and not on a HEP port: HEPv1/v2 by its strict signature, or a gzip-wrapped
        # HEP3 frame (heplify payload_zip, HEP-SPEC §14), on any port.
        data = buf[s:dend]
        sig = hep12_signature(data) if not cut and head[:1] in (b"\x01", b"\x02") else None
        if (sig is not None and sig[1]) or (
            not cut and head[:3] == GZIP_MAGIC and gzip_holds_hep3(data)
        ):
            self._found_hep = True
            self._out.append(Record(data, ts, pos))
            return
        if sig is not None:
            kind, port = f"HEPv{sig[0]}", dport
        else:
            kind, port = ("SIP", min(sport, dport)) if is_start(data) else ("other", dport)
        self._tally(kind, "UDP", port)
        self._problem(
            Reason.NOT_HEP,
            pos,
            f"UDP {_endpoint(src, sport)} -> {_endpoint(dst, dport)} (first bytes {head.hex()})"
            + (f"; looks like HEPv{sig[0]} but is not certain" if sig is not None else ""),
        )

    def _tally(self, kind: str, transport: str, port: int) -> None:
        seen = self.seen_instead
        key = (kind, transport, port)
        if key not in seen and len(seen) >= MAX_SEEN_KINDS:
            key = (kind, transport, 0)  # 0: ports past the cap
        seen[key] += 1

    # --- TCP ------------------------------------------------------------------------------

    def _tcp(
        self,
        src: bytes,
        dst: bytes,
        buf: bytes,
        p: int,
        pend: int,
        ts: int | None,
        pos: int,
        truncated: bool,
    ) -> None:
        if pend - p < 20:
            self._short("TCP header", 20, pend - p, pos, truncated)
            return
        sport, dport, seq, _ack, offflags = TCP_HEADER.unpack_from(buf, p)
        doff = (offflags >> 12) << 2
        if doff < 20:
            self._problem(Reason.BAD_IP_PACKET, pos, f"TCP data offset {doff} < 20")
            return
        if doff > pend - p:
            self._short("TCP header with options", doff, pend - p, pos, truncated)
            return
        flags = offflags & 0x3F
        ds = p + doff
        dlen = pend - ds
        key = (src, sport, dst, dport)
        flows = self._flows
        if flags & TCP_RST:  # ends both directions; data on a RST is not stream data
            for k in (key, (dst, dport, src, sport)):
                h = flows.get(k)
                if h is not None and h.state < _IGNORED:
                    self._close(k, h, pos, "connection reset")
            return
        half = flows.pop(key, None)  # re-inserted below: the dict's order is least recent first
        if half is None:
            if dlen == 0 and not flags & TCP_SYN:
                return  # nothing to learn from a bare ACK/FIN of an unknown flow
            if len(flows) >= self._max_flows:
                old_key = next(iter(flows))
                old = flows.pop(old_key)
                self._close(old_key, old, old.last_pos, "flow table full")
            half = _Half(pos)
        flows[key] = half
        if flags & TCP_SYN:
            isn = (seq + 1) % SEQ_MOD
            if half.isn is None and half.next_seq is None:
                half.isn = half.next_seq = isn
            elif half.isn != isn:  # a new connection on the same 4-tuple
                self._close(key, half, half.last_pos, "new connection on the same ports")
                half = flows[key] = _Half(pos)
                half.isn = half.next_seq = isn
            seq = isn
        half.last_pos = pos
        if half.state >= _IGNORED:
            return
        if half.next_seq is None:
            half.next_seq = seq  # capture started mid-connection
        if dlen > 0:
            if truncated:
                self._truncated_segment(key, half, seq, buf[ds:pend], pos)
            else:
                self._segment(key, half, seq, buf[ds:pend], ts, pos)
        if half.state >= _IGNORED:
            return
        if flags & TCP_FIN:
            length = dlen if not truncated else 0
            half.fin_seq = (seq + length) % SEQ_MOD
        if half.fin_seq is not None and half.next_seq == half.fin_seq:
            half.ooo.clear()  # anything beyond the FIN is bogus
            half.ooo_bytes = 0
            self._close(key, half, pos, "connection closed")

    def _truncated_segment(
        self, key: _FlowKey, half: _Half, seq: int, data: bytes, pos: int
    ) -> None:
        if half.state == _NEW and seq == half.next_seq:
            if not self._looks_hep(key, data):
                self._not_hep(key, half, pos, data)
                return
            # It is HEP, and its first bytes are lost: the hole is reported as a gap later.
            half.state = _HEP
            half.deframer = HepDeframer()
        self._problem(
            Reason.PCAP_CAPTURE_TRUNCATED,
            pos,
            f"{_flow_text(key)}: segment cut by the snap length; its bytes are missing",
        )

    def _looks_hep(self, key: _FlowKey, data: bytes) -> bool:
        ports = self._hep_ports
        return (
            key[1] in ports
            or key[3] in ports
            or (data.startswith(HEP3_MAGIC) if len(data) >= 4 else HEP3_MAGIC.startswith(data))
            or gzip_holds_hep3(data)
            or _certain_hep12(data)
        )

    def _not_hep(self, key: _FlowKey, half: _Half, pos: int, data: bytes) -> None:
        half.state = _IGNORED
        half.ooo = {}
        half.ooo_bytes = 0
        other = self._flows.get((key[2], key[3], key[0], key[1]))
        if other is not None and other.state == _IGNORED:
            return  # counted once per connection, not once per direction
        if is_start(data):
            self._tally("SIP", "TCP", min(key[1], key[3]))
        else:
            self._tally("other", "TCP", key[3])
        self._problem(
            Reason.NOT_HEP,
            pos,
            f"{_flow_text(key)} does not start with HEP3 (first bytes {data[:4].hex()});"
            " flow ignored",
        )

    def _segment(
        self, key: _FlowKey, half: _Half, seq: int, data: bytes, ts: int | None, pos: int
    ) -> None:
        nxt = half.next_seq
        assert nxt is not None
        delta = (seq - nxt) % SEQ_MOD
        if delta == 0:
            self._deliver(key, half, data, ts, pos)
        elif delta >= SEQ_HALF:
            behind = SEQ_MOD - delta
            if behind >= len(data):
                return  # retransmission of bytes already delivered
            self._deliver(key, half, data[behind:], ts, pos)
        else:
            ooo = half.ooo
            old = ooo.get(seq)
            if old is None or len(old[0]) < len(data):
                ooo[seq] = (data, ts, pos)
                half.ooo_bytes += len(data) - (len(old[0]) if old is not None else 0)
            if half.gap_ts is None:
                half.gap_ts = ts
            while half.ooo_bytes > self._max_ooo and half.ooo and half.state <= _HEP:
                self._skip_gap(key, half, ts, pos, "out-of-order buffer full")
            if half.ooo_bytes > OOO_SUM_FROM:
                total = sum(h.ooo_bytes for h in self._flows.values())
                while total > MAX_OUT_OF_ORDER_TOTAL and half.ooo and half.state <= _HEP:
                    before = half.ooo_bytes
                    self._skip_gap(key, half, ts, pos, "out-of-order buffers of all flows full")
                    total -= before - half.ooo_bytes
            if (
                half.ooo
                and ts is not None
                and half.gap_ts is not None
                and ts - half.gap_ts > GAP_TIMEOUT_US
                and half.state <= _HEP
            ):
                self._skip_gap(
                    key, half, ts, pos, f"hole open for over {GAP_TIMEOUT_US // 10**6} s"
                )
            return
        if half.ooo and half.state <= _HEP:
            self._drain(key, half)

    def _deliver(self, key: _FlowKey, half: _Half, data: bytes, ts: int | None, pos: int) -> None:
        assert half.next_seq is not None
        half.next_seq = (half.next_seq + len(data)) % SEQ_MOD
        if half.state == _NEW:
            if (
                half.isn is None
                and (
                    half.scanned  # already searching: "H" alone does not end the search
                    or not (
                        data.startswith(HEP3_MAGIC)
                        if len(data) >= 4
                        else HEP3_MAGIC.startswith(data)
                    )
                )
                and not gzip_holds_hep3(data)
            ):
                found = self._midstream_start(key, half, data, pos)
                if found is None:
                    return
                data = found
            elif not self._looks_hep(key, data):
                self._not_hep(key, half, pos, data)
                return
            half.state = _HEP
            half.deframer = HepDeframer()
        deframer = half.deframer
        if deframer is None:
            return
        if half.skip:  # resynchronising: drop the rest of a message cut by a hole
            if len(data) <= half.skip:
                half.skip -= len(data)
                return
            data = data[half.skip :]
            half.skip = 0
        try:
            messages = deframer.feed(data)
        except DecodeError as exc:
            self._problem(
                exc.reason, pos, f"{_flow_text(key)}: {exc.detail}; rest of this direction dropped"
            )
            self._fail(half)
            return
        out = self._out
        if messages:
            self._found_hep = True
        for message in messages:
            out.append(Record(message, ts, pos))
        # Remember the pending message's header: after a hole it tells where the next starts.
        pending = deframer.pending
        if not pending:
            half.head = b""
        elif pending <= len(data):
            start = len(data) - pending
            half.head = data[start : start + 6]
        elif len(half.head) < 6:
            half.head = (half.head + data)[:6]

    def _midstream_start(self, key: _FlowKey, half: _Half, data: bytes, pos: int) -> bytes | None:
        """No SYN seen and the first bytes are not HEP3: the capture started inside a
        message (tcpdump started during the call). Skip to the first header that checks
        out; return the data from there, or None while still looking (or given up)."""
        buf = half.head + data  # while searching, head keeps the bytes still undecided
        trusted = key[1] in self._hep_ports or key[3] in self._hep_ports
        start, keep = _find_hep3_start(buf, trusted)
        if start < 0:
            half.scanned += len(data)
            if half.scanned > MIDSTREAM_SCAN_LIMIT:
                half.head = b""
                self._not_hep(key, half, pos, buf)
            else:
                half.head = buf[keep:]
            return None
        skipped = half.scanned - (len(buf) - len(data)) + start
        half.head = b""
        self._problem(
            Reason.TCP_MIDSTREAM_START,
            pos,
            f"{_flow_text(key)}: capture started inside a message;"
            f" {skipped} bytes before the first HEP3 header skipped",
        )
        return buf[start:]

    def _fail(self, half: _Half) -> None:
        half.state = _FAILED
        half.deframer = None
        half.ooo = {}
        half.ooo_bytes = 0
        half.gap_ts = None

    def _drain(self, key: _FlowKey, half: _Half) -> None:
        ooo = half.ooo
        while ooo and half.state <= _HEP:
            nxt = half.next_seq
            assert nxt is not None
            item = ooo.pop(nxt, None)
            if item is not None:
                half.ooo_bytes -= len(item[0])
                self._deliver(key, half, *item)
                continue
            found: tuple[bytes, int | None, int] | None = None
            for s in list(ooo):
                delta = (s - nxt) % SEQ_MOD
                if delta >= SEQ_HALF:  # starts before the next expected byte
                    data, ts, pos = ooo.pop(s)
                    half.ooo_bytes -= len(data)
                    behind = SEQ_MOD - delta
                    if behind < len(data):
                        found = (data[behind:], ts, pos)
                        break
            if found is None:
                break
            self._deliver(key, half, *found)
        if not half.ooo:
            half.gap_ts = None

    def _skip_gap(self, key: _FlowKey, half: _Half, ts: int | None, pos: int, why: str) -> None:
        """Give up on the hole before the lowest out-of-order segment."""
        nxt = half.next_seq
        assert nxt is not None
        ooo = half.ooo
        lowest = min(ooo, key=lambda s: (s - nxt) % SEQ_MOD)
        missing = (lowest - nxt) % SEQ_MOD
        first = ooo[lowest][0]
        half.gap_ts = ts
        if half.state == _NEW:
            if half.scanned:  # mid-stream search under way: its undecided bytes end at the hole
                self._problem(
                    Reason.TCP_STREAM_GAP,
                    pos,
                    f"{_flow_text(key)}: {missing} bytes never captured ({why});"
                    " still searching for a HEP3 header after the hole",
                )
            half.next_seq = lowest  # nothing delivered yet: start where the data starts
            # Bytes held while looking for a first header end at the hole: never join them to
            # the bytes after it (that spliced a message with a byte missing into a record).
            half.head = b""
            self._drain(key, half)
            return
        deframer = half.deframer
        lost = deframer.pending if deframer is not None else 0
        partial = f", {lost} bytes of a partial message lost" if lost else ""
        head = half.head
        # Bytes from the hole's start to the next message boundary, when known: the cut
        # message's own length field says where the next one starts (HEP-SPEC §5).
        remaining: int | None = None
        if half.skip:
            remaining = half.skip  # a second hole while still dropping a cut message
        elif lost and len(head) == 6 and head.startswith(HEP3_MAGIC):
            remaining = int.from_bytes(head[4:6], "big") - lost
        skip = -1
        if remaining is not None and remaining >= missing:
            skip = remaining - missing
            where = f"at the message boundary {skip} bytes after the hole"
        elif first.startswith(HEP3_MAGIC):
            skip = 0
            where = "at the HEP3 header after the hole"
        if skip >= 0:
            self._problem(
                Reason.TCP_STREAM_GAP,
                pos,
                f"{_flow_text(key)}: {missing} bytes never captured ({why}){partial};"
                f" resynchronised {where}",
            )
            half.deframer = HepDeframer()
            half.head = b""
            half.skip = skip
            half.next_seq = lowest
            self._drain(key, half)
        else:
            self._problem(
                Reason.TCP_STREAM_GAP,
                pos,
                f"{_flow_text(key)}: {missing} bytes never captured ({why}){partial};"
                " no HEP3 header after the hole, rest of this direction dropped",
            )
            self._fail(half)

    def _close(self, key: _FlowKey, half: _Half, pos: int, why: str) -> None:
        """Flush one direction: give up on holes, then end its stream."""
        while half.ooo and half.state <= _HEP:
            self._skip_gap(key, half, None, pos, why)
        deframer = half.deframer
        if half.state == _HEP and deframer is not None:
            try:
                deframer.eof()
            except DecodeError as exc:
                self._problem(exc.reason, pos, f"{_flow_text(key)}: {exc.detail} ({why})")
        if half.state != _IGNORED:
            half.state = _CLOSED
        half.deframer = None
        half.ooo = {}
        half.ooo_bytes = 0


def no_hep_diagnosis(seen: Counter[tuple[str, str, int]]) -> str:
    """One line saying what a capture without HEP holds instead, and the likely fix.

    Example: ``247 UDP datagrams on port 9061 look like HEPv2: pass --hep-port 9061``.
    """
    parts = []
    for (kind, transport, port), n in seen.most_common(2):
        one = n == 1
        unit = "datagram" if transport == "UDP" else "connection"
        what = f"{n} {transport} {unit}{'' if one else 's'}"
        where = f"on port {port}" if port else "on various ports"
        look = "looks" if one else "look"
        if kind.startswith("HEP"):
            parts.append(f"{what} {where} {look} like {kind}: pass --hep-port {port}")
        elif kind == "SIP":
            parts.append(
                f"{what} {where} {look} like plain SIP, not HEP"
                " (open the capture in Wireshark or sngrep as it is)"
            )
        else:
            parts.append(f"{what} {where} {'is' if one else 'are'} neither HEP nor SIP")
    return "; ".join(parts)
