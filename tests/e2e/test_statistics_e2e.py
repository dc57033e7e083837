"""Interface Statistics Blocks (issue 14): a file hep2pcap closed ends with one ISB per
interface, and the readers people use still read it: capinfos and tshark (Wireshark's
Capture File Properties come from the same library) show the counters, sngrep 1.6
(libpcap) still shows every dialog, and ``hep2pcap info`` reads the counters back.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    TIMEOUT_S,
    Listener,
    hep2pcap_cmd,
    manifest,
    sngrep_dialogs,
    tshark_fields,
)

pytestmark = pytest.mark.e2e

SIP = FIXTURES / "sip" / "call-register.pcap"


def test_closed_live_file_has_statistics_every_reader_reads(
    tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    out = tmp_path / "live.pcapng"
    lst = Listener(out)
    subprocess.run(
        [sngrep, "-F", "-N", "-q", "-I", str(SIP), "-H", f"udp:127.0.0.1:{lst.port}"],
        capture_output=True, timeout=TIMEOUT_S, check=True,
    )  # fmt: skip
    want = manifest("sip/call-register.pcap")["sip_messages"]
    lst.stop()  # SIGINT: what was sent is in (the receiver drains the socket first)

    capinfos = shutil.which("capinfos")  # Debian ships it with tshark (wireshark-common)
    if capinfos is not None:
        info = subprocess.run(
            [capinfos, str(out)], capture_output=True, timeout=TIMEOUT_S, check=True,
            env=wireshark_env,
        ).stdout.decode()  # fmt: skip
        interfaces = int(re.search(r"Number of interfaces in file: (\d+)", info)[1])  # type: ignore[index]
        assert interfaces == 2  # no agent id (always written) and sngrep's agent
        assert info.count("Number of stat entries = 1") == interfaces
    rows = tshark_fields(tshark, wireshark_env, out, ["sip.Call-ID"], display_filter="sip")
    assert len(rows) == want
    assert sngrep_dialogs(sngrep, out, tmp_path) == 2

    report = json.loads(
        subprocess.run(
            [*hep2pcap_cmd(), "info", "--json", str(out)],
            capture_output=True, timeout=TIMEOUT_S, check=True,
        ).stdout
    )  # fmt: skip
    stats = report["capture_statistics"]
    # sngrep 1.6 sends capture id 2002 as 07d2 0000: the agent's name says what came.
    assert [e["interface"] for e in stats] == [0, 1]
    assert stats[0]["name"] == "hep-no-agent-id"
    assert stats[1]["name"].startswith("hep-agent-")
    assert stats[0]["received"] == want
    assert stats[0]["kernel_drops"] == 0
    assert stats[0]["our_drops"] == 0
    assert sum(e["delivered"] for e in stats) == want
