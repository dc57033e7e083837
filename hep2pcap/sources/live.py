"""The live source: UDP, TCP and TLS listeners multiplexed into one pipeline source.

Owns: a receiver thread that only receives (recv, frame TCP, check --allow, stamp the
receive time) and hands batches of :class:`Record` / :class:`Problem` to the pipeline's
thread through a deque; the pipeline side (``LiveSource.__iter__``) yields them plus a
:class:`Tick` at least every ``tick_s`` so the reorder window drains and the output is
flushed by wall time. Also the ``--forward`` relay, which never blocks the capture.

Must never: decode HEP (that is ``pipeline.iter_messages``), let the receiver wait on
conversion or disk, or grow without bound: the hand-over queue is capped in bytes (UDP beyond
it is dropped and counted, TCP is simply not read until there is room).
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import DecodeError, Hep2PcapError, Reason
from ..pipeline import Problem, Record, Tick
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
        max_backlog_bytes: received bytes waiting for conversion, at most.
    """

    endpoints: tuple[Endpoint, ...]
    rcvbuf: int = 32 * 1024 * 1024
    tls: ssl.SSLContext | None = None
    allow: tuple[IpNetwork, ...] | None = None
    tcp_idle_timeout_s: float = 60.0
    max_connections: int = 1024
    tick_s: float = 0.25
    max_backlog_bytes: int = 256 * 1024 * 1024


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
    """

    def __init__(self, endpoint: Endpoint, max_queue: int = 20_000, timeout_s: float = 2.0) -> None:
        self.endpoint = endpoint
        self.sent = 0
        self.queue_drops = 0  # written by the caller's thread only
        self.send_drops = 0  # written by the forwarder thread only
        self._max = max_queue
        self._timeout_s = timeout_s
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="hep2pcap-forward", daemon=True)
        self._thread.start()

    @property
    def drops(self) -> int:
        """Messages not relayed."""
        return self.queue_drops + self.send_drops

    def put(self, data: bytes) -> None:
        """Queue one message for the upstream; drop it (counted) when the queue is full."""
        if len(self._queue) >= self._max:
            self.queue_drops += 1
            return
        self._queue.append(data)
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout_s``), then stop; the rest is dropped."""
        self._stop = True
        self._wake.set()
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


class _Receiver(threading.Thread):
    """The receive path: selector over every socket, batches into ``queue``."""

    def __init__(
        self,
        options: LiveOptions,
        udp: list[UdpListener],
        tcp: list[TcpListener],
    ) -> None:
        super().__init__(name="hep2pcap-receive", daemon=True)
        self.options = options
        self.udp = udp
        self.tcp = tcp
        self.allow = AllowList(options.allow) if options.allow is not None else None
        self.queue: deque[list[Record | Problem]] = deque()
        self.wake = threading.Event()
        self.halt = threading.Event()
        self.done = False
        self.final_drain = True  # at stop, read what the UDP sockets still hold
        self.error: BaseException | None = None
        # Written by this thread only; read by the pipeline thread for status lines.
        self.received = 0
        self.enqueued_bytes = 0
        self.receive_drops = 0
        self.connections: Counter[str] = Counter()
        self.conns: dict[int, TcpConnection] = {}
        # Written by the pipeline thread only.
        self.dequeued_bytes = 0
        self._seq = 0
        self._sel = selectors.DefaultSelector()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the pipeline thread
            self.error = exc
        finally:
            for conn in list(self.conns.values()):
                self._close(conn, None, "shutdown", [])
            self._sel.close()
            self.done = True
            self.wake.set()

    def _loop(self) -> None:
        sel = self._sel
        for u in self.udp:
            sel.register(u.sock, selectors.EVENT_READ, u)
        for t in self.tcp:
            sel.register(t.sock, selectors.EVENT_READ, t)
        idle_us = round(self.options.tcp_idle_timeout_s * 1_000_000)
        next_idle_check = _now_us() + IDLE_CHECK_US
        max_backlog = self.options.max_backlog_bytes
        queue, wake, halt = self.queue, self.wake, self.halt
        while not halt.is_set():
            events = sel.select(SELECT_TIMEOUT_S)
            now_us = _now_us()
            out: list[Record | Problem] = []
            full = self.enqueued_bytes - self.dequeued_bytes > max_backlog
            throttled = False
            for key, _mask in events:
                obj = key.data
                if type(obj) is UdpListener:
                    self._read_udp(obj.sock, now_us, out, drop=full)
                elif type(obj) is TcpConnection:
                    if full and not obj.handshaking:
                        throttled = True
                        continue
                    self._read_conn(obj, now_us, out)
                else:
                    assert type(obj) is TcpListener
                    self._accept(obj, now_us, out)
            if now_us >= next_idle_check:
                next_idle_check = now_us + IDLE_CHECK_US
                for conn in list(self.conns.values()):
                    if now_us - conn.last_us > idle_us:
                        self._close(conn, conn.truncate(), "idle_timeout", out)
            if out:
                queue.append(out)
                wake.set()
            if throttled:
                time.sleep(0.002)  # the pipeline is behind: leave TCP in the kernel a moment
        # Stopping: what already arrived is received (and written), not lost with the socket.
        now_us = _now_us()
        for u in self.udp if self.final_drain else ():
            for _ in range(FINAL_DRAIN_BATCHES):
                out = []
                self._read_udp(u.sock, now_us, out, drop=False)
                if not out:
                    break
                queue.append(out)
        wake.set()

    def _read_udp(
        self, sock: socket.socket, now_us: int, out: list[Record | Problem], *, drop: bool
    ) -> None:
        recvfrom = sock.recvfrom
        allow = self.allow
        seq = self._seq
        nbytes = 0
        n = 0
        for _ in range(UDP_BATCH):
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. a queued ICMP error; the next datagram is still there
            n += 1
            if drop:
                self.receive_drops += 1
                continue
            if allow is not None and not allow.allows(addr[0]):
                out.append(Problem(Reason.NOT_ALLOWED, seq, f"udp datagram from {peer_text(addr)}"))
                seq += 1
                continue
            out.append(Record(data, now_us, seq))
            seq += 1
            nbytes += len(data)
        self._seq = seq
        self.received += n
        self.enqueued_bytes += nbytes

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
            if len(self.conns) >= self.options.max_connections:
                sock.close()
                self.connections["refused_max_connections"] += 1
                continue
            sock.setblocking(False)
            if lst.tls is not None:
                try:
                    sock = lst.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError):
                    sock.close()
                    self.connections["tls_handshake_failed"] += 1
                    continue
            conn = TcpConnection(sock, peer, now_us, tls=lst.tls is not None)
            self.conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self.connections["accepted"] += 1

    def _read_conn(self, conn: TcpConnection, now_us: int, out: list[Record | Problem]) -> None:
        was_handshaking = conn.handshaking
        res = conn.on_readable(now_us)
        if res.messages:
            seq = self._seq
            nbytes = 0
            for data in res.messages:
                out.append(Record(data, now_us, seq))
                seq += 1
                nbytes += len(data)
            self._seq = seq
            self.received += len(res.messages)
            self.enqueued_bytes += nbytes
        if res.closed is not None:
            self._close(conn, res.problem, res.closed, out)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if res.want_write else 0)
        if res.want_write or (was_handshaking and not conn.handshaking):
            self._sel.modify(conn.sock, events, conn)

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
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.close()

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq


