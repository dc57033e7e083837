"""Real HEP senders for the end-to-end tests: Kamailio (siptrace) driven by sipp.

One place that starts them, so every test that needs a real sender uses the same launcher:

* :func:`free_port` picks a port that is free for UDP and TCP (Kamailio needs fixed ports in
  its configuration; the port is found by binding port 0 first).
* :class:`Kamailio` writes a configuration from a template plus the caller's snippets (extra
  ``loadmodule``/``modparam`` lines and the ``request_route`` body), runs ``kamailio -DD -E``
  in the foreground (its children die with it; :meth:`Kamailio.stop` checks they are gone) and
  waits until it answers on its SIP port.
* :func:`sipp_uas` / :func:`sipp_uac` run sipp's built-in ``uas``/``uac`` scenarios with
  ``-trace_msg``; :func:`sipp_messages` reads back every message sipp sent or received, byte
  for byte.
* :class:`TlsRelay` wraps a plain TCP connection into TLS (Debian's sipp is built without
  OpenSSL, so sipp speaks TCP to the relay, and the relay TLS to Kamailio).

Every wait has a deadline and every process started here is ended by its PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TIMEOUT_S = 60
#: How long Kamailio may take to answer on its SIP port after it was started.
START_DEADLINE_S = 20.0


def require(name: str) -> str:
    """Path of a tool; skip (fail under CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ('make tools' installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port(host: str = "127.0.0.1", count: int = 1) -> int:
    """A port P such that P .. P+count-1 are free for UDP and TCP on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        if port + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(port, port + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(family, kind)
                    socks.append(s)
                    s.bind((host, p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise AssertionError(f"no free port run of {count} on {host}")


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost (openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        subprocess.run(
            [
                *(require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
                *("-days", "2", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            ],
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
    return cert, key


# --- Kamailio -------------------------------------------------------------------------------

_CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
log_prefix="{{$mt $rm $rs}} "
children=1
tcp_children=1
auto_aliases=no
enable_tls={tls}
onsend_route_reply=yes
{listens}
loadmodule "tm.so"
{tls_module}
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "{hep_uri}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", {hep_version})
modparam("siptrace", "hep_capture_id", {capture_id})
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "trace_mode", 1)
modparam("siptrace", "trace_to_database", 0)
{extra}

request_route {{
    xlog("L_NOTICE", "KSEEN recv $pr $si $sp $Ri $Rp $ml\\n");
{route}
}}

onreply_route {{
    xlog("L_NOTICE", "KSEEN recv $pr $si $sp $Ri $Rp $ml\\n");
}}

onsend_route {{
    xlog("L_NOTICE", "KSEEN sent $snd(proto) $sndfrom(ip) $sndfrom(port) "
        "$sndto(ip) $sndto(port) $snd(len)\\n");
}}
"""

#: The default route: every request goes to ``$du`` (set by the caller's ``target``).
RELAY_ROUTE = """    $du = "{target}";
    t_relay();
    exit;"""


@dataclass(frozen=True)
class Seen:
    """One message as Kamailio logged it (``KSEEN`` lines): received or sent."""

    way: str  # "recv" / "sent"
    proto: str  # "udp" / "tcp" / "tls" (numbers for sent: 1 udp, 2 tcp, 3 tls)
    src: str
    sport: int
    dst: str
    dport: int
    length: int
    first_line: str


_PROTO_NUMBERS = {"1": "udp", "2": "tcp", "3": "tls", "4": "sctp"}
_SEEN = re.compile(
    r"\{(?P<mt>\d+) (?P<rm>\S*) (?P<rs>\S*)\} .*KSEEN (?P<way>recv|sent) (?P<proto>\S+) "
    r"(?P<src>\S+) (?P<sport>\d+) (?P<dst>\S+) (?P<dport>\d+) (?P<len>\d+)"
)


class Kamailio:
    """A running ``kamailio -DD -E`` with siptrace sending HEP to ``hep_uri``.

    Args:
        workdir: where the configuration and the log go.
        hep_uri: siptrace ``duplicate_uri``, e.g. ``sip:127.0.0.1:9061;transport=tcp``.
        hep_version: 1, 2 or 3.
        capture_id: siptrace ``hep_capture_id``.
        hosts: addresses to listen on (UDP and TCP on ``sip_port``, TLS on ``sip_port+1``
            when ``tls``); IPv6 literals without brackets.
        target: where the default route relays every request (a SIP URI for ``$du``).
        tls: listen for TLS too (a self-signed certificate is made in ``workdir``).
        extra: more configuration lines (loadmodule/modparam) after siptrace's.
        route: the ``request_route`` body; default :data:`RELAY_ROUTE` with ``target``.
        events: more top-level routes (``event_route[...]``, ``route[...]``) at the end.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        hep_uri: str,
        hep_version: int = 3,
        capture_id: int = 2001,
        hosts: tuple[str, ...] = ("127.0.0.1",),
        target: str = "",
        tls: bool = False,
        extra: str = "",
        route: str | None = None,
        events: str = "",
    ) -> None:
        self.workdir = workdir
        self.hosts = hosts
        self.sip_port = free_port(hosts[0], 2)
        self.tls_port = self.sip_port + 1
        listens = []
        for host in hosts:
            h = f"[{host}]" if ":" in host else host
            listens += [f"listen=udp:{h}:{self.sip_port}", f"listen=tcp:{h}:{self.sip_port}"]
            if tls:
                listens.append(f"listen=tls:{h}:{self.tls_port}")
        tls_module = ""
        if tls:
            cert, key = make_cert(workdir)
            tls_cfg = workdir / "tls.cfg"
            tls_cfg.write_text(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                f"require_certificate = no\nprivate_key = {key}\ncertificate = {cert}\n"
                "[client:default]\nverify_certificate = no\nrequire_certificate = no\n"
            )
            tls_module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")'
        self.config = workdir / "kamailio.cfg"
        self.config.write_text(
            _CONFIG.format(
                tls="yes" if tls else "no",
                listens="\n".join(listens),
                tls_module=tls_module,
                hep_uri=hep_uri,
                hep_version=hep_version,
                capture_id=capture_id,
                extra=extra,
                route=route if route is not None else RELAY_ROUTE.format(target=target),
            )
            + events
        )
        self.log = workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kamailio:
        """Start it and wait until its TCP SIP port accepts connections."""
        kamailio = require("kamailio")
        check = subprocess.run(
            [kamailio, "-c", "-f", str(self.config)],
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert check.returncode == 0, check.stderr.decode(errors="replace")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [kamailio, "-DD", "-E", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host = self.hosts[0]
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host, self.sip_port), timeout=1),
            ):
                time.sleep(0.3)  # the UDP workers start with the TCP ones
                return self
            time.sleep(0.1)
        raise AssertionError(f"kamailio did not listen in time: {self.log.read_text()[-2000:]}")

    def children(self) -> list[int]:
        """PIDs of processes whose parent is this Kamailio."""
        if self.proc is None:
            return []
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    out.append(int(stat.parent.name))
        return out

    def stop(self) -> None:
        """SIGTERM by PID, wait, and check no child is left (SIGKILL them by PID if so)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        kids = self.children()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        deadline = time.monotonic() + 10
        left = kids
        while left and time.monotonic() < deadline:
            left = [k for k in left if Path(f"/proc/{k}").exists()]
            time.sleep(0.05)
        for k in left:  # only Kamailio's own children, by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
        assert not left, f"kamailio children {left} outlived their parent"

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seen(self) -> list[Seen]:
        """Every message Kamailio logged as received or sent, in log order."""
        out = []
        for m in _SEEN.finditer(self.log.read_text(errors="replace")):
            rm, rs = m["rm"], m["rs"]
            is_reply = m["mt"] == "2"
            first = f"SIP/2.0 {rs}" if is_reply else rm
            proto = m["proto"].lower()
            out.append(
                Seen(
                    way=m["way"],
                    proto=_PROTO_NUMBERS.get(proto, proto),
                    src=m["src"].strip("[]"),
                    sport=int(m["sport"]),
                    dst=m["dst"].strip("[]"),
                    dport=int(m["dport"]),
                    length=int(m["len"]),
                    first_line=first,
                )
            )
        return out


# --- sipp -----------------------------------------------------------------------------------


def _sipp_cmd(scenario: str, host: str, port: int, transport: str, log: Path) -> list[str]:
    return [
        require("sipp"),
        "-sn",
        scenario,
        "-i",
        host,
        "-p",
        str(port),
        "-t",
        {"udp": "u1", "tcp": "t1"}[transport],
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(log),
        "-trace_err",
        "-error_file",
        str(log.with_suffix(".err")),
    ]


def sipp_uas(
    workdir: Path, host: str, transport: str = "udp", calls: int = 1
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start sipp's ``uas`` scenario on a free port: (process, port, message log)."""
    port = free_port(host)
    log = workdir / f"uas-{transport}-{port}.log"
    cmd = [*_sipp_cmd("uas", host, port, transport, log), "-m", str(calls)]
    out = log.with_suffix(".out")
    with out.open("wb") as f:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + START_DEADLINE_S
    while not log.exists() and time.monotonic() < deadline:  # sipp opens it when ready
        assert proc.poll() is None, out.read_text(errors="replace")
        time.sleep(0.05)
    return proc, port, log


def sipp_uac(
    workdir: Path,
    host: str,
    remote: str,
    transport: str = "udp",
    calls: int = 1,
) -> tuple[int, Path]:
    """Run sipp's ``uac`` scenario against ``remote`` (host:port) to the end: (port, log)."""
    port = free_port(host)
    log = workdir / f"uac-{transport}-{port}.log"
    cmd = _sipp_cmd("uac", host, port, transport, log)
    cmd += ["-m", str(calls), "-timeout", "30", "-timeout_error", remote]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=TIMEOUT_S, check=False)
    err = log.with_suffix(".err")
    assert proc.returncode == 0, (err.read_text() if err.exists() else "") + proc.stderr.decode()
    return port, log


@dataclass(frozen=True)
class SippMessage:
    """One message sipp sent or received, as its ``-trace_msg`` log has it."""

    way: str  # "sent" / "received"
    transport: str  # "UDP" / "TCP"
    data: bytes


# sipp 3.6 writes "UDP message sent (511 bytes):" and "UDP message received [316] bytes :".
_SIPP_BLOCK = re.compile(
    rb"(UDP|TCP) message (sent|received) (?:\((\d+) bytes\):|\[(\d+)\] bytes :)\n\n"
)


def sipp_messages(log: Path) -> list[SippMessage]:
    """Every message in a sipp ``-trace_msg`` log, byte for byte (the length says where
    each one ends)."""
    raw = log.read_bytes()
    out = []
    for m in _SIPP_BLOCK.finditer(raw):
        size = int(m[3] or m[4])
        out.append(SippMessage(m[2].decode(), m[1].decode(), raw[m.end() : m.end() + size]))
    return out


def wait_process(proc: subprocess.Popen[bytes], timeout_s: float = TIMEOUT_S) -> None:
    """Wait for a process we started; kill it by PID if it overstays."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


# --- TLS --------------------------------------------------------------------------------------


class TlsRelay:
    """Accepts plain TCP on 127.0.0.1 (port 0, :attr:`port`) and relays each connection
    over TLS to ``target`` (no certificate check: a test certificate). Bounded: at most
    ``max_connections`` connections, each pumped by two daemon threads until either side
    closes or :meth:`close` is called."""

    def __init__(self, target: tuple[str, int], max_connections: int = 8) -> None:
        self.target = target
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.max_connections = max_connections
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        accepted = 0
        while not self._stop.is_set() and accepted < self.max_connections:
            if not sel.select(timeout=0.2):
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            accepted += 1
            try:
                raw = socket.create_connection(self.target, timeout=10)
                tls = self.ctx.wrap_socket(raw, server_hostname="localhost")
            except OSError:
                conn.close()
                continue
            self._socks += [conn, tls]
            for a, b in ((conn, tls), (tls, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        a.settimeout(0.5)
        deadline = time.monotonic() + TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data = a.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                b.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        for s in [self.sock, *self._socks]:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> TlsRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a log file (empty if it does not exist)."""
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()


# --- receivers: hep2pcap listen, and a real capture of the HEP traffic -----------------------


def _read_until(
    proc: subprocess.Popen[bytes], pattern: bytes, deadline_s: float
) -> re.Match[bytes]:
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + deadline_s
    while (left := deadline - time.monotonic()) > 0:
        if sel.select(timeout=left):
            chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                break
            seen += chunk
            m = re.search(pattern, seen)
            if m:
                return m
    raise AssertionError(f"{pattern!r} not seen in time: {seen!r}")


class Listen:
    """``hep2pcap listen -l SCHEME:127.0.0.1:0 -w OUT`` (window 0) and its bound port."""

    def __init__(self, command: list[str], scheme: str, out: Path, *args: str) -> None:
        cmd = [*command, "listen", "-l", f"{scheme}:127.0.0.1:0", "-w", str(out)]
        cmd += ["--duration", "120", "--window", "0", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        pattern = rb"listening on " + scheme.encode() + rb":127\.0\.0\.1:(\d+)"
        self.port = int(_read_until(self.proc, pattern, START_DEADLINE_S).group(1))

    def stop(self) -> str:
        """SIGINT by PID, then the summary it printed."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=TIMEOUT_S)
        assert self.proc.returncode == 0, err
        return err.decode(errors="replace")


class Capture:
    """``dumpcap -i lo -f 'port N'``: a real capture of the HEP traffic to port N.

    dumpcap says "Capturing on" before it captures: the capture is taken as started once a
    probe datagram (to a UDP port of ours, also in the filter) has reached the file, so the
    capture holds those probes too (counted as not HEP). Skips the test when dumpcap is
    missing or may not capture (it needs CAP_NET_RAW)."""

    def __init__(self, path: Path, port: int) -> None:
        dumpcap = require("dumpcap")
        self.path = path
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe_port: int = probe.getsockname()[1]
        self.probe_port = probe_port
        filt = f"port {port} or udp port {probe_port}"
        cmd = [dumpcap, "-q", "-i", "lo", "-f", filt, "-w", str(path)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            _read_until(self.proc, rb"Capturing on", START_DEADLINE_S)
            deadline = time.monotonic() + START_DEADLINE_S
            while time.monotonic() < deadline:
                probe.sendto(b"probe", ("127.0.0.1", probe_port))
                if path.exists() and path.stat().st_size > 0 and self._has_packets():
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("no probe reached the capture in time")
        except AssertionError as exc:
            self.proc.kill()
            self.proc.communicate(timeout=10)
            if os.environ.get("CI"):
                raise
            pytest.skip(f"dumpcap cannot capture on lo here: {exc}")
        finally:
            probe.close()

    def _has_packets(self) -> bool:
        # Walk the whole blocks written so far (dumpcap writes this host's byte order,
        # little-endian here) looking for an Enhanced Packet Block (type 6).
        data = self.path.read_bytes()
        pos = 0
        while pos + 8 <= len(data):
            btype, blen = (
                int.from_bytes(data[pos : pos + 4], "little"),
                int.from_bytes(data[pos + 4 : pos + 8], "little"),
            )
            if blen < 12 or pos + blen > len(data):
                return False
            if btype == 6:
                return True
            pos += blen
        return False

    def stop(self) -> Path:
        """SIGINT by PID; then the capture without the probes (tshark), next to it."""
        time.sleep(0.5)  # the last packets reach the capture buffer
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=TIMEOUT_S)
        clean = self.path.with_name(f"{self.path.stem}-hep{self.path.suffix}")
        self.keep = f"not udp.port == {self.probe_port}"
        subprocess.run(
            [require("tshark"), "-r", str(self.path), "-w", str(clean), "-Y", self.keep],
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
        return clean
