"""The live source: UDP, TCP and TLS listeners multiplexed into one pipeline source.

Owns: the receive path and its hand-over to the pipeline. A receiver — by default a child
process, so receiving never waits for the converting thread's GIL (measured: a receiver
thread loses 20 % at 50k msg/s while conversion runs, the process none at 100k msg/s) —
only receives: recv, frame TCP/TLS, check --allow, stamp the receive time. It passes
records to ``LiveSource.__iter__``, which yields them to ``pipeline.convert`` plus a
:class:`Tick` at least every ``tick_s`` so the reorder window drains and the output is
flushed by wall time. Also the ``--forward`` relay, which never blocks the capture.

Must never: decode HEP (that is ``pipeline.iter_messages``), let the receiver wait on
conversion or disk, or grow without bound: what waits for conversion is capped in bytes (UDP
beyond it is dropped and counted per listener, TCP is simply not read until there is room).

Fairness: the backlog is shared between the classes of source — UDP, TCP and TLS — that are
active (ready, or with bytes waiting): each may hold an equal share of it (a FIFO ledger
tells how much of the backlog each class holds). Within a class, each round's room is split
between its ready listeners or connections; a share one does not use goes to the next. So
one fast TCP peer cannot keep the backlog full while UDP agents lose datagrams.

With ``--password`` (and ``--allow``) a message that cannot pass is rejected here, before it
costs a decode or a trip to the converting process (:func:`hep2pcap.hep.precheck_auth`);
only the first few of each reason travel as problems (to be logged), the rest as counts.
When the connection table is full, a new connection displaces the one whose last complete
HEP message (or accept) is oldest, if it has been quiet for DISPLACE_QUIET_US; single bytes
reset nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import multiprocessing
import os
import pickle
import select
import selectors
import signal
import socket
import ssl
import struct
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import DecodeError, Hep2PcapError, Reason
from ..hep import auth_needle, precheck_auth
from ..items import Problem, Record, Tick
from ..stats import Stats
from .tcp import TcpConnection, TcpListener, peer_text
from .udp import MAX_DATAGRAM, Endpoint, UdpListener

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Datagrams read from one UDP socket per wake-up before the other sockets get a turn.
UDP_BATCH = 512
#: Connections accepted per wake-up of a listening socket.
ACCEPT_BATCH = 64
#: How often idle TCP connections are looked for.
IDLE_CHECK_US = 1_000_000
#: Selector timeout: how late the receiver notices a stop request.
SELECT_TIMEOUT_S = 0.1
#: At stop, datagrams still queued in a UDP socket are read, at most this many batches.
FINAL_DRAIN_BATCHES = 256
#: How long close() waits for the receiver thread.
JOIN_TIMEOUT_S = 5.0
#: After the first stop request, what was received is converted for at most this long;
#: the rest is counted as not converted (so a stop ends within a couple of seconds).
STOP_DRAIN_S = 1.0
#: A full connection table: the quietest connection is displaced only when it has sent no
#: complete HEP message for this long (else the new one is refused).
DISPLACE_QUIET_US = 1_000_000
#: Rejections before decoding (auth, allow-list) sent on as problems per reason (the first
#: ones are logged); past this they are only counted.
EARLY_PROBLEMS = 5
#: Connection failures (TLS handshake, desync, error, idle, displaced) logged with the peer,
#: per kind; past this they are counted only.
LOG_LIMIT = 5

log = logging.getLogger("hep2pcap")


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How to listen.

    Attributes:
        endpoints: where to listen (``udp:``, ``tcp:``, ``tls:``).
        rcvbuf: UDP receive buffer to ask the kernel for, in bytes.
        tls: server context for ``tls:`` endpoints.
        allow: accept only these source networks (``None``: everyone).
        tcp_idle_timeout_s: close a TCP/TLS connection silent for this long.
        max_connections: TCP/TLS connections open at once; more are refused and counted.
        tick_s: at most this long between two ticks (window drain and flush).
        max_backlog_bytes: received bytes waiting for conversion, at most (shared fairly
            between the sources, see the module docstring).
        receiver: receive in a child process (so receiving never waits for the converting
            thread's GIL) or in a thread of this process.
        password: when set, messages that cannot carry this auth key are rejected before
            decoding (the pipeline still checks the key exactly).
        log_limit: connection failures logged per kind (``None``: all).
    """

    endpoints: tuple[Endpoint, ...]
    rcvbuf: int = 32 * 1024 * 1024
    tls: ssl.SSLContext | None = None
    allow: tuple[IpNetwork, ...] | None = None
    tcp_idle_timeout_s: float = 60.0
    max_connections: int = 1024
    tick_s: float = 0.25
    max_backlog_bytes: int = 256 * 1024 * 1024
    receiver: Literal["process", "thread"] = "process"
    password: bytes | None = None
    log_limit: int | None = LOG_LIMIT


class AllowList:
    """Source-address filter for ``--allow CIDR`` (answers are cached per address)."""

    def __init__(self, networks: tuple[IpNetwork, ...]) -> None:
        self._networks = networks
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """True when ``host`` (an IP literal, maybe with a %scope) is in a network."""
        hit = self._cache.get(host)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        ok = any(addr in net for net in self._networks)
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[host] = ok
        return ok


def parse_allow(text: str) -> IpNetwork:
    """``10.0.0.0/8``, ``192.0.2.7``, ``2001:db8::/32`` (host bits are tolerated).

    Raises:
        ValueError: not an address or network.
    """
    return ipaddress.ip_network(text, strict=False)


