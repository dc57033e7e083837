"""The extcap interface with the real tshark: ``hep2pcap extcap --install`` into a private
Wireshark configuration folder, ``tshark -D`` lists ``hep``, and ``tshark -i hep -o
extcap.hep.port:PORT -a duration:N`` captures what a real HEP sender (sngrep 1.6 ``-H``)
sends, judged like every other output: every SIP message, checksums good, both dialogs.

The private folder is WIRESHARK_CONFIG_DIR (tshark's personal configuration, whose
``extcap/`` Wireshark 4.0 searches): the real ~/.config/wireshark is never touched.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import FIXTURES, TIMEOUT_S, hep2pcap_cmd, manifest, sngrep_dialogs, tshark_fields
from test_extcap import free_udp_port, udp_bound

pytestmark = pytest.mark.e2e

SIP = FIXTURES / "sip" / "call-register.pcap"
#: tshark's capture length: long enough for tshark, Python and the sender to start.
DURATION_S = 8


@pytest.fixture
def installed(tmp_path: Path, wireshark_env: dict[str, str]) -> dict[str, str]:
    conf = tmp_path / "wireshark"
    env = {**wireshark_env, "WIRESHARK_CONFIG_DIR": str(conf)}
    r = subprocess.run(
        [*hep2pcap_cmd(), "extcap", "--install"], capture_output=True, timeout=TIMEOUT_S,
        env=env, check=True,
    )  # fmt: skip
    assert str(conf / "extcap") in r.stdout.decode()
    return env


def test_tshark_lists_the_interface(installed: dict[str, str], tshark: str) -> None:
    r = subprocess.run([tshark, "-D"], capture_output=True, timeout=TIMEOUT_S, env=installed)
    listed = [line.split(". ", 1)[1] for line in r.stdout.decode().splitlines() if ". " in line]
    assert any(line.startswith("hep (HEP listener (hep2pcap)") for line in listed), listed


def test_tshark_captures_what_sngrep_sends(
    installed: dict[str, str], tshark: str, sngrep: str, tmp_path: Path
) -> None:
    out = tmp_path / "captured.pcapng"
    port = free_udp_port()
    cap = subprocess.Popen(
        [tshark, "-i", "hep", "-o", f"extcap.hep.port:{port}", "-o", "extcap.hep.transport:udp",
         "-a", f"duration:{DURATION_S}", "-w", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=installed,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DURATION_S
        while not udp_bound(port) and time.monotonic() < deadline and cap.poll() is None:
            time.sleep(0.05)
        assert udp_bound(port), "the extcap never bound its port"
        subprocess.run(
            [sngrep, "-F", "-N", "-q", "-I", str(SIP), "-H", f"udp:127.0.0.1:{port}"],
            capture_output=True, timeout=TIMEOUT_S, check=True,
        )  # fmt: skip
        _, err = cap.communicate(timeout=DURATION_S + TIMEOUT_S)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.communicate(timeout=TIMEOUT_S)
    assert cap.returncode == 0, err
    want = manifest("sip/call-register.pcap")["sip_messages"]
    rows = tshark_fields(
        tshark, installed, out, ["sip.Call-ID", "udp.checksum.status"], display_filter="sip"
    )
    assert len(rows) == want
    assert {r["udp.checksum.status"] for r in rows} == {"1"}
    assert sngrep_dialogs(sngrep, out, tmp_path) == 2
    # tshark shows an extcap's stderr as "tshark: <text>": ours is empty (tshark 4.0 prints
    # the bare "tshark: " line for every extcap it stops, its own udpdump included).
    shown = [line for line in err.decode().splitlines() if line.startswith("tshark:")]
    assert all(line.strip() == "tshark:" for line in shown), shown
    time.sleep(0.5)
    assert not udp_bound(port), "the extcap outlived the capture"
