"""Bounded attacks on ``hep2pcap listen`` over loopback, with a good agent sending beside them.

Used by tests/test_attacks.py (each attack a few seconds) and by ``make soak-attacks``
(``python tests/attacks.py --seconds 20``: the same attacks, longer). Only 127.0.0.1 is
targeted, listeners bind port 0 (read back from stderr), every loop is bounded in count and
time, and only the processes started here are ended (by PID).

Each attack returns a :class:`Result`: what the good agent sent and what of it is in the
file, the peak RSS of hep2pcap (main process + receiver), how long the stop took, the exit
code, the summary, and whether the file is a whole pcapng.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hep2pcap.hep import HepMessage, encode

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 15.0
GOOD_RATE = 500  # msg/s, the good agent's rate
HOUR_US = 3_600_000_000


def sip(call_id: str, body: bytes = b"", method: str = "OPTIONS") -> bytes:
    return (
        f"{method} sip:bob@example.com SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def hep(
    payload: bytes,
    *,
    proto: int = 17,
    ahead_us: int = 0,
    auth: bytes | None = None,
    compress: bool = False,
    sport: int = 5060,
) -> bytes:
    msg = HepMessage(
        version=3,
        ip_proto=proto,
        src_ip=b"\n\0\0\x01",
        dst_ip=b"\n\0\0\x02",
        src_port=sport,
        dst_port=5080,
        ts_us=time.time_ns() // 1000 + ahead_us,
        payload=payload,
        capture_id=2001,
        auth_key=auth,
    )
    return encode(msg, compress=compress)


def zipped(call_id: str, inflated: int, ahead_us: int = 0) -> bytes:
    """A datagram of a few hundred bytes whose payload inflates to ``inflated`` bytes."""
    body = b"A" * (inflated - len(sip(call_id)) - 4)
    return hep(sip(call_id, body), ahead_us=ahead_us, compress=True)


@dataclass
class Result:
    name: str
    good_sent: int = 0
    good_written: int = 0
    peak_rss_mib: float = 0.0
    stop_s: float = 0.0
    rc: int | None = None
    summary: str = ""
    valid: bool = False
    packets: int = 0
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def good_lost(self) -> int:
        return self.good_sent - self.good_written

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"{self.name:<22} good {self.good_written}/{self.good_sent} "
            f"rss {self.peak_rss_mib:.0f} MiB stop {self.stop_s:.1f} s rc {self.rc} "
            f"valid {self.valid} packets {self.packets} {extra}"
        )


class Listen:
    """``python -m hep2pcap listen`` on loopback port 0, stderr read by a thread, RSS sampled."""

    def __init__(self, out: Path, *args: str, tcp: bool = True) -> None:
        urls = ["-l", "udp:127.0.0.1:0", "-l", "udp:127.0.0.1:0"]
        if tcp:
            urls += ["-l", "tcp:127.0.0.1:0"]
        self.out = out
        self.p = subprocess.Popen(
            [sys.executable, "-m", "hep2pcap", "listen", *urls, "-w", str(out), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=out.parent,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.addresses: list[tuple[str, str, int]] = []
        deadline = time.monotonic() + WAIT_S
        while len(self.addresses) < (3 if tcp else 2):
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.kill()
                raise RuntimeError(f"listen did not start: {self.lines}")
            if line.startswith("listening on "):
                scheme, host, port = line.removeprefix("listening on ").rsplit(":", 2)
                self.addresses.append((scheme, host, int(port)))
        self.peak_kib = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def port(self, scheme: str, index: int = 0) -> int:
        return [p for s, _, p in self.addresses if s == scheme][index]

    def _read(self) -> None:
        assert self.p.stderr is not None
        for raw in self.p.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def rss_kib(self) -> int:
        pids = [self.p.pid]
        with contextlib.suppress(OSError):
            path = f"/proc/{self.p.pid}/task/{self.p.pid}/children"
            pids += [int(c) for c in Path(path).read_text().split()]
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def _sample(self) -> None:
        while self._sampling and self.p.poll() is None:
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60.0) -> tuple[int | None, float]:
        start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.p.send_signal(sig)
        try:
            rc: int | None = self.p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
            self.kill()
        took = time.monotonic() - start
        self._sampling = False
        self._sampler.join(5)
        self._close()
        return rc, took

    def _close(self) -> None:
        self._reader.join(5)
        if self.p.stderr is not None:
            self.p.stderr.close()

    def wait(self, timeout_s: float = WAIT_S) -> int | None:
        try:
            rc: int | None = self.p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
            self.kill()
        self._sampling = False
        self._close()
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(WAIT_S)
        self._close()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


class Agent(threading.Thread):
    """The good agent: ``rate`` messages a second over UDP (or TCP) until stopped."""

    def __init__(
        self,
        port: int,
        *,
        tcp: bool = False,
        auth: bytes | None = None,
        rate: int = GOOD_RATE,
        tag: str = "good",
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.tcp, self.auth, self.rate, self.tag = port, tcp, auth, rate, tag
        self.sent = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.tcp:
                with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S) as s:
                    self._loop(s.sendall)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    self._loop(lambda d: s.sendto(d, ("127.0.0.1", self.port)))
        except OSError as exc:
            self.error = exc

    def _loop(self, send: Callable[[bytes], object]) -> None:
        start = time.monotonic()
        for i in range(self.rate * 600):
            if self.halt.is_set():
                return
            proto = 6 if self.tcp else 17
            send(hep(sip(f"{self.tag}-{i}"), proto=proto, auth=self.auth))
            self.sent = i + 1
            delay = start + (i + 1) / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def finish(self) -> int:
        self.halt.set()
        self.join(WAIT_S)
        return self.sent


def scan(path: Path, tag: bytes = b"Call-ID: good-") -> tuple[bool, int, int]:
    """(whole pcapng, packets, packets whose payload has ``tag``) of a file."""
    try:
        data = path.read_bytes()
    except OSError:
        return False, 0, 0
    pos, packets, tagged = 0, 0, 0
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        return False, 0, 0
    while pos + 12 <= len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        if total < 12 or total % 4 or pos + total > len(data):
            return False, packets, tagged
        if struct.unpack_from("<I", data, pos + total - 4)[0] != total:
            return False, packets, tagged
        if btype == 6:
            packets += 1
            if data.find(tag, pos, pos + total) >= 0:
                tagged += 1
        pos += total
    return pos == len(data), packets, tagged


def blast_udp(port: int, datagrams: Iterator[bytes], seconds: float, rate: int | None) -> int:
    """Send datagrams for ``seconds`` (at ``rate``/s, or as fast as possible); return the count."""
    n = 0
    end = time.monotonic() + seconds
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            now = time.monotonic()
            if now > end:
                break
            with contextlib.suppress(OSError):
                s.sendto(d, ("127.0.0.1", port))
            n += 1
            if rate is not None:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    return n


def settle(path: Path, quiet_s: float = 1.3, limit_s: float = 15.0) -> None:
    """Wait until the output stops growing (the backlog is converted; flushes are 1 s apart)."""
    deadline = time.monotonic() + limit_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def _finish(
    name: str, lst: Listen, agent: Agent, *, drain: bool = False, **notes: object
) -> Result:
    time.sleep(1.0)  # the good agent's last messages pass the reorder window
    sent = agent.finish()
    time.sleep(0.8)
    if drain:
        settle(lst.out)
    rc, took = lst.stop()
    valid, packets, good = scan(lst.out)
    res = Result(name, sent, good, lst.peak_kib / 1024, took, rc, lst.stderr, valid, packets)
    res.notes.update(notes)
    return res


# --- the attacks --------------------------------------------------------------------------


def zip_future(work: Path, seconds: float, inflated: int = 64_000) -> Result:
    """Datagrams of ~500 bytes that inflate to ``inflated`` bytes, stamped 20 h ahead."""
    lst = Listen(work / "zip.pcapng", "--window", "0.5")
    agent = Agent(lst.port("udp", 1))
    agent.start()
    gen = (zipped(f"evil-{i}", inflated, 20 * HOUR_US) for i in range(10**6))
    n = blast_udp(lst.port("udp"), gen, seconds, 1000)
    return _finish(f"zip_future_{inflated // 1024}k", lst, agent, attack=n)


def zip_flood_stop(work: Path, seconds: float) -> Result:
    """Zipped datagrams at full speed, then SIGINT at once: the stop must be quick."""
    lst = Listen(work / "zipstop.pcapng")
    agent = Agent(lst.port("udp", 1))
    agent.start()
    gen = (zipped(f"evil-{i}", 64_000) for i in range(10**6))
    n = blast_udp(lst.port("udp"), gen, seconds, None)
    agent.finish()
    rc, took = lst.stop()
    valid, packets, good = scan(lst.out)
    return Result("zip_flood_stop", agent.sent, good, lst.peak_kib / 1024, took, rc,
                  lst.stderr, valid, packets, {"attack": n})  # fmt: skip


def call_id_hold(work: Path, seconds: float) -> Result:
    """--call-id: big dialogs that never match are held; the good one matches."""
    lst = Listen(work / "hold.pcapng", "--call-id", "good-0", "--window", "0.2")
    agent = Agent(lst.port("udp", 1), tag="good")
    agent.start()
    gen = (zipped(f"evil-{i}", 64_000) for i in range(10**6))
    n = blast_udp(lst.port("udp"), gen, seconds, 1000)
    res = _finish("call_id_hold", lst, agent, attack=n)
    res.good_sent = 1 if res.good_sent else 0  # only good-0 matches
    return res


def tcp_content_length(work: Path, seconds: float) -> Result:
    """SIP over TCP whose Content-Length promises more than ever comes: held for its rest."""
    lst = Listen(work / "cl.pcapng", "--window", "0.2")
    agent = Agent(lst.port("udp", 1))
    agent.start()
    n = 0
    end = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", lst.port("tcp")), timeout=WAIT_S) as s:
        while time.monotonic() < end:
            head = (
                f"INVITE sip:x SIP/2.0\r\nCall-ID: evil-{n}\r\nContent-Length: 900000\r\n\r\n"
            ).encode()
            s.sendall(hep(head + b"B" * 60_000, proto=6, sport=10_000 + n % 50_000))
            n += 1
            time.sleep(0.001)
    return _finish("tcp_content_length", lst, agent, attack=n)


def tcp_flood(work: Path, seconds: float) -> Result:
    """One TCP peer sending valid HEP as fast as it can; the good agent is on UDP."""
    lst = Listen(work / "tcpflood.pcapng", "--backlog", "4")
    agent = Agent(lst.port("udp", 1))
    agent.start()
    batch = b"".join(hep(sip(f"flood-{i}"), proto=6) for i in range(200))
    n = 0
    end = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", lst.port("tcp")), timeout=WAIT_S) as s:
        while time.monotonic() < end:
            s.sendall(batch)
            n += 200
    return _finish("tcp_flood", lst, agent, drain=True, attack=n)


def tcp_drip(work: Path, seconds: float, conns: int = 300) -> Result:
    """``conns`` connections dripping single bytes of a big message; then a real TCP agent."""
    lst = Listen(work / "drip.pcapng", "--max-connections", str(conns), "--window", "0.2")
    socks: list[socket.socket] = []
    msg = b"HEP3\xff\xff" + bytes(65_529)
    try:
        for _ in range(conns):
            with contextlib.suppress(OSError):
                socks.append(socket.create_connection(("127.0.0.1", lst.port("tcp")), 5))
        end = time.monotonic() + seconds
        pos = 0
        while time.monotonic() < end and pos < len(msg) - 1:
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(msg[pos : pos + 1])
            pos += 1
            time.sleep(0.01)
        agent = Agent(lst.port("tcp"), tcp=True)
        agent.start()
        time.sleep(1.0)
        res = _finish("tcp_drip", lst, agent, conns=len(socks), dripped=pos)
    finally:
        for s in socks:
            s.close()
    if agent.error is not None:
        res.notes["agent_error"] = repr(agent.error)
    return res


def wrong_key(work: Path, seconds: float) -> Result:
    """--password: a flood of wrong keys at full speed; the keyed agent must lose nothing."""
    lst = Listen(work / "key.pcapng", "--password", "s3cret")
    agent = Agent(lst.port("udp", 1), auth=b"s3cret")
    agent.start()
    bad = [hep(sip(f"evil-{i}"), auth=b"wrong!") for i in range(1000)]
    n = blast_udp(lst.port("udp"), (bad[i % 1000] for i in range(10**8)), seconds, None)
    return _finish("wrong_key", lst, agent, attack=n)


def second_writer(work: Path) -> Result:
    """A second listen with the same -w: refused; the first one's file stays whole."""
    out = work / "same.pcapng"
    first = Listen(out, tcp=False)
    agent = Agent(first.port("udp"))
    agent.start()
    time.sleep(0.5)
    r = subprocess.run(
        [sys.executable, "-m", "hep2pcap", "listen", "-l", "udp:127.0.0.1:0", "-w", str(out),
         "--duration", "1"],
        capture_output=True, timeout=60, cwd=work,
    )  # fmt: skip
    res = _finish("second_writer", first, agent)
    res.notes["second_rc"] = r.returncode
    res.notes["second_stderr"] = r.stderr.decode(errors="replace").strip()
    return res