def _now_us() -> int:
    return time.time_ns() // 1000


class Forwarder:
    """Relay of accepted HEP messages to an upstream collector (``--forward udp:|tcp:``).

    ``put()`` never blocks: it appends to a bounded queue that a thread sends from. When
    the queue is full or the upstream is unreachable, messages are dropped and counted.

    Args:
        endpoint: the upstream (``udp:`` or ``tcp:``).
        max_queue: messages waiting to be sent, at most.
        timeout_s: connect and send timeout for TCP.
        max_queue_bytes: bytes waiting to be sent, at most (about: the sender thread's
            share of the count is read without a lock).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        max_queue: int = 20_000,
        timeout_s: float = 2.0,
        max_queue_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.endpoint = endpoint
        self.sent = 0
        self.queue_drops = 0  # written by the caller's thread only
        self.send_drops = 0  # written by the forwarder thread only
        self._max = max_queue
        self._max_bytes = max_queue_bytes
        self._queued_in = 0  # bytes put, by the caller's thread
        self._queued_out = 0  # bytes taken, by the forwarder thread
        self._stream = endpoint.scheme != "udp"
        self._timeout_s = timeout_s
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stop = False
        # Started by the first put(): no thread exists yet when the receiver process forks.
        self._thread = threading.Thread(target=self._run, name="hep2pcap-forward", daemon=True)

    @property
    def drops(self) -> int:
        """Messages not relayed."""
        return self.queue_drops + self.send_drops

    def put(self, data: bytes) -> None:
        """Queue one message for the upstream; drop it (counted) when the queue is full.

        Over TCP only HEPv3 can be sent (v1/v2 have no length to frame by): others are
        dropped and counted too.
        """
        if (
            len(self._queue) >= self._max
            or self._queued_in - self._queued_out + len(data) > self._max_bytes
            or (self._stream and not data.startswith(b"HEP3"))
        ):
            self.queue_drops += 1
            return
        self._queued_in += len(data)
        self._queue.append(data)
        if not self._wake.is_set():
            if self._thread.ident is None:
                self._thread.start()
            self._wake.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout_s``), then stop; the rest is dropped."""
        self._stop = True
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        self.send_drops += len(self._queue)
        self._queue.clear()

    def _connect(self) -> socket.socket:
        ep = self.endpoint
        kind = socket.SOCK_DGRAM if ep.scheme == "udp" else socket.SOCK_STREAM
        sock = socket.socket(ep.family, kind)
        try:
            sock.settimeout(self._timeout_s)
            sock.connect((ep.host, ep.port))
        except OSError:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        queue, wake = self._queue, self._wake
        sock: socket.socket | None = None
        retry_at = 0.0
        while True:
            if not queue:
                if self._stop:
                    break
                wake.clear()
                if not queue:
                    wake.wait(0.5)
                continue
            data = queue.popleft()
            self._queued_out += len(data)
            if sock is None:
                if time.monotonic() < retry_at:
                    self.send_drops += 1
                    continue
                try:
                    sock = self._connect()
                except OSError:
                    retry_at = time.monotonic() + 1.0
                    self.send_drops += 1
                    continue
            try:
                sock.sendall(data)
            except OSError:
                self.send_drops += 1
                if sock.type == socket.SOCK_STREAM:
                    sock.close()
                    sock = None
                    retry_at = time.monotonic() + 1.0
            else:
                self.sent += 1
        if sock is not None:
            sock.close()


