"""A capture of HEP over TCP that starts in the middle of a connection.

HEP senders (Kamailio, heplify, captagent) keep one TCP connection to the collector open for
days, so a ``tcpdump -w`` started at any moment begins inside that connection: no SYN, and
the first captured segment starts somewhere inside a HEP message. Every complete message
after the first HEP3 boundary is in the capture and can be recovered. Likewise a raw
dump with stray bytes between two messages (resynchronisation in lenient mode).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    expected_sip,
    expert_problems,
    run_convert,
    tshark_frames,
)

pytestmark = pytest.mark.e2e

SOURCE = FIXTURES / "pcap" / "hep-v3-tcp.pcapng"


def client_segments() -> list[tuple[int, bytes]]:
    """(relative seq, payload) of the sender's data segments in the fixture (scapy)."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    pkts = rdpcap(str(SOURCE))
    isn = next(int(p[TCP].seq) for p in pkts if p[TCP].flags.S and not p[TCP].flags.A)
    return [
        (int(p[TCP].seq) - isn - 1, bytes(p[TCP].payload))
        for p in pkts
        if p[TCP].dport == 9060 and len(p[TCP].payload)
    ]


def message_starts(stream: bytes) -> list[int]:
    """Offsets of the HEPv3 messages in a stream, from their length fields."""
    starts, pos = [], 0
    while pos < len(stream):
        assert stream[pos : pos + 4] == b"HEP3"
        starts.append(pos)
        pos += struct.unpack_from("!H", stream, pos + 4)[0]
    return starts


def mid_connection_capture(tmp_path: Path) -> tuple[Path, int]:
    """The fixture without the handshake and the first data segment; returns (pcap, cut).

    The fixture's first frames are SYN, SYN/ACK, ACK and a 100-byte segment holding the
    start of the first HEP message; the capture begins with the next segment.
    """
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap, wrpcap

    pkts = rdpcap(str(SOURCE))
    segments = client_segments()
    assert bytes(pkts[3][TCP].payload) == segments[0][1]
    out = tmp_path / "mid-connection.pcap"
    wrpcap(str(out), pkts[4:])
    return out, segments[1][0]


@pytest.mark.parametrize("extra", [(), ("--lenient",)])
def test_capture_started_mid_connection(
    extra: tuple[str, ...], tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    src, cut = mid_connection_capture(tmp_path)
    stream = b"".join(data for _, data in client_segments())
    starts = message_starts(stream)
    first_whole = next(i for i, s in enumerate(starts) if s >= cut)
    assert first_whole == 1  # the fixture cuts the first message only
    expected = sorted(
        (m for m in expected_sip("pcap/hep-v3-tcp.pcapng")), key=lambda m: int(m["ts_us"])
    )
    # Messages are in the stream in time order, so the lost one is the earliest.
    want = expected[first_whole:]

    out = tmp_path / "out.pcapng"
    result = run_convert([src], out, *extra)
    assert b"tcp_midstream_start=1" in result.stderr
    frames = tshark_frames(tshark, wireshark_env, out)
    assert [(f.ts_us, f.src, f.call_id) for f in frames] == [
        (m["ts_us"], m["src"], m["call_id"]) for m in want
    ]
    assert expert_problems(tshark, wireshark_env, out) == []


def test_raw_dump_with_stray_bytes_lenient(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    name = "hep/sample-call.hep"
    data = (FIXTURES / name).read_bytes()
    cut = message_starts(data)[5]
    src = tmp_path / "dump.hep"
    src.write_bytes(data[:cut] + b"\x00stray-udp-datagram\r\n" + data[cut:])
    out = tmp_path / "out.pcapng"
    proc = run_convert([src], out, "--lenient")
    assert b"read 11, wrote 11" in proc.stderr, proc.stderr
    assert f"offset {cut}: bad_magic".encode() in proc.stderr
    assert b"input: bad_magic=1" in proc.stderr
    frames = tshark_frames(tshark, wireshark_env, out)
    assert [f.call_id for f in frames] == [m["call_id"] for m in expected_sip(name)]
    # Without --lenient the dump ends at the stray bytes, keeping what came before.
    proc = run_convert([src], out)
    assert b"read 5, wrote 5" in proc.stderr, proc.stderr
