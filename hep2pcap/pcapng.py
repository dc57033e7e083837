"""Write pcapng (and classic pcap) blocks.

Owns: the block layouts of the pcapng draft (draft-ietf-opsawg-pcapng) — SHB, IDB, EPB,
options, 32-bit padding — and the classic libpcap file format. Must never: open files,
read clocks or decide what goes into a frame. The writers take any binary file object
and write one whole block per call, so the file holds complete blocks up to the last flush.

All interfaces share one link type and snap length: libpcap (and so sngrep) refuses a
pcapng whose interfaces differ in either.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:  # the engine imports this module: at run time it is imported late
    from .engine import Engine, Packet

BLOCK_TYPE_SHB = 0x0A0D0D0A
#: The SHB block type as bytes: the first four bytes of every pcapng file, in either byte order.
PCAPNG_MAGIC = BLOCK_TYPE_SHB.to_bytes(4, "big")
BLOCK_TYPE_IDB = 0x00000001
BLOCK_TYPE_ISB = 0x00000005
BLOCK_TYPE_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_DESCRIPTION = 3
#: Interface Statistics Block options (draft-ietf-opsawg-pcapng §4.6).
OPT_ISB_STARTTIME = 2
OPT_ISB_ENDTIME = 3
OPT_ISB_IFRECV = 4
OPT_ISB_IFDROP = 5
OPT_ISB_FILTERACCEPT = 6
OPT_ISB_OSDROP = 7
OPT_ISB_USRDELIV = 8

#: Native little-endian layouts; readers handle either byte order.
BLOCK_HEADER = struct.Struct("<II")
SHB_BODY = struct.Struct("<IHHq")  # byte-order magic, major, minor, section length (-1)
IDB_BODY = struct.Struct("<HHI")  # link type, reserved, snap length
EPB_BODY = struct.Struct("<IIIII")  # interface, ts high, ts low, captured len, original len
#: Block header + EPB body in one pack (hot path).
EPB_HEADER = struct.Struct("<IIIIIII")
OPTION_HEADER = struct.Struct("<HH")
ISB_BODY = struct.Struct("<III")  # interface, ts high, ts low
#: isb_starttime / isb_endtime value: ts high, ts low (interface resolution, µs here).
ISB_TIME = struct.Struct("<II")
#: isb_ifrecv, isb_ifdrop, isb_filteraccept, isb_osdrop, isb_usrdeliv value.
ISB_COUNT = struct.Struct("<Q")

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, zone, sigfigs, snaplen, lt
PCAP_RECORD_HEADER = struct.Struct("<IIII")  # ts sec, ts usec, captured len, original len

#: Snap length for every interface: frames up to 65535 + 14 bytes of Ethernet must fit, and
#: 262144 is libpcap's own maximum (MAXIMUM_SNAPLEN), so sngrep accepts it.
SNAPLEN = 262144

#: Link types as written in files (tcpdump.org/linktypes.html); never a platform DLT_* value.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_END_OF_OPTIONS = OPTION_HEADER.pack(OPT_ENDOFOPT, 0)


#: An option's value length is a 16-bit field (draft-ietf-opsawg-pcapng §3.5).
MAX_OPTION_VALUE = 0xFFFF


def _utf8(text: str) -> bytes:
    """A string option's value: UTF-8, clipped to MAX_OPTION_VALUE bytes on a character
    boundary (a node name of 30000 invalid bytes decodes to 90000 bytes of U+FFFD)."""
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_OPTION_VALUE:
        data = data[:MAX_OPTION_VALUE].decode("utf-8", "ignore").encode()
    return data


def _option(code: int, value: bytes) -> bytes:
    return OPTION_HEADER.pack(code, len(value)) + value + _PAD[len(value) & 3]


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + OPTION_HEADER.pack(OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = BLOCK_HEADER.size + len(body) + 4
    return BLOCK_HEADER.pack(block_type, total) + body + total.to_bytes(4, "little")


def encode_shb(user_appl: str) -> bytes:
    """Section Header Block (version 1.0, unknown section length)."""
    body = SHB_BODY.pack(BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(BLOCK_TYPE_SHB, body + _options([(OPT_SHB_USERAPPL, _utf8(user_appl))]))


def encode_idb(linktype: int, snaplen: int, name: str, description: str) -> bytes:
    """Interface Description Block; timestamps use the default microsecond resolution."""
    opts = [(OPT_IF_NAME, _utf8(name)), (OPT_IF_DESCRIPTION, _utf8(description))]
    return _block(BLOCK_TYPE_IDB, IDB_BODY.pack(linktype, 0, snaplen) + _options(opts))


def encode_epb(interface: int, ts_us: int, frame: bytes, comment: str | None = None) -> bytes:
    """Enhanced Packet Block with an optional comment option."""
    size = len(frame)
    tail = _PAD[size & 3]
    if comment:
        text = comment.encode("utf-8", "replace")
        if len(text) > MAX_OPTION_VALUE:
            text = _utf8(comment)
        tail += b"".join(
            (OPTION_HEADER.pack(OPT_COMMENT, len(text)), text, _PAD[len(text) & 3], _END_OF_OPTIONS)
        )
    total = EPB_HEADER.size + size + len(tail) + 4
    return b"".join(
        (
            EPB_HEADER.pack(
                BLOCK_TYPE_EPB, total, interface, ts_us >> 32, ts_us & 0xFFFFFFFF, size, size
            ),
            frame,
            tail,
            total.to_bytes(4, "little"),
        )
    )


@dataclass(frozen=True, slots=True)
class InterfaceStatistics:
    """What an Interface Statistics Block says about one interface (``None``: not written).

    Attributes:
        start_us: isb_starttime, when counting began (µs since the epoch).
        end_us: isb_endtime, when it ended; also the block's own timestamp.
        received: isb_ifrecv, messages that reached the capture.
        kernel_drops: isb_ifdrop, messages the OS dropped before the capture read them.
        filter_accept: isb_filteraccept, messages a filter let through.
        our_drops: isb_osdrop, messages the capture itself dropped.
        delivered: isb_usrdeliv, packets written on this interface.
        comment: opt_comment, the causes in words.
    """

    start_us: int
    end_us: int
    received: int | None = None
    kernel_drops: int | None = None
    filter_accept: int | None = None
    our_drops: int | None = None
    delivered: int | None = None
    comment: str | None = None


#: (option code, InterfaceStatistics field) of the counters, in the draft's order.
ISB_COUNTERS = (
    (OPT_ISB_IFRECV, "received"),
    (OPT_ISB_IFDROP, "kernel_drops"),
    (OPT_ISB_FILTERACCEPT, "filter_accept"),
    (OPT_ISB_OSDROP, "our_drops"),
    (OPT_ISB_USRDELIV, "delivered"),
)


def _isb_time(ts_us: int) -> bytes:
    return ISB_TIME.pack(ts_us >> 32, ts_us & 0xFFFFFFFF)


def encode_isb(interface: int, stats: InterfaceStatistics) -> bytes:
    """Interface Statistics Block (draft-ietf-opsawg-pcapng §4.6), timestamped at
    ``stats.end_us``; counters that are ``None`` are left out."""
    opts: list[tuple[int, bytes]] = []
    if stats.comment:
        opts.append((OPT_COMMENT, _utf8(stats.comment)))
    opts.append((OPT_ISB_STARTTIME, _isb_time(stats.start_us)))
    opts.append((OPT_ISB_ENDTIME, _isb_time(stats.end_us)))
    for code, name in ISB_COUNTERS:
        value = getattr(stats, name)
        if value is not None:
            opts.append((code, ISB_COUNT.pack(max(0, value))))
    body = ISB_BODY.pack(interface, stats.end_us >> 32, stats.end_us & 0xFFFFFFFF)
    return _block(BLOCK_TYPE_ISB, body + _options(opts))


class PacketWriter(Protocol):
    """What the pipeline writes to: pcapng, classic pcap, or a rotating wrapper."""

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class BatchWriter(PacketWriter, Protocol):
    """A writer that also takes a batch of the frame engine's packets in one call."""

    def write_frames(self, packets: Sequence[Packet]) -> None: ...