def restart_existing(work: Path) -> Result:
    """A restart with the same -w: the first run's capture is still there."""
    out = work / "restart.pcapng"
    first = Listen(out, tcp=False)
    agent = Agent(first.port("udp"), tag="good")
    agent.start()
    res1 = _finish("restart_first", first, agent)
    second = Listen(out, tcp=False)
    agent2 = Agent(second.port("udp"), tag="good")
    agent2.start()
    res = _finish("restart_existing", second, agent2)
    res.good_sent += res1.good_sent
    res.notes["first_run_written"] = res1.good_written
    return res


def removed_output(work: Path, what: str) -> Result:
    """The output file (``file``) or its folder (``folder``) is removed while written."""
    folder = work / f"gone-{what}"
    folder.mkdir()
    out = folder / "gone.pcapng"
    lst = Listen(out, tcp=False)
    agent = Agent(lst.port("udp"))
    agent.start()
    time.sleep(1.0)
    out.unlink()
    if what == "folder":
        folder.rmdir()
    noticed = time.monotonic()
    deadline = noticed + 5
    while time.monotonic() < deadline and not any("removed" in x for x in lst.lines):
        time.sleep(0.05)
    noticed_s = time.monotonic() - noticed
    time.sleep(0.5)
    sent = agent.finish()
    rc, took = lst.stop() if lst.p.poll() is None else (lst.wait(), 0.0)
    valid, packets, good = scan(out)
    res = Result(f"removed_{what}", sent, good, lst.peak_kib / 1024, took, rc, lst.stderr,
                 valid, packets, {"noticed_s": round(noticed_s, 2)})  # fmt: skip
    return res