class _Receiver:
    """The receive path: one selector over every socket; runs in a thread or a child process.

    ``step()`` waits for sockets (at most ``timeout`` seconds), reads what is there and
    returns it as one batch. The driver (thread or child process) decides where batches go
    and sets ``backlog`` to a function telling how many bytes still wait for the pipeline.
    """

    def __init__(self, options: LiveOptions, udp: list[UdpListener], tcp: list[TcpListener]):
        self.options = options
        self.udp = udp
        self.tcp = tcp
        self.allow = AllowList(options.allow) if options.allow is not None else None
        self.backlog: Callable[[], int] = lambda: 0
        # Counters, written by the receiving side only.
        self.received = 0  # datagrams and stream messages, whatever became of them
        self.records = 0  # of those, handed on as records
        self.items = 0  # records and problems handed on
        self.enqueued_bytes = 0
        self.receive_drops = 0
        self.drops_by: Counter[str] = Counter()  # receive_drops by UDP listener
        self.rejected: Counter[Reason] = Counter()  # rejected before decoding, by reason
        self.connections: Counter[str] = Counter()
        self.conns: dict[int, TcpConnection] = {}
        self.needle = auth_needle(options.password) if options.password is not None else None
        self.logged: Counter[str] = Counter()
        #: where connection failures are logged (the process driver sends them to its parent)
        self.note: Callable[[str], None] = lambda text: log.warning("%s", text)
        self.last_bytes = 0  # bytes the last read_udp took
        # Bytes in the backlog by class (udp, tcp, tls), kept with a first-in-first-out
        # ledger of [class, bytes] entries settled against the backlog's size each round.
        self._held: dict[str, int] = {}
        self._ledger: deque[list[Any]] = deque()
        self._ledger_in = 0
        self._ledger_out = 0
        self.woke: list[tuple[object, int]] = []  # the driver's own file descriptors
        self._seq = 0
        self._idle_us = round(options.tcp_idle_timeout_s * 1_000_000)
        self._next_idle_check = 0
        # A placeholder without a file descriptor; register() makes the real one.
        self.sel: selectors.BaseSelector = selectors.SelectSelector()
        self.read_udp: Callable[[UdpListener, int, list[Record | Problem], bool, int], int] = (
            self._read_udp
        )

    def register(self) -> None:
        """Put every listening socket into a new selector (made here: after a fork)."""
        self.sel.close()
        self.sel = selectors.DefaultSelector()
        for u in self.udp:
            self.sel.register(u.sock, selectors.EVENT_READ, u)
        for t in self.tcp:
            self.sel.register(t.sock, selectors.EVENT_READ, t)
        self._next_idle_check = _now_us() + IDLE_CHECK_US

    def step(self, timeout_s: float) -> list[Record | Problem]:
        """One round: wait, receive (each class of source within its share of the
        backlog), frame, close idle connections."""
        events = self.sel.select(timeout_s)
        now_us = _now_us()
        out: list[Record | Problem] = []
        held = self._settle_ledger()
        throttled = False
        self.woke.clear()
        ready: dict[str, list[UdpListener] | list[TcpConnection]] = {}
        for key, mask in events:
            obj = key.data
            if type(obj) is UdpListener:
                ready.setdefault("udp", []).append(obj)  # type: ignore[arg-type]
            elif type(obj) is TcpConnection:
                if obj.handshaking:
                    self._read_conn(obj, now_us, out, 1 << 20)
                else:
                    ready.setdefault(obj.scheme, []).append(obj)  # type: ignore[arg-type]
            elif type(obj) is TcpListener:
                self._accept(obj, now_us, out)
            else:
                self.woke.append((obj, mask))
        # Each class (udp, tcp, tls) that is ready or has bytes waiting may hold an equal
        # share of the backlog; within a class, the room left is split between the ready
        # sources (what one does not take goes to the next). A class past its share: UDP is
        # read and dropped (counted per listener), TCP/TLS are not read (left in the kernel).
        active = len(set(ready) | {c for c, n in held.items() if n > 0})
        cap = self.options.max_backlog_bytes
        share = cap // max(1, active)
        full = self.backlog() >= cap  # the whole backlog, whoever holds it
        for cls, members in ready.items():
            room = share - held.get(cls, 0) if not full else 0
            took = 0
            for j, src in enumerate(members):
                budget = (room - took) // (len(members) - j) if room > took else 0
                if type(src) is UdpListener:
                    self.read_udp(src, now_us, out, room <= 0, budget)
                    took += self.last_bytes
                else:
                    assert type(src) is TcpConnection
                    if budget <= 0:
                        throttled = True
                        src.last_us = max(src.last_us, now_us - self._idle_us // 2)  # not idle
                        continue
                    took += self._read_conn(src, now_us, out, budget)
            if took:
                self._ledger.append([cls, took])
                held[cls] = held.get(cls, 0) + took
                self._ledger_in += took
        if now_us >= self._next_idle_check:
            self._next_idle_check = now_us + IDLE_CHECK_US
            for conn in list(self.conns.values()):
                if now_us - conn.last_us > self._idle_us:
                    self._close(conn, conn.truncate(), "idle_timeout", out)
        if throttled:
            time.sleep(0.002)  # the pipeline is behind: leave TCP in the kernel a moment
        self.items += len(out)
        return out

    def _settle_ledger(self) -> dict[str, int]:
        # The backlog is first in, first out: what the pipeline took since the last round
        # comes off the oldest ledger entries. Returns the bytes each class holds now.
        gone = self._ledger_in - self.backlog() - self._ledger_out
        ledger = self._ledger
        held = self._held
        while gone > 0 and ledger:
            entry = ledger[0]
            n = min(gone, entry[1])
            entry[1] -= n
            held[entry[0]] -= n
            gone -= n
            self._ledger_out += n
            if not entry[1]:
                ledger.popleft()
        return held

    def early_reject(self, reason: Reason, where: str, out: list[Record | Problem]) -> None:
        """A message rejected before decoding: the first few go on as problems (logged by
        the pipeline), the rest are counted here."""
        n = self.rejected[reason]
        if n < EARLY_PROBLEMS:
            out.append(Problem(reason, self._next_seq(), where, reason is not Reason.NOT_ALLOWED))
        self.rejected[reason] = n + 1

    def screened_out(
        self,
        buf: bytes | bytearray,
        start: int,
        end: int,
        addr: tuple[str, int] | tuple[str, int, int, int] | None,
        where: str,
        out: list[Record | Problem],
    ) -> bool:
        """The checks made before decoding (``--allow`` on a datagram's ``addr``,
        ``--password`` on ``buf[start:end]``): True when they reject the message (counted by
        early_reject). ``where`` names a stream message; a datagram is named by ``addr``."""
        allow, needle = self.allow, self.needle
        if addr is not None and allow is not None and not allow.allows(addr[0]):
            reason: Reason | None = Reason.NOT_ALLOWED
        elif needle is not None:
            reason = precheck_auth(buf, needle, start, end)
        else:
            reason = None
        if reason is None:
            return False
        self.early_reject(
            reason, f"udp datagram from {peer_text(addr)}" if addr is not None else where, out
        )
        return True

    def log_once(self, kind: str, text: str) -> None:
        """Log a connection failure with its peer: the first ``log_limit`` of each kind."""
        n = self.logged[kind]
        self.logged[kind] = n + 1
        limit = self.options.log_limit
        if limit is None or n < limit:
            self.note(text)
            if n + 1 == limit:
                self.note(f"(further {kind} connections are counted, not shown)")

    def drain_udp(self) -> Iterator[list[Record | Problem]]:
        """Stopping: read what the UDP sockets still hold, so it is not lost with them."""
        now_us = _now_us()
        for u in self.udp:
            for _ in range(FINAL_DRAIN_BATCHES):
                out: list[Record | Problem] = []
                if not self.read_udp(u, now_us, out, False, 1 << 62):
                    break
                self.items += len(out)
                yield out

    def shutdown(self) -> None:
        """Close every connection (a partial message is counted) and the selector."""
        for conn in list(self.conns.values()):
            self._close(conn, None, "shutdown", [])
        self.sel.close()

    def _read_udp(
        self, lst: UdpListener, now_us: int, out: list[Record | Problem], drop: bool, budget: int
    ) -> int:
        """Read up to UDP_BATCH datagrams (about ``budget`` bytes) into ``out``, or read and
        drop them (counted) with ``drop``; return how many were read."""
        recvfrom = lst.sock.recvfrom
        screening = self.allow is not None or self.needle is not None
        seq = self._seq
        nbytes = n = nrec = 0
        for _ in range(UDP_BATCH):
            if nbytes >= budget and not drop:
                break
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. a queued ICMP error; the next datagram is still there
            n += 1
            if drop:
                self.receive_drops += 1
                self.drops_by[lst.name] += 1
                continue
            if screening:
                self._seq = seq  # early_reject numbers its problem from it
                rejected = self.screened_out(data, 0, -1, addr, "", out)
                seq = self._seq
                if rejected:
                    continue
            out.append(Record(data, now_us, seq))
            seq += 1
            nrec += 1
            nbytes += len(data)
        self.records += nrec
        self._seq = seq
        self.received += n
        self.enqueued_bytes += nbytes
        self.last_bytes = nbytes
        return n

    def _accept(self, lst: TcpListener, now_us: int, out: list[Record | Problem]) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: try again on the next wake-up
                self.connections["accept_failed"] += 1
                return
            peer = f"{'tls' if lst.tls else 'tcp'} {peer_text(addr)}"
            if self.allow is not None and not self.allow.allows(addr[0]):
                sock.close()
                self.connections["not_allowed"] += 1
                out.append(Problem(Reason.NOT_ALLOWED, self._next_seq(), f"{peer} connection"))
                continue
            if len(self.conns) >= self.options.max_connections and not self._displace(now_us, out):
                sock.close()
                self.connections["refused_max_connections"] += 1
                self.log_once("refused_max_connections", f"{peer}: refused, connection table full")
                continue
            sock.setblocking(False)
            if lst.tls is not None:
                try:
                    sock = lst.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError) as exc:
                    sock.close()
                    self.connections["tls_handshake_failed"] += 1
                    self.log_once("tls_handshake_failed", f"{peer}: tls_handshake_failed: {exc}")
                    continue
            conn = TcpConnection(sock, peer, now_us, tls=lst.tls is not None)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)
            self.connections["accepted"] += 1

    def _displace(self, now_us: int, out: list[Record | Problem]) -> bool:
        # Full table: close the connection that sent the least complete HEP for the longest
        # (never a message first, then the oldest last message), if quiet long enough.
        victim = min(self.conns.values(), key=lambda c: (c.messages > 0, c.last_us))
        if now_us - victim.last_us < DISPLACE_QUIET_US:
            return False
        self._close(victim, victim.truncate(), "displaced", out)
        return True

    def _read_conn(
        self, conn: TcpConnection, now_us: int, out: list[Record | Problem], budget: int
    ) -> int:
        was_handshaking = conn.handshaking
        res = conn.on_readable(now_us, budget)
        if res.messages:
            seq = self._seq
            nbytes = nrec = 0
            screening = self.needle is not None  # --allow was checked at accept()
            for data in res.messages:
                if screening:
                    self._seq = seq  # early_reject numbers its problem from it
                    rejected = self.screened_out(data, 0, -1, None, f"{conn.peer} message", out)
                    seq = self._seq
                    if rejected:
                        continue
                out.append(Record(data, now_us, seq))
                seq += 1
                nbytes += len(data)
                nrec += 1
            self._seq = seq
            self.received += len(res.messages)
            self.records += nrec
            self.enqueued_bytes += nbytes
        if res.closed is not None:
            self._close(conn, res.problem, res.closed, out)
            return res.nbytes
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if res.want_write else 0)
        if res.want_write or (was_handshaking and not conn.handshaking):
            self.sel.modify(conn.sock, events, conn)
        return res.nbytes

    def _close(
        self,
        conn: TcpConnection,
        problem: DecodeError | None,
        why: str,
        out: list[Record | Problem],
    ) -> None:
        if problem is not None:
            out.append(
                Problem(
                    problem.reason,
                    self._next_seq(),
                    f"{conn.peer} offset {problem.offset}: {problem.detail}",
                )
            )
        kind = why.split(" ", 1)[0]
        if kind == "desync":
            kind = f"{conn.scheme}_desync"
        self.connections[kind] += 1
        if kind not in ("eof", "shutdown"):
            detail = f" ({problem.reason.value})" if problem is not None else ""
            self.log_once(kind, f"{conn.peer}: {why}{detail}")
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.close()

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq


