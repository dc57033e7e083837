"""The committed fixtures: current, tiny, and carrying valid CRLF SIP."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from e2e_support import FIXTURES, TIMEOUT_S, hep3_chunks, iter_udp_payloads, manifest, raw_messages

pytestmark = pytest.mark.e2e

MAX_FIXTURE_BYTES = 48 * 1024
REQUIRED = ("via", "from", "to", "call-id", "cseq", "content-length")


def test_fixtures_are_current() -> None:
    """``make_fixtures.py --check``: the generator reproduces every committed byte."""
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "make_fixtures.py"), "--check"],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fixtures_are_tiny() -> None:
    sizes = {
        p.relative_to(FIXTURES).as_posix(): p.stat().st_size
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.suffix in (".hep", ".gz", ".pcap", ".pcapng")
    }
    assert sizes
    assert {k: v for k, v in sizes.items() if v > MAX_FIXTURE_BYTES} == {}


def check_sip(payload: bytes) -> str:
    """Assert a SIP message is well formed; return its Call-ID."""
    head, sep, body = payload.partition(b"\r\n\r\n")
    assert sep, "no CRLF CRLF after the headers"
    assert b"\n" not in head.replace(b"\r\n", b""), "bare LF in the headers"
    assert b"\r" not in head.replace(b"\r\n", b""), "bare CR in the headers"
    lines = head.decode().split("\r\n")
    assert re.fullmatch(r"(\w+ \S+ SIP/2\.0|SIP/2\.0 \d{3} .+)", lines[0]), lines[0]
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon, line
        headers[name.strip().lower()] = value.strip()
    for name in REQUIRED:
        assert name in headers, f"{name} missing in {lines[0]}"
    assert int(headers["content-length"]) == len(body)
    assert ";tag=" in headers["from"]
    if lines[0].startswith("SIP/2.0 ") and not lines[0].startswith("SIP/2.0 100 "):
        assert ";tag=" in headers["to"]
    if lines[0].startswith(("INVITE ", "REGISTER ", "OPTIONS ")):
        assert "contact" in headers
    if body:
        assert b"\n" not in body.replace(b"\r\n", b"")
    return headers["call-id"]


@pytest.mark.parametrize("name", ["hep/sample-call.hep", "hep/multi-agent.hep"])
def test_raw_fixture_sip_is_valid(name: str) -> None:
    msgs = raw_messages((FIXTURES / name).read_bytes())
    assert len(msgs) == manifest(name)["hep_messages"]
    call_ids = [check_sip(hep3_chunks(m)[0x0F]) for m in msgs if hep3_chunks(m)[0x0B] == b"\x01"]
    assert call_ids == [m["call_id"] for m in manifest(name)["messages"] if m["call_id"]]


@pytest.mark.parametrize("name", ["sip/call-register.pcap", "sip/call-ipv6.pcap"])
def test_plain_sip_fixture_is_valid(name: str) -> None:
    call_ids = [check_sip(p) for _, p in iter_udp_payloads(FIXTURES / name)]
    assert call_ids == [m["call_id"] for m in manifest(name)["messages"]]
