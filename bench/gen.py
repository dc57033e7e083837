"""Deterministic HEPv3 workload for the benchmark: realistic SIP dialogs, raw HEP3 and pcap.

N messages from a seeded simulation of a few SBCs (one HEP capture agent each) talking SIP to a
pool of user agents: calls (INVITE/100/180/200/ACK/BYE/200, SDP on INVITE and 200), registrations
(REGISTER/401/REGISTER/200) and keep-alives (OPTIONS/200). Payloads are 500-1200 bytes with CRLF
line ends and correct Content-Length; ~90 % IPv4 / 10 % IPv6 and ~80 % UDP / 20 % TCP or TLS
(HEP proto 6 or 22) by user agent. Dialogs overlap; the HEP time of each message lags the file
order by a few milliseconds of agent jitter, so the reorder window has work to do.

Two files are written in one streaming pass (nothing is held in memory):

* ``hep-<N>-s<seed>.hep``: the messages concatenated (a raw HEPv3 dump);
* ``hep-<N>-s<seed>.pcap``: the same messages as a classic pcap of Ethernet/IPv4/UDP to the
  collector's port 9060, one datagram per message, valid IP and UDP checksums.

Usage: ``python bench/gen.py -n 100000 [--seed 1] [--out-dir bench/data]``. Files are cached
(keyed by N, seed and GEN_VERSION); ``ensure()`` regenerates only what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import random
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hep2pcap.hep import AF_INET, AF_INET6_LINUX, CHUNK_HEADER, HEP3_HEADER
from hep2pcap.pcapng import (
    LINKTYPE_ETHERNET,
    PCAP_FILE_HEADER,
    PCAP_MAGIC_US,
    PCAP_RECORD_HEADER,
)

#: Bump when the output of a given (N, seed) changes, so cached files are not reused.
GEN_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"

# --- wire formats (HEP-SPEC §3; libpcap; RFC 791 / 768) ----------------------------------
#: TS_SEC (0x0009) and TS_USEC (0x000a) chunks, both 4-byte values.
TS_CHUNKS = struct.Struct("!HHHIHHHI")
ETH_IPV4_UDP = struct.Struct("!6s6sH BBHHHBBH4s4s HHHH")
HEP_PORT = 9060

PROTO_UDP, PROTO_TCP, PROTO_TLS = 17, 6, 22
#: 2026-01-01T00:00:00Z: every HEP time is after this.
EPOCH_S = 1_767_225_600
#: Average offered load of the simulated network (messages per second of HEP time).
MSG_RATE = 3000
N_UAS = 20_000
N_AGENTS = 3
MIN_PAYLOAD, MAX_PAYLOAD = 500, 1200

COLLECTOR_IP = bytes([10, 99, 0, 100])
COLLECTOR_MAC = bytes.fromhex("02000a630064")


def _chunk(ctype: int, value: bytes) -> bytes:
    return CHUNK_HEADER.pack(0, ctype, CHUNK_HEADER.size + len(value)) + value


def ones_residue(data: bytes) -> int:
    """RFC 1071 sum of 16-bit words modulo 0xFFFF (2**16 = 1 mod 0xFFFF: one big-int op)."""
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def csum(residue: int) -> int:
    """Checksum field for a residue (never all-zero data here, so 0 means 0xFFFF)."""
    residue %= 0xFFFF
    return 0xFFFF - residue if residue else 0


@dataclass(frozen=True, slots=True)
class Agent:
    """An SBC that mirrors its SIP as HEP (capture agent id, node name, addresses)."""

    capture_id: int
    node: str
    ip4: bytes
    ip6: bytes
    hep_ip: bytes  # where its HEP datagrams come from (IPv4)
    hep_port: int
    mac: bytes
    tail: bytes  # payload type, capture id and node name chunks (hep.encode's order)


@dataclass(frozen=True, slots=True)
class UserAgent:
    """A phone: address family, transport and port are fixed for its lifetime."""

    user: str
    ip: bytes
    host: str  # as written in SIP (IPv6 in brackets)
    port: int
    proto: int
    agent: int
    ua_string: str


def _agents() -> list[Agent]:
    out = []
    for i in range(N_AGENTS):
        cid, node = 2001 + i, f"sbc-{i + 1}"
        tail = (
            _chunk(0x000B, b"\x01")
            + _chunk(0x000C, cid.to_bytes(4, "big"))
            + _chunk(0x0013, node.encode())
        )
        out.append(
            Agent(
                capture_id=cid,
                node=node,
                ip4=bytes([203, 0, 113, 10 + i]),
                ip6=bytes.fromhex("20010db8ffff000000000000000000") + bytes([0x10 + i]),
                hep_ip=bytes([10, 99, 0, 11 + i]),
                hep_port=40000 + i,
                mac=bytes([2, 0, 10, 99, 0, 11 + i]),
                tail=tail,
            )
        )
    return out


_UA_STRINGS = (
    "Yealink SIP-T46U 108.86.0.20",
    "Grandstream GXP2170 1.0.11.23",
    "Linphone/5.2.5 (belle-sip/5.2.94)",
    "Zoiper rv2.10.20.5",
    "Polycom/7.1.2.0085 PolycomVVX-VVX_450-UA/7.1.2.0085",
    "MicroSIP/3.21.3",
)


def _user_agents(rng: random.Random) -> list[UserAgent]:
    out = []
    for i in range(N_UAS):
        v6 = rng.random() < 0.10
        if v6:
            ip = bytes.fromhex("20010db8") + rng.randbytes(12)
            host = "[" + ":".join(ip[k : k + 2].hex() for k in range(0, 16, 2)) + "]"
        else:
            ip = bytes([100, 64 + rng.randrange(64), rng.randrange(256), 1 + rng.randrange(254)])
            host = ".".join(str(b) for b in ip)
        r = rng.random()
        proto = PROTO_UDP if r < 0.80 else PROTO_TCP if r < 0.92 else PROTO_TLS
        port = 5060 if proto == PROTO_UDP else rng.randrange(32768, 61000)
        out.append(
            UserAgent(
                user=f"+3491{5000000 + i:07d}",
                ip=ip,
                host=host,
                port=port,
                proto=proto,
                agent=rng.randrange(N_AGENTS),
                ua_string=rng.choice(_UA_STRINGS),
            )
        )
    return out


_TRANSPORT = {PROTO_UDP: "UDP", PROTO_TCP: "TCP", PROTO_TLS: "TLS"}
_ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE"
_SDP = (
    "v=0\r\no=- {sess} {sess} IN IP{v} {addr}\r\ns=-\r\nc=IN IP{v} {addr}\r\nt=0 0\r\n"
    "m=audio {rtp} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
_REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 401: "Unauthorized"}


class _Dialog:
    """One SIP dialog: its fixed strings, and the list of (delay_us, from_ua, kind) steps."""

    __slots__ = ("agent", "call_id", "cseq", "domain", "ftag", "peer", "steps", "ttag", "ua")

    def __init__(self, rng: random.Random, ua: UserAgent, agent: Agent, peer: str) -> None:
        self.ua, self.agent, self.peer = ua, agent, peer
        self.call_id = f"{rng.getrandbits(64):016x}-{rng.getrandbits(32):08x}@{ua.host}"
        self.ftag = f"{rng.getrandbits(40):010x}"
        self.ttag = f"as{rng.getrandbits(32):08x}"
        self.domain = f"voice{agent.capture_id - 2000}.example.net"
        self.cseq = rng.randrange(1, 30000)
        self.steps: list[tuple[int, bool, str]] = []


def _plan(rng: random.Random, d: _Dialog) -> None:
    r = rng.random()
    ms = 1000
    if r < 0.45:  # call: caller is the UA; either side hangs up
        t200 = rng.randrange(1000, 8000) * ms
        bye_ua = rng.random() < 0.5
        bye_at = t200 + rng.randrange(5000, 90_000) * ms
        d.steps = [
            (0, True, "INVITE"),
            (rng.randrange(2, 20) * ms, False, "100"),
            (rng.randrange(50, 600) * ms, False, "180"),
            (t200, False, "200-INVITE"),
            (t200 + rng.randrange(10, 80) * ms, True, "ACK"),
            (bye_at, bye_ua, "BYE"),
            (bye_at + rng.randrange(5, 50) * ms, not bye_ua, "200-BYE"),
        ]
    elif r < 0.75:  # registration with digest challenge
        t2 = rng.randrange(20, 100) * ms
        d.steps = [
            (0, True, "REGISTER"),
            (rng.randrange(2, 20) * ms, False, "401"),
            (t2, True, "REGISTER2"),
            (t2 + rng.randrange(2, 20) * ms, False, "200-REGISTER"),
        ]
    else:  # keep-alive from the SBC
        d.steps = [(0, False, "OPTIONS"), (rng.randrange(2, 30) * ms, True, "200-OPTIONS")]


def _sip(rng: random.Random, d: _Dialog, kind: str, from_ua: bool) -> bytes:
    ua, agent = d.ua, d.agent
    v6 = len(ua.ip) == 16
    t = _TRANSPORT[ua.proto]
    sbc_port = 5061 if ua.proto == PROTO_TLS else 5060
    sbc_host = (
        "[2001:db8:ffff::" + f"{agent.ip6[-1]:x}]" if v6 else ".".join(str(b) for b in agent.ip4)
    )
    ua_addr, sbc_addr = f"{ua.host}:{ua.port}", f"{sbc_host}:{sbc_port}"
    branch = f"z9hG4bK{rng.getrandbits(48):012x}"
    me = f"sip:{ua.user}@{d.domain}"
    peer = f"sip:{d.peer}@{d.domain}"
    body = ""
    lines: list[str]
    if kind in ("INVITE", "ACK", "BYE", "REGISTER", "REGISTER2", "OPTIONS"):
        method = kind.rstrip("2")
        if kind == "OPTIONS":
            via, frm, to = sbc_addr, f"<sip:ping@{d.domain}>;tag={d.ftag}", f"<{me}>"
            ruri, cseq = f"sip:{ua.user}@{ua_addr}", f"{d.cseq} OPTIONS"
        elif kind.startswith("REGISTER"):
            via, frm, to = ua_addr, f"<{me}>;tag={d.ftag}", f"<{me}>"
            ruri = f"sip:{d.domain}"
            cseq = f"{d.cseq + (kind == 'REGISTER2')} REGISTER"
        elif kind == "BYE" and not from_ua:
            via, frm, to = sbc_addr, f"<{peer}>;tag={d.ttag}", f"<{me}>;tag={d.ftag}"
            ruri, cseq = f"sip:{ua.user}@{ua_addr}", f"{d.cseq + 7} BYE"
        else:
            via, frm = ua_addr, f'"{ua.user[-4:]}" <{me}>;tag={d.ftag}'
            to = f"<{peer}>" if kind == "INVITE" else f"<{peer}>;tag={d.ttag}"
            ruri = f"sip:{d.peer}@{d.domain}"
            cseq = f"{d.cseq + (kind == 'BYE')} {method}"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/{t} {via};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {frm}",
            f"To: {to}",
            f"Call-ID: {d.call_id}",
            f"CSeq: {cseq}",
        ]
        if kind in ("INVITE", "REGISTER", "REGISTER2"):
            lines.append(f"Contact: <sip:{ua.user}@{ua_addr};transport={t.lower()}>")
        if kind == "REGISTER2":
            lines.append(
                f'Authorization: Digest username="{ua.user}", realm="{d.domain}", '
                f'nonce="{d.call_id[:16]}{d.ttag}", uri="sip:{d.domain}", '
                f'response="{rng.getrandbits(128):032x}", algorithm=MD5'
            )
        if kind.startswith("REGISTER"):
            lines.append("Expires: 3600")
        lines.append(f"Allow: {_ALLOW}")
        lines.append(f"User-Agent: {ua.ua_string if from_ua else 'SBC ' + agent.node}")
        if kind == "INVITE":
            body = _SDP.format(
                sess=rng.getrandbits(32),
                v=6 if v6 else 4,
                addr=ua.host.strip("[]"),
                rtp=rng.randrange(10000, 30000, 2),
            )
    else:
        code = int(kind.split("-")[0])
        req = kind.split("-")[1] if "-" in kind else "INVITE"
        if req == "OPTIONS":
            via, frm, to = sbc_addr, f"<sip:ping@{d.domain}>;tag={d.ftag}", f"<{me}>;tag={d.ttag}"
            cseq = f"{d.cseq} OPTIONS"
        elif req == "BYE" and from_ua:  # the SBC hung up; the UA answers
            via, frm, to = sbc_addr, f"<{peer}>;tag={d.ttag}", f"<{me}>;tag={d.ftag}"
            cseq = f"{d.cseq + 7} BYE"
        elif req == "REGISTER":
            via, frm, to = ua_addr, f"<{me}>;tag={d.ftag}", f"<{me}>;tag={d.ttag}"
            cseq = f"{d.cseq + (code == 200)} REGISTER"
        else:
            via, frm = ua_addr, f'"{ua.user[-4:]}" <{me}>;tag={d.ftag}'
            to = f"<{peer}>" + ("" if code == 100 else f";tag={d.ttag}")
            cseq = f"{d.cseq + (req == 'BYE')} {req}"
        lines = [
            f"SIP/2.0 {code} {_REASONS[code]}",
            f"Via: SIP/2.0/{t} {via};branch={branch};rport={ua.port}",
            f"From: {frm}",
            f"To: {to}",
            f"Call-ID: {d.call_id}",
            f"CSeq: {cseq}",
        ]
        if code == 401:
            lines.append(
                f'WWW-Authenticate: Digest realm="{d.domain}", '
                f'nonce="{d.call_id[:16]}{d.ttag}", algorithm=MD5, qop="auth"'
            )
        if req == "REGISTER" and code == 200:
            lines.append(f"Contact: <sip:{ua.user}@{ua_addr};transport={t.lower()}>;expires=3600")
        if req == "INVITE" and code in (180, 200):
            lines.append(f"Contact: <sip:{d.peer}@{sbc_addr};transport={t.lower()}>")
        if req in ("INVITE", "OPTIONS") and code == 200:
            lines.append(f"Allow: {_ALLOW}")
        lines.append(f"Server: {'SBC ' + agent.node if not from_ua else ua.ua_string}")
        if kind == "200-INVITE":
            body = _SDP.format(
                sess=rng.getrandbits(32),
                v=6 if v6 else 4,
                addr=sbc_host.strip("[]"),
                rtp=rng.randrange(30000, 60000, 2),
            )
    if body:
        lines.append("Content-Type: application/sdp")
    tail = f"Content-Length: {len(body)}\r\n\r\n{body}"
    head = "\r\n".join(lines) + "\r\n"
    size = len(head) + len(tail)
    target = rng.randrange(MIN_PAYLOAD, MAX_PAYLOAD + 1)
    if size < target:
        # Real SBCs add Record-Route and P- headers; one padding header stands in for them.
        pad = max(1, target - size - len("X-Trace-Id: \r\n"))
        head += f"X-Trace-Id: {_pad(rng, pad)}\r\n"
    return (head + tail).encode()


def _pad(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"[:n]


@dataclass(slots=True)
class Summary:
    """What the workload contains (written next to the files as JSON)."""

    messages: int = 0
    ipv6: int = 0
    tcp: int = 0
    tls: int = 0
    payload_bytes: int = 0
    min_payload: int = 1 << 30
    max_payload: int = 0
    calls: int = 0
    registrations: int = 0
    options: int = 0


def iter_workload(n: int, seed: int, summary: Summary) -> Iterator[tuple[int, Agent, bytes]]:
    """Yield ``(arrival_us, agent, hep3_bytes)`` for ``n`` messages in arrival order."""
    rng = random.Random(seed)
    agents = _agents()
    uas = _user_agents(rng)
    ts_chunks = TS_CHUNKS.pack
    head = HEP3_HEADER.pack
    # Per (UA, direction): the family/proto/address/port chunks, built once.
    prefixes: dict[tuple[int, bool], bytes] = {}

    def prefix(i: int, ua: UserAgent, agent: Agent, from_ua: bool) -> bytes:
        key = (i, from_ua)
        p = prefixes.get(key)
        if p is None:
            six = len(ua.ip) == 16
            sbc_ip = agent.ip6 if six else agent.ip4
            sbc_port = 5061 if ua.proto == PROTO_TLS else 5060
            src, dst = (ua.ip, sbc_ip) if from_ua else (sbc_ip, ua.ip)
            sp, dp = (ua.port, sbc_port) if from_ua else (sbc_port, ua.port)
            p = prefixes[key] = (
                _chunk(0x0001, bytes([AF_INET6_LINUX if six else AF_INET]))
                + _chunk(0x0002, bytes([ua.proto]))
                + _chunk(0x0005 if six else 0x0003, src)
                + _chunk(0x0006 if six else 0x0004, dst)
                + _chunk(0x0007, sp.to_bytes(2, "big"))
                + _chunk(0x0008, dp.to_bytes(2, "big"))
            )
        return p

    avg_per_dialog = 0.45 * 7 + 0.30 * 4 + 0.25 * 2
    dialog_gap_us = 1_000_000 / (MSG_RATE / avg_per_dialog)
    now = EPOCH_S * 1_000_000
    next_start = now
    heap: list[tuple[int, int, _Dialog, int, int]] = []  # (time, order, dialog, step, ua index)
    order = 0
    emitted = 0
    while emitted < n:
        if not heap or next_start <= heap[0][0]:
            i = rng.randrange(N_UAS)
            ua = uas[i]
            peer = uas[rng.randrange(N_UAS)].user
            d = _Dialog(rng, ua, agents[ua.agent], peer)
            _plan(rng, d)
            kind = d.steps[0][2]
            if kind == "INVITE":
                summary.calls += 1
            elif kind == "REGISTER":
                summary.registrations += 1
            else:
                summary.options += 1
            heapq.heappush(heap, (next_start, order, d, 0, i))
            order += 1
            next_start += int(rng.expovariate(1.0) * dialog_gap_us) + 1
            continue
        t, _, d, step, i = heapq.heappop(heap)
        delay, from_ua, kind = d.steps[step]
        start = t - delay
        if step + 1 < len(d.steps):
            heapq.heappush(heap, (start + d.steps[step + 1][0], order, d, step + 1, i))
            order += 1
        payload = _sip(rng, d, kind, from_ua)
        ua, agent = d.ua, d.agent
        # The agent stamps the message up to 3 ms before it reaches the collector.
        hep_ts = t - rng.randrange(0, 3000)
        sec, usec = divmod(hep_ts, 1_000_000)
        body = b"".join(
            (
                prefix(i, ua, agent, from_ua),
                ts_chunks(0, 0x0009, 10, sec, 0, 0x000A, 10, usec),
                agent.tail,
                CHUNK_HEADER.pack(0, 0x000F, CHUNK_HEADER.size + len(payload)),
                payload,
            )
        )
        emitted += 1
        size = len(payload)
        summary.messages += 1
        summary.payload_bytes += size
        summary.min_payload = min(summary.min_payload, size)
        summary.max_payload = max(summary.max_payload, size)
        if len(ua.ip) == 16:
            summary.ipv6 += 1
        if ua.proto == PROTO_TCP:
            summary.tcp += 1
        elif ua.proto == PROTO_TLS:
            summary.tls += 1
        yield t, agent, head(b"HEP3", HEP3_HEADER.size + len(body)) + body


class PcapHepWriter:
    """Classic pcap of HEP over UDP: Ethernet / IPv4 / UDP to COLLECTOR_IP:9060."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ip_id = 0
        out.write(PCAP_FILE_HEADER.pack(PCAP_MAGIC_US, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))

    def write(self, ts_us: int, agent: Agent, hep: bytes) -> None:
        """Write one HEP datagram from ``agent`` as one record."""
        self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
        ulen = 8 + len(hep)
        total = 20 + ulen
        ip_res = (
            0x4500 + total + ip_id + 0x4000 + (64 << 8 | 17) + ones_residue(agent.hep_ip)
        ) + ones_residue(COLLECTOR_IP)
        udp_res = (
            ones_residue(agent.hep_ip + COLLECTOR_IP)
            + 17
            + ulen
            + agent.hep_port
            + HEP_PORT
            + ulen
            + ones_residue(hep)
        )
        frame_head = ETH_IPV4_UDP.pack(
            COLLECTOR_MAC,
            agent.mac,
            0x0800,
            0x45,
            0,
            total,
            ip_id,
            0x4000,
            64,
            17,
            csum(ip_res),
            agent.hep_ip,
            COLLECTOR_IP,
            agent.hep_port,
            HEP_PORT,
            ulen,
            csum(udp_res) or 0xFFFF,
        )
        flen = len(frame_head) + len(hep)
        # The collector receives it 200 us after the agent's clock says it was sent.
        sec, usec = divmod(ts_us + 200, 1_000_000)
        self._out.write(PCAP_RECORD_HEADER.pack(sec, usec, flen, flen) + frame_head + hep)


