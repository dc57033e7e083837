"""Many capture agents: one pcapng interface each, up to a cap, readable by libpcap (sngrep)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from e2e_support import expert_problems, run_convert, sngrep_dialogs, tshark_fields

from hep2pcap.hep import HepMessage, encode

pytestmark = pytest.mark.e2e

T0_US = 1_764_210_000_000_000
AGENTS = 300


def options(n: int) -> bytes:
    lines = [
        "OPTIONS sip:ping@192.0.2.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 198.18.{n // 256}.{n % 256}:5060;branch=z9hG4bK-agent-{n}",
        "Max-Forwards: 70",
        f"From: <sip:agent{n}@example.com>;tag=a{n}",
        "To: <sip:ping@example.com>",
        f"Call-ID: agent-{n}@example.com",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:agent{n}@198.18.{n // 256}.{n % 256}:5060>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_one_interface_per_agent_up_to_the_cap(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str], sngrep: str
) -> None:
    """300 agents: the first ~256 get their own interface, the rest share one; every
    message is written, the agent id stays in each comment, and sngrep reads all 300."""
    src = tmp_path / "agents.hep"
    dst = ipaddress.ip_address("192.0.2.1").packed
    src.write_bytes(
        b"".join(
            encode(
                HepMessage(
                    3, 17, ipaddress.ip_address(f"198.18.{n // 256}.{n % 256}").packed, dst,
                    5060, 5060, T0_US + n * 1000, options(n), capture_id=10_000 + n,
                )
            )
            for n in range(AGENTS)
        )
    )  # fmt: skip
    out = tmp_path / "out.pcapng"
    run_convert([src], out)
    rows = tshark_fields(tshark, wireshark_env, out, ["frame.interface_name", "frame.comment"])
    assert len(rows) == AGENTS
    names = [r["frame.interface_name"] for r in rows]
    # 256 interfaces per file; one of them may be the no-agent interface written up front.
    own = len([n for n in names if n != "hep-other-agents"])
    assert own in (255, 256)
    assert names[:own] == [f"hep-agent-{10_000 + n}" for n in range(own)]
    assert set(names[own:]) == {"hep-other-agents"}
    assert all(f"agent {10_000 + n};" in r["frame.comment"] for n, r in enumerate(rows))
    assert expert_problems(tshark, wireshark_env, out) == []
    assert sngrep_dialogs(sngrep, out, tmp_path) == AGENTS
