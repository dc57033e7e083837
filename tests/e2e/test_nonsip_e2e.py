"""RTCP reports and logs as Wireshark shows them (issue 15), judged by the real tshark.

A dump of two calls (IPv4 and IPv6 media) holds the SIP/SDP, rtpengine-style RTCP-JSON
reports (SR + SDES, RR) and Kamailio-style LOG lines. Converted with no flags, tshark —
with no option and no "decode as": the SDP in the same file ties the RTCP ports to the
call — must dissect every report with the JSON's values, and show every log line as syslog
text at its HEP time with its correlation id in the packet comment; sngrep still shows both
calls.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from e2e_support import expert_problems, run_convert, sngrep_dialogs, tshark_fields

from hep2pcap.hep import HepMessage, encode

pytestmark = pytest.mark.e2e

T0 = 1_764_158_400_000_000  # 2025-11-26T12:00:00Z, µs
CALLS = {  # Call-ID: (UA A, UA B, A's RTP port, B's RTP port)
    "v4call@a": ("192.0.2.10", "192.0.2.20", 40000, 30000),
    "v6call@a": ("2001:db8::10", "2001:db8::20", 40010, 30010),
}


def _sip(call_id: str, first: str, a: str, b: str, a_port: int, b_port: int) -> bytes:
    v = 6 if ":" in a else 4
    addr, port = (a, a_port) if first.startswith("INVITE") else (b, b_port)
    sdp = (
        f"v=0\r\no=- 1 1 IN IP{v} {addr}\r\ns=-\r\nc=IN IP{v} {addr}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"{first}\r\nVia: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{call_id[:2]}\r\n"
        f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>"
        + (";tag=2" if first.startswith("SIP") else "")
        + f"\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{a}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def _hep(src: str, dst: str, sport: int, dport: int, ts: int, payload: bytes, ptype: int,
         corr: str, proto: int = 17) -> bytes:  # fmt: skip
    return encode(
        HepMessage(
            3, proto, ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
            sport, dport, ts, payload, ptype, capture_id=2001,
            correlation_id=corr.encode() or None,
        )
    )  # fmt: skip


def _report(n: int, sr: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if sr:
        doc["sender_information"] = {
            "ntp_timestamp_sec": 3_973_147_200 + n, "ntp_timestamp_usec": 0x80000000 + n,
            "octets": 16_000 * n, "rtp_timestamp": 160 * n, "packets": 100 * n,
        }  # fmt: skip
    doc.update(
        ssrc=0x10000000 + n, type=200 if sr else 201, report_count=1,
        report_blocks=[{
            "source_ssrc": 0x20000000 + n, "highest_seq_no": 65536 + n, "fraction_lost": n,
            "ia_jitter": 7 * n, "packets_lost": 0xFFFFFF if n == 2 else n,
            "lsr": 0x12340000 + n, "dlsr": 65536 * n,
        }],
        sdes_report_count=1,
        sdes_information=[{"sdes_chunk_ssrc": 0x10000000 + n, "type": 1, "text": f"ua{n}@h"}],
    )  # fmt: skip
    return doc


def _dump() -> tuple[bytes, list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]:
    data, reports, logs = b"", [], []
    t = T0
    for n, (call_id, (a, b, a_port, b_port)) in enumerate(CALLS.items()):
        invite = f"INVITE sip:b@{b} SIP/2.0"
        data += _hep(a, b, 5060, 5060, t, _sip(call_id, invite, a, b, a_port, b_port), 1, call_id)
        ok = _sip(call_id, "SIP/2.0 200 OK", a, b, a_port, b_port)
        data += _hep(b, a, 5060, 5060, t + 1000, ok, 1, call_id)
        line = f"call {call_id} routed to b ({n})"
        data += _hep("192.0.2.5", "192.0.2.99", 5060, 9060, t + 2000, line.encode(), 100, call_id)
        logs.append((t + 2000, line, call_id))
        for k, (src, dst, sport, dport) in enumerate(
            [(a, b, a_port + 1, b_port + 1), (b, a, b_port + 1, a_port + 1)]
        ):
            doc = _report(2 * n + k + 1, sr=k == 0)
            ts = t + 500_000 * (k + 1)
            data += _hep(src, dst, sport, dport, ts, json.dumps(doc).encode(), 5, call_id)
            reports.append((ts, doc))
        t += 2_000_000
    for k, m3ua in enumerate(("0100030100000008", "0100030400000008")):  # ASP Up, ASP Up Ack
        ends = [("192.0.2.30", 2905), ("192.0.2.31", 2905)]
        (src, sport), (dst, dport) = ends[k], ends[1 - k]
        data += _hep(src, dst, sport, dport, t + k * 1000, bytes.fromhex(m3ua), 9, "", 132)
    return data, reports, logs


RTCP_FIELDS = [
    "frame.time_epoch", "rtcp.pt", "rtcp.senderssrc", "rtcp.rc", "rtcp.timestamp.ntp.msw",
    "rtcp.timestamp.ntp.lsw", "rtcp.timestamp.rtp", "rtcp.sender.packetcount",
    "rtcp.sender.octetcount", "rtcp.ssrc.identifier", "rtcp.ssrc.fraction", "rtcp.ssrc.cum_nr",
    "rtcp.ssrc.ext_high", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr", "rtcp.ssrc.dlsr",
    "rtcp.sdes.type", "rtcp.sdes.text", "frame.comment",
]  # fmt: skip


def _us(epoch: str) -> int:
    sec, _, frac = epoch.partition(".")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def _expected(doc: dict[str, Any]) -> dict[str, str]:
    block = doc["report_blocks"][0]
    info = doc.get("sender_information")
    lost = block["packets_lost"]
    row = {
        "rtcp.pt": f"{doc['type']}|202",
        "rtcp.senderssrc": f"{doc['ssrc']:#010x}",
        "rtcp.rc": "1",
        # the report block's SSRC, then the SDES chunk's (Wireshark 4.0 uses one field)
        "rtcp.ssrc.identifier": (
            f"{block['source_ssrc']:#010x}|{doc['sdes_information'][0]['sdes_chunk_ssrc']:#010x}"
        ),
        "rtcp.ssrc.fraction": str(block["fraction_lost"]),
        # Wireshark shows the cumulative count signed (RFC 3550: it may go negative)
        "rtcp.ssrc.cum_nr": str(lost - (1 << 24) if lost & 0x800000 else lost),
        "rtcp.ssrc.ext_high": str(block["highest_seq_no"]),
        "rtcp.ssrc.jitter": str(block["ia_jitter"]),
        "rtcp.ssrc.lsr": str(block["lsr"]),
        "rtcp.ssrc.dlsr": str(block["dlsr"]),
        "rtcp.sdes.type": f"{doc['sdes_information'][0]['type']}|0",  # the item, then END
        "rtcp.sdes.text": doc["sdes_information"][0]["text"],
    }
    sender: tuple[str, ...] = ("", "", "", "", "")
    if info:
        sender = tuple(
            str(info[k])
            for k in (
                "ntp_timestamp_sec",
                "ntp_timestamp_usec",
                "rtp_timestamp",
                "packets",
                "octets",
            )
        )
    for key, value in zip(RTCP_FIELDS[4:9], sender, strict=True):
        row[key] = value
    return row


def test_rtcp_and_logs_convert_with_no_flags(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str], sngrep: str
) -> None:
    data, reports, logs = _dump()
    src = tmp_path / "calls.hep"
    src.write_bytes(data)
    out = tmp_path / "out.pcapng"
    proc = run_convert([src], out)
    assert b"read 12, wrote 12, skipped 0, dropped 0" in proc.stderr

    rows = tshark_fields(tshark, wireshark_env, out, RTCP_FIELDS, display_filter="rtcp")
    assert len(rows) == len(reports)
    for row, (ts, doc) in zip(rows, reports, strict=True):
        assert _us(row["frame.time_epoch"]) == ts
        got = {k: row[k] for k in RTCP_FIELDS[1:-1]}
        assert got == _expected(doc)
        assert "type 5 (RTCP-JSON); RTCP rebuilt from the HEP JSON report" in row["frame.comment"]

    logs_seen = tshark_fields(
        tshark, wireshark_env, out, ["frame.time_epoch", "syslog.msg", "frame.comment"],
        display_filter="syslog",
    )  # fmt: skip
    assert [(_us(r["frame.time_epoch"]), r["syslog.msg"]) for r in logs_seen] == [
        (ts, line) for ts, line, _ in logs
    ]
    for row, (_, _, corr) in zip(logs_seen, logs, strict=True):
        assert row["frame.comment"].endswith(f"; correlation {corr}")
        assert "LOG as syslog to port 514 (HEP ports 5060 -> 9060)" in row["frame.comment"]

    assert expert_problems(tshark, wireshark_env, out) == []
    assert sngrep_dialogs(sngrep, out, tmp_path) == len(CALLS)

    # M3UA (type 9) as an SCTP DATA chunk with PPID 3: Wireshark dissects M3UA, and the
    # CRC32c checksum verifies
    rows = tshark_fields(
        tshark, wireshark_env, out,
        ["sctp.data_payload_proto_id", "sctp.checksum.status", "m3ua.message_type",
         "_ws.col.Info"],
        display_filter="sctp", extra=["-o", "sctp.checksum:CRC-32C"],
    )  # fmt: skip
    assert [(r["sctp.data_payload_proto_id"], r["sctp.checksum.status"]) for r in rows] == [
        ("3", "1"),
        ("3", "1"),
    ]
    assert [r["_ws.col.Info"].strip() for r in rows] == ["ASPUP", "ASPUP_ACK"]
    # --exclude-type narrows it: SIP only again
    only_sip = tmp_path / "sip.pcapng"
    run_convert(
        [src], only_sip, "--exclude-type", "rtcp", "--exclude-type", "log", "--exclude-type", "9"
    )
    assert (
        tshark_fields(tshark, wireshark_env, only_sip, ["frame.number"], display_filter="!sip")
        == []
    )
