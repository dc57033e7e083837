"""hep2pcap listen: real sockets on loopback (port 0, read back), in process and as a CLI.

Every wait polls with a deadline; every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hepbuild import whole_blocks
from public_captures import public_capture
from test_rotate import read_file, read_pcapng

from hep2pcap.errors import Reason
from hep2pcap.hep import HepMessage, encode
from hep2pcap.pcapng import PcapngWriter
from hep2pcap.pipeline import Options, convert
from hep2pcap.sources.live import Forwarder, LiveOptions, LiveSource, _ThreadDriver, parse_allow
from hep2pcap.sources.tcp import make_server_context
from hep2pcap.sources.udp import Endpoint, UdpListener, parse_endpoint, read_kernel_drops
from hep2pcap.stats import Stats

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 10.0


# --- helpers ------------------------------------------------------------------------------


def wait_until(cond: Callable[[], object], timeout_s: float = TIMEOUT_S, what: str = "") -> None:
    """Poll ``cond`` until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or cond}")
        time.sleep(0.01)


def sip(n: int, tag: str = "") -> bytes:
    return (
        f"OPTIONS sip:bob@example.com SIP/2.0\r\nCall-ID: call-{tag}{n}@test\r\n"
        f"CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def hep(
    n: int,
    *,
    version: int = 3,
    six: bool = False,
    auth: bytes | None = None,
    proto: int = 17,
    tag: str = "",
) -> bytes:
    src, dst = (bytes(15) + b"\x01", bytes(15) + b"\x02") if six else (b"\n\0\0\x01", b"\n\0\0\x02")
    return encode(
        HepMessage(
            version=version,
            ip_proto=proto,
            src_ip=src,
            dst_ip=dst,
            src_port=5060,
            dst_port=5080,
            ts_us=time.time_ns() // 1000,
            payload=sip(n, tag),
            capture_id=2001 if version != 1 else None,
            auth_key=auth,
        )
    )


def call_ids(frames: list[bytes]) -> list[str]:
    out = []
    for f in frames:
        start = f.find(b"Call-ID: ")
        assert start >= 0, f"no SIP in frame {f[:60]!r}"
        out.append(f[start + 9 : f.find(b"\r\n", start)].decode())
    return out


def udp_send(ep: Endpoint, *datagrams: bytes) -> None:
    with socket.socket(ep.family, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, (ep.host, ep.port))


def tcp_connect(ep: Endpoint) -> socket.socket:
    s = socket.create_connection((ep.host, ep.port), timeout=TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def wait_closed_by_peer(s: socket.socket) -> None:
    """The listener closed the connection: recv gives EOF (or a reset)."""
    s.settimeout(TIMEOUT_S)
    with contextlib.suppress(ConnectionResetError):
        assert s.recv(1) == b""


class Live:
    """LiveSource + pipeline.convert in a thread, writing pcapng into memory."""

    def __init__(
        self,
        *urls: str,
        options: Options | None = None,
        count: int | None = None,
        forward: Forwarder | None = None,
        **live: object,
    ) -> None:
        self.stats = Stats()
        self.opts = LiveOptions(
            endpoints=tuple(parse_endpoint(u) for u in urls),
            tick_s=0.05,
            **live,  # type: ignore[arg-type]
        )
        self.source = LiveSource(self.opts, self.stats, count=count, forward=forward)
        self.source.open()
        self.buf = _Sink()
        self.writer = PcapngWriter(self.buf, 1)  # type: ignore[arg-type]
        options = options if options is not None else Options(window_us=0)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(options,), daemon=True)
        self.thread.start()

    def _run(self, options: Options) -> None:
        try:
            convert([self.source], self.writer, options, self.stats)
        except BaseException as exc:
            self.error = exc

    def ep(self, scheme: str = "udp") -> Endpoint:
        return next(a for a in self.source.addresses if a.scheme == scheme)

    def frames(self) -> list[bytes]:
        packets, _ = read_pcapng(self.buf.snapshot())
        return [p[2] for p in packets]

    def wait_written(self, n: int) -> list[bytes]:
        wait_until(lambda: self.stats.written >= n, what=f"{n} written")
        wait_until(lambda: len(self.frames()) >= n, what=f"{n} frames flushed")
        return self.frames()

    def pending_in_thread_receiver(self) -> int | None:
        """Bytes held by deframers (thread receiver only; ``None`` for the process one)."""
        d = self.source._driver
        if not isinstance(d, _ThreadDriver):
            return None
        return sum(c.deframer.pending for c in list(d.rx.conns.values()))

    def stop(self) -> Stats:
        self.source.stop()
        self.thread.join(TIMEOUT_S)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.stats