ALL: dict[str, Callable[[Path, float], Result]] = {
    "zip_future_64k": zip_future,
    "zip_future_250k": lambda w, s: zip_future(w, s, 250_000),
    "zip_flood_stop": zip_flood_stop,
    "call_id_hold": call_id_hold,
    "tcp_content_length": tcp_content_length,
    "tcp_flood": tcp_flood,
    "tcp_drip": tcp_drip,
    "wrong_key": wrong_key,
    "second_writer": lambda w, s: second_writer(w),
    "restart_existing": lambda w, s: restart_existing(w),
    "removed_file": lambda w, s: removed_output(w, "file"),
    "removed_folder": lambda w, s: removed_output(w, "folder"),
}


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each attack")
    ap.add_argument("names", nargs="*", help=f"attacks to run (default all: {', '.join(ALL)})")
    args = ap.parse_args()
    for name in args.names or list(ALL):
        with tempfile.TemporaryDirectory(prefix="hep2pcap-attack-") as tmp:
            res = ALL[name](Path(tmp), args.seconds)
            print(res.line(), flush=True)
            head = [x for x in res.summary.splitlines() if not x.startswith("listening on")]
            print("   " + "\n   ".join(head[-12:]), flush=True)
    return 0


if __name__ == "__main__":
    os.nice(5)
    sys.exit(main())
