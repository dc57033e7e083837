"""``hep2pcap listen`` promises a pcapng "that can be opened at any moment": check it with
sngrep and tshark while the listener runs, before and after the first packet.

(tests/test_listen.py covers the listener itself; this only opens its file with real readers.)
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    LISTEN_DEADLINE_S,
    TIMEOUT_S,
    Listener,
    manifest,
    sngrep_dialogs,
    tshark_fields,
)
from hepbuild import whole_blocks

pytestmark = pytest.mark.e2e

SIP = FIXTURES / "sip" / "call-register.pcap"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, Path]]:
    out = tmp_path / "live.pcapng"
    lst = Listener(out)
    try:
        yield lst, out
    finally:
        if lst.proc.poll() is None:
            lst.proc.kill()
        lst.proc.communicate(timeout=TIMEOUT_S)  # reaps it and closes the stderr pipe


def test_live_file_opens_before_the_first_packet(
    listener: tuple[Listener, Path], tmp_path: Path, sngrep: str
) -> None:
    _, out = listener
    assert out.exists()
    assert sngrep_dialogs(sngrep, out, tmp_path) == 0


def test_live_file_opens_while_running(
    listener: tuple[Listener, Path],
    tmp_path: Path,
    sngrep: str,
    tshark: str,
    wireshark_env: dict[str, str],
) -> None:
    """sngrep sends a call and a registration as HEP; while the listener still runs, the file
    already shows both dialogs in sngrep and all 11 SIP messages in tshark."""
    lst, out = listener
    # The listener printed its port, so it is bound: sngrep replays the SIP pcap into it.
    subprocess.run(
        [sngrep, "-F", "-N", "-q", "-I", str(SIP), "-H", f"udp:127.0.0.1:{lst.port}"],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    want = manifest("sip/call-register.pcap")["sip_messages"]
    deadline = time.monotonic() + LISTEN_DEADLINE_S
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        rows = tshark_fields(
            tshark, wireshark_env, "-", ["sip.Call-ID"], display_filter="sip",
            stdin=whole_blocks(out.read_bytes() if out.exists() else b""),
        )  # fmt: skip
        if len(rows) >= want:
            break
        time.sleep(0.2)  # polling the file with a deadline; it is flushed every second
    assert len(rows) == want
    assert lst.proc.poll() is None  # still running
    assert sngrep_dialogs(sngrep, out, tmp_path) == manifest("sip/call-register.pcap")["dialogs"]
    err = lst.stop()
    assert f"read {want}, wrote {want}".encode() in err
