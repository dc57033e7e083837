"""Turn non-SIP HEP payloads into the packets Wireshark shows (HEP-SPEC §4, §15).

Owns: which payload types have a faithful rendering, and the renderings themselves —
RTCP-JSON reports (type 5) rebuilt as the RTCP compound packet they describe (RFC 3550
§6.4.1 SR, §6.4.2 RR, §6.5 SDES), LOG text (type 100) as a syslog datagram (RFC 3164
``<PRI>`` + text) to UDP port 514, where Wireshark's syslog dissector shows it, and M2UA,
M3UA and M2PA (types 8, 9, 13) marked for an SCTP DATA chunk with their PPID (frames.py).
Raw RTP (type 4) already is the packet. Must never: do I/O, read clocks, guess (a JSON key or value
outside the mapping is a :class:`RenderError` with a named reason, never a half-right
packet), or raise anything else on any payload. The JSON is untrusted: its size is bounded
by HEP (≤ 65535 bytes) and its nesting is checked before it is parsed.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from typing import Any

from .errors import Hep2PcapError, Reason
from .frames import SCTP_PPIDS
from .hep import PAYLOAD_TYPE_NAMES, HepMessage, IpProto, PayloadType

#: Payload types written by default: each has a faithful rendering (README "HEP types").
FAITHFUL_TYPES = frozenset(
    {PayloadType.SIP, PayloadType.RTP, PayloadType.RTCP_JSON, PayloadType.LOG, *SCTP_PPIDS}
)

#: RFC 3164 §4.1.1: facility user (1), severity informational (6) -> PRI 14.
SYSLOG_PRI = b"<14>"
#: The syslog port (RFC 5426 §3.3): Wireshark dissects UDP to it as syslog.
SYSLOG_PORT = 514

#: RFC 3550 §6.4: version 2 in the top two bits of the first byte.
RTCP_VERSION_BITS = 0x80
RTCP_SR, RTCP_RR, RTCP_SDES = 200, 201, 202
#: RFC 3550 §6.4.1: V/P/RC, PT, length (32-bit words - 1), sender SSRC.
RTCP_HEADER = struct.Struct("!BBHI")
#: RFC 3550 §6.4.1 sender info: NTP msw, NTP lsw, RTP timestamp, packet count, octet count.
RTCP_SENDER_INFO = struct.Struct("!IIIII")
#: RFC 3550 §6.4.1 report block: SSRC, fraction lost (8) + cumulative lost (24), extended
#: highest sequence number, interarrival jitter, LSR, DLSR.
RTCP_REPORT_BLOCK = struct.Struct("!IIIIII")
#: RFC 3550 §6.5: V/P/SC, PT, length.
RTCP_SDES_HEADER = struct.Struct("!BBH")
MAX_COUNT = 31  # RC and SC are 5-bit fields

#: What the report JSON may hold: at most this many objects and arrays (rtpengine writes
#: one per report block and SDES item, at most 31 + 31 * items), checked before parsing.
MAX_JSON_CONTAINERS = 1024

#: The packet comment of a rebuilt report says what a report cannot carry.
RTCP_NOTE = (
    "RTCP rebuilt from the HEP JSON report (a BYE, APP or XR in the original packet, and its "
    "padding, are not in reports)"
)

U32 = 0xFFFFFFFF
_SENDER_KEYS = ("ntp_timestamp_sec", "ntp_timestamp_usec", "rtp_timestamp", "packets", "octets")
_BLOCK_KEYS = {
    "source_ssrc": U32,
    "fraction_lost": 0xFF,
    "packets_lost": 0xFFFFFF,
    "highest_seq_no": U32,
    "ia_jitter": U32,
    "lsr": U32,
    "dlsr": U32,
}
#: rtpengine 10.5 (daemon/rtcp.c homer_*) writes these; "sdes_ssrc" is the older rtpengine /
#: captagent form (the SSRC of the SDES chunk, items then carry no chunk SSRC).
_TOP_KEYS = frozenset(
    {
        "sender_information",
        "ssrc",
        "type",
        "report_count",
        "report_blocks",
        "sdes_report_count",
        "sdes_information",
        "sdes_ssrc",
    }
)


class RenderError(Hep2PcapError):
    """A payload this module cannot render faithfully.

    Args:
        reason: RTCP_JSON_INVALID (not a JSON object) or RTCP_JSON_UNMAPPED (keys or values
            outside the mapping).
        detail: which key or value, with numbers; never the payload.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: its SSRC and (item type, text) items (RFC 3550 §6.5)."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RtcpReport:
    """What an RTCP-JSON report says, validated.

    ``packet_type`` is 200 (SR), 201 (RR) or None (SDES only); ``sender`` is the SR sender
    info in packet order (NTP msw, NTP lsw, RTP timestamp, packets, octets); each block is
    (SSRC, fraction lost, cumulative lost, highest seq, jitter, LSR, DLSR).
    """

    packet_type: int | None
    ssrc: int
    sender: tuple[int, int, int, int, int] | None
    blocks: tuple[tuple[int, int, int, int, int, int, int], ...]
    sdes: tuple[SdesChunk, ...]
    sdes_missing: int  # chunks the report counted but described no item of