class LiveSource:
    """Live HEP from sockets, as a pipeline :class:`~hep2pcap.pipeline.Source`.

    ``open()`` binds every endpoint (so the caller can print ``addresses`` before the first
    message); iterating starts the receiver thread and ends on ``stop()``, after ``count``
    accepted messages, or after ``duration_s``. ``Record.pos`` numbers what was received.

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
        self._receiver: _Receiver | None = None
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
            InputError: an endpoint cannot be bound (everything bound so far is closed).
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
        receiver = self._receiver
        if receiver is not None:
            if now:
                receiver.final_drain = False
            receiver.halt.set()
            receiver.wake.set()

    @property
    def backlog_bytes(self) -> int:
        """Received bytes not yet handed to the pipeline."""
        r = self._receiver
        return r.enqueued_bytes - r.dequeued_bytes if r is not None else 0

    @property
    def received(self) -> int:
        """Datagrams and stream messages received so far."""
        r = self._receiver
        return r.received if r is not None else 0

    @property
    def open_connections(self) -> int:
        """TCP/TLS connections open now."""
        r = self._receiver
        return len(r.conns) if r is not None else 0

    def kernel_drops(self) -> int | None:
        """Sum of the UDP sockets' kernel drop counters (``None`` if none is readable)."""
        values = [d for d in (u.kernel_drops() for u in self.udp) if d is not None]
        return sum(values) if values else None

    def __iter__(self) -> Iterator[Record | Problem | Tick]:
        if not self.udp and not self.tcp:
            self.open()
        receiver = self._receiver = _Receiver(self.options, self.udp, self.tcp)
        if self._stopping:
            receiver.halt.set()
        receiver.start()
        try:
            yield from self._iter(receiver)
        finally:
            self.close()

    def _iter(self, receiver: _Receiver) -> Iterator[Record | Problem | Tick]:
        queue, wake = receiver.queue, receiver.wake
        popleft = queue.popleft
        tick_s = self.options.tick_s
        now = time.monotonic()
        next_tick = now + tick_s
        deadline = now + self.duration_s if self.duration_s is not None else None
        stats, count, forward = self.stats, self.count, self.forward
        careful = count is not None or forward is not None
        while not self._stop_now:
            try:
                batch = popleft()
            except IndexError:
                if receiver.done:
                    if receiver.error is not None:
                        raise Hep2PcapError(f"receiver failed: {receiver.error!r}") from (
                            receiver.error
                        )
                    return
                wake.clear()
                if not queue and not receiver.done:
                    wake.wait(tick_s)
            else:
                nbytes = 0
                if not careful:
                    for item in batch:
                        if type(item) is Record:
                            nbytes += len(item.data)
                        yield item
                else:
                    for item in batch:
                        if type(item) is not Record:
                            yield item
                            continue
                        nbytes += len(item.data)
                        dropped = stats.dropped_total
                        yield item
                        # Resumed: the pipeline has finished with ``item``.
                        if forward is not None and stats.dropped_total == dropped:
                            forward.put(item.data)
                        if count is not None and _accepted(stats) >= count:
                            receiver.dequeued_bytes += nbytes
                            receiver.final_drain = False
                            return
                        if self._stop_now:
                            break
                receiver.dequeued_bytes += nbytes
            now = time.monotonic()
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
        receiver = self._receiver
        stats = self.stats
        if receiver is not None:
            receiver.join(JOIN_TIMEOUT_S)
            stats.connections.update(receiver.connections)
            # Received but never handed to the pipeline (stop(now=True), -c N reached).
            left = sum(1 for batch in receiver.queue for item in batch if type(item) is Record)
            stats.receive_drops += receiver.receive_drops + left
            receiver.queue.clear()
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