def paths(n: int, seed: int, data_dir: Path = DATA_DIR) -> tuple[Path, Path, Path]:
    """(raw .hep, .pcap, .json summary) cache paths for a workload."""
    stem = data_dir / f"hep-{n}-s{seed}-v{GEN_VERSION}"
    return stem.with_suffix(".hep"), stem.with_suffix(".pcap"), stem.with_suffix(".json")


def generate(n: int, seed: int, data_dir: Path = DATA_DIR) -> dict[str, object]:
    """Write the workload files (atomically) and return the summary."""
    data_dir.mkdir(parents=True, exist_ok=True)
    raw_path, pcap_path, meta_path = paths(n, seed, data_dir)
    summary = Summary()
    started = time.perf_counter()
    raw_tmp, pcap_tmp = raw_path.with_suffix(".hep.tmp"), pcap_path.with_suffix(".pcap.tmp")
    with (
        open(raw_tmp, "wb", buffering=1 << 20) as raw,
        open(pcap_tmp, "wb", buffering=1 << 20) as pc,
    ):
        pcap = PcapHepWriter(pc)
        write_raw = raw.write
        write_pcap = pcap.write
        for t, agent, hep in iter_workload(n, seed, summary):
            write_raw(hep)
            write_pcap(t, agent, hep)
    os.replace(raw_tmp, raw_path)
    os.replace(pcap_tmp, pcap_path)
    meta: dict[str, object] = {
        "gen_version": GEN_VERSION,
        "seed": seed,
        **dataclasses.asdict(summary),
        "seconds": round(time.perf_counter() - started, 2),
        "raw_bytes": raw_path.stat().st_size,
        "pcap_bytes": pcap_path.stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure(n: int, seed: int, data_dir: Path = DATA_DIR) -> tuple[Path, Path, dict[str, object]]:
    """Return (raw path, pcap path, summary), generating the files when not cached."""
    raw_path, pcap_path, meta_path = paths(n, seed, data_dir)
    if raw_path.exists() and pcap_path.exists() and meta_path.exists():
        return raw_path, pcap_path, json.loads(meta_path.read_text())
    return raw_path, pcap_path, generate(n, seed, data_dir)


def self_check(count: int = 2000, seed: int = 1) -> None:
    """Assert that the fast encoder agrees with hep2pcap.hep.encode / decode (needs hep2pcap)."""
    from hep2pcap import hep

    for _, agent, data in iter_workload(count, seed, Summary()):
        msg = hep.decode(data)
        assert msg.capture_id == agent.capture_id
        assert msg.node_name == agent.node
        assert hep.encode(msg) == data, "gen.py encoder disagrees with hep2pcap.hep.encode"
        text = msg.payload.decode()
        head, _, body = text.partition("\r\n\r\n")
        clen = int(head.rsplit("Content-Length: ", 1)[1].split("\r\n", 1)[0])
        assert clen == len(body.encode()), "bad Content-Length"
        assert MIN_PAYLOAD <= len(msg.payload) <= MAX_PAYLOAD, len(msg.payload)


def main(argv: list[str] | None = None) -> int:
    """Command line: generate (or reuse) a workload and print its summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    ap.add_argument("--check", action="store_true", help="cross-check against hep2pcap.hep")
    args = ap.parse_args(argv)
    if args.check:
        self_check()
        print("self-check ok: 2000 messages equal hep2pcap.hep.encode(decode(m))", file=sys.stderr)
    if args.force:
        meta = generate(args.messages, args.seed, args.out_dir)
    else:
        meta = ensure(args.messages, args.seed, args.out_dir)[2]
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
