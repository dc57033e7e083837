"""Real HEP senders, end to end (issue 11): Kamailio 5.6 siptrace driven by sipp, and sngrep.

Each scenario runs one real call (sipp ``uac`` -> Kamailio -> sipp ``uas``) over UDP, TCP or
TLS SIP, IPv4 or IPv6, while Kamailio mirrors every message it receives and sends as HEPv3 or
HEPv2 (to a port that is not 9060) over HEP/UDP or HEP/TCP into ``hep2pcap listen``. dumpcap
captures the same HEP traffic, and ``hep2pcap convert`` reads that capture with no flag. Both
outputs are judged with tshark and sngrep against what the senders themselves logged:

* sipp's ``-trace_msg`` logs: every SIP message of the call, byte for byte (each message
  crosses one hop, so the payloads of the output are exactly the messages sipp logged);
* Kamailio's own log of every message it received (``$si:$sp -> $Ri:$Rp``, ``$pr``,
  ``$ml``) and sent (``$sndfrom``/``$sndto``): addresses, ports, transport and length.

Sender quirks found on the way are asserted where they show (see fixtures/README.md).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import (
    FIXTURES,
    TIMEOUT_S,
    expert_problems,
    hep2pcap_cmd,
    manifest,
    run_convert,
    run_tshark,
    sngrep_read,
)
from realsenders import (
    Capture,
    Kamailio,
    Listen,
    Seen,
    TlsRelay,
    require,
    sipp_messages,
    sipp_uac,
    sipp_uas,
    wait_process,
)

pytestmark = pytest.mark.e2e

CAPTURE_ID = 2001


@dataclass(frozen=True)
class Scenario:
    hep_version: int
    hep_transport: str  # how Kamailio sends HEP: "udp" / "tcp"
    sip_transport: str  # the call's first leg: "udp" / "tcp" / "tls" (the second leg: UDP/TCP)
    host: str  # "127.0.0.1" / "::1"
    #: Kamailio mirrors only what it sends over TLS, not what it receives (the FS-9657
    #: signature, made by a real sender: event_route[siptrace:msg] drops those messages).
    fs9657: bool = False

    @property
    def id(self) -> str:
        ip = "v6" if ":" in self.host else "v4"
        name = f"hep{self.hep_version}-{self.hep_transport}-sip-{self.sip_transport}-{ip}"
        return name + ("-fs9657" if self.fs9657 else "")


SCENARIOS = [
    Scenario(3, "udp", "udp", "127.0.0.1"),
    Scenario(2, "udp", "tcp", "::1"),
    Scenario(3, "tcp", "tls", "127.0.0.1"),
    Scenario(2, "tcp", "udp", "::1"),
    Scenario(3, "udp", "tls", "127.0.0.1", fs9657=True),
]

#: siptrace (trace_mode 1) runs this for every message it is about to mirror; ``drop`` keeps
#: it out of HEP. Kamailio 5.6 quirk: the route sees the message but not how it travelled
#: ($pr is "none", $Rp and $si unset), so the requests that arrived over TLS are told by their
#: top Via: sipp's (it speaks TCP to the TLS relay); what Kamailio relays carries its own Via.
DROP_RECEIVED_TLS = """
event_route[siptrace:msg] {
    if ($mt == 1 && $(hdr(Via)[0]) =~ "^SIP/2.0/TCP ") {
        drop;
    }
}
"""


@dataclass(frozen=True, order=True)
class Row:
    """One frame of our output as tshark sees it."""

    src: str
    sport: int
    dst: str
    dport: int
    transport: str
    ts_us: int
    payload: bytes
    comment: str


def tshark_rows(tshark: str, env: dict[str, str], path: Path) -> list[Row]:
    fields = [
        "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "udp.srcport",
        "tcp.dstport", "udp.dstport", "frame.time_epoch", "tcp.payload", "udp.payload",
        "frame.comment",
    ]  # fmt: skip
    args = ["-r", str(path), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    out = run_tshark(tshark, args, env).stdout.decode()
    rows = []
    for line in out.splitlines():
        v = dict(zip(fields, line.split("\t"), strict=True))
        tcp = bool(v["tcp.srcport"])
        rows.append(
            Row(
                src=v["ip.src"] or v["ipv6.src"],
                sport=int(v["tcp.srcport"] or v["udp.srcport"]),
                dst=v["ip.dst"] or v["ipv6.dst"],
                dport=int(v["tcp.dstport"] or v["udp.dstport"]),
                transport="tcp" if tcp else "udp",
                ts_us=int(float(v["frame.time_epoch"]) * 1_000_000),
                payload=bytes.fromhex(v["tcp.payload" if tcp else "udp.payload"].replace(":", "")),
                comment=v["frame.comment"],
            )
        )
    return rows


def first_line(payload: bytes) -> str:
    line = payload.split(b"\r\n", 1)[0].decode()
    return " ".join(line.split(" ")[:2]) if line.startswith("SIP/2.0") else line.split(" ")[0]


@dataclass
class Run:
    scenario: Scenario
    live: Path
    capture: Path
    summary: str
    sipp: list[bytes]
    seen: list[Seen]
    started_us: int
    ended_us: int
    tls_port: int


def run_call(sc: Scenario, tmp_path: Path) -> Run:
    require("sipp")
    started_us = time.time_ns() // 1000
    live_out = tmp_path / "live.pcapng"
    listen = Listen(hep2pcap_cmd(), sc.hep_transport, live_out)
    try:
        capture = Capture(tmp_path / "hep-traffic.pcapng", listen.port)
        try:
            second_leg = "udp" if sc.sip_transport == "tls" else sc.sip_transport
            uas, uas_port, uas_log = sipp_uas(tmp_path, sc.host, second_leg)
            h = f"[{sc.host}]" if ":" in sc.host else sc.host
            hep_uri = f"sip:127.0.0.1:{listen.port}" + (
                ";transport=tcp" if sc.hep_transport == "tcp" else ""
            )
            kam = Kamailio(
                tmp_path,
                hep_uri=hep_uri,
                hep_version=sc.hep_version,
                capture_id=CAPTURE_ID,
                # siptrace sends HEP from a socket of the collector's family: IPv4 too
                hosts=(sc.host,) if sc.host == "127.0.0.1" else (sc.host, "127.0.0.1"),
                target=f"sip:{h}:{uas_port};transport={second_leg}",
                tls=sc.sip_transport == "tls",
            )
            if sc.fs9657:
                kam.config.write_text(kam.config.read_text() + DROP_RECEIVED_TLS)
            with kam:
                if sc.sip_transport == "tls":
                    with TlsRelay((sc.host, kam.tls_port)) as relay:
                        _, uac_log = sipp_uac(tmp_path, sc.host, f"{h}:{relay.port}", "tcp")
                else:
                    _, uac_log = sipp_uac(
                        tmp_path, sc.host, f"{h}:{kam.sip_port}", sc.sip_transport
                    )
                wait_process(uas)
            seen = kam.seen()
        finally:
            capture_path = capture.stop()
    finally:
        summary = listen.stop()
    sipp = [m.data for log in (uac_log, uas_log) for m in sipp_messages(log)]
    return Run(
        sc, live_out, capture_path, summary, sipp, seen, started_us,
        time.time_ns() // 1000, kam.tls_port,
    )  # fmt: skip


@pytest.fixture(scope="module", params=SCENARIOS, ids=lambda s: s.id)
def call(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    sc: Scenario = request.param
    return run_call(sc, tmp_path_factory.mktemp(sc.id))


def judge(run: Run, out: Path, tshark: str, env: dict[str, str], sngrep: str, tmp: Path) -> None:
    """Every message of the call, byte for byte, where Kamailio and sipp said it went."""
    sc = run.scenario
    rows = tshark_rows(tshark, env, out)
    # sipp logged each message of each hop once: the output holds exactly those payloads.
    assert sorted(r.payload for r in rows) == sorted(run.sipp)
    assert len(rows) == len(run.sipp) >= 12
    for r in rows:
        assert r.comment.startswith(f"HEPv{sc.hep_version}; agent {CAPTURE_ID}; proto ")
        assert run.started_us <= r.ts_us <= run.ended_us
    # Kamailio's view: what it received, from where to where, how long.
    rows_left = list(rows)
    for s in run.seen:
        if s.way != "recv":
            continue
        proto = {"udp": "udp", "tcp": "tcp", "tls": "tcp"}[s.proto]
        match = [
            r
            for r in rows_left
            if (r.src, r.sport, r.dst, r.transport) == (s.src, s.sport, s.dst, proto)
            and len(r.payload) == s.length
            and first_line(r.payload) == s.first_line
        ]
        assert match, f"Kamailio received {s}; not in the output"
        if match[0].dport != s.dport:
            # Kamailio quirk: a response it received on a TCP connection it opened names
            # the connection's ephemeral local port as destination, while the request it
            # sent on that connection names its listening port as source ($Rp).
            assert s.proto == "tcp", s
            assert s.first_line.startswith("SIP/2.0"), s
            assert match[0].dport not in (s.dport, 0)
        assert ("proto 22 (TLS)" in match[0].comment) == (s.proto == "tls")
        rows_left.remove(match[0])
    # What it sent: the same lengths and start lines, from its own address.
    for s in run.seen:
        if s.way != "sent":
            continue
        match = [
            r
            for r in rows_left
            if r.src == s.src
            and len(r.payload) == s.length
            and first_line(r.payload) == s.first_line
        ]
        assert match, f"Kamailio sent {s}; not in the output"
        rows_left.remove(match[0])
    # Only tm's own "100 trying" is sent without passing onsend_route (a Kamailio quirk).
    assert [first_line(r.payload) for r in rows_left] == ["SIP/2.0 100"]
    assert expert_problems(tshark, env, out) == []
    assert sngrep_read(sngrep, out, tmp) == (1, len(rows))


def test_listen_takes_the_real_sender(
    call: Run, tshark: str, wireshark_env: dict[str, str], sngrep: str, tmp_path: Path
) -> None:
    if call.scenario.fs9657:
        pytest.skip("half of the call is missing on purpose (test_info_on_real_tls_captures)")
    n = len(call.sipp)
    assert f"read {n}, wrote {n}, skipped 0, dropped 0" in call.summary
    judge(call, call.live, tshark, wireshark_env, sngrep, tmp_path)


def test_convert_reads_the_capture_with_no_flag(
    call: Run, tshark: str, wireshark_env: dict[str, str], sngrep: str, tmp_path: Path
) -> None:
    if call.scenario.fs9657:
        pytest.skip("half of the call is missing on purpose (test_info_on_real_tls_captures)")
    out = tmp_path / "from-capture.pcapng"
    proc = run_convert([call.capture], out)
    n = len(call.sipp)
    assert f"read {n}, wrote {n}, skipped 0, dropped 0".encode() in proc.stderr
    judge(call, out, tshark, wireshark_env, sngrep, tmp_path)
    # The same frames as live (live wrote in arrival order, window 0; convert in HEP time).
    assert sorted(tshark_rows(tshark, wireshark_env, out)) == sorted(
        tshark_rows(tshark, wireshark_env, call.live)
    )


# --- FS-9657: the incoming TLS half missing -------------------------------------------------


def test_info_on_real_tls_captures(call: Run) -> None:
    """``info`` on the captured HEP: no alarm on a complete TLS call; the FS-9657 signature
    named when the sender mirrored only what it sent over TLS."""
    if call.scenario.sip_transport != "tls":
        pytest.skip("the TLS scenarios only")
    proc = subprocess.run(
        [*hep2pcap_cmd(), "info", str(call.capture)], capture_output=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    warnings = [x for x in text.splitlines() if x.startswith("  ! ")]
    if not call.scenario.fs9657:
        assert "warnings:    none" in text, text
        return
    # INVITE and BYE arrived over TLS and were not mirrored; their responses were.
    assert len(warnings) == 1, text
    assert warnings[0].startswith(
        f"  ! agent {CAPTURE_ID}: 2 of 2 TLS transactions in 1 of 1 dialogs were mirrored"
        " from one side only (2 responses without their request, 0 requests"
    )
    assert "FS-9657" in warnings[0]


# --- sngrep as a second sender: HEPv2 and HEPv3 to a port that is not 9060 --------------------


@pytest.mark.parametrize("version", [2, 3])
def test_sngrep_sender_on_another_port(
    version: int, tmp_path: Path, sngrep: str, tshark: str, wireshark_env: dict[str, str]
) -> None:
    name = "sip/call-register.pcap"
    want = manifest(name)["sip_messages"]
    listen = Listen(hep2pcap_cmd(), "udp", tmp_path / "live.pcapng")
    capture = Capture(tmp_path / "hep.pcapng", listen.port)
    try:
        rc = tmp_path / "sngreprc"
        rc.write_text(f"set eep.send.version {version}\n")
        cmd = [sngrep, "-F", "-f", str(rc), "-N", "-q", "-I", str(FIXTURES / name)]
        cmd += ["-H", f"udp:127.0.0.1:{listen.port}"]
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.5)
    finally:
        captured = capture.stop()
        summary = listen.stop()
    assert listen.port != 9060
    assert f"read {want}, wrote {want}" in summary
    out = tmp_path / "from-capture.pcapng"
    conv = run_convert([captured], out)
    assert f"read {want}, wrote {want}, skipped 0, dropped 0".encode() in conv.stderr
    rows = tshark_rows(tshark, wireshark_env, out)
    assert len(rows) == want
    assert all(r.comment.startswith(f"HEPv{version}; agent ") for r in rows)
    assert sngrep_read(sngrep, out, tmp_path) == (manifest(name)["dialogs"], want)
