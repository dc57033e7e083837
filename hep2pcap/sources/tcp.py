"""TCP and TLS listening sockets for live HEP (HEP-SPEC §5: v3 framed by its length field).

Owns: the listening socket, the server TLS context, and one connection's state — the
non-blocking TLS handshake, reads (at most a budget of bytes), and framing with
:class:`HepDeframer`, whose buffer is bounded by one message (65535 bytes) plus one read.
Must never: decode HEP, block, or keep a connection whose stream stopped looking like HEP
(HEP-SPEC §11: STREAM_DESYNC).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from dataclasses import dataclass, field

from ..errors import DecodeError, InputError, Reason
from ..stream import HepDeframer
from .udp import Endpoint, bind_socket, bound_endpoint

#: Bytes asked for per read; a HEPv3 message is at most 65535 bytes.
READ_SIZE = 65536
#: Reads per connection per wake-up, so one busy peer cannot starve the others.
READS_PER_WAKE = 16
LISTEN_BACKLOG = 128


def make_server_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+); with ``client_ca`` clients must show a certificate.

    Raises:
        InputError: a file is missing or not a usable certificate / key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Each file is looked at first, so the one line names what is wrong with which file
    # (OpenSSL alone says "[SSL] PEM lib").
    cert_pem = _read_pem("certificate", cert)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise InputError(f"cannot load TLS certificate {cert}: not a PEM certificate")
    key_pem = _read_pem("key", key)
    if b"ENCRYPTED" in key_pem:
        raise InputError(f"cannot load TLS key {key}: encrypted; give an unencrypted key")
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", key_pem):
        raise InputError(f"cannot load TLS key {key}: not a PEM private key")
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        why = "does not match the certificate" if "MISMATCH" in str(exc) else "unusable"
        raise InputError(
            f"cannot load TLS key {key}: {why} ({getattr(exc, 'reason', None) or exc})"
        ) from exc
    if client_ca is not None:
        _read_pem("client CA", client_ca)
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(
                f"cannot load TLS client CA {client_ca}: not a PEM certificate "
                f"({getattr(exc, 'reason', None) or exc})"
            ) from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


#: A PEM file larger than this is not a certificate or key (bounded read).
MAX_PEM_BYTES = 1 << 20


def _read_pem(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_PEM_BYTES)
    except OSError as exc:
        raise InputError(f"cannot load TLS {what} {path}: {exc.strerror or exc}") from exc


def _no_password() -> bytes:
    # Never let OpenSSL prompt on the terminal for a key's passphrase.
    return b""


class TcpListener:
    """A listening TCP socket; with ``tls`` the accepted connections speak TLS.

    Raises:
        InputError: cannot bind or listen.
    """

    def __init__(self, endpoint: Endpoint, tls: ssl.SSLContext | None = None) -> None:
        self.sock = bind_socket(endpoint, socket.SOCK_STREAM)
        try:
            self.sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            self.sock.close()
            raise InputError(f"{endpoint}: cannot listen: {exc.strerror or exc}") from exc
        self.tls = tls
        self.address = bound_endpoint(endpoint, self.sock)

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(OSError):
            self.sock.close()


def peer_text(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``1.2.3.4:5060`` or ``[::1]:5060``."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class ReadResult:
    """What one wake-up of a connection produced."""

    messages: list[bytes] = field(default_factory=list)
    problem: DecodeError | None = None
    closed: str | None = None  # why the connection ended: "eof", "desync", "error", "tls"
    want_write: bool = False
    nbytes: int = 0  # bytes read


class TcpConnection:
    """One accepted connection: TLS handshake (if any), reads, framing.

    Args:
        sock: the accepted, non-blocking socket (already wrapped for TLS, handshake pending).
        peer: the peer address as text.
        now_us: accept time (for the idle timeout).
        tls: True when ``sock`` is an SSLSocket whose handshake is still to be done.
    """

    __slots__ = ("deframer", "handshaking", "last_us", "messages", "peer", "scheme", "sock")

    def __init__(self, sock: socket.socket, peer: str, now_us: int, *, tls: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.scheme = "tls" if tls else "tcp"
        #: accept time, then the time of the last complete HEP message: bytes that do not
        #: complete a message (a peer dripping single bytes) do not count as activity
        self.last_us = now_us
        self.messages = 0  # complete messages framed
        self.handshaking = tls
        self.deframer = HepDeframer()

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet framed."""
        return self.deframer.offset

    def on_readable(self, now_us: int, budget: int = 1 << 62) -> ReadResult:
        """Handshake or read what is there (at most about ``budget`` bytes); frame it.
        Never blocks."""
        res = ReadResult()
        if self.handshaking:
            try:
                self.sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                return res
            except ssl.SSLWantWriteError:
                res.want_write = True
                return res
            except (ssl.SSLError, OSError) as exc:
                res.closed = f"tls_handshake_failed ({exc})"
                return res
            self.handshaking = False
            self.last_us = now_us
        want = READ_SIZE
        for _ in range(READS_PER_WAKE):
            want = min(READ_SIZE, budget)
            if want <= 0:
                break
            try:
                data = self.sock.recv(want)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                res.want_write = True
                break
            except (ssl.SSLError, OSError) as exc:
                self._end(res, f"error ({exc})")
                break
            if not data:
                self._end(res, "eof")
                break
            budget -= len(data)
            res.nbytes += len(data)
            try:
                res.messages.extend(self.deframer.feed(data))
                # Messages before a broken header come back first; the error is raised by
                # the next feed, so ask for it now instead of waiting for more bytes.
                self.deframer.feed(b"")
            except DecodeError as exc:
                res.problem = exc
                res.closed = "desync"
                break
            if len(data) < want and not (
                isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            ):
                break
        if res.messages:
            self.last_us = now_us
            self.messages += len(res.messages)
        return res

    def _end(self, res: ReadResult, why: str) -> None:
        res.closed = why
        try:
            self.deframer.eof()
        except DecodeError as exc:
            res.problem = exc
            if exc.reason is not Reason.STREAM_TRUNCATED_AT_EOF:
                res.closed = "desync"

    def truncate(self) -> DecodeError | None:
        """The connection is being closed by us: a partial message is STREAM_TRUNCATED_AT_EOF."""
        if self.deframer.pending:
            return DecodeError(
                Reason.STREAM_TRUNCATED_AT_EOF,
                self.deframer.offset,
                f"connection closed {self.deframer.pending} bytes into a message",
            )
        return None

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self.sock.close()
