"""Helpers for the end-to-end tests: run hep2pcap, tshark and sngrep for real.

Every subprocess has a timeout. tshark runs with checksum verification on and with an empty
configuration directory (no user preferences leak in); its stderr is never asserted empty
(it warns about running as root, for one). sngrep runs with ``-F`` (no default config).
"""

from __future__ import annotations

import json
import re
import selectors
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = REPO / "fixtures"
EXPECTED = FIXTURES / "expected"

TIMEOUT_S = 60
CHECKSUM_PREFS = (
    "-o", "ip.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
    "-o", "tcp.check_checksum:TRUE",
)  # fmt: skip
#: tshark's checksum status values: 0 bad, 1 good, 2 unverified.
CHECKSUM_GOOD = "1"


# --- hep2pcap -------------------------------------------------------------------------------


def hep2pcap_cmd() -> list[str]:
    """The console script next to the running interpreter, or ``python -m hep2pcap``."""
    script = Path(sys.executable).with_name("hep2pcap")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hep2pcap"]


def run_convert(
    inputs: Sequence[Path | str],
    output: Path | str,
    *args: str,
    check: bool = True,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``hep2pcap convert INPUTS -w OUTPUT ARGS``; ``check`` asserts exit status 0."""
    cmd = [*hep2pcap_cmd(), "convert", *map(str, inputs), "-w", str(output), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return proc


#: How long a listener may take to print its bound port.
LISTEN_DEADLINE_S = 15.0


class Listener:
    """A running ``hep2pcap listen -l udp:127.0.0.1:0 -w OUT ARGS`` and its bound port."""

    def __init__(self, out: Path, *args: str) -> None:
        cmd = [*hep2pcap_cmd(), "listen", "-l", "udp:127.0.0.1:0", "-w", str(out)]
        cmd += ["--duration", "60", "--window", "0", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.port = self._read_port()

    def _read_port(self) -> int:
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        seen = b""
        deadline = time.monotonic() + LISTEN_DEADLINE_S
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                chunk = self.proc.stderr.read1(4096)  # type: ignore[attr-defined]
                if not chunk:
                    break
                seen += chunk
                m = re.search(rb"listening on udp:127\.0\.0\.1:(\d+)", seen)
                if m:
                    return int(m.group(1))
        raise AssertionError(f"no 'listening on' line in time: {seen!r}")

    def stop(self) -> bytes:
        """SIGINT, then the rest of stderr (the summary)."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=TIMEOUT_S)
        assert self.proc.returncode == 0, err
        return err


# --- tshark ---------------------------------------------------------------------------------


def run_tshark(
    tshark: str,
    args: Sequence[str],
    env: dict[str, str],
    *,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run tshark with checksum checks on; assert exit status 0 (stderr is not checked)."""
    cmd = [tshark, *CHECKSUM_PREFS, *args]
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, timeout=TIMEOUT_S, env=env, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr.decode(errors='replace')}"
    return proc


def tshark_fields(
    tshark: str,
    env: dict[str, str],
    path: Path | str,
    fields: Sequence[str],
    *,
    display_filter: str | None = None,
    stdin: bytes | None = None,
    extra: Sequence[str] = (),
) -> list[dict[str, str]]:
    """``tshark -r PATH -T fields -E separator=/t -e ...``: one dict per frame.

    Repeated values of one field are joined with ``|``.
    """
    args = ["-r", str(path), "-T", "fields", "-E", "separator=/t", "-E", "aggregator=|"]
    args += ["-E", "occurrence=a", "-E", "quote=n", *extra]
    if display_filter:
        args += ["-Y", display_filter]
    for f in fields:
        args += ["-e", f]
    out = run_tshark(tshark, args, env, stdin=stdin).stdout.decode("utf-8", "replace")
    rows = []
    for line in out.splitlines():
        values = line.split("\t")
        assert len(values) == len(fields), f"unexpected tshark line {line!r}"
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def tshark_frames(tshark: str, env: dict[str, str], path: Path | str, **kw: Any) -> list[Frame]:
    """Every frame of a hep2pcap output, with the fields the tests compare."""
    return [Frame.from_row(r) for r in tshark_fields(tshark, env, path, FRAME_FIELDS, **kw)]


def expert_problems(
    tshark: str, env: dict[str, str], path: Path | str, *, stdin: bytes | None = None
) -> list[str]:
    """Expert infos of severity warning or error (bad checksums, TCP analysis, malformed)."""
    rows = tshark_fields(
        tshark,
        env,
        path,
        ["frame.number", "_ws.expert.message"],
        display_filter="_ws.expert.severity >= warning",
        stdin=stdin,
    )
    return [f"frame {r['frame.number']}: {r['_ws.expert.message']}" for r in rows]


def tcp_analysis_flags(tshark: str, env: dict[str, str], path: Path | str) -> list[str]:
    """Frames with any TCP analysis flag (lost segment, ACKed unseen, retransmission…)."""
    rows = tshark_fields(
        tshark,
        env,
        path,
        ["frame.number", "_ws.expert.message"],
        display_filter="tcp.analysis.flags",
    )
    return [f"frame {r['frame.number']}: {r['_ws.expert.message']}" for r in rows]


FRAME_FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "frame.interface_name",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "ip.checksum.status",
    "tcp.checksum.status",
    "udp.checksum.status",
    "tcp.seq",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "frame.comment",
)


def epoch_to_us(text: str) -> int:
    """tshark's ``frame.time_epoch`` (seconds with 9 decimals) as integer microseconds."""
    return int(Decimal(text) * 1_000_000)


@dataclass(frozen=True)
class Frame:
    """What tshark says about one frame of our output."""

    number: int
    ts_us: int
    interface: str
    protocols: str
    src: str
    dst: str
    transport: str  # "tcp" / "udp" / ""
    sport: int | None
    dport: int | None
    checksums: tuple[str, ...]  # every checksum status of the frame
    tcp_seq: int | None  # relative, as Wireshark shows it
    tcp_seq_raw: int | None
    tcp_ack_raw: int | None
    tcp_len: int | None
    method: str
    status: str
    call_id: str
    comment: str

    @classmethod
    def from_row(cls, r: dict[str, str]) -> Frame:
        transport = "tcp" if r["tcp.srcport"] else "udp" if r["udp.srcport"] else ""
        checks = tuple(
            v
            for k in ("ip.checksum.status", "tcp.checksum.status", "udp.checksum.status")
            for v in r[k].split("|")
            if v
        )
        sport = r["tcp.srcport"] or r["udp.srcport"]
        dport = r["tcp.dstport"] or r["udp.dstport"]
        return cls(
            number=int(r["frame.number"]),
            ts_us=epoch_to_us(r["frame.time_epoch"]),
            interface=r["frame.interface_name"],
            protocols=r["frame.protocols"],
            src=r["ip.src"] or r["ipv6.src"],
            dst=r["ip.dst"] or r["ipv6.dst"],
            transport=transport,
            sport=int(sport) if sport else None,
            dport=int(dport) if dport else None,
            checksums=checks,
            tcp_seq=int(r["tcp.seq"]) if r["tcp.seq"] else None,
            tcp_seq_raw=int(r["tcp.seq_raw"]) if r["tcp.seq_raw"] else None,
            tcp_ack_raw=int(r["tcp.ack_raw"]) if r["tcp.ack_raw"] else None,
            tcp_len=int(r["tcp.len"]) if r["tcp.len"] else None,
            method=r["sip.Method"],
            status=r["sip.Status-Code"],
            call_id=r["sip.Call-ID"],
            comment=r["frame.comment"],
        )

    @property
    def is_sip(self) -> bool:
        return ":sip" in self.protocols


# --- sngrep ---------------------------------------------------------------------------------

_DIALOG_COUNT = re.compile(rb"Dialog count: (\d+)")


def without_logs(frames: list[Frame], *names: str) -> list[Frame]:
    """The frames other than the LOG messages written as syslog (issue 15), after checking
    there is one syslog frame per LOG message of the fixtures ``names``."""
    logs = [f for f in frames if f.protocols.endswith(":udp:syslog")]
    expected = sum(m["payload_type"] == 100 for n in names for m in manifest(n).get("messages", []))
    assert len(logs) == expected, f"{len(logs)} syslog frames, {expected} LOG messages"
    return [f for f in frames if not f.protocols.endswith(":udp:syslog")]


def sngrep_read(sngrep: str, path: Path | str, tmp_path: Path) -> tuple[int, int]:
    """``sngrep -N -I PATH -O x.pcap``: (dialogs, SIP messages sngrep kept).

    sngrep writes every message of every dialog it built to ``-O`` (grouped by dialog, not
    in time order), so the record count says how many messages it parsed into dialogs.
    """
    dialogs = sngrep_dialogs(sngrep, path, tmp_path)
    data = (tmp_path / "sngrep-out.pcap").read_bytes()
    assert data[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("4d3cb2a1")), data[:4].hex()
    pos, records = 24, 0
    while pos + 16 <= len(data):
        (caplen,) = struct.unpack_from("<I", data, pos + 8)
        pos += 16 + caplen
        records += 1
    assert pos == len(data)
    return dialogs, records


def sngrep_dialogs(sngrep: str, path: Path | str, tmp_path: Path) -> int:
    """``sngrep -N -I PATH -O x.pcap``: the last "Dialog count: N" it prints.

    sngrep 1.6 in no-interface mode needs no terminal (runs without TERM); it rewrites the
    count with ``\\r`` as it reads, so the last number is the total.
    """
    out = tmp_path / "sngrep-out.pcap"
    cmd = [sngrep, "-F", "-N", "-I", str(path), "-O", str(out)]
    proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr.decode(errors='replace')}"
    counts = _DIALOG_COUNT.findall(proc.stdout)
    assert counts, f"no dialog count in sngrep output {proc.stdout!r}"
    return int(counts[-1])


# --- fixtures manifest ----------------------------------------------------------------------


@cache
def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())
    return data


