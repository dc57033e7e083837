"""Messages without a usable HEP time take the capture time of the pcap record."""

from __future__ import annotations

import ipaddress
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from e2e_support import expert_problems, run_convert, tshark_frames

pytestmark = pytest.mark.e2e

RECORD_NS = 1_764_220_000_123_456_789  # record times below are this + k ms (ns precision)


def sip_options(n: int) -> bytes:
    lines = [
        "OPTIONS sip:ping@192.0.2.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK-rt-{n}",
        "Max-Forwards: 70",
        "From: <sip:rt@example.com>;tag=rt",
        "To: <sip:ping@example.com>",
        f"Call-ID: receive-time-{n}@example.com",
        f"CSeq: {n + 1} OPTIONS",
        "Contact: <sip:rt@198.18.0.1:5060>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def hep3_without_time(n: int) -> bytes:
    """HEPv3 with every chunk but the two timestamp chunks (built by hand)."""
    chunks = [
        (0x01, b"\x02"),
        (0x02, b"\x11"),
        (0x03, ipaddress.ip_address("198.18.0.1").packed),
        (0x04, ipaddress.ip_address("192.0.2.1").packed),
        (0x07, struct.pack("!H", 5060)),
        (0x08, struct.pack("!H", 5060)),
        (0x0B, b"\x01"),
        (0x0C, struct.pack("!I", 4242)),
        (0x0F, sip_options(n)),
    ]
    body = b"".join(struct.pack("!HHH", 0, t, 6 + len(v)) + v for t, v in chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def hep1(n: int) -> bytes:
    """HEPv1 (no time at all): version, length, family, proto, ports, addresses, payload."""
    head = struct.pack("!BBBBHH", 1, 16, 2, 17, 5060, 5060)
    src = ipaddress.ip_address("198.18.0.1").packed
    return head + src + ipaddress.ip_address("192.0.2.1").packed + sip_options(n)


def write_ns_pcap(path: Path, datagrams: list[bytes]) -> list[int]:
    """A nanosecond pcap (scapy) of HEP over UDP; returns each record's time in ns."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import PcapWriter

    times = [RECORD_NS + k * 1_000_000 + k for k in range(len(datagrams))]
    with PcapWriter(str(path), nano=True, linktype=1) as w:
        for t, data in zip(times, datagrams, strict=True):
            pkt = (
                Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src="127.0.0.1", dst="127.0.0.1")
                / UDP(sport=40000, dport=9060)
                / Raw(data)
            )
            pkt.time = Decimal(t) / 10**9  # type: ignore[assignment]
            w.write(pkt)
    return times


@pytest.mark.parametrize("use_receive_time", [False, True])
def test_v3_without_timestamp(
    use_receive_time: bool, tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    src = tmp_path / "no-time.pcap"
    times = write_ns_pcap(src, [hep3_without_time(n) for n in range(3)])
    out = tmp_path / "out.pcapng"
    args = ("--use-receive-time",) if use_receive_time else ()
    proc = run_convert([src], out, *args)
    frames = tshark_frames(tshark, wireshark_env, out)
    if not use_receive_time:
        assert b"wrote 0, skipped 0, dropped 3 (missing_timestamp=3)" in proc.stderr
        assert frames == []
        return
    assert b"read 3, wrote 3" in proc.stderr
    # The pcap record time, cut to the microseconds pcapng stores.
    assert [f.ts_us for f in frames] == [t // 1000 for t in times]
    assert all("ts_receive_time" in f.comment for f in frames)
    assert [f.call_id for f in frames] == [f"receive-time-{n}@example.com" for n in range(3)]
    assert expert_problems(tshark, wireshark_env, out) == []


def test_v1_takes_the_record_time(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    src = tmp_path / "v1.pcap"
    times = write_ns_pcap(src, [hep1(n) for n in range(3)])
    out = tmp_path / "out.pcapng"
    run_convert([src], out)
    frames = tshark_frames(tshark, wireshark_env, out)
    assert [f.ts_us for f in frames] == [t // 1000 for t in times]
    assert [(f.src, f.dst, f.transport) for f in frames] == [("198.18.0.1", "192.0.2.1", "udp")] * 3
    assert all(f.comment.startswith("HEPv1; no agent id; proto 17 (UDP)") for f in frames)
