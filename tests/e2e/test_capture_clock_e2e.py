"""The capture box's clock is not the HEP sender's clock.

HEP carries the sender's own timestamp; the pcap record time only says when the collector
saw the datagram. A capture made on a box whose clock was never set (record times at the
Unix epoch: embedded probes without RTC at boot, tools that zero timestamps) must not make
correct HEP timestamps "implausible".
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from e2e_support import FIXTURES, expected_sip, run_convert, tshark_frames

pytestmark = pytest.mark.e2e

NAME = "pcap/hep-v3-udp-vlan.pcap"


def with_record_times(tmp_path: Path, first_s: int) -> Path:
    """The fixture with record times rewritten to ``first_s`` + k ms (scapy)."""
    from scapy.utils import rdpcap, wrpcap

    pkts = rdpcap(str(FIXTURES / NAME))
    for k, p in enumerate(pkts):
        p.time = Decimal(first_s) + Decimal(k) / 1000  # type: ignore[assignment]
    out = tmp_path / "clock.pcap"
    wrpcap(str(out), pkts)
    return out


def test_capture_clock_at_epoch_keeps_hep_times(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    src = with_record_times(tmp_path, 0)
    out = tmp_path / "out.pcapng"
    proc = run_convert([src], out)
    assert b"read 5, wrote 5" in proc.stderr, proc.stderr
    frames = tshark_frames(tshark, wireshark_env, out)
    assert [f.ts_us for f in frames] == [m["ts_us"] for m in expected_sip(NAME)]


def test_capture_clock_slightly_ahead_keeps_hep_times(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    """The usual case: the collector's clock a few hours ahead of the sender's."""
    first = expected_sip(NAME)[0]["ts_us"] // 1_000_000 + 5 * 3600
    src = with_record_times(tmp_path, first)
    out = tmp_path / "out.pcapng"
    run_convert([src], out)
    frames = tshark_frames(tshark, wireshark_env, out)
    assert [f.ts_us for f in frames] == [m["ts_us"] for m in expected_sip(NAME)]