def manifest(name: str) -> dict[str, Any]:
    """What fixtures/make_fixtures.py says is in fixture ``name`` (path under fixtures/)."""
    return dict(_manifest()[name])


def expected_sip(name: str) -> list[dict[str, Any]]:
    """The SIP messages of a fixture in the order hep2pcap must write them (HEP time)."""
    msgs = [m for m in manifest(name)["messages"] if m["payload_type"] == 1]
    return sorted(msgs, key=lambda m: int(m["ts_us"]))


# --- an independent HEP reader (oracle for captures we did not generate) ---------------------


def raw_messages(data: bytes) -> list[bytes]:
    """The HEPv3 messages of a raw dump, cut by their length fields (no checks: our own
    fixtures)."""
    out, pos = [], 0
    while pos < len(data):
        (total,) = struct.unpack_from("!H", data, pos + 4)
        out.append(data[pos : pos + total])
        pos += total
    return out


def hep3_chunks(data: bytes) -> dict[int, bytes]:
    """Generic chunks of one HEPv3 message: {type: value} (written from the spec, not hep.py)."""
    assert data[:4] == b"HEP3", data[:8]
    (total,) = struct.unpack_from("!H", data, 4)
    pos, chunks = 6, {}
    while pos < total:
        vendor, ctype, clen = struct.unpack_from("!HHH", data, pos)
        assert clen >= 6
        if vendor == 0:
            chunks[ctype] = data[pos + 6 : pos + clen]
        pos += clen
    return chunks