class _Sink:
    """A thread-safe in-memory binary file."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._lock = threading.Lock()

    def write(self, b: bytes) -> int:
        with self._lock:
            self._parts.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def snapshot(self) -> bytes:
        with self._lock:
            return b"".join(self._parts)


@pytest.fixture(params=["process", "thread"])
def live(request: pytest.FixtureRequest) -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(*urls: str, **kw: object) -> Live:
        lv = Live(*urls, receiver=request.param, **kw)  # type: ignore[arg-type]
        made.append(lv)
        return lv

    yield make
    for lv in made:
        lv.source.stop(now=True)
        lv.thread.join(TIMEOUT_S)


# --- UDP ----------------------------------------------------------------------------------


def test_udp_v1_v2_v3_in_one_run(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0")
    ep = lv.ep()
    assert ep.port != 0
    udp_send(ep, hep(1, version=1), hep(2, version=2), hep(3, version=3), b"not hep at all")
    frames = lv.wait_written(3)
    stats = lv.stop()
    assert sorted(call_ids(frames)) == ["call-1@test", "call-2@test", "call-3@test"]
    assert stats.read == 4
    assert stats.dropped == {Reason.UNKNOWN_VERSION: 1}
    assert stats.kernel_drops == 0
    assert stats.receive_drops == 0


def test_udp_ipv6(live: Callable[..., Live]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        lv = live("udp:[::1]:0")
    except Exception as exc:  # no ::1 in this container
        pytest.skip(f"cannot bind [::1]: {exc}")
    ep = lv.ep()
    assert str(ep).startswith("udp:[::1]:")
    udp_send(ep, hep(1, six=True), hep(2))
    frames = lv.wait_written(2)
    lv.stop()
    assert sorted(call_ids(frames)) == ["call-1@test", "call-2@test"]
    assert any(f[12:14] == b"\x86\xdd" for f in frames)  # an IPv6 frame (Ethernet type)


def test_udp_and_tcp_on_the_same_port_number_and_more_listeners(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "udp:127.0.0.1:0")
    eps = lv.source.addresses
    assert [e.scheme for e in eps] == ["udp", "udp", "tcp"]
    udp_send(eps[0], hep(1))
    udp_send(eps[1], hep(2))
    with tcp_connect(eps[2]) as s:
        s.sendall(hep(3, proto=6))
    frames = lv.wait_written(3)
    lv.stop()
    assert sorted(call_ids(frames)) == ["call-1@test", "call-2@test", "call-3@test"]


def test_bad_datagrams_are_counted_never_fatal(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0")
    ep = lv.ep()
    udp_send(ep, b"", b"HEP3\x00\x02", b"\x02\x10", b"HEP3" + bytes(100), hep(1))
    lv.wait_written(1)
    stats = lv.stop()
    assert stats.read == 5
    assert stats.dropped_total == 4


def test_full_backlog_drops_udp_and_leaves_tcp_in_the_kernel() -> None:
    from hep2pcap.sources.live import _Receiver
    from hep2pcap.sources.tcp import TcpListener

    opts = LiveOptions(endpoints=(), max_backlog_bytes=1000)
    udp = UdpListener(parse_endpoint("udp:127.0.0.1:0"), rcvbuf=1 << 20)
    tcp = TcpListener(parse_endpoint("tcp:127.0.0.1:0"))
    rx = _Receiver(opts, [udp], [tcp])
    try:
        rx.register()
        with tcp_connect(tcp.address) as client:
            wait_until(lambda: rx.step(0.01) == [] and rx.conns, what="accepted")
            rx.backlog = lambda: 1001  # the pipeline is behind
            udp_send(udp.address, hep(1), hep(2))
            client.sendall(hep(3, proto=6))
            wait_until(lambda: rx.step(0.01) == [] and rx.receive_drops == 2, what="drops")
            rx.backlog = lambda: 0  # caught up: the TCP message was waiting in the kernel
            got: list[object] = []

            def step() -> bool:
                got.extend(rx.step(0.01))
                return bool(got)

            wait_until(step, what="the TCP message")
        assert [type(x).__name__ for x in got] == ["Record"]
        assert rx.received == 3
    finally:
        rx.shutdown()
        udp.close()
        tcp.close()


def test_kernel_drop_counter_is_read_from_proc() -> None:
    lst = UdpListener(parse_endpoint("udp:127.0.0.1:0"), rcvbuf=4096)
    try:
        assert lst.kernel_drops() == 0
        # A tiny buffer nobody reads: the kernel drops most of these.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):
                s.sendto(bytes(1000), ("127.0.0.1", lst.address.port))
        wait_until(lambda: (lst.kernel_drops() or 0) > 0, what="kernel drops")
    finally:
        lst.close()
    assert (lst.kernel_drops() or 0) > 0  # the last value is kept after close
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert read_kernel_drops(s) is None  # not a UDP socket


def test_rcvbuf_is_read_back() -> None:
    lst = UdpListener(parse_endpoint("udp:127.0.0.1:0"), rcvbuf=1 << 20)
    try:
        assert lst.rcvbuf > 0
        assert lst.rcvbuf_requested == 1 << 20
    finally:
        lst.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp:127.0.0.1:9060", Endpoint("udp", "127.0.0.1", 9060)),
        ("tcp:[::1]:0", Endpoint("tcp", "::1", 0)),
        ("tls://0.0.0.0:9061", Endpoint("tls", "0.0.0.0", 9061)),
        ("udp:localhost:1", Endpoint("udp", "127.0.0.1", 1)),
    ],
)
def test_parse_endpoint(url: str, expected: Endpoint) -> None:
    assert parse_endpoint(url) == expected
    assert parse_endpoint(str(expected)) == expected


@pytest.mark.parametrize(
    "url", ["udp:1.2.3.4", "sctp:1.2.3.4:1", "udp:::1:9060", "udp:example.com:1", "tcp:[::1]:x"]
)
def test_parse_endpoint_rejects(url: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_endpoint(url)


# --- TCP ----------------------------------------------------------------------------------


def test_tcp_messages_packed_into_and_split_across_segments(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0")
    ep = lv.ep("tcp")
    packed = b"".join(hep(i, proto=6) for i in range(3))
    split = hep(3, proto=6)
    with tcp_connect(ep) as s:
        s.sendall(packed)  # three messages in one segment
        lv.wait_written(3)
        s.sendall(split[:10])
        if lv.pending_in_thread_receiver() is not None:
            wait_until(lambda: lv.pending_in_thread_receiver() == 10, what="the first part read")
        s.sendall(split[10:-1])
        s.sendall(split[-1:])
        frames = lv.wait_written(4)
    stats = lv.stop()
    assert call_ids(frames) == [f"call-{i}@test" for i in range(4)]
    assert stats.connections["accepted"] == 1
    assert stats.connections["eof"] == 1
    assert not stats.input_problems


def test_tcp_garbage_closes_that_connection_only(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0")
    ep = lv.ep("tcp")
    with tcp_connect(ep) as bad, tcp_connect(ep) as good:
        bad.sendall(hep(1, proto=6) + b"GET / HTTP/1.1\r\n\r\n")
        wait_closed_by_peer(bad)
        good.sendall(hep(2, proto=6))
        frames = lv.wait_written(2)
    stats = lv.stop()
    assert sorted(call_ids(frames)) == ["call-1@test", "call-2@test"]
    assert stats.connections["tcp_desync"] == 1
    assert stats.input_problems == {Reason.BAD_MAGIC: 1}


def test_tcp_v2_stream_is_framed_by_its_sip(live: Callable[..., Live]) -> None:
    # Kamailio 5.6 siptrace (hep_version 2, ;transport=tcp) streams HEPv2 over TCP; each
    # message ends where its SIP message ends (issue 11).
    lv = live("tcp:127.0.0.1:0")
    with tcp_connect(lv.ep("tcp")) as s:
        s.sendall(hep(1, version=2) + hep(2, version=2))
        frames = lv.wait_written(2)
    stats = lv.stop()
    assert sorted(call_ids(frames)) == ["call-1@test", "call-2@test"]
    assert stats.input_problems == {}


def test_tcp_gzip_wrapped_frames(live: Callable[..., Live]) -> None:
    # heplify v2 payload_zip: one gzip member per TCP write; and a UDP datagram the same.
    lv = live("tcp:127.0.0.1:0", "udp:127.0.0.1:0")
    with tcp_connect(lv.ep("tcp")) as s:
        s.sendall(gzip.compress(hep(1)))
        s.sendall(gzip.compress(hep(2)) + hep(3))
        udp_send(lv.ep("udp"), gzip.compress(hep(4)))
        frames = lv.wait_written(4)
    stats = lv.stop()
    assert sorted(call_ids(frames)) == [f"call-{i}@test" for i in range(1, 5)]
    assert stats.warnings[Reason.GZIP_WRAPPED] == 3


def test_tcp_v2_whose_payload_is_not_sip_is_a_desync(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0")
    with tcp_connect(lv.ep("tcp")) as s:
        data = bytearray(hep(1, version=2))
        data[28:31] = b"\x00\x01\n"
        s.sendall(bytes(data))
        wait_closed_by_peer(s)
    stats = lv.stop()
    assert stats.input_problems == {Reason.V12_ON_STREAM: 1}
    assert stats.connections["tcp_desync"] == 1


def test_tcp_stalled_client_is_closed_after_idle_timeout(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0", tcp_idle_timeout_s=0.3)
    with tcp_connect(lv.ep("tcp")) as s:
        s.sendall(hep(1, proto=6) + hep(2, proto=6)[:20])  # then nothing
        wait_closed_by_peer(s)
    frames = lv.wait_written(1)
    stats = lv.stop()
    assert call_ids(frames) == ["call-1@test"]
    assert stats.connections["idle_timeout"] == 1
    assert stats.input_problems == {Reason.STREAM_TRUNCATED_AT_EOF: 1}


def test_tcp_max_length_header_then_disconnect(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0")
    with tcp_connect(lv.ep("tcp")) as s:
        s.sendall(b"HEP3\xff\xff" + bytes(1000))  # announces 65535 bytes, sends 1006
    wait_until(
        lambda: lv.stats.input_problems[Reason.STREAM_TRUNCATED_AT_EOF] == 1, what="truncation"
    )
    stats = lv.stop()
    assert stats.connections["eof"] == 1
    assert stats.input_problems == {Reason.STREAM_TRUNCATED_AT_EOF: 1}
    assert stats.read == 0


def test_tcp_max_connections(live: Callable[..., Live]) -> None:
    lv = live("tcp:127.0.0.1:0", max_connections=1)
    ep = lv.ep("tcp")
    with tcp_connect(ep) as first:
        wait_until(lambda: lv.source.open_connections == 1, what="first connection")
        with tcp_connect(ep) as second:
            wait_closed_by_peer(second)
        first.sendall(hep(1, proto=6))
        lv.wait_written(1)
    stats = lv.stop()
    assert stats.connections["refused_max_connections"] == 1


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = need("openssl")
    d = tmp_path_factory.mktemp("tls")
    crt, key = str(d / "c.pem"), str(d / "k.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return crt, key


def _tls_client(ep: Endpoint, ca: str, cert: tuple[str, str] | None = None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx.wrap_socket(tcp_connect(ep), server_hostname="127.0.0.1")


def test_tls_with_a_generated_certificate(live: Callable[..., Live], cert: tuple[str, str]) -> None:
    lv = live("tls:127.0.0.1:0", tls=make_server_context(*cert, None))
    ep = lv.ep("tls")
    with _tls_client(ep, cert[0]) as s:
        s.sendall(b"".join(hep(i, proto=22) for i in range(2)))
        s.sendall(hep(2, proto=22)[:30])
        lv.wait_written(2)
        s.sendall(hep(2, proto=22)[30:])
        frames = lv.wait_written(3)
    stats = lv.stop()
    assert call_ids(frames) == [f"call-{i}@test" for i in range(3)]
    assert stats.connections["accepted"] == 1


def test_tls_client_certificate_required(live: Callable[..., Live], cert: tuple[str, str]) -> None:
    lv = live("tls:127.0.0.1:0", tls=make_server_context(*cert, cert[0]))
    ep = lv.ep("tls")
    with _tls_client(ep, cert[0], cert) as s:  # self-signed: its own CA
        s.sendall(hep(1, proto=22))
        lv.wait_written(1)
    with (
        contextlib.suppress(ssl.SSLError, ConnectionError),
        _tls_client(ep, cert[0]) as s,  # TLS 1.3: the alert may come at the first read
    ):
        s.sendall(hep(2, proto=22))
        s.recv(1)
    stats = lv.stop()
    assert stats.written == 1
    assert stats.connections["tls_handshake_failed"] == 1


def test_plain_tcp_client_on_tls_listener(live: Callable[..., Live], cert: tuple[str, str]) -> None:
    lv = live("tls:127.0.0.1:0", tls=make_server_context(*cert, None))
    with tcp_connect(lv.ep("tls")) as s:
        s.sendall(hep(1, proto=6))
        wait_closed_by_peer(s)
    assert lv.stop().connections["tls_handshake_failed"] == 1


# --- access control -----------------------------------------------------------------------


def test_password_rejections_are_counted_apart(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0", options=Options(window_us=0, password=b"s3cret"))
    udp_send(
        lv.ep(),
        hep(1, auth=b"s3cret"),
        hep(2),
        hep(3, auth=b"s3cre"),  # a prefix is not the password
        hep(4, auth=b"wrong!"),
        hep(5, version=2),
    )
    wait_until(lambda: lv.stats.read == 5, what="5 read")
    frames = lv.wait_written(1)
    stats = lv.stop()
    assert call_ids(frames) == ["call-1@test"]
    assert stats.dropped == {
        Reason.AUTH_MISSING: 1,
        Reason.AUTH_MISMATCH: 2,
        Reason.V12_AUTH_REQUIRED: 1,
    }


def test_allowlist_drops_other_sources(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0", "tcp:127.0.0.1:0", allow=(parse_allow("10.0.0.0/8"),))
    udp_send(lv.ep(), hep(1), hep(2))
    with tcp_connect(lv.ep("tcp")) as s:
        wait_closed_by_peer(s)
    wait_until(lambda: lv.stats.input_problems[Reason.NOT_ALLOWED] == 3, what="3 not allowed")
    stats = lv.stop()
    assert stats.read == 0
    assert stats.written == 0
    assert stats.connections["not_allowed"] == 1


def test_allowlist_lets_loopback_in(live: Callable[..., Live]) -> None:
    lv = live("udp:127.0.0.1:0", allow=(parse_allow("10.0.0.0/8"), parse_allow("127.0.0.1")))
    udp_send(lv.ep(), hep(1))
    lv.wait_written(1)
    assert not lv.stop().input_problems


# --- forward ------------------------------------------------------------------------------


def test_forward_relays_accepted_messages_unchanged(live: Callable[..., Live]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.settimeout(TIMEOUT_S)
        fwd = Forwarder(Endpoint("udp", "127.0.0.1", upstream.getsockname()[1]))
        lv = live("udp:127.0.0.1:0", forward=fwd, options=Options(window_us=0, password=b"k"))
        good = [hep(1, auth=b"k"), hep(2, auth=b"k")]
        udp_send(lv.ep(), good[0], hep(9, auth=b"bad"), good[1])
        got = [upstream.recv(70000), upstream.recv(70000)]
        lv.wait_written(2)
        stats = lv.stop()
    assert got == good
    assert stats.forwarded == 2
    assert stats.forward_drops == 0


def test_forward_over_tcp_sends_only_hep3(live: Callable[..., Live]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT_S)
        fwd = Forwarder(Endpoint("tcp", "127.0.0.1", server.getsockname()[1]))
        lv = live("udp:127.0.0.1:0", forward=fwd)
        v3 = [hep(1), hep(3)]
        udp_send(lv.ep(), v3[0], hep(2, version=2), v3[1])
        lv.wait_written(3)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(TIMEOUT_S)
            want = b"".join(v3)
            got = b""
            while len(got) < len(want):
                part = conn.recv(65536)
                assert part
                got += part
        stats = lv.stop()
    assert got == want  # the v2 message cannot be framed on a stream
    assert stats.forwarded == 2
    assert stats.forward_drops == 1


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_dead_forward_target_never_blocks_capture(live: Callable[..., Live], scheme: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: nobody listens there
    fwd = Forwarder(Endpoint(scheme, "127.0.0.1", dead_port), max_queue=10)
    lv = live("udp:127.0.0.1:0", forward=fwd)
    n = 200
    udp_send(lv.ep(), *(hep(i) for i in range(n)))
    lv.wait_written(n)
    stats = lv.stop()
    assert stats.written == n
    assert stats.forwarded is not None
    assert stats.forwarded + stats.forward_drops == n
    assert stats.forward_drops > 0


# --- the CLI, as a process ----------------------------------------------------------------


class Proc:
    """``python -m hep2pcap listen ...`` with stderr read by a thread."""

    def __init__(
        self, *args: str, stdout: int | None = subprocess.DEVNULL, cwd: Path = ROOT
    ) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "hep2pcap", "listen", *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wanted = max(1, sum(a.startswith(("udp:", "tcp:", "tls:")) for a in args))
        self.addresses: list[Endpoint] = []
        while len(self.addresses) < wanted:
            line = self.next_line()
            if line.startswith("listening on "):
                self.addresses.append(parse_endpoint(line.removeprefix("listening on ")))

    def _read(self) -> None:
        assert self.p.stderr is not None
        for raw in self.p.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def next_line(self, timeout_s: float = TIMEOUT_S) -> str:
        try:
            line = self._q.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            pytest.fail(f"no stderr line in {timeout_s} s; so far: {self.lines}")
        if line is None:
            pytest.fail(f"hep2pcap ended early ({self.p.wait(TIMEOUT_S)}): {self.lines}")
        return line

    def ep(self, scheme: str = "udp") -> Endpoint:
        return next(a for a in self.addresses if a.scheme == scheme)

    def finish(self, sig: int | None = signal.SIGINT) -> tuple[int, str]:
        if sig is not None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"hep2pcap did not end: {self.lines}")
        self._reader.join(TIMEOUT_S)
        self._close_pipes()
        return rc, "\n".join(self.lines)

    def _close_pipes(self) -> None:
        for f in (self.p.stdout, self.p.stderr):
            if f is not None:
                f.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.p.kill()
        self.p.wait(TIMEOUT_S)
        self._reader.join(TIMEOUT_S)
        self._close_pipes()


def summary_counts(stderr: str) -> tuple[int, int]:
    line = next(x for x in stderr.splitlines() if x.startswith("read "))
    read, wrote = line.split(",")[:2]
    return int(read.split()[1]), int(wrote.split()[1])


def packets_in(path: Path) -> list[bytes]:
    """Frames in a file that may still be growing (its whole blocks; a write may be under way)."""
    if not path.exists():
        return []
    packets, _ = read_pcapng(whole_blocks(path.read_bytes()))
    return [p[2] for p in packets]


def tshark_call_ids(path: Path | None, data: bytes | None = None) -> list[str]:
    tshark = need("tshark")
    r = subprocess.run(
        [tshark, "-r", str(path) if path is not None else "-", "-Y", "sip",
         "-T", "fields", "-e", "sip.Call-ID"],
        input=data, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return r.stdout.decode().split()


def test_cli_sigint_flushes_and_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out), "--window", "0.2")
    ep = proc.ep()
    udp_send(ep, hep(1, version=1), hep(2, version=2), hep(3), b"junk")
    wait_until(lambda: len(packets_in(out)) == 3, what="3 packets on disk before exit")
    rc, err = proc.finish(signal.SIGINT)
    assert rc == 0
    assert summary_counts(err) == (4, 3)
    assert "unknown_version=1" in err
    assert "kernel drops 0" in err
    frames = read_file(out)
    assert sorted(call_ids([f[2] for f in frames])) == [f"call-{i}@test" for i in (1, 2, 3)]
    assert sorted(tshark_call_ids(out)) == [f"call-{i}@test" for i in (1, 2, 3)]


def _stream(ep: Endpoint, stop: threading.Event, sent: list[int], limit: int = 200_000) -> None:
    with socket.socket(ep.family, socket.SOCK_DGRAM) as s:
        for i in range(limit):
            if stop.is_set():
                break
            s.sendto(hep(i), (ep.host, ep.port))
            sent[0] = i + 1
            if i % 50 == 49:
                time.sleep(0.001)  # about 30k msg/s at most


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_signal_mid_stream_leaves_a_valid_file(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "out.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out))
    stop, sent = threading.Event(), [0]
    sender = threading.Thread(target=_stream, args=(proc.ep(), stop, sent))
    sender.start()
    try:
        wait_until(lambda: len(packets_in(out)) >= 500, what="500 packets on disk")
        rc, err = proc.finish(sig)
    finally:
        stop.set()
        sender.join(TIMEOUT_S)
    assert rc == 0
    read, wrote = summary_counts(err)
    frames = read_file(out)
    assert len(frames) == wrote == read  # everything received was written
    assert wrote >= 500
    assert "not converted 0" in err


def test_cli_sigkill_leaves_a_file_valid_up_to_the_last_flush(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out), "--window", "0")
    stop, sent = threading.Event(), [0]
    sender = threading.Thread(target=_stream, args=(proc.ep(), stop, sent))
    sender.start()
    try:
        wait_until(lambda: len(packets_in(out)) >= 300, what="300 packets on disk")
        children = _children(proc.p.pid)
        assert children  # the receiver process
        proc.finish(signal.SIGKILL)
    finally:
        stop.set()
        sender.join(TIMEOUT_S)
    # Valid blocks up to the last flush. A kill that lands inside the write() of a batch can
    # leave that batch partly on disk (the kernel stops copying on a fatal signal), so the
    # tail may be a block cut short; everything before it must be whole.
    assert len(packets_in(out)) >= 300
    # The receiver process notices and ends too: nothing is left holding the port.
    wait_until(lambda: not any(Path(f"/proc/{c}").exists() for c in children), what="child end")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("no /proc children list")
    return [int(c) for c in path.read_text().split()]


def test_cli_write_stdout_piped_into_a_reader(tmp_path: Path) -> None:
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", "-", "-c", "3", stdout=subprocess.PIPE)
    udp_send(proc.ep(), hep(1), b"junk", hep(2), hep(3), hep(4), hep(5))
    assert proc.p.stdout is not None
    data = proc.p.stdout.read()  # until EOF: -c 3 ends the run
    rc, err = proc.finish(None)
    assert rc == 0
    packets, _ = read_pcapng(data)
    assert call_ids([p[2] for p in packets]) == [f"call-{i}@test" for i in (1, 2, 3)]
    assert "listening on" in err
    assert "wrote 3" in err
    assert tshark_call_ids(None, data) == [f"call-{i}@test" for i in (1, 2, 3)]


def test_cli_write_stdout_into_tshark_pipe() -> None:
    tshark = need("tshark")
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", "-", "-c", "2", stdout=subprocess.PIPE)
    reader = subprocess.Popen(
        [tshark, "-r", "-", "-T", "fields", "-e", "sip.Call-ID"],
        stdin=proc.p.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.p.stdout is not None
    proc.p.stdout.close()  # tshark holds the pipe now
    udp_send(proc.ep(), hep(1), hep(2))
    out, _ = reader.communicate(timeout=60)
    rc, _ = proc.finish(None)
    assert rc == 0
    assert out.decode().split() == ["call-1@test", "call-2@test"]


def test_cli_duration(tmp_path: Path) -> None:
    out = tmp_path / "d.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out), "--duration", "0.5")
    udp_send(proc.ep(), hep(1))
    rc, err = proc.finish(None)
    assert rc == 0
    assert summary_counts(err) == (1, 1)


def test_cli_sighup_starts_a_new_file(tmp_path: Path) -> None:
    out = tmp_path / "live.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out), "--window", "0")
    udp_send(proc.ep(), hep(1), hep(2))
    wait_until(lambda: len(packets_in(out)) == 2, what="2 packets")
    out.rename(tmp_path / "live.pcapng.1")  # logrotate
    proc.p.send_signal(signal.SIGHUP)
    wait_until(out.exists, what="the file reopened")
    udp_send(proc.ep(), hep(3))
    wait_until(lambda: len(packets_in(out)) == 1, what="1 packet in the new file")
    rc, _ = proc.finish()
    assert rc == 0
    assert call_ids([p[2] for p in read_file(tmp_path / "live.pcapng.1")]) == [
        "call-1@test",
        "call-2@test",
    ]
    assert call_ids([p[2] for p in read_file(out)]) == ["call-3@test"]


def test_cli_rotation_by_size_and_count(tmp_path: Path) -> None:
    out = tmp_path / "ring.pcapng"
    proc = Proc(
        "-l", "udp:127.0.0.1:0", "-w", str(out), "-C", "0.002", "-W", "2", "-c", "30"
    )  # fmt: skip
    for i in range(30):
        udp_send(proc.ep(), hep(i))
    rc, err = proc.finish(None)  # -c 30 ends the run
    assert rc == 0
    assert summary_counts(err) == (30, 30)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    assert all(read_file(f) for f in files)


def test_cli_warns_when_the_os_caps_the_receive_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from hep2pcap.cli import cli
    from hep2pcap.sources import udp

    monkeypatch.setattr(udp, "SO_RCVBUFFORCE", socket.SO_RCVBUF)  # as if not privileged
    huge = 1 << 30
    args = ["listen", "-l", "udp:127.0.0.1:0", "-w", str(tmp_path / "x.pcapng")]
    args += ["--rcvbuf", str(huge), "--duration", "0.2"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0
    assert f"sysctl -w net.core.rmem_max={huge}" in result.stderr
    assert "read 0, wrote 0" in result.stderr


def test_cli_disk_full_is_a_clear_error() -> None:
    from click.testing import CliRunner

    from hep2pcap.cli import cli

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    args = ["listen", "-l", "udp:127.0.0.1:0", "-w", "/dev/full", "--duration", "0.1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert "/dev/full: cannot write: No space left on device" in result.stderr


def test_cli_second_sigint_does_not_wait_for_the_backlog(tmp_path: Path) -> None:
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(tmp_path / "x.pcapng"))
    proc.p.send_signal(signal.SIGINT)
    proc.p.send_signal(signal.SIGINT)
    rc, err = proc.finish(None)
    assert rc == 0
    assert "read 0, wrote 0" in err


def test_cli_stats_interval_line(tmp_path: Path) -> None:
    proc = Proc(
        "-l", "udp:127.0.0.1:0", "-w", str(tmp_path / "s.pcapng"), "--stats-interval", "0.2"
    )
    udp_send(proc.ep(), hep(1), b"junk")
    wait_until(
        lambda: any("received 2, wrote 1, dropped 1 (unknown_version=1)" in x for x in proc.lines),
        what="a status line",
    )
    rc, err = proc.finish(signal.SIGTERM)
    assert rc == 0
    assert "kernel drops 0" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-l", "tls:127.0.0.1:0"], "needs --tls-cert and --tls-key"),
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["-l", "udp:nowhere:1"], "not an IP address"),
        (["--allow", "10.0.0.300/8"], "--allow"),
        (["--forward", "tls:127.0.0.1:1"], "--forward"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from hep2pcap.cli import cli

    result = CliRunner().invoke(cli, ["listen", "-w", "x.pcapng", *args], catch_exceptions=False)
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_rotation_needs_a_file() -> None:
    from click.testing import CliRunner

    from hep2pcap.cli import cli

    result = CliRunner().invoke(cli, ["listen", "-w", "-", "-C", "1"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "need a file name" in result.stderr


def test_cli_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "hep2pcap", "listen", "-l", f"udp:127.0.0.1:{port}",
             "-w", str(tmp_path / "x.pcapng")],
            capture_output=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
    assert r.returncode == 1
    assert b"cannot bind" in r.stderr


# --- a real sender: sngrep as a HEP client ------------------------------------------------

SIP_PCAP = ROOT / "fixtures" / "sip" / "call-register.pcap"


@pytest.mark.e2e
@pytest.mark.parametrize(("version", "password"), [(3, None), (2, None), (3, "s3cret")])
def test_sngrep_as_hep_client(tmp_path: Path, version: int, password: str | None) -> None:
    sngrep = need("sngrep")
    assert SIP_PCAP.exists(), f"{SIP_PCAP} missing"
    conf = tmp_path / "sngrep.conf"
    conf.write_text(
        f"set eep.send.version {version}\n"
        + (f"set eep.send.pass {password}\n" if password else "")
    )
    out = tmp_path / "out.pcapng"
    args = ["-l", "udp:127.0.0.1:0", "-w", str(out), "--window", "0"]
    proc = Proc(*args, *(["--password", password] if password else []))
    ep = proc.ep()
    subprocess.run(
        [sngrep, "-F", "-f", str(conf), "-I", str(SIP_PCAP), "-N", "-q",
         "-H", f"udp:{ep.host}:{ep.port}"],
        check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    expected = tshark_call_ids(SIP_PCAP)
    n = len(expected)
    wait_until(lambda: len(packets_in(out)) >= n, what=f"{n} packets")
    rc, err = proc.finish()
    assert rc == 0
    assert summary_counts(err) == (n, n)
    assert tshark_call_ids(out) == expected
    dialogs = subprocess.run(
        [sngrep, "-F", "-N", "-I", str(out), "-O", str(tmp_path / "x.pcap")],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert dialogs.stdout.decode().replace("\r", "\n").split()[-1] == "2"


# --- done when: live equals convert -------------------------------------------------------

REPLAY_INPUTS = [
    ROOT / "fixtures" / "hep" / "sample-call.hep",
    ROOT / "fixtures" / "hep" / "multi-agent.hep",
    ROOT / "fixtures" / "hep" / "sender-quirks.hep",
    ROOT / "fixtures" / "pcap" / "hep-v1-udp.pcap",
    ROOT / "fixtures" / "pcap" / "hep-v2-udp.pcap",
    ROOT / "fixtures" / "pcap" / "hep-v3-udp-vlan.pcap",
    ROOT / "fixtures" / "pcap" / "hep-v3-tcp.pcapng",
]
#: Public captures (optional: found inside the test, tests/public_captures.py); HEPv3 only.
REPLAY_PUBLIC = ["hep-wireshark_hep.pcap"]
TSHARK_FIELDS = [
    "frame.len", "frame.comment", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "udp.srcport",
    "udp.dstport", "tcp.srcport", "tcp.dstport", "tcp.len", "sip.Method", "sip.Status-Code",
    "sip.Call-ID", "sip.CSeq", "udp.checksum.status", "tcp.checksum.status", "ip.checksum.status",
]  # fmt: skip


def need(tool: str) -> str:
    """The tool's path; a missing tool skips the test, or fails it under CI."""
    found = shutil.which(tool)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (CI must install it)")
        pytest.skip(f"{tool} not installed")
    return found


