"""The README's comparison table, checked: sngrep 1.6's own HEP → pcap versus hep2pcap.

sngrep listens for HEP (``-L udp:127.0.0.1:PORT -O x.pcap``) and we send it
fixtures/hep/multi-agent.hep (UDP IPv4, TCP and TLS over IPv6, a LOG). What it writes is
compared with hep2pcap's output of the same file: sngrep turns TCP into UDP, IPv6 into
0.0.0.0 and leaves checksums at zero; hep2pcap keeps all three. If a future sngrep fixes
these, this test fails and the README table needs updating.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import FIXTURES, TIMEOUT_S, raw_messages, run_convert, tshark_frames

pytestmark = pytest.mark.e2e

NAME = "hep/multi-agent.hep"
DEADLINE_S = 10.0


def udp_socket_state(port: int) -> int | None:
    """rx_queue bytes of the IPv4 UDP socket bound to 127.0.0.1:port, or None if unbound."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            return int(fields[4].split(":")[1], 16)
    return None


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)  # polling with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def test_sngrep_own_hep_export_vs_hep2pcap(
    tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    if not Path("/proc/net/udp").exists():
        pytest.skip("needs /proc/net/udp to see when sngrep is listening")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free now; sngrep binds it next (loopback only)
    sngrep_out = tmp_path / "sngrep.pcap"
    proc = subprocess.Popen(
        [sngrep, "-F", "-N", "-q", "-L", f"udp:127.0.0.1:{port}", "-O", str(sngrep_out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: udp_socket_state(port) is not None, "sngrep to listen")
        msgs = raw_messages((FIXTURES / NAME).read_bytes())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for m in msgs:
                c.sendto(m, ("127.0.0.1", port))
                wait_for(lambda: udp_socket_state(port) == 0, "sngrep to read a datagram")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT_S)

    theirs = tshark_frames(tshark, wireshark_env, sngrep_out)
    ours_path = tmp_path / "ours.pcapng"
    run_convert([FIXTURES / NAME], ours_path)
    ours = tshark_frames(tshark, wireshark_env, ours_path)

    # sngrep: all 20 messages (the LOG too), every one as UDP over IPv4 ...
    assert len(theirs) == len(msgs) == 20
    assert {f.transport for f in theirs} == {"udp"}
    assert all(":ipv6:" not in f.protocols for f in theirs)
    # ... the ten IPv6 messages with 0.0.0.0 addresses, and no UDP checksum (status 3).
    assert sum(f.src == "0.0.0.0" and f.dst == "0.0.0.0" for f in theirs) == 10
    assert {f.checksums[-1] for f in theirs} == {"3"}
    # hep2pcap: TCP stays TCP, IPv6 stays IPv6, every checksum is verified good.
    assert {f.transport for f in ours} == {"udp", "tcp"}
    assert sum(":ipv6:" in f.protocols for f in ours) == 10
    assert "0.0.0.0" not in {f.src for f in ours}
    assert all(set(f.checksums) == {"1"} for f in ours)


@pytest.mark.parametrize(
    ("name", "dialogs", "packets"),
    [
        ("pcap/hep-v3-udp-vlan.pcap", 1, 10),  # 5 messages, each written twice
        ("pcap/hep-v2-udp.pcap", 0, 0),  # HEPv2: nothing
    ],
)
def test_sngrep_eep_parse_of_hep_pcaps(
    name: str, dialogs: int, packets: int, tmp_path: Path, sngrep: str
) -> None:
    """README table, last rows: ``sngrep -E -I`` on a pcap of HEP writes every HEPv3 frame
    twice and reads nothing from HEPv2; hep2pcap writes each message once (see
    test_convert_e2e.py)."""
    out = tmp_path / "x.pcap"
    proc = subprocess.run(
        [sngrep, "-F", "-N", "-E", "-I", str(FIXTURES / name), "-O", str(out)],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    assert proc.stdout.replace(b"\r", b"\n").split()[-1] == str(dialogs).encode()
    data = out.read_bytes()
    pos, records = 24, 0
    while pos + 16 <= len(data):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        records += 1
    assert records == packets