def iter_udp_payloads(path: Path) -> Iterator[tuple[float, bytes]]:
    """(record time, UDP payload) for each UDP packet of a pcap/pcapng (scapy)."""
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    for pkt in rdpcap(str(path)):
        if UDP in pkt:
            yield float(pkt.time), bytes(pkt[UDP].payload)


def write_hep_udp_pcap(path: Path, datagrams: Sequence[tuple[int, bytes]], port: int) -> None:
    """A pcap of HEP over UDP (127.0.0.1 -> 127.0.0.1:port); datagrams are (ts_us, bytes)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    pkts = []
    for ts_us, data in datagrams:
        pkt = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="127.0.0.1", dst="127.0.0.1")
            / UDP(sport=40000, dport=port)
            / Raw(data)
        )
        pkt.time = Decimal(ts_us) / 1_000_000  # type: ignore[assignment]
        pkts.append(pkt)
    wrpcap(str(path), pkts)


# --- goldens ------------------------------------------------------------------------------

#: Golden name (fixtures/expected/<name>.tsv) -> (inputs under fixtures/, extra convert args).
GOLDEN_CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sample-call.hep": (("hep/sample-call.hep",), ()),
    "multi-agent.hep": (("hep/multi-agent.hep",), ()),
    "multi-agent.hep-log": (("hep/multi-agent.hep",), ("--exclude-type", "log")),
    "sender-quirks.hep": (("hep/sender-quirks.hep",), ()),
    "hep-v1-udp.pcap": (("pcap/hep-v1-udp.pcap",), ()),
    "hep-v2-udp.pcap": (("pcap/hep-v2-udp.pcap",), ()),
    "hep-v3-tcp.pcapng": (("pcap/hep-v3-tcp.pcapng",), ()),
    "hep-v3-udp-vlan.pcap": (("pcap/hep-v3-udp-vlan.pcap",), ()),
    "hep-v3-outer-edge.pcapng": (("pcap/hep-v3-outer-edge.pcapng",), ()),
}

#: Columns of a golden dump; ip/ipv6 and tcp/udp pairs are merged into one column each.
GOLDEN_COLUMNS = (
    "frame.number",
    "frame.time_epoch",
    "frame.interface_name",
    "frame.len",
    "src",
    "dst",
    "transport",
    "sport",
    "dport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.seq",
    "tcp.len",
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "frame.comment",
)
_GOLDEN_FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "frame.interface_name",
    "frame.len",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.srcport",
    "udp.srcport",
    "tcp.dstport",
    "udp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.seq",
    "tcp.len",
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "frame.comment",
)


def golden_dump(tshark: str, env: dict[str, str], pcap: Path) -> str:
    """The normalised TSV of a hep2pcap output: header line, then one line per frame.

    Normalised: time as ``seconds.micros`` (tshark prints nanoseconds), address and port
    pairs merged, transport named; everything else as tshark prints it.
    """
    lines = ["\t".join(GOLDEN_COLUMNS)]
    for r in tshark_fields(tshark, env, pcap, _GOLDEN_FIELDS):
        us = epoch_to_us(r["frame.time_epoch"])
        row = {
            **r,
            "frame.time_epoch": f"{us // 1_000_000}.{us % 1_000_000:06d}",
            "src": r["ip.src"] or r["ipv6.src"],
            "dst": r["ip.dst"] or r["ipv6.dst"],
            "transport": "tcp" if r["tcp.srcport"] else "udp" if r["udp.srcport"] else "",
            "sport": r["tcp.srcport"] or r["udp.srcport"],
            "dport": r["tcp.dstport"] or r["udp.dstport"],
        }
        lines.append("\t".join(row[c] for c in GOLDEN_COLUMNS))
    return "\n".join(lines) + "\n"


def golden_output(tshark: str, env: dict[str, str], name: str, workdir: Path) -> str:
    """Convert golden case ``name`` with hep2pcap and return its normalised dump."""
    inputs, args = GOLDEN_CASES[name]
    out = workdir / f"{name}.pcapng"
    run_convert([FIXTURES / i for i in inputs], out, *args)
    return golden_dump(tshark, env, out)