def interface_name(agent: int | None) -> str:
    """How an interface is named for a capture agent id."""
    return "hep-no-agent-id" if agent is None else f"hep-agent-{agent}"


def interface_description(agent: int | None, node: str | None) -> str:
    """Human description of a capture agent's interface."""
    who = "HEP sender without capture agent id" if agent is None else f"HEP capture agent {agent}"
    return f"{who} (node {node})" if node else who


#: Interfaces per file; agents past this share one "other agents" interface, so a flood of
#: made-up capture ids cannot grow the file's interface table without bound.
MAX_INTERFACES = 256
#: The agent key of the shared interfaces (too many agents, or raw IP, see below).
SHARED = -1


class PcapngWriter:
    """pcapng writer: one interface per HEP capture agent id, created when first seen
    (interface 0, for messages without an agent id, is written with the section header).

    With LINKTYPE_RAW every agent shares one interface: libpcap 1.10 (and so sngrep and
    tcpdump) maps the first IDB's 101 to DLT_RAW (12), then rejects a second IDB of type
    101 as "a type different from the first interface". The agent stays in the comment.

    Args:
        out: binary file object; blocks are written whole.
        linktype: link type shared by every interface.
        comments: write per-packet comments.
        snaplen: snap length shared by every interface.
        engine: builds frames and blocks (default: the native one when built).
    """

    def __init__(
        self,
        out: BinaryIO,
        linktype: int,
        *,
        comments: bool = True,
        snaplen: int = SNAPLEN,
        engine: Engine | None = None,
    ) -> None:
        from . import __version__
        from .engine import DEFAULT

        self._engine = engine if engine is not None else DEFAULT
        self._out = out
        self._linktype = linktype
        self._snaplen = snaplen
        self._comments = comments
        self._interfaces: dict[int | None, int] = {}
        self._one_interface = linktype == LINKTYPE_RAW
        self._count = 0  # interfaces written
        self.bytes_written = 0
        self._write(encode_shb(f"hep2pcap {__version__}"))
        # One interface up front: libpcap (sngrep, tcpdump) refuses a pcapng without any IDB,
        # which an empty capture, or a live file before its first packet, would otherwise be.
        self._add_interface(None, None)

    def _write(self, block: bytes) -> None:
        self._out.write(block)
        self.bytes_written += len(block)

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        """Write one frame on the interface of capture agent ``agent``."""
        iface = self._interfaces.get(agent)
        if iface is None:
            iface = self._add_interface(agent, node)
        self._write(encode_epb(iface, ts_us, frame, comment if self._comments else None))

    def write_frames(self, packets: Sequence[Packet]) -> None:
        """Build and write a batch of packets (frames and EPBs in one engine call, split
        only where an agent needs its interface description first)."""
        interfaces = self._interfaces
        encode = self._engine.encode_epbs
        start, end = 0, len(packets)
        while start < end:
            shared = (
                interfaces.get(SHARED, -1)
                if self._one_interface or len(interfaces) >= MAX_INTERFACES
                else -1
            )
            data, start = encode(self._linktype, self._comments, interfaces, shared, packets, start)
            if data:
                self._write(data)
            if start < end:
                self._add_interface(packets[start][0], packets[start][1])

    def _add_interface(self, agent: int | None, node: str | None) -> int:
        shared = self._one_interface or len(self._interfaces) >= MAX_INTERFACES
        key = SHARED if shared else agent
        iface = self._interfaces.get(key)
        if iface is None:
            iface = self._interfaces[key] = self._count
            self._count += 1
            if self._one_interface:
                name, text = "hep", "HEP, all capture agents (see each packet's comment)"
            elif shared:
                name, text = (
                    "hep-other-agents",
                    f"HEP capture agents past the first {MAX_INTERFACES}",
                )
            else:
                name, text = interface_name(agent), interface_description(agent, node)
            self._write(encode_idb(self._linktype, self._snaplen, name, text))
        if not shared:
            self._interfaces[agent] = iface
        return iface

    def interface_of(self, agent: int | None) -> int | None:
        """The interface a capture agent's packets went to in this file (``None``: none yet)."""
        iface = self._interfaces.get(agent)
        return iface if iface is not None else self._interfaces.get(SHARED)

    @property
    def interface_count(self) -> int:
        """Interfaces (IDBs) written so far."""
        return self._count

    def write_statistics(self, stats: list[InterfaceStatistics]) -> None:
        """Write one Interface Statistics Block per interface (``stats[i]`` for interface
        ``i``), as the last blocks of the file. Not on the packet path: called at close."""
        for iface, entry in enumerate(stats[: self._count]):
            self._write(encode_isb(iface, entry))

    def flush(self) -> None:
        """Flush the underlying file object."""
        self._out.flush()

    def close(self) -> None:
        """Flush; the caller owns (and closes) the file object."""
        self.flush()


class PcapWriter:
    """Classic libpcap writer (microsecond timestamps); agents and comments are dropped.

    Args:
        out: binary file object.
        linktype: the file's link type.
        snaplen: the file's snap length.
        engine: builds frames and records (default: the native one when built).
    """

    def __init__(
        self, out: BinaryIO, linktype: int, *, snaplen: int = SNAPLEN, engine: Engine | None = None
    ) -> None:
        from .engine import DEFAULT

        self._engine = engine if engine is not None else DEFAULT
        self._linktype = linktype
        self._out = out
        self.bytes_written = 0
        self._write(PCAP_FILE_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        """Write one record."""
        sec, usec = divmod(ts_us, 1_000_000)
        size = len(frame)
        self._write(PCAP_RECORD_HEADER.pack(sec, usec, size, size) + frame)

    def write_frames(self, packets: Sequence[Packet]) -> None:
        """Build and write a batch of packets as records."""
        self._write(self._engine.encode_records(self._linktype, packets))

    def flush(self) -> None:
        """Flush the underlying file object."""
        self._out.flush()

    def close(self) -> None:
        """Flush; the caller owns (and closes) the file object."""
        self.flush()