def _records_of(path: Path) -> list[bytes]:
    from contextlib import ExitStack

    from hep2pcap.items import Record
    from hep2pcap.sources import open_input

    with ExitStack() as stack:
        return [r.data for r in open_input(str(path), stack) if type(r) is Record]


def _tshark_rows(tshark: str, data: bytes) -> list[str]:
    cmd = [tshark, "-r", "-", "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]
    cmd += ["-o", "ip.check_checksum:TRUE", "-T", "fields"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=60, check=True)
    return sorted(r.stdout.decode().splitlines())


def _replay_cases() -> list[tuple[Path | str, str]]:
    # TCP carries HEPv3 only: inputs holding HEPv1/v2 are replayed over UDP alone.
    own: list[tuple[Path | str, str]] = [
        (path, transport)
        for path in REPLAY_INPUTS
        for transport in ("udp", "tcp")
        if transport == "udp" or all(r.startswith(b"HEP3") for r in _records_of(path))
    ]
    return own + [(name, t) for name in REPLAY_PUBLIC for t in ("udp", "tcp")]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("path", "transport"), _replay_cases(), ids=lambda v: getattr(v, "name", v)
)
def test_replayed_capture_equals_convert(path: Path | str, transport: str) -> None:
    tshark = need("tshark")
    path = public_capture(path) if isinstance(path, str) else path
    records = _records_of(path)
    assert records
    assert transport == "udp" or all(r.startswith(b"HEP3") for r in records)
    summary, expected_rows = _converted(tshark, path)
    lv = Live(f"{transport}:127.0.0.1:0")
    if transport == "udp":
        udp_send(lv.ep(), *records)
    else:
        with tcp_connect(lv.ep("tcp")) as s:
            s.sendall(b"".join(records))
    try:
        wait_until(lambda: lv.stats.read == len(records), what=f"{len(records)} read")
    finally:
        stats = lv.stop()
    assert f"read {stats.read}, wrote {stats.written}" in summary
    assert stats.input_problems == {}
    assert _tshark_rows(tshark, lv.buf.snapshot()) == expected_rows