@dataclass(slots=True)
class _Final:
    """The receiving side's counters once it has stopped."""

    received: int = 0
    items: int = 0
    receive_drops: int = 0
    connections: Counter[str] = field(default_factory=Counter)
    drops_by: Counter[str] = field(default_factory=Counter)
    rejected: Counter[Reason] = field(default_factory=Counter)


class _ThreadDriver(threading.Thread):
    """Runs the receiver in a thread of this process; batches go through a deque."""

    def __init__(self, rx: _Receiver) -> None:
        super().__init__(name="hep2pcap-receive", daemon=True)
        self.rx = rx
        self.queue: deque[tuple[list[Record | Problem], int]] = deque()
        self.wake = threading.Event()
        self.halt = threading.Event()
        self.final_drain = True
        self.done = False
        self.error: BaseException | None = None
        self.dequeued_bytes = 0  # written by the pipeline thread only
        rx.backlog = lambda: rx.enqueued_bytes - self.dequeued_bytes

    def run(self) -> None:
        rx, queue, wake = self.rx, self.queue, self.wake
        try:
            rx.register()
            while not self.halt.is_set():
                before = rx.enqueued_bytes
                out = rx.step(SELECT_TIMEOUT_S)
                if out:
                    queue.append((out, rx.enqueued_bytes - before))
                    wake.set()
            if self.final_drain:
                for out in rx.drain_udp():
                    queue.append((out, 0))
        except BaseException as exc:  # reported by the pipeline thread
            self.error = exc
        finally:
            rx.shutdown()
            self.done = True
            wake.set()

    def batches(self, tick_s: float) -> Iterator[list[Record | Problem] | None]:
        """Batches as they come; ``None`` after ``tick_s`` without any."""
        queue, wake = self.queue, self.wake
        while True:
            try:
                batch, nbytes = queue.popleft()
            except IndexError:
                if self.done and not queue:
                    if self.error is not None:
                        raise Hep2PcapError(f"receiver failed: {self.error!r}") from self.error
                    return
                wake.clear()
                if not queue and not self.done:
                    wake.wait(tick_s)
                yield None
                continue
            self.dequeued_bytes += nbytes
            yield batch

    def request_stop(self, *, drain: bool) -> None:
        if not drain:
            self.final_drain = False
        self.halt.set()
        self.wake.set()

    def status(self) -> tuple[int, int, int]:
        rx = self.rx
        return rx.received, rx.enqueued_bytes - self.dequeued_bytes, len(rx.conns)

    def receive_drops(self) -> int:
        return self.rx.receive_drops

    def finish(self) -> _Final:
        self.request_stop(drain=False)
        if self.is_alive():
            self.join(JOIN_TIMEOUT_S)
        rx = self.rx
        return _Final(
            rx.received, rx.items, rx.receive_drops, rx.connections, rx.drops_by, rx.rejected
        )


