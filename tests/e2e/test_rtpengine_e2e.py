"""Real senders of non-SIP HEP (issue 15): rtpengine's RTCP reports and Kamailio's hlog().

Kamailio (siptrace, HEPv3) relays a call between two sipp instances through rtpengine
(userspace, ``--table=-1``, driven by Kamailio's rtpengine module), and logs lines with
``hlog()``. The calling sipp plays RTP and RTCP (``play_pcap_audio``) from a pcap this test
writes: an SR + SDES and an RR + SDES compound with values chosen here. rtpengine mirrors each
RTCP packet it receives as RTCP-JSON (HEP type 5), Kamailio its SIP and the log lines (type
100), all into ``hep2pcap listen`` with no type option; ``--forward`` hands the same HEP to
the test, so tshark's reading of the output is judged against what was sent (the pcap, the
hlog text) and against the HEP the real senders produced (JSON values, HEP times,
correlation ids). One call has IPv4 media, one IPv6 media; sngrep still shows both calls.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    TIMEOUT_S,
    Listener,
    epoch_to_us,
    expert_problems,
    hep3_chunks,
    sngrep_dialogs,
    tshark_fields,
)
from realsenders import Kamailio, free_port, require, sipp_messages, wait_process

pytestmark = pytest.mark.e2e

# --- the media the caller plays (RFC 3550 layouts, written here, independent of hep2pcap) ---

RTP_PORT = 6000  # in the pcap; sipp maps the lowest destination port to the remote media port


def _rtcp_sr_sdes(ssrc: int, peer: int, cname: bytes) -> bytes:
    sr = struct.pack(
        "!BBHI" "IIIII" "IIIIII",
        0x81, 200, 12, ssrc,
        3_973_147_200, 0x40000000, 8000, 50, 8000,  # NTP msw/lsw, RTP ts, packets, octets
        peer, 3 << 24 | 7, 65_600, 42, 0x1234_5678, 0x0001_8000,  # block: 3/256, 7 lost
    )  # fmt: skip
    return sr + _sdes(ssrc, cname)


def _rtcp_rr_sdes(ssrc: int, peer: int, cname: bytes) -> bytes:
    rr = struct.pack(
        "!BBHI" "IIIIII",
        0x81, 201, 7, ssrc,
        peer, 0 << 24 | 0xFFFFFF, 65_700, 9, 0, 0,  # cumulative lost -1 (duplicates)
    )  # fmt: skip
    return rr + _sdes(ssrc, cname)


def _sdes(ssrc: int, cname: bytes) -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes((1, len(cname))) + cname
    chunk += b"\0" * (4 - len(chunk) % 4)
    return struct.pack("!BBH", 0x81, 202, (4 + len(chunk)) // 4 - 1) + chunk


@dataclass(frozen=True)
class Sent:
    """An RTCP compound the caller plays: its sender SSRC and the fields tshark must show."""

    ssrc: int
    payload: bytes
    fields: dict[str, str]


def _media(v6: bool) -> tuple[list[bytes], list[Sent]]:
    """RTP packets and two RTCP compounds (SR, RR) for one call."""
    ssrc, peer = (0x5EED_0006, 0xFEED_0006) if v6 else (0x5EED_0004, 0xFEED_0004)
    cname = b"caller@[::1]" if v6 else b"caller@127.0.0.1"
    rtp = [
        struct.pack("!BBHII", 0x80, 0, 1000 + i, 160 * i, ssrc) + b"\xff" * 160 for i in range(50)
    ]
    sr = Sent(
        ssrc,
        _rtcp_sr_sdes(ssrc, peer, cname),
        {
            "rtcp.pt": "200|202",
            "rtcp.senderssrc": f"{ssrc:#010x}",
            "rtcp.timestamp.ntp.msw": "3973147200",
            "rtcp.timestamp.ntp.lsw": str(0x40000000),
            "rtcp.timestamp.rtp": "8000",
            "rtcp.sender.packetcount": "50",
            "rtcp.sender.octetcount": "8000",
            "rtcp.ssrc.identifier": f"{peer:#010x}|{ssrc:#010x}",  # the block's, the chunk's
            "rtcp.ssrc.fraction": "3",
            "rtcp.ssrc.cum_nr": "7",
            "rtcp.ssrc.ext_high": "65600",
            "rtcp.ssrc.jitter": "42",
            "rtcp.ssrc.lsr": str(0x1234_5678),
            "rtcp.ssrc.dlsr": str(0x0001_8000),
            "rtcp.sdes.text": cname.decode(),
        },
    )
    rr = Sent(
        ssrc,
        _rtcp_rr_sdes(ssrc, peer, cname),
        {
            "rtcp.pt": "201|202",
            "rtcp.senderssrc": f"{ssrc:#010x}",
            "rtcp.timestamp.ntp.msw": "",
            "rtcp.timestamp.ntp.lsw": "",
            "rtcp.timestamp.rtp": "",
            "rtcp.sender.packetcount": "",
            "rtcp.sender.octetcount": "",
            "rtcp.ssrc.identifier": f"{peer:#010x}|{ssrc:#010x}",
            "rtcp.ssrc.fraction": "0",
            "rtcp.ssrc.cum_nr": "-1",
            "rtcp.ssrc.ext_high": "65700",
            "rtcp.ssrc.jitter": "9",
            "rtcp.ssrc.lsr": "0",
            "rtcp.ssrc.dlsr": "0",
            "rtcp.sdes.text": cname.decode(),
        },
    )
    return rtp, [sr, rr]


def _write_media_pcap(path: Path, v6: bool) -> list[Sent]:
    """Classic pcap (Ethernet) of the RTP stream, with the SR after packet 20 and the RR at
    the end; RTP to RTP_PORT, RTCP to RTP_PORT + 1 (sipp keeps the offset)."""
    rtp, (sr, rr) = _media(v6)
    src, dst = ("::1", "::1") if v6 else ("127.0.0.1", "127.0.0.1")
    packets: list[tuple[int, bytes]] = [(RTP_PORT, p) for p in rtp[:20]]
    packets += [(RTP_PORT + 1, sr.payload)] + [(RTP_PORT, p) for p in rtp[20:]]
    packets += [(RTP_PORT + 1, rr.payload)]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, (dport, payload) in enumerate(packets):
        udp = struct.pack("!HHHH", dport + 1000, dport, 8 + len(payload), 0) + payload
        if v6:
            ip = struct.pack("!IHBB", 0x6000_0000, len(udp), 17, 64) + socket.inet_pton(
                socket.AF_INET6, src
            ) + socket.inet_pton(socket.AF_INET6, dst)  # fmt: skip
            frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x86\xdd" + ip + udp
        else:
            hdr = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                socket.inet_aton(src), socket.inet_aton(dst),
            )  # fmt: skip
            csum = _ip_checksum(hdr)
            hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
            frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + hdr + udp
        sec, usec = 1_700_000_000, i * 20_000  # 20 ms apart, as sipp paces them
        out.append(struct.pack("<IIII", sec + usec // 1_000_000, usec % 1_000_000,
                               len(frame), len(frame)) + frame)  # fmt: skip
    path.write_bytes(b"".join(out))
    return [sr, rr]


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --- the call ------------------------------------------------------------------------------

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac playing RTP and RTCP">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[media_ip_type] [media_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="1500"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""

ROUTE = """    if (is_method("INVITE")) {{
        rtpengine_offer();
        hlog("offer for $ci via rtpengine");
        t_on_reply("MEDIA");
    }} else if (is_method("BYE")) {{
        rtpengine_delete();
        hlog("bye-$ci", "bye for $ci, media deleted");
    }}
    $du = "{target}";
    t_relay();
    exit;"""

REPLY_ROUTE = """
onreply_route[MEDIA] {
    if (t_check_status("200")) {
        rtpengine_answer();
    }
}
"""


class Rtpengine:
    """``rtpengine --foreground --table=-1`` on 127.0.0.1 and ::1, HEP to ``hep_port``."""

    def __init__(self, workdir: Path, hep_port: int) -> None:
        self.ng_port = free_port()
        media = free_port(count=40)
        self.log = workdir / "rtpengine.log"
        self.cmd = [
            require("rtpengine"), "--foreground", "--table=-1", "--log-stderr", "--log-level=6",
            "--interface=127.0.0.1", "--interface=::1",
            f"--listen-ng=127.0.0.1:{self.ng_port}", f"--port-min={media}",
            f"--port-max={media + 39}", f"--homer=127.0.0.1:{hep_port}",
            "--homer-protocol=udp", "--homer-id=2002", "--delete-delay=0",
            "--no-fallback", "--config-file=none",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Rtpengine:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 15
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            while time.monotonic() < deadline:  # the NG "ping" answers once it is up
                assert self.proc.poll() is None, self.log.read_text(errors="replace")
                s.sendto(b"1 d7:command4:pinge", ("127.0.0.1", self.ng_port))
                try:
                    if b"pong" in s.recv(1024):
                        return self
                except OSError:
                    time.sleep(0.1)
        raise AssertionError(f"rtpengine did not answer: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # our own process, by PID
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _call(workdir: Path, kam: Kamailio, v6: bool, uas_port: int) -> tuple[list[Sent], str]:
    """One call from a sipp UAC (playing the media pcap) to a sipp UAS through Kamailio;
    returns the RTCP it played and the Call-ID."""
    sipp = require("sipp")
    media_host = "::1" if v6 else "127.0.0.1"
    tag = "v6" if v6 else "v4"
    pcap = workdir / f"media-{tag}.pcap"
    sent = _write_media_pcap(pcap, v6)
    scenario = workdir / f"uac-{tag}.xml"
    scenario.write_text(UAC_SCENARIO.replace("{pcap}", str(pcap)))
    uas_media = free_port(media_host, 4)
    uas_log = workdir / f"uas-{tag}.log"
    uas = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-mi", media_host,
         "-mp", str(uas_media), "-m", "1", "-nostdin", "-trace_msg", "-message_file",
         str(uas_log)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not uas_log.exists() and time.monotonic() < deadline:
            assert uas.poll() is None
            time.sleep(0.05)
        uac_log = workdir / f"uac-{tag}.log"
        uac = subprocess.run(
            [sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(free_port()),
             "-mi", media_host, "-mp", str(free_port(media_host, 4)), "-s", "bob",
             "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error", "-trace_msg",
             "-message_file", str(uac_log), f"127.0.0.1:{kam.sip_port}"],
            cwd=workdir, capture_output=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        assert uac.returncode == 0, uac.stderr.decode(errors="replace")[-2000:]
        wait_process(uas, 20)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(timeout=10)
    (invite,) = [m for m in sipp_messages(uac_log) if m.data.startswith(b"INVITE")]
    call_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in invite.data.splitlines()
        if line.lower().startswith(b"call-id:")
    )
    return sent, call_id


def _collected(sock: socket.socket) -> list[dict[int, bytes]]:
    """Every HEP message --forward relayed, as chunk dicts (bounded wait)."""
    out: list[dict[int, bytes]] = []
    sock.settimeout(1.0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(out) < 10_000:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        out.append(hep3_chunks(data))
    return out


def _hep_us(chunks: dict[int, bytes]) -> int:
    return int.from_bytes(chunks[9], "big") * 1_000_000 + int.from_bytes(chunks[10], "big")


FIELDS = [
    "frame.time_epoch", "rtcp.pt", "rtcp.senderssrc", "rtcp.timestamp.ntp.msw",
    "rtcp.timestamp.ntp.lsw", "rtcp.timestamp.rtp", "rtcp.sender.packetcount",
    "rtcp.sender.octetcount", "rtcp.ssrc.identifier", "rtcp.ssrc.fraction", "rtcp.ssrc.cum_nr",
    "rtcp.ssrc.ext_high", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr", "rtcp.ssrc.dlsr",
    "rtcp.sdes.text", "ipv6.src", "ip.src", "udp.srcport", "udp.dstport", "frame.comment",
]  # fmt: skip


def test_rtpengine_rtcp_and_kamailio_hlog_into_listen(
    tmp_path: Path, tshark: str, wireshark_env: dict[str, str], sngrep: str
) -> None:
    out = tmp_path / "live.pcapng"
    copy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    copy.bind(("127.0.0.1", 0))
    copy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    lst = Listener(out, "--forward", f"udp:127.0.0.1:{copy.getsockname()[1]}")
    calls: list[tuple[list[Sent], str, bool]] = []
    try:
        with Rtpengine(tmp_path, lst.port) as rtpengine:
            extra = (
                'loadmodule "textops.so"\nloadmodule "rtpengine.so"\n'
                f'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{rtpengine.ng_port}")'
            )
            for v6 in (False, True):
                workdir = tmp_path / ("v6" if v6 else "v4")
                workdir.mkdir()
                uas_port = free_port()
                kam = Kamailio(
                    workdir, hep_uri=f"sip:127.0.0.1:{lst.port}", hep_version=3,
                    extra=extra, route=ROUTE.format(target=f"sip:127.0.0.1:{uas_port}"),
                )  # fmt: skip
                kam.config.write_text(kam.config.read_text() + REPLY_ROUTE)
                with kam:
                    calls.append((*_call(workdir, kam, v6, uas_port), v6))
            time.sleep(1.0)  # the last reports and logs reach the listener
    finally:
        summary = lst.stop()
    heps = _collected(copy)
    copy.close()
    assert b"dropped 0" in summary, summary

    reports = [c for c in heps if c[11] == b"\x05"]
    logs = [c for c in heps if c[11] == b"\x64"]
    rows = tshark_fields(tshark, wireshark_env, out, FIELDS, display_filter="rtcp")
    # every report rtpengine sent is a dissected RTCP frame at its HEP time, in order
    assert [_us(r) for r in rows] == sorted(_hep_us(c) for c in reports)
    by_time = {_hep_us(c): c for c in reports}
    for (sent, call_id, v6), sent_rows in zip(calls, _per_call(rows, calls), strict=True):
        assert len(sent_rows) == len(sent) == 2
        for row, exp in zip(sent_rows, sent, strict=True):
            assert {k: row[k] for k in exp.fields} == exp.fields  # what the caller played
            hep = by_time[_us(row)]
            assert hep[17].decode() == call_id  # rtpengine's correlation id is the Call-ID
            doc = json.loads(hep[15])  # and tshark agrees with the JSON rtpengine wrote
            assert row["rtcp.senderssrc"] == f"{doc['ssrc']:#010x}"
            assert row["rtcp.ssrc.jitter"] == str(doc["report_blocks"][0]["ia_jitter"])
            assert (row["ipv6.src"] != "") == v6
            assert f"; correlation {call_id}" in row["frame.comment"]
            assert "RTCP rebuilt from the HEP JSON report" in row["frame.comment"]

    seen = tshark_fields(
        tshark, wireshark_env, out, ["frame.time_epoch", "syslog.msg", "frame.comment"],
        display_filter="syslog",
    )  # fmt: skip
    expected_logs = []
    for _, call_id, _ in calls:
        expected_logs.append((f"offer for {call_id} via rtpengine", call_id))
        expected_logs.append((f"bye for {call_id}, media deleted", f"bye-{call_id}"))
    assert sorted((r["syslog.msg"], _corr(r["frame.comment"])) for r in seen) == sorted(
        expected_logs
    )
    log_times = sorted(_hep_us(c) for c in logs)
    assert sorted(_us(r) for r in seen) == log_times  # each line at its HEP time
    assert expert_problems(tshark, wireshark_env, out) == []
    assert sngrep_dialogs(sngrep, out, tmp_path) == len(calls)


def _per_call(rows: list[dict[str, str]], calls: list[Any]) -> list[list[dict[str, str]]]:
    out = []
    for sent, _, _ in calls:
        ssrc = f"{sent[0].ssrc:#010x}"
        out.append([r for r in rows if r["rtcp.senderssrc"] == ssrc])
    return out


def _corr(comment: str) -> str:
    return comment.rsplit("; correlation ", 1)[1]


def _us(row: dict[str, str]) -> int:
    return epoch_to_us(row["frame.time_epoch"])
