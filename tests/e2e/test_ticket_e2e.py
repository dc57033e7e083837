"""The support-ticket workflow (issue 4) checked with the real tshark and sngrep.

fixtures/hep/ticket.hep is an hour of a small platform: a B2BUA (agent 300) whose calls
have a UDP and a TLS leg linked by HEP correlation id, a tap (302) mirroring the UDP leg
again, FreeSWITCH (301) with FS-9657 (only outgoing TLS messages), a TCP sender (303)
that cuts and packs SIP across HEP packets, SDES keys and digest credentials, and one
truncated message. What is in it is listed in fixtures/manifest.json ("ticket").
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    TIMEOUT_S,
    Listener,
    expert_problems,
    hep2pcap_cmd,
    manifest,
    run_convert,
    sngrep_read,
    tshark_fields,
)
from hepbuild import whole_blocks
from scapy.layers.inet import TCP, UDP
from scapy.utils import PcapNgReader

from hep2pcap.stream import HepDeframer

pytestmark = pytest.mark.e2e

TICKET = FIXTURES / "hep" / "ticket.hep"
FACTS = manifest("hep/ticket.hep")["ticket"]
B2BUA_CALL = "t-call1-a@203.0.113.10"  # the SRTP call: legs t-call1-a and t-call1-b
SIP_FIELDS = ["frame.number", "sip.Call-ID", "sip.Method", "sip.Status-Code", "frame.comment"]


def sip_rows(tshark: str, env: dict[str, str], path: Path) -> list[dict[str, str]]:
    return tshark_fields(tshark, env, path, SIP_FIELDS, display_filter="sip")


def sip_payloads(path: Path) -> list[bytes]:
    """The UDP/TCP payload of every frame, read with scapy (an independent reader)."""
    with PcapNgReader(str(path)) as reader:
        return [bytes(p[UDP].payload if UDP in p else p[TCP].payload) for p in reader]


def frame_count(tshark: str, env: dict[str, str], path: Path) -> int:
    return len(tshark_fields(tshark, env, path, ["frame.number"]))


def test_one_redacted_call_with_one_command(
    tshark: str, sngrep: str, wireshark_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "call.pcapng"
    run_convert([TICKET], out, "--call-id", B2BUA_CALL, "--redact", "--dedup")
    rows = sip_rows(tshark, wireshark_env, out)
    # both legs, 7 messages each; the tap's copies of the A leg are gone (--dedup)
    assert {r["sip.Call-ID"] for r in rows} == set(FACTS["calls"][B2BUA_CALL]["call_ids"])
    assert len(rows) == frame_count(tshark, wireshark_env, out) == 14
    assert expert_problems(tshark, wireshark_env, out) == []
    data = out.read_bytes()
    for secret in FACTS["secrets"][:2]:  # the SDES keys of this call
        assert secret.encode() not in data
    assert b"inline:XXXX" in data
    invite = next(
        r for r in rows if r["sip.Method"] == "INVITE" and "t-call1-a" in r["sip.Call-ID"]
    )
    assert "redacted" in invite["frame.comment"]
    dialogs, messages = sngrep_read(sngrep, out, tmp_path)
    assert (dialogs, messages) == (2, 14)


def test_redact_keeps_lengths_and_content_length(
    tshark: str, wireshark_env: dict[str, str], tmp_path: Path
) -> None:
    plain, masked = tmp_path / "plain.pcapng", tmp_path / "masked.pcapng"
    run_convert([TICKET], plain)
    run_convert([TICKET], masked, "--redact")
    fields = ["frame.len", "sip.Method", "sip.Status-Code", "sip.Call-ID"]
    a = tshark_fields(tshark, wireshark_env, plain, fields, display_filter="sip")
    b = tshark_fields(tshark, wireshark_env, masked, fields, display_filter="sip")
    assert a == b  # same lengths, and tshark decodes every message the same
    assert len(b) == frame_count(tshark, wireshark_env, masked)
    for payload in sip_payloads(masked):  # the body still fills Content-Length
        if b"t-notify@" in payload:
            continue  # the fixture's truncated message
        head, _, body = payload.partition(b"\r\n\r\n")
        length = re.search(rb"\r\nContent-Length: *(\d+)", head, re.I)
        assert length is not None
        assert len(body) == int(length.group(1)), head
    data = masked.read_bytes()
    for secret in FACTS["secrets"]:
        assert secret.encode() not in data, secret
    assert expert_problems(tshark, wireshark_env, masked) == expert_problems(
        tshark, wireshark_env, plain
    )


def test_split_one_file_per_call(
    tshark: str, sngrep: str, wireshark_env: dict[str, str], tmp_path: Path
) -> None:
    outdir = tmp_path / "calls"
    proc = subprocess.run(
        [*hep2pcap_cmd(), "split", str(TICKET), "-d", str(outdir)],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    index = (outdir / "index.tsv").read_text().splitlines()
    header, lines = (
        index[0].split("\t"),
        [dict(zip(index[0].split("\t"), x.split("\t"), strict=True)) for x in index[1:]],
    )
    assert header[:3] == ["file", "start", "method"]
    calls = FACTS["calls"]
    assert len(lines) == len(calls)
    files = sorted(p.name for p in outdir.glob("*.pcapng"))
    assert files == sorted([x["file"] for x in lines] + ["other.pcapng"])
    for line in lines:
        ids = line["call_ids"].split()
        expected = calls[next(c for c in calls if c in ids)]
        assert sorted(ids) == sorted(expected["call_ids"])
        path = outdir / line["file"]
        rows = sip_rows(tshark, wireshark_env, path)
        assert {r["sip.Call-ID"] for r in rows} == set(expected["call_ids"])
        assert len(rows) == int(line["messages"]) >= expected["messages"] - 1
        dialogs, _ = sngrep_read(sngrep, path, tmp_path)
        assert dialogs == len(expected["call_ids"])  # one dialog per leg
    finals = {x["call_ids"].split()[0]: x["final"] for x in lines}
    assert finals[B2BUA_CALL] == "200"
    other = sip_rows(tshark, wireshark_env, outdir / "other.pcapng")
    assert {r["sip.Method"] for r in other} >= {"REGISTER", "OPTIONS", "NOTIFY"}


def test_split_other_dropped(tmp_path: Path) -> None:
    outdir = tmp_path / "calls"
    proc = subprocess.run(
        [*hep2pcap_cmd(), "split", str(TICKET), "-d", str(outdir), "--other", "drop"],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (outdir / "other.pcapng").exists()
    assert len(list(outdir.glob("*.pcapng"))) == len(FACTS["calls"])


def test_info_shows_the_incomplete_capture(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*hep2pcap_cmd(), "info", str(TICKET)], capture_output=True, timeout=TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "agent 301: 6 of 6 TLS transactions in 3 of 3 dialogs were mirrored from one" in text
    assert "FS-9657" in text
    proc = subprocess.run(
        [*hep2pcap_cmd(), "info", "--json", str(TICKET)],
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    data = json.loads(proc.stdout)
    assert data["duplicates"] == FACTS["copies"]


def test_tcp_sip_cut_and_packed_comes_out_one_frame_per_message(
    tshark: str, sngrep: str, wireshark_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "tcp.pcapng"
    run_convert([TICKET], out, "--agent", "303")
    rows = sip_rows(tshark, wireshark_env, out)
    tcp = FACTS["tcp"]
    assert len(rows) == frame_count(tshark, wireshark_env, out) == tcp["sip_messages"]
    assert [r["sip.Method"] or r["sip.Status-Code"] for r in rows] == [
        "INVITE", "100", "180", "200", "ACK", "BYE", "200",
    ]  # fmt: skip
    assert expert_problems(tshark, wireshark_env, out) == []
    assert (1, tcp["sip_messages"]) == sngrep_read(sngrep, out, tmp_path)
    # without the repair, sngrep misses the cut INVITE and the packed 180
    raw = tmp_path / "raw.pcapng"
    run_convert([TICKET], raw, "--agent", "303", "--no-resplit")
    assert frame_count(tshark, wireshark_env, raw) == tcp["hep_messages"]


@pytest.mark.parametrize(
    "args",
    [
        ["--call-id", B2BUA_CALL],
        ["--host", "10.2.0.5"],
        ["--port", "40123"],
        ["--agent", "301"],
        ["--method", "REGISTER"],
        ["--match", "CSEQ: 2 BYE", "-i"],
        ["--match", "monitor@", "-v"],
        ["--correlation-id", "t-call2-a@203.0.113.10"],
        ["--since", "2025-11-26T16:10:00Z", "--until", "1764174600"],  # 16:10 .. 16:30
    ],
    ids=lambda a: " ".join(a),
)
def test_every_filter_live_equals_offline(
    args: list[str], tshark: str, wireshark_env: dict[str, str], tmp_path: Path
) -> None:
    offline = tmp_path / "offline.pcapng"
    run_convert([TICKET], offline, *args)
    expected = sip_rows(tshark, wireshark_env, offline)
    assert expected, "the filter keeps something"
    live = tmp_path / "live.pcapng"
    lst = Listener(live, *args)
    try:
        send_hep_file(TICKET, lst.port)
        wait_frames(tshark, wireshark_env, live, len(expected))
    finally:
        lst.stop()
    got = sip_rows(tshark, wireshark_env, live)
    key = lambda r: (r["sip.Call-ID"], r["sip.Method"], r["sip.Status-Code"])  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))


def send_hep_file(path: Path, port: int) -> None:
    """Send every HEP message of a raw dump as one UDP datagram, paced (loopback)."""
    d = HepDeframer()
    messages = d.feed(path.read_bytes())
    d.eof()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, m in enumerate(messages):
            s.sendto(m, ("127.0.0.1", port))
            if i % 20 == 19:
                time.sleep(0.005)


def wait_frames(tshark: str, env: dict[str, str], path: Path, n: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        snapshot = whole_blocks(
            path.read_bytes() if path.exists() else b""
        )  # the file is still being written
        rows = tshark_fields(tshark, env, "-", SIP_FIELDS, display_filter="sip", stdin=snapshot)
        if snapshot and len(rows) >= n:
            return
        time.sleep(0.3)