def _unmapped(detail: str) -> RenderError:
    return RenderError(Reason.RTCP_JSON_UNMAPPED, detail)


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # rtpengine writes a second SR/RR packet's keys again
            raise _unmapped(f"key {key!r} twice (more than one SR/RR packet?)")
        out[key] = value
    return out


def _uint(obj: dict[str, Any], key: str, limit: int, where: str) -> int:
    if key not in obj:
        raise _unmapped(f"{where}{key} missing")
    value = obj[key]
    if type(value) is not int:  # bool, float and numeric strings are not this mapping
        raise _unmapped(f"{where}{key} is a {type(value).__name__}, not an integer")
    if not 0 <= value <= limit:
        raise _unmapped(f"{where}{key}={value} outside 0..{limit}")
    return value


def _only(obj: Any, allowed: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _unmapped(f"{where or 'report'} is not an object")
    extra = sorted(set(obj) - set(allowed))
    if extra:
        raise _unmapped(f"unknown key {where}{extra[0]!r}")
    return obj


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _unmapped(f"{key} is not a list")
    if len(value) > MAX_COUNT * 255:
        raise _unmapped(f"{key} has {len(value)} entries")
    return value


def decode_rtcp_json(payload: bytes) -> RtcpReport:
    """Validate an RTCP-JSON report (rtpengine 10.5 key set) into an :class:`RtcpReport`.

    Raises:
        RenderError: RTCP_JSON_INVALID if the payload is not one JSON object (or nests
            too much), RTCP_JSON_UNMAPPED if a key or value is outside the mapping.
    """
    if payload.count(b"{") + payload.count(b"[") > MAX_JSON_CONTAINERS:
        raise RenderError(Reason.RTCP_JSON_INVALID, f"more than {MAX_JSON_CONTAINERS} objects")
    try:
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=_object_pairs)
    except RenderError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RenderError(Reason.RTCP_JSON_INVALID, f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(doc, dict):
        raise RenderError(Reason.RTCP_JSON_INVALID, "not a JSON object")
    top = _only(doc, _TOP_KEYS, "")

    ptype: int | None = None
    ssrc = 0
    sender = None
    blocks: list[tuple[int, int, int, int, int, int, int]] = []
    if "type" in top or "ssrc" in top or "report_blocks" in top or "sender_information" in top:
        ptype = _uint(top, "type", 0xFF, "")
        if ptype not in (RTCP_SR, RTCP_RR):
            raise _unmapped(f"type={ptype} (only 200 SR and 201 RR are reports)")
        ssrc = _uint(top, "ssrc", U32, "")
        if ptype == RTCP_SR:
            info = _only(top.get("sender_information"), _SENDER_KEYS, "sender_information.")
            sec, frac, rtp_ts, packets, octets = (
                _uint(info, k, U32, "sender_information.") for k in _SENDER_KEYS
            )
            sender = (sec, frac, rtp_ts, packets, octets)
        elif "sender_information" in top:
            raise _unmapped("sender_information in a receiver report (type 201)")
        for i, raw in enumerate(_list(top, "report_blocks")):
            where = f"report_blocks[{i}]."
            block = _only(raw, _BLOCK_KEYS, where)
            ssrc_b, frac_b, lost, seq, jitter, lsr, dlsr = (
                _uint(block, k, lim, where) for k, lim in _BLOCK_KEYS.items()
            )
            blocks.append((ssrc_b, frac_b, lost, seq, jitter, lsr, dlsr))
        count = _uint(top, "report_count", MAX_COUNT, "") if "report_count" in top else None
        if len(blocks) > MAX_COUNT or (count is not None and count != len(blocks)):
            raise _unmapped(f"report_count={count} but {len(blocks)} report blocks")
    elif "report_count" in top:
        raise _unmapped("report_count without type and ssrc")

    sdes, missing = _decode_sdes(top)
    if ptype is None and not sdes:
        raise _unmapped("neither a sender/receiver report nor SDES items")
    return RtcpReport(ptype, ssrc, sender, tuple(blocks), sdes, missing)


def _decode_sdes(top: dict[str, Any]) -> tuple[tuple[SdesChunk, ...], int]:
    items = _list(top, "sdes_information")
    default_ssrc = _uint(top, "sdes_ssrc", U32, "") if "sdes_ssrc" in top else None
    chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
    for i, raw in enumerate(items):
        where = f"sdes_information[{i}]."
        item = _only(raw, ("sdes_chunk_ssrc", "type", "text"), where)
        if "sdes_chunk_ssrc" in item:
            chunk_ssrc = _uint(item, "sdes_chunk_ssrc", U32, where)
        elif default_ssrc is not None:
            chunk_ssrc = default_ssrc
        else:
            raise _unmapped(f"{where}sdes_chunk_ssrc missing (and no sdes_ssrc)")
        kind = _uint(item, "type", 0xFF, where)
        if kind == 0:
            raise _unmapped(f"{where}type=0 (END is not an item)")
        text = item.get("text")
        if not isinstance(text, str):
            raise _unmapped(f"{where}text is not a string")
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > 0xFF:
            raise _unmapped(f"{where}text has {len(data)} bytes (at most 255)")
        # rtpengine writes a chunk's items one after another, each with the chunk's SSRC
        if chunks and chunks[-1][0] == chunk_ssrc:
            chunks[-1][1].append((kind, data))
        else:
            chunks.append((chunk_ssrc, [(kind, data)]))
    if "sdes_report_count" in top:
        count = _uint(top, "sdes_report_count", MAX_COUNT, "")
    else:
        count = len(chunks)
    if len(chunks) > count:
        raise _unmapped(f"sdes_report_count={count} but items of {len(chunks)} chunks")
    return tuple(SdesChunk(s, tuple(it)) for s, it in chunks), count - len(chunks)


def encode_rtcp(report: RtcpReport) -> bytes:
    """The RTCP compound packet a report describes: SR or RR with its blocks, then SDES."""
    parts = []
    if report.packet_type is not None:
        body = b"".join(
            RTCP_REPORT_BLOCK.pack(s, frac << 24 | lost, seq, jit, lsr, dlsr)
            for s, frac, lost, seq, jit, lsr, dlsr in report.blocks
        )
        if report.sender is not None:
            body = RTCP_SENDER_INFO.pack(*report.sender) + body
        words = (RTCP_HEADER.size + len(body)) // 4 - 1
        head = RTCP_HEADER.pack(
            RTCP_VERSION_BITS | len(report.blocks), report.packet_type, words, report.ssrc
        )
        parts.append(head + body)
    if report.sdes:
        chunks = []
        for chunk in report.sdes:
            items = b"".join(bytes((kind, len(text))) + text for kind, text in chunk.items)
            data = chunk.ssrc.to_bytes(4, "big") + items
            # RFC 3550 §6.5: an END item (a zero byte), then zeros to the next 32-bit boundary
            chunks.append(data + b"\0" * (4 - len(data) % 4))
        body = b"".join(chunks)
        words = (RTCP_SDES_HEADER.size + len(body)) // 4 - 1
        head = RTCP_SDES_HEADER.pack(RTCP_VERSION_BITS | len(report.sdes), RTCP_SDES, words)
        parts.append(head + body)
    return b"".join(parts)


def _render_rtcp(msg: HepMessage) -> HepMessage:
    report = decode_rtcp_json(msg.payload)
    note = RTCP_NOTE
    if report.sdes_missing:
        note += (
            f"; SDES: {report.sdes_missing} of "
            f"{len(report.sdes) + report.sdes_missing} chunks had no items and are left out"
        )
    if msg.ip_proto != IpProto.UDP:
        note += f"; written as UDP (HEP proto {msg.ip_proto})"
    return dataclasses.replace(msg, payload=encode_rtcp(report), ip_proto=IpProto.UDP, note=note)


def _render_log(msg: HepMessage) -> HepMessage:
    note = f"LOG as syslog to port {SYSLOG_PORT} (HEP ports {msg.src_port} -> {msg.dst_port})"
    if msg.ip_proto != IpProto.UDP:
        note += f"; written as UDP (HEP proto {msg.ip_proto})"
    return dataclasses.replace(
        msg,
        payload=SYSLOG_PRI + msg.payload,
        ip_proto=IpProto.UDP,
        dst_port=SYSLOG_PORT,
        note=note,
    )


def _render_sctp(msg: HepMessage) -> HepMessage:
    # The payload is the M2UA/M3UA/M2PA message: frames.py puts it in an SCTP DATA chunk
    # with its payload protocol identifier (it does so only for messages with a note).
    name = PAYLOAD_TYPE_NAMES[msg.payload_type or 0]
    note = f"{name} as SCTP DATA (PPID {SCTP_PPIDS[msg.payload_type or 0]})"
    if msg.ip_proto != IpProto.SCTP:
        note += f"; HEP proto {msg.ip_proto}"
    return dataclasses.replace(msg, note=note)


#: Payload type -> how it is rendered (types not listed are written as they are).
RENDERERS: dict[int, Callable[[HepMessage], HepMessage]] = {
    PayloadType.RTCP_JSON: _render_rtcp,
    PayloadType.LOG: _render_log,
    **dict.fromkeys(SCTP_PPIDS, _render_sctp),
}


def render(msg: HepMessage) -> HepMessage:
    """The message as it is written: RTCP-JSON rebuilt as RTCP, LOG as syslog; any other
    message unchanged.

    Raises:
        RenderError: the payload cannot be rendered faithfully (reason and detail).
    """
    renderer = RENDERERS.get(msg.payload_type) if msg.payload_type is not None else None
    return msg if renderer is None else renderer(msg)


def parse_payload_type(text: str) -> int:
    """A payload type given by number (``100``, ``0x64``) or name (``log``, ``RTCP-JSON``,
    ``rtcp``: any name of HEP-SPEC §4 as hep2pcap prints it, case-insensitive).

    Raises:
        ValueError: neither a number 0..255 nor a known name.
    """
    key = text.strip().lower()
    by_name = {name.lower(): code for code, name in PAYLOAD_TYPE_NAMES.items()}
    by_name["rtcp"] = PayloadType.RTCP_JSON
    if key in by_name:
        return by_name[key]
    try:
        value = int(key, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a payload type number (0-255) or name") from None
    if not 0 <= value <= 0xFF:
        raise ValueError(f"payload type {value} is outside 0-255")
    return value