@functools.cache
def _converted(tshark: str, path: Path) -> tuple[str, list[str]]:
    """``hep2pcap convert`` of ``path``: its summary line and its tshark rows."""
    r = subprocess.run(
        [sys.executable, "-m", "hep2pcap", "convert", str(path), "-w", "-"],
        capture_output=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    return r.stderr.decode().splitlines()[0], _tshark_rows(tshark, r.stdout)


def test_cli_signals_while_starting_are_not_fatal(tmp_path: Path) -> None:
    # Issue 16: a SIGHUP in the first ~0.1 s killed the process. From the moment the process
    # catches SIGHUP (very early in the CLI's import) to well after it listens, SIGHUPs keep
    # coming: none may end it, and a SIGINT still stops it cleanly.
    p = subprocess.Popen(
        [sys.executable, "-m", "hep2pcap", "listen", "-l", "udp:127.0.0.1:0",
         "-w", str(tmp_path / "s.pcapng")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    status = Path(f"/proc/{p.pid}/status")
    if not status.exists():
        p.kill()
        p.wait(TIMEOUT_S)
        pytest.skip("no /proc")

    def catches_hup() -> bool:
        for line in status.read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
        return False

    try:
        wait_until(catches_hup, what="a SIGHUP handler")
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert p.poll() is None, "a SIGHUP ended the process"
            p.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)
        assert p.wait(TIMEOUT_S) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(TIMEOUT_S)
        assert p.stderr is not None
        err = p.stderr.read().decode()
        p.stderr.close()
    assert "Traceback" not in err
    assert "read 0, wrote 0" in err
