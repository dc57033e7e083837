"""UDP listening sockets for live HEP (HEP-SPEC §5: one message per datagram, v1, v2, v3).

Owns: parsing ``udp:HOST:PORT`` style endpoints, binding (IPv4 or IPv6, never dual-stack by
accident), sizing the kernel receive buffer and reading the kernel's drop counter for the
socket. Must never: decode HEP or block; the receiver thread in ``live.py`` reads the socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass

from ..errors import InputError

#: Largest UDP payload (IPv6 jumbograms aside); a HEPv3 message is at most 65535 bytes.
MAX_DATAGRAM = 65535
#: Linux: SO_RCVBUFFORCE ignores net.core.rmem_max when the process has CAP_NET_ADMIN.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

#: Largest receive buffer asked for (the kernel doubles the value in a C int).
MAX_RCVBUF = 1 << 30
SCHEMES = ("udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed ``scheme:host:port``; ``host`` is an IP literal without brackets."""

    scheme: str
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        """AF_INET6 for an IPv6 host, else AF_INET."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}:{host}:{self.port}"


def parse_endpoint(url: str, schemes: tuple[str, ...] = SCHEMES) -> Endpoint:
    """Parse ``udp:127.0.0.1:9060``, ``tcp:[::1]:9061``, ``tls:0.0.0.0:9062``.

    Raises:
        ValueError: not ``scheme:host:port`` with a known scheme, an IP literal and a port.
    """
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in schemes:
        raise ValueError(f"{url!r}: expected {'|'.join(schemes)}:HOST:PORT")
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
        if ":" in host:
            raise ValueError(f"{url!r}: write IPv6 addresses in brackets, e.g. udp:[::1]:9060")
    if not sep or not host:
        raise ValueError(f"{url!r}: expected {scheme}:HOST:PORT")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{url!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{url!r}: {port_text!r} is not a port number (0-65535)")
    return Endpoint(scheme, host, int(port_text))


def bind_socket(endpoint: Endpoint, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket bound to ``endpoint`` (IPv6 sockets are IPv6 only).

    Raises:
        InputError: the address cannot be bound (in use, not local, no permission).
    """
    sock = socket.socket(endpoint.family, kind)
    try:
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise InputError(f"{endpoint}: cannot bind: {exc.strerror or exc}") from exc
    return sock


def bound_endpoint(endpoint: Endpoint, sock: socket.socket) -> Endpoint:
    """``endpoint`` with the port the kernel picked (for port 0)."""
    return Endpoint(endpoint.scheme, endpoint.host, sock.getsockname()[1])


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; return what the kernel granted.

    Linux reports twice the usable size it reserved; the value returned is halved back so
    it compares with ``size``. The kernel caps plain SO_RCVBUF at net.core.rmem_max, so
    SO_RCVBUFFORCE is tried first (it works with CAP_NET_ADMIN).
    """
    for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, min(size, MAX_RCVBUF))
            break
        except OSError:
            continue
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted // 2 if os.uname().sysname == "Linux" else granted


def read_kernel_drops(sock: socket.socket) -> int | None:
    """The kernel's drop counter for this UDP socket (Linux /proc/net/udp[6] ``drops``).

    Returns ``None`` where the counter cannot be read (not Linux, socket closed).
    """
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        with open(table, encoding="ascii") as f:
            next(f)  # header: sl local_address rem_address st ... inode ref pointer drops
            for line in f:
                fields = line.split()
                if len(fields) >= 13 and fields[9] == inode:
                    return int(fields[12])
    except (OSError, ValueError, StopIteration):
        return None
    return None


class UdpListener:
    """One bound UDP socket.

    Args:
        endpoint: where to bind (port 0 picks a free port; ``address`` says which).
        rcvbuf: receive buffer size to ask for, in bytes.

    Raises:
        InputError: cannot bind.
    """

    def __init__(self, endpoint: Endpoint, rcvbuf: int) -> None:
        self.sock = bind_socket(endpoint, socket.SOCK_DGRAM)
        self.rcvbuf_requested = rcvbuf
        self.rcvbuf = set_rcvbuf(self.sock, rcvbuf)
        self.address = bound_endpoint(endpoint, self.sock)
        self.name = str(self.address)  # names this source in the loss counters
        self._last_drops: int | None = None

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on this socket so far (``None`` if unknown)."""
        if self.sock.fileno() >= 0:
            self._last_drops = read_kernel_drops(self.sock)
        return self._last_drops

    def close(self) -> None:
        """Read the drop counter one last time, then close the socket."""
        self.kernel_drops()
        with contextlib.suppress(OSError):
            self.sock.close()
