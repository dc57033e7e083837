"""Byte builders (HEP-SPEC §2, §3) and byte helpers shared by the unit and e2e tests.

Kept out of ``conftest.py`` on purpose: test modules import these names, and a module
called ``conftest`` can be shadowed by another directory's conftest (tests/e2e/).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from typing import Literal

from hep2pcap.hep import ChunkType

#: (vendor id, chunk type, value) — one HEPv3 chunk before encoding.
Chunk = tuple[int, int, bytes]
#: Chunk values to replace (``None`` removes the chunk), by chunk type.
Changes = Mapping[int, bytes | None] | Mapping[ChunkType, bytes | None]

#: 2023-11-14T22:13:20Z: inside the plausible window of HEP-SPEC §9 for any ref time used here.
TS_SEC = 1_700_000_000
TS_USEC = 123_456
TS_US = TS_SEC * 1_000_000 + TS_USEC
SIP = b"OPTIONS sip:bob@example.com SIP/2.0\r\nCall-ID: abc\r\n\r\n"


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def ip(text: str) -> bytes:
    """Packed IPv4 or IPv6 address."""
    return ipaddress.ip_address(text).packed


def chunk(vendor: int, ctype: int, value: bytes, length: int | None = None) -> bytes:
    """One chunk; ``length`` overrides the length field (for malformed cases)."""
    size = 6 + len(value) if length is None else length
    return u16(vendor) + u16(ctype) + u16(size) + value


def hep3(*chunks: Chunk | bytes, magic: bytes = b"HEP3", length: int | None = None) -> bytes:
    """A HEPv3 message from chunk tuples (or ready-made chunk bytes), in the given order.

    ``length`` overrides the total-length field (for malformed cases).
    """
    body = b"".join(c if isinstance(c, bytes) else chunk(*c) for c in chunks)
    total = 6 + len(body) if length is None else length
    return magic + u16(total) + body


#: A complete, valid IPv4/UDP SIP message as (type -> value), in the order senders use.
BASE_V3: dict[int, bytes] = {
    ChunkType.IP_FAMILY: u8(2),
    ChunkType.IP_PROTO: u8(17),
    ChunkType.SRC_IP4: ip("192.0.2.1"),
    ChunkType.DST_IP4: ip("192.0.2.2"),
    ChunkType.SRC_PORT: u16(5060),
    ChunkType.DST_PORT: u16(5080),
    ChunkType.TS_SEC: u32(TS_SEC),
    ChunkType.TS_USEC: u32(TS_USEC),
    ChunkType.PAYLOAD_TYPE: u8(1),
    ChunkType.CAPTURE_ID: u32(2001),
    ChunkType.PAYLOAD: SIP,
}


def base_chunks(changes: Changes | None = None) -> list[Chunk]:
    """BASE_V3 as chunk tuples; ``changes`` replaces values, ``None`` removes a chunk."""
    values: dict[int, bytes] = dict(BASE_V3)
    for ctype, value in (changes or {}).items():
        if value is None:
            values.pop(ctype, None)
        else:
            values[ctype] = value
    return [(0, ctype, value) for ctype, value in values.items()]


def v3(changes: Changes | None = None, *extra: Chunk | bytes) -> bytes:
    """The base message with ``changes`` applied and ``extra`` chunks appended."""
    return hep3(*base_chunks(changes), *extra)


def v12(
    version: int,
    family: int,
    src: bytes,
    dst: bytes,
    *,
    hdr_len: int | None = None,
    proto: int = 17,
    sport: int = 5060,
    dport: int = 5080,
    time: bytes = b"",
    payload: bytes = SIP,
) -> bytes:
    """A HEPv1/v2 datagram (HEP-SPEC §2.1); ``time`` is the raw 12-byte v2 time header."""
    if hdr_len is None:
        hdr_len = 16 if len(src) == 4 else 40
    head = bytes([version, hdr_len, family, proto]) + u16(sport) + u16(dport)
    return head + src + dst + time + payload


def v2_time(
    sec: int, usec: int, node: int, pad: bytes = b"\0\0", order: Literal["little", "big"] = "little"
) -> bytes:
    """The v2 time header: seconds, microseconds, capture node id, 2 bytes of padding."""
    return sec.to_bytes(4, order) + usec.to_bytes(4, order) + node.to_bytes(2, order) + pad


def whole_blocks(data: bytes) -> bytes:
    """The bytes of a pcapng that may still be growing, up to its last whole block.

    Linux lets a reader see a ``write()`` under way page by page, so polling a live output
    file can catch its last block half copied; the writer promises whole blocks at every
    completed flush, and this is what a poller may rely on. A malformed block length is
    left in, for a strict reader to report.
    """
    pos = 0
    while len(data) - pos >= 12:
        (total,) = struct.unpack_from("<I", data, pos + 4)
        if total < 12:
            return data
        if pos + total > len(data):
            break
        pos += total
    return data[:pos]
