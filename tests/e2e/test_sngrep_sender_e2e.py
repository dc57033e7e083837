"""sngrep 1.6 as a real HEP sender: replay plaintext SIP pcaps as HEP, convert what arrives.

sngrep reads ``fixtures/sip/*.pcap`` and sends every SIP packet as HEP (v2 or v3, with or
without an auth key) to a UDP socket of ours on 127.0.0.1 (port 0, read back). The received
datagrams are saved as a raw HEPv3 dump (v3 only) and as a pcap of HEP over UDP, converted
by hep2pcap, and checked with tshark (every SIP message, addresses, ports, time) and with
``sngrep -N -I`` (the same dialog count as the source pcap). Quirks seen on the way are
asserted here and described in fixtures/README.md.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    TIMEOUT_S,
    expected_sip,
    expert_problems,
    hep3_chunks,
    manifest,
    run_convert,
    sngrep_dialogs,
    sngrep_read,
    tshark_frames,
    write_hep_udp_pcap,
)

pytestmark = pytest.mark.e2e

SIP_PCAPS = ["sip/call-register.pcap", "sip/call-ipv6.pcap"]
#: sngrep's default eep.send.id; HEPv3 carries it shifted left by 16 bits (sngrep 1.6 bug).
SNGREP_ID = 2002
SNGREP_V3_AGENT = SNGREP_ID << 16  # 131203072
#: How long to wait for datagrams that sngrep has already sent (it exits when done).
RECEIVE_DEADLINE_S = 5.0


def sngrep_send(
    sngrep: str, pcap: Path, settings: list[str], tmp_path: Path, want: int
) -> list[tuple[int, bytes]]:
    """Run ``sngrep -I PCAP -H udp:127.0.0.1:PORT`` and return (receive µs, datagram)s.

    Stops when ``want`` datagrams have arrived or the deadline passes, then drains what else
    is already queued (so extra datagrams are seen, too).
    """
    rc = tmp_path / "sngreprc"
    rc.write_text("".join(f"set {s}\n" for s in settings))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cmd = [sngrep, "-F", "-f", str(rc), "-N", "-q", "-I", str(pcap)]
        cmd += ["-H", f"udp:127.0.0.1:{port}"]
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
        assert proc.returncode == 0, proc.stderr
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + RECEIVE_DEADLINE_S
        while len(got) < want and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 0.5))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            got.append((time.time_ns() // 1000, data))
        sock.setblocking(False)
        while True:  # anything beyond `want` that is already here
            try:
                got.append((time.time_ns() // 1000, sock.recv(65535)))
            except BlockingIOError:
                break
    return got


def check_output(
    out: Path,
    name: str,
    tshark: str,
    env: dict[str, str],
    *,
    agent: int,
    version: int,
) -> None:
    """Frame by frame: the SIP of the source pcap, as sent by sngrep, times from the pcap."""
    expected = expected_sip(name)
    frames = tshark_frames(tshark, env, out)
    assert len(frames) == len(expected)
    for f, exp in zip(frames, expected, strict=True):
        assert f.is_sip, f.protocols
        assert f.ts_us == exp["ts_us"]  # sngrep sends the pcap record time
        assert (f.src, f.sport, f.dst, f.dport) == (
            exp["src"],
            exp["sport"],
            exp["dst"],
            exp["dport"],
        )
        assert f.transport == "udp"
        assert (f.method or f.status) == (exp["method"] or str(exp["status"]))
        assert f.call_id == exp["call_id"]
        assert f.interface == f"hep-agent-{agent}"
        assert f.comment.startswith(f"HEPv{version}; agent {agent}; proto 17 (UDP)")
    assert expert_problems(tshark, env, out) == []


@pytest.mark.parametrize("name", SIP_PCAPS)
def test_sngrep_hep3_sender(
    name: str, tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    want = manifest(name)["sip_messages"]
    got = sngrep_send(sngrep, FIXTURES / name, ["eep.send.version 3"], tmp_path, want)
    assert len(got) == want

    # What sngrep puts on the wire, read with the test's own chunk reader.
    for _, data in got:
        chunks = hep3_chunks(data)
        assert int.from_bytes(chunks[0x000C], "big") == SNGREP_V3_AGENT  # the 16-bit shift
        assert chunks[0x0002] == bytes([17])
        assert chunks[0x000B] == bytes([1])
        assert 0x000E not in chunks  # no password configured, no auth key chunk

    raw = tmp_path / "sngrep.hep"
    raw.write_bytes(b"".join(d for _, d in got))
    out_raw = tmp_path / "from-raw.pcapng"
    run_convert([raw], out_raw)
    check_output(out_raw, name, tshark, wireshark_env, agent=SNGREP_V3_AGENT, version=3)
    assert sngrep_read(sngrep, out_raw, tmp_path) == (
        manifest(name)["dialogs"],
        manifest(name)["sip_messages"],
    )

    pcap = tmp_path / "sngrep-hep.pcap"
    write_hep_udp_pcap(pcap, got, 9060)
    out_pcap = tmp_path / "from-pcap.pcapng"
    run_convert([pcap], out_pcap)
    check_output(out_pcap, name, tshark, wireshark_env, agent=SNGREP_V3_AGENT, version=3)
    assert sngrep_read(sngrep, out_pcap, tmp_path) == (
        manifest(name)["dialogs"],
        manifest(name)["sip_messages"],
    )
    assert out_pcap.read_bytes() == out_raw.read_bytes()  # same messages, same file


@pytest.mark.parametrize("name", SIP_PCAPS)
def test_sngrep_hep2_sender(
    name: str, tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    want = manifest(name)["sip_messages"]
    got = sngrep_send(sngrep, FIXTURES / name, ["eep.send.version 2"], tmp_path, want)
    assert len(got) == want
    six = ":" in expected_sip(name)[0]["src"]
    for _, data in got:
        assert data[0] == 2
        assert data[2] == (10 if six else 2)  # Linux AF_INET6 / AF_INET
        assert data[3] == 17
        time_at = 8 + (32 if six else 8)
        # LE capture id, not shifted in v2
        assert int.from_bytes(data[time_at + 8 : time_at + 10], "little") == SNGREP_ID
    # data[1], the header-length byte, is junk in sngrep's v2 sender (fixtures/README.md).

    pcap = tmp_path / "sngrep-hep2.pcap"
    write_hep_udp_pcap(pcap, got, 9060)
    out = tmp_path / "out.pcapng"
    proc = run_convert([pcap], out)
    assert f"read {want}, wrote {want}".encode() in proc.stderr
    check_output(out, name, tshark, wireshark_env, agent=SNGREP_ID, version=2)
    assert sngrep_read(sngrep, out, tmp_path) == (
        manifest(name)["dialogs"],
        manifest(name)["sip_messages"],
    )


@pytest.fixture(scope="module")
def sngrep_with_password(
    sngrep: str, tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[int, bytes]]:
    """HEPv3 from sngrep with ``eep.send.pass secret`` (call-register.pcap)."""
    name = "sip/call-register.pcap"
    tmp = tmp_path_factory.mktemp("sngrep-pass")
    return sngrep_send(
        sngrep,
        FIXTURES / name,
        ["eep.send.version 3", "eep.send.pass secret"],
        tmp,
        manifest(name)["sip_messages"],
    )


def test_sngrep_password_sends_auth_key(sngrep_with_password: list[tuple[int, bytes]]) -> None:
    assert len(sngrep_with_password) == manifest("sip/call-register.pcap")["sip_messages"]
    assert {hep3_chunks(d).get(0x000E) for _, d in sngrep_with_password} == {b"secret"}


@pytest.mark.parametrize(
    ("args", "summary", "written"),
    [
        (("--password", "secret"), "wrote 11, skipped 0, dropped 0", 11),
        ((), "wrote 11, skipped 0, dropped 0", 11),
        (("--password", "wrong"), "wrote 0, skipped 0, dropped 11 (auth_mismatch=11)", 0),
        (("--password", "secretX"), "wrote 0, skipped 0, dropped 11 (auth_mismatch=11)", 0),
        (("--password", "secre"), "wrote 0, skipped 0, dropped 11 (auth_mismatch=11)", 0),
    ],
    ids=["right", "none", "wrong", "longer", "prefix"],
)
def test_sngrep_password_checked(
    args: tuple[str, ...],
    summary: str,
    written: int,
    sngrep_with_password: list[tuple[int, bytes]],
    tmp_path: Path,
    tshark: str,
    wireshark_env: dict[str, str],
) -> None:
    """Exact key match (sngrep's own listener compares only a prefix; we do not)."""
    raw = tmp_path / "sngrep.hep"
    raw.write_bytes(b"".join(d for _, d in sngrep_with_password))
    out = tmp_path / "out.pcapng"
    proc = run_convert([raw], out, *args)
    assert f"read 11, {summary}".encode() in proc.stderr, proc.stderr
    frames = tshark_frames(tshark, wireshark_env, out)
    assert len(frames) == written
    if written:
        check_output(
            out, "sip/call-register.pcap", tshark, wireshark_env, agent=SNGREP_V3_AGENT, version=3
        )
    assert b"secret" not in out.read_bytes()  # the key is never written out


def test_sngrep_hep2_with_password_is_rejected(tmp_path: Path, sngrep: str) -> None:
    """HEPv2 has no auth key: with --password every message is dropped (v12_auth_required)."""
    name = "sip/call-ipv6.pcap"
    want = manifest(name)["sip_messages"]
    got = sngrep_send(sngrep, FIXTURES / name, ["eep.send.version 2"], tmp_path, want)
    pcap = tmp_path / "sngrep-hep2.pcap"
    write_hep_udp_pcap(pcap, got, 9060)
    proc = run_convert([pcap], tmp_path / "out.pcapng", "--password", "secret")
    assert f"wrote 0, skipped 0, dropped {want} (v12_auth_required={want})".encode() in (
        proc.stderr
    )


@pytest.mark.parametrize("name", SIP_PCAPS)
def test_source_pcaps_are_valid_sip(
    name: str, tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    """The plaintext sources themselves: sngrep counts the manifest's dialogs (so "the
    output's count equals the manifest's" above means "equals the source pcap's"), and
    tshark decodes every packet as SIP with no warning."""
    src = FIXTURES / name
    assert sngrep_dialogs(sngrep, src, tmp_path) == manifest(name)["dialogs"]
    frames = tshark_frames(tshark, wireshark_env, src)
    assert [f.call_id for f in frames] == [m["call_id"] for m in expected_sip(name)]
    assert all(f.is_sip for f in frames)
    assert expert_problems(tshark, wireshark_env, src) == []