#: Scheduling priority the receiver process asks for (works with CAP_SYS_NICE, else ignored).
RECEIVER_NICE = -10
# Shared counters of the receiver process: indexes into a RawArray of int64.
_RECEIVED, _ITEMS, _RECEIVE_DROPS, _BACKLOG, _CONNS = range(5)
#: One unit on the pipe: kind, length of what follows, receive time (records).
_UNIT = struct.Struct("<BIq")
_KIND_RECORD, _KIND_PROBLEM, _KIND_END, _KIND_LOG = 0, 1, 2, 3
#: Bytes packed before they are written to the pipe.
BATCH_BYTES = 256 * 1024
#: Linux fcntl to enlarge a pipe (F_SETPIPE_SZ); 1 MiB is the default unprivileged maximum.
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024
#: Bytes read from the pipe at once: also how much conversion runs between two ticks.
PIPE_READ = 1024 * 1024


class _Shared(Protocol):
    """The int64 RawArray both processes see."""

    def __getitem__(self, index: int, /) -> int: ...

    def __setitem__(self, index: int, value: int, /) -> None: ...


class _Ctl:
    """Selector marker for the receiver process's control pipe."""


class _Pipe:
    """Selector marker for the receiver process's data pipe (waiting to write)."""


class _ProcessDriver:
    """Runs the receiver in a child process (fork): receiving never waits for this one's GIL.

    Records travel through a pipe as ``_UNIT`` headers plus bytes (UDP datagrams are received
    straight into the outgoing buffer); the child keeps what the pipe cannot take yet (at
    most ``max_backlog_bytes``; beyond that UDP is dropped and counted, TCP is not read). A
    control pipe asks the child to stop, and ends it if this process dies. Shared counters
    feed the status line.
    """

    def __init__(self, rx: _Receiver) -> None:
        ctx = multiprocessing.get_context("fork")
        self.rx = rx
        self.shared: _Shared = ctx.RawArray("q", 5)
        self.data_r, data_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(data_w, F_SETPIPE_SZ, PIPE_SIZE)
        self.proc = ctx.Process(
            target=_child_main,
            args=(rx, data_w, ctl_r, (self.data_r, self.ctl_w), self.shared),
            name="hep2pcap-receive",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() with threads alive (the embedding program's):
            # the child only touches its own sockets and pipes, never a lock of theirs.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.proc.start()
        os.close(data_w)
        os.close(ctl_r)
        os.set_blocking(self.data_r, False)
        self.end: dict[str, dict[str, int]] = {}
        self.asked: bytes | None = None
        self._rest = b""
        self._seq = 0

    def batches(self, tick_s: float) -> Iterator[list[Record | Problem] | None]:
        """Batches as they come; ``None`` after ``tick_s`` without any."""
        fd = self.data_r
        unpack = _UNIT.unpack_from
        head = _UNIT.size
        while True:
            try:
                chunk = os.read(fd, PIPE_READ)
            except BlockingIOError:
                if not select.select([fd], [], [], tick_s)[0]:
                    yield None
                continue
            if not chunk:
                self.proc.join(JOIN_TIMEOUT_S)
                if self.proc.exitcode != 0:
                    raise Hep2PcapError(f"receiver process failed (exit {self.proc.exitcode})")
                return
            data = self._rest + chunk if self._rest else chunk
            size, pos, seq = len(data), 0, self._seq
            items: list[Record | Problem] = []
            while size - pos >= head:
                kind, n, ts_us = unpack(data, pos)
                end = pos + head + n
                if end > size:
                    break
                if kind == _KIND_RECORD:
                    items.append(Record(data[pos + head : end], ts_us, seq))
                    seq += 1
                elif kind == _KIND_PROBLEM:
                    reason, detail, read = pickle.loads(data[pos + head : end])
                    items.append(Problem(Reason(reason), seq, detail, read))
                    seq += 1
                elif kind == _KIND_LOG:
                    log.warning("%s", bytes(data[pos + head : end]).decode(errors="replace"))
                else:
                    self.end = pickle.loads(data[pos + head : end])
                pos = end
            self._rest = data[pos:]
            self._seq = seq
            if items:
                yield items

    def request_stop(self, *, drain: bool) -> None:
        # "d": stop receiving, hand over what was received; "q" (also after "d"): no more.
        word = b"d" if drain else b"q"
        if self.asked is None or (self.asked == b"d" and word == b"q"):
            self.asked = word
            with contextlib.suppress(OSError):
                os.write(self.ctl_w, word)

    def status(self) -> tuple[int, int, int]:
        sh = self.shared
        return sh[_RECEIVED], sh[_BACKLOG], sh[_CONNS]

    def receive_drops(self) -> int:
        return self.shared[_RECEIVE_DROPS]

    def finish(self) -> _Final:
        self.request_stop(drain=False)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        with contextlib.suppress(Hep2PcapError):
            for _ in self.batches(0.1):  # what is left is counted, not converted
                if time.monotonic() > deadline:
                    break
        self.proc.join(max(0.0, deadline - time.monotonic()))
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(JOIN_TIMEOUT_S)
        for fd in (self.data_r, self.ctl_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        sh = self.shared
        end = self.end
        return _Final(
            sh[_RECEIVED],
            sh[_ITEMS],
            sh[_RECEIVE_DROPS],
            Counter(end.get("connections", {})),
            Counter(end.get("drops_by", {})),
            Counter({Reason(k): v for k, v in end.get("rejected", {}).items()}),
        )


class _Packer:
    """Child side: packs units into a buffer and writes it to the pipe without blocking."""

    def __init__(self, rx: _Receiver, fd: int) -> None:
        self.rx = rx
        self.fd = fd
        self.buf = bytearray(BATCH_BYTES + _UNIT.size + MAX_DATAGRAM)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.pending: deque[memoryview] = deque()
        self.held = 0  # bytes packed or pending, not yet in the pipe

    def read_udp(
        self, lst: UdpListener, now_us: int, out: list[Record | Problem], drop: bool, budget: int
    ) -> int:
        """Like ``_Receiver._read_udp``, but each datagram lands in the outgoing buffer."""
        rx = self.rx
        recv_into = lst.sock.recvfrom_into
        pack_into = _UNIT.pack_into
        view, buf, head = self.view, self.buf, _UNIT.size
        screening = rx.allow is not None or rx.needle is not None
        pos = self.pos
        n = nrec = nbytes = 0
        for _ in range(UDP_BATCH):
            if nbytes >= budget and not drop:
                break
            if pos >= BATCH_BYTES:
                self.held += pos - self.pos
                self.pos = pos
                self.flush()
                pos = 0
            try:
                size, addr = recv_into(view[pos + head :], MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. a queued ICMP error; the next datagram is still there
            n += 1
            if drop:
                rx.receive_drops += 1
                rx.drops_by[lst.name] += 1
                continue
            if screening and rx.screened_out(buf, pos + head, pos + head + size, addr, "", out):
                continue
            pack_into(buf, pos, _KIND_RECORD, size, now_us)
            pos += head + size
            nrec += 1
            nbytes += size
        self.held += pos - self.pos
        self.pos = pos
        rx.received += n
        rx.records += nrec
        rx.items += nrec
        rx.enqueued_bytes += nbytes
        rx.last_bytes = nbytes
        return n

    def add(self, items: list[Record | Problem]) -> None:
        """Pack records and problems from the generic path (TCP, TLS, refusals)."""
        for item in items:
            if type(item) is Record:
                self._unit(_KIND_RECORD, item.data, item.ts_us if item.ts_us is not None else 0)
            else:
                assert type(item) is Problem
                self._unit(
                    _KIND_PROBLEM, pickle.dumps((item.reason.value, item.detail, item.read)), 0
                )

    def add_log(self, text: str) -> None:
        """A line for the parent to log (connection failures)."""
        self._unit(_KIND_LOG, text.encode(), 0)

    def add_end(self, rx: _Receiver) -> None:
        """The last unit: the receiver's counters."""
        end = {
            "connections": dict(rx.connections),
            "drops_by": dict(rx.drops_by),
            "rejected": {r.value: n for r, n in rx.rejected.items()},
        }
        self._unit(_KIND_END, pickle.dumps(end), 0)

    def _unit(self, kind: int, data: bytes, value: int) -> None:
        if self.pos + _UNIT.size + len(data) > len(self.buf):
            self.flush()
        _UNIT.pack_into(self.buf, self.pos, kind, len(data), value)
        start = self.pos + _UNIT.size
        self.buf[start : start + len(data)] = data
        self.pos = start + len(data)
        self.held += _UNIT.size + len(data)

    def flush(self) -> bool:
        """Move the buffer on (to the pipe, or to ``pending``); True when nothing waits."""
        if self.pos:
            chunk = self.view[: self.pos]
            if not self.pending:
                try:
                    n = os.write(self.fd, chunk)
                except BlockingIOError:
                    n = 0
                self.held -= n
                chunk = chunk[n:]
            if chunk:
                self.pending.append(memoryview(bytes(chunk)))
            self.pos = 0
        return self.write_pending()

    def write_pending(self) -> bool:
        pending = self.pending
        while pending:
            try:
                n = os.write(self.fd, pending[0])
            except BlockingIOError:
                return False
            self.held -= n
            if n == len(pending[0]):
                pending.popleft()
            else:
                pending[0] = pending[0][n:]
        return True

    def discard(self) -> None:
        self.pending.clear()
        self.pos = 0
        self.held = 0


def _child_main(
    rx: _Receiver, data_w: int, ctl_r: int, parent_fds: tuple[int, int], shared: _Shared
) -> None:
    """The receiver process: receive, pack, write to the pipe; nothing else."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop
    for fd in parent_fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # receiving is urgent, converting can lag: when allowed
        os.setpriority(os.PRIO_PROCESS, 0, RECEIVER_NICE)
    keep = {data_w, ctl_r, 2} | {u.sock.fileno() for u in rx.udp}
    keep |= {t.sock.fileno() for t in rx.tcp}
    _close_fds_except(keep)
    os.set_blocking(data_w, False)
    packer = _Packer(rx, data_w)
    rx.read_udp = packer.read_udp
    rx.backlog = lambda: packer.held
    rx.note = packer.add_log

    def publish() -> None:
        shared[_RECEIVED] = rx.received
        shared[_ITEMS] = rx.items
        shared[_RECEIVE_DROPS] = rx.receive_drops
        shared[_BACKLOG] = packer.held
        shared[_CONNS] = len(rx.conns)

    drain = False
    try:
        rx.register()
        rx.sel.register(ctl_r, selectors.EVENT_READ, _Ctl())
        waiting_to_write = False
        while True:
            out = rx.step(SELECT_TIMEOUT_S)
            if out:
                packer.add(out)
            if rx.woke and any(type(obj) is _Ctl for obj, _ in rx.woke):
                word = os.read(ctl_r, 16)  # b"" when the parent died
                drain = word.startswith(b"d") and b"q" not in word
                break
            blocked = not packer.flush()
            if blocked != waiting_to_write:
                waiting_to_write = blocked
                if blocked:
                    rx.sel.register(data_w, selectors.EVENT_WRITE, _Pipe())
                else:
                    rx.sel.unregister(data_w)
            publish()
        if drain:
            for out in rx.drain_udp():
                packer.add(out)
        else:
            packer.discard()  # not wanted any more: counted as not converted
        rx.shutdown()
        publish()
        # Hand over what is packed, until the parent says it wants no more ("q").
        while drain and not packer.flush():
            ready = select.select([ctl_r], [data_w], [], 1.0)[0]
            if ctl_r in ready:
                os.read(ctl_r, 16)
                packer.discard()
        packer.add_end(rx)
        os.set_blocking(data_w, True)
        packer.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone
    finally:
        publish()
        os.close(data_w)


def _close_fds_except(keep: set[int]) -> None:
    # The child must not hold the parent's output files (rotated, deleted) or stdout.
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


class LiveSource:
    """Live HEP from sockets, as a pipeline :class:`~hep2pcap.items.Source`.

    ``open()`` binds every endpoint (so the caller can print ``addresses`` before the first
    message); iterating starts the receiver (a child process by default, so receiving never
    waits for conversion; a thread where fork is not available) and ends on ``stop()``,
    after ``count`` accepted messages, or after ``duration_s``. ``Record.pos`` numbers what
    was received.

    Args:
        options: where and how to listen.
        stats: the run's counters (read for ``count`` and ``--forward``, filled at the end).
        count: stop once this many messages were accepted for writing.
        duration_s: stop after this many seconds.
        forward: relay for accepted messages.
        on_tick: called with ``time.monotonic()`` at every tick (status lines).
    """

    name = "listen"
    unit = "item"

    def __init__(
        self,
        options: LiveOptions,
        stats: Stats,
        *,
        count: int | None = None,
        duration_s: float | None = None,
        forward: Forwarder | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        self.options = options
        self.stats = stats
        self.count = count
        self.duration_s = duration_s
        self.forward = forward
        self.on_tick = on_tick
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpListener] = []
        self._driver: _ThreadDriver | _ProcessDriver | None = None
        self._items_seen = 0
        self._stopping = False
        self._stop_now = False
        self._closed = False

    @property
    def addresses(self) -> list[Endpoint]:
        """The bound endpoints, ports resolved."""
        return [u.address for u in self.udp] + [t.address for t in self.tcp]

    def open(self) -> None:
        """Bind every endpoint.

        Raises:
            Hep2PcapError: an endpoint cannot be bound (everything bound so far is closed).
        """
        try:
            for ep in self.options.endpoints:
                if ep.scheme == "udp":
                    self.udp.append(UdpListener(ep, self.options.rcvbuf))
                else:
                    tls = self.options.tls if ep.scheme == "tls" else None
                    if ep.scheme == "tls" and tls is None:
                        raise Hep2PcapError(f"{ep}: tls: needs --tls-cert and --tls-key")
                    self.tcp.append(TcpListener(ep, tls))
        except Hep2PcapError:
            self._close_sockets()
            raise

    def stop(self, *, now: bool = False) -> None:
        """End the capture: stop receiving, write what was received (or not, with ``now``).

        Safe to call from a signal handler: it only sets flags.
        """
        self._stopping = True
        if now:
            self._stop_now = True

    def _status(self) -> tuple[int, int, int]:
        d = self._driver
        return d.status() if d is not None else (0, 0, 0)

    @property
    def received(self) -> int:
        """Datagrams and stream messages received so far."""
        return self._status()[0]

    @property
    def backlog_bytes(self) -> int:
        """Received bytes not yet handed to the pipeline (as far as is known)."""
        return self._status()[1]

    @property
    def open_connections(self) -> int:
        """TCP/TLS connections open now."""
        return self._status()[2]

    def kernel_drops(self) -> int | None:
        """Sum of the UDP sockets' kernel drop counters (``None`` if none is readable)."""
        values = [d for d in (u.kernel_drops() for u in self.udp) if d is not None]
        return sum(values) if values else None

    def losses(self) -> tuple[int | None, int]:
        """(kernel drops, received but not converted) so far: live while capturing, the
        final counts once closed (for the Interface Statistics Blocks)."""
        if self._closed:
            return self.stats.kernel_drops, self.stats.receive_drops
        d = self._driver
        return self.kernel_drops(), d.receive_drops() if d is not None else 0

    def __iter__(self) -> Iterator[Record | Problem | Tick]:
        if not self.udp and not self.tcp:
            self.open()
        rx = _Receiver(self.options, self.udp, self.tcp)
        driver: _ThreadDriver | _ProcessDriver
        if self.options.receiver == "process" and hasattr(os, "fork"):
            driver = _ProcessDriver(rx)
        else:
            driver = _ThreadDriver(rx)
            driver.start()
        self._driver = driver
        try:
            yield from self._iter(driver)
        finally:
            self.close()

    def _iter(self, driver: _ThreadDriver | _ProcessDriver) -> Iterator[Record | Problem | Tick]:
        tick_s = self.options.tick_s
        now = time.monotonic()
        next_tick = now + tick_s
        deadline = now + self.duration_s if self.duration_s is not None else None
        stats, count, forward = self.stats, self.count, self.forward
        careful = count is not None or forward is not None
        stop_by: float | None = None  # after a stop request: convert until then, no longer
        monotonic = time.monotonic
        for batch in driver.batches(tick_s):
            if self._stop_now:
                return
            if self._stopping:
                if stop_by is None:
                    stop_by = monotonic() + STOP_DRAIN_S
                    driver.request_stop(drain=True)  # then batches end once all is in
                elif monotonic() > stop_by:
                    return  # the rest is counted as not converted
            if batch is not None:
                self._items_seen += len(batch)
                if not careful and not self._stopping:
                    yield from batch
                else:
                    for i, item in enumerate(batch):
                        if self._stopping and (
                            self._stop_now or (stop_by is not None and monotonic() > stop_by)
                        ):
                            self._items_seen -= len(batch) - i
                            return
                        if type(item) is not Record:
                            yield item
                            continue
                        dropped = stats.dropped_total
                        yield item
                        # Resumed: the pipeline has finished with ``item``.
                        if forward is not None and stats.dropped_total == dropped:
                            forward.put(item.data)
                        if (count is not None and _accepted(stats) >= count) or self._stop_now:
                            self._items_seen -= len(batch) - i - 1
                            return
            now = monotonic()
            if now >= next_tick:
                next_tick = now + tick_s
                if deadline is not None and now >= deadline:
                    self.stop()
                if self.on_tick is not None:
                    self.on_tick(now)
                yield Tick(_now_us())

    def close(self) -> None:
        """Stop the receiver, close every socket, put the live counters into ``stats``."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        stats = self.stats
        if self._driver is not None:
            final = self._driver.finish()
            stats.connections.update(final.connections)
            # Received but never handed to the pipeline (stop(now=True), -c N reached, the
            # stop's time was up).
            unseen = max(0, final.items - self._items_seen)
            stats.receive_drops += final.receive_drops + unseen
            stats.receive_drops_by.update(final.drops_by)
            if unseen:
                stats.receive_drops_by["at stop"] += unseen
            # Rejected before decoding, past the first few sent on as problems.
            for reason, n in final.rejected.items():
                extra = max(0, n - EARLY_PROBLEMS)
                if reason is Reason.NOT_ALLOWED:
                    stats.input_problems[reason] += extra
                else:
                    stats.read += extra
                    stats.dropped[reason] += extra
        self._close_sockets()
        stats.kernel_drops = self.kernel_drops() if self.udp else None
        if self.forward is not None:
            self.forward.close()
            stats.forwarded = self.forward.sent
            stats.forward_drops = self.forward.drops

    def _close_sockets(self) -> None:
        for u in self.udp:
            u.close()
        for t in self.tcp:
            t.close()


def _accepted(stats: Stats) -> int:
    # Read minus rejected: what went into the reorder window (and will be written).
    return stats.read - stats.skipped_total - stats.dropped_total
