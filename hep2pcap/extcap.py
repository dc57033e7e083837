"""hep2pcap as a Wireshark capture interface (extcap).

Owns: the extcap protocol (Wireshark's doc/extcap.adoc: ``--extcap-interfaces``,
``--extcap-dlts``, ``--extcap-config``, ``--capture --fifo``), the launcher that
``hep2pcap extcap --install`` puts into Wireshark's personal extcap folder, and turning the
dialog's options into a ``listen`` command line. The capture itself is ``hep2pcap listen``
writing pcapng to the fifo. Must never: print anything on stderr unless something is wrong
(Wireshark and tshark show an extcap's stderr as an error), or overwrite a file it did not
write.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import Hep2PcapError

#: The interface's name (``tshark -i hep``; preferences ``extcap.hep.port`` and so on).
INTERFACE = "hep"
#: The launcher's file name in the extcap folder.
LAUNCHER = "hep2pcap-extcap"
#: The launcher's second line: how --install and --uninstall know a file is theirs.
MARKER = "# hep2pcap extcap launcher: written by 'hep2pcap extcap --install'"
HELP_URL = "https://github.com/hep2pcap/hep2pcap#live-in-wireshark-extcap"
DEFAULT_PORT = 9060
DEFAULT_TLS_PORT = 9061
#: --transport values: which listeners to open.
TRANSPORTS = {
    "udp+tcp": ("udp", "tcp"),
    "udp": ("udp",),
    "tcp": ("tcp",),
    "tls": ("tls",),
    "udp+tcp+tls": ("udp", "tcp", "tls"),
}
#: How long ``tshark -G folders`` may take.
TSHARK_TIMEOUT_S = 20.0


def interfaces_text() -> str:
    """The answer to ``--extcap-interfaces``."""
    return (
        f"extcap {{version={__version__}}}{{help={HELP_URL}}}\n"
        f"interface {{value={INTERFACE}}}"
        "{display=HEP listener (hep2pcap): SIP over UDP, TCP and TLS as it was}\n"
    )


def dlts_text() -> str:
    """The answer to ``--extcap-dlts`` (the frames are rebuilt Ethernet/IP/UDP/TCP)."""
    return "dlt {number=1}{name=EN10MB}{display=Ethernet (rebuilt from HEP)}\n"


def config_text() -> str:
    """The answer to ``--extcap-config``: the capture dialog's options."""
    args = [
        ("--port", "Port", "unsigned", f"{{default={DEFAULT_PORT}}}{{range=1,65535}}",
         "UDP/TCP port the HEP senders send to", "Listen"),
        ("--bind", "Listen address", "string", "{default=127.0.0.1}",
         "IP address to listen on (0.0.0.0 or :: for every interface)", "Listen"),
        ("--transport", "Transports", "selector", "", "Which listeners to open", "Listen"),
        ("--password", "HEP password", "password", "",
         "Require this HEP auth key (HEPv3)", "Listen"),
        ("--tls-port", "TLS port", "unsigned", f"{{default={DEFAULT_TLS_PORT}}}{{range=1,65535}}",
         "TCP port of the TLS listener", "TLS"),
        ("--tls-cert", "Certificate", "fileselect", "{mustexist=true}",
         "Server certificate (PEM) for the TLS listener", "TLS"),
        ("--tls-key", "Private key", "fileselect", "{mustexist=true}",
         "Private key (PEM) for the TLS listener", "TLS"),
        ("--call-id", "Call-ID", "string", "",
         "Keep this call (and B2BUA legs linked to it)", "Filters"),
        ("--host", "Host", "string", "", "Keep messages from or to this IP", "Filters"),
        ("--method", "Method", "string", "",
         "Keep dialogs with this SIP method (INVITE, REGISTER, ...)", "Filters"),
    ]  # fmt: skip
    lines = [
        f"arg {{number={i}}}{{call={call}}}{{display={display}}}{{type={kind}}}{extra}"
        f"{{tooltip={tip}}}{{group={group}}}"
        for i, (call, display, kind, extra, tip, group) in enumerate(args)
    ]
    transport = next(i for i, a in enumerate(args) if a[0] == "--transport")
    names = {
        "udp+tcp": "UDP and TCP",
        "udp": "UDP",
        "tcp": "TCP",
        "tls": "TLS",
        "udp+tcp+tls": "UDP, TCP and TLS",
    }
    lines += [
        f"value {{arg={transport}}}{{value={v}}}{{display={names[v]}}}"
        f"{{default={'true' if v == 'udp+tcp' else 'false'}}}"
        for v in TRANSPORTS
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What the capture dialog (or ``tshark -o extcap.hep.NAME:VALUE``) asked for."""

    port: int = DEFAULT_PORT
    bind: str = "127.0.0.1"
    transport: str = "udp+tcp"
    tls_port: int = DEFAULT_TLS_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    password: str | None = None
    call_id: str | None = None
    host: str | None = None
    method: str | None = None


def listen_args(opts: CaptureOptions) -> list[str]:
    """The ``hep2pcap listen`` arguments of a capture (quiet, pcapng to stdout).

    Raises:
        Hep2PcapError: an unknown transport.
    """
    kinds = TRANSPORTS.get(opts.transport)
    if kinds is None:
        raise Hep2PcapError(
            f"--transport {opts.transport!r}: expected one of {', '.join(TRANSPORTS)}"
        )
    host = opts.bind.strip() or "127.0.0.1"
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    args = ["-q", "-w", "-"]
    for kind in kinds:
        args += ["-l", f"{kind}:{host}:{opts.tls_port if kind == 'tls' else opts.port}"]
    for flag, value in (
        ("--tls-cert", opts.tls_cert),
        ("--tls-key", opts.tls_key),
        ("--password", opts.password),
        ("--call-id", opts.call_id),
        ("--host", opts.host),
        ("--method", opts.method),
    ):
        if value:  # Wireshark passes empty strings for fields left empty
            args += [flag, value]
    return args


def watch_control_pipe(path: str, mode: str) -> threading.Thread:
    """Open a control pipe Wireshark made (``mode`` "r": --extcap-control-in, "w": -out;
    opening waits for Wireshark's end, so a thread does it) and stop the capture, as SIGTERM
    does, when Wireshark closes the one we read."""

    def run() -> None:
        if mode == "w":
            with contextlib.suppress(OSError):
                held.append(os.open(path, os.O_WRONLY))  # kept open: nothing to report
            return
        with contextlib.suppress(OSError), open(path, "rb", buffering=0) as pipe:
            while pipe.read(4096):
                pass  # no control messages are defined: only the end matters
        os.kill(os.getpid(), signal.SIGTERM)

    held: list[int] = []

    thread = threading.Thread(target=run, name="hep2pcap-extcap-control", daemon=True)
    thread.start()
    return thread


def redirect_stdout_to(fifo: str) -> None:
    """Make file descriptor 1 (``listen -w -``) the fifo Wireshark reads.

    Raises:
        Hep2PcapError: the fifo cannot be opened.
    """
    try:
        fd = os.open(fifo, os.O_WRONLY)
    except OSError as exc:
        raise Hep2PcapError(f"{fifo}: cannot open the fifo: {exc.strerror or exc}") from exc
    sys.stdout.flush()
    os.dup2(fd, 1)
    os.close(fd)


# --- install --------------------------------------------------------------------------------


def default_folder(env: dict[str, str] | None = None) -> Path:
    """Wireshark's personal extcap folder.

    Wireshark 4.2 and later name it in ``tshark -G folders`` ("Personal Extcap path");
    4.0 and older look in ``extcap/`` of the personal configuration folder. Without tshark:
    ``$XDG_CONFIG_HOME/wireshark/extcap`` (``~/.config/wireshark/extcap``).
    """
    env = dict(os.environ) if env is None else env
    tshark = shutil.which("tshark", path=env.get("PATH"))
    if tshark is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [tshark, "-G", "folders"], capture_output=True, timeout=TSHARK_TIMEOUT_S,
                env=env, check=True,
            ).stdout.decode("utf-8", "replace")  # fmt: skip
            folders = dict(
                (k.strip(), v.strip()) for k, _, v in (x.partition(":") for x in out.splitlines())
            )
            if folders.get("Personal Extcap path"):
                return Path(folders["Personal Extcap path"])
            if folders.get("Personal configuration"):
                return Path(folders["Personal configuration"]) / "extcap"
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "wireshark" / "extcap"


def launcher_text(python: str = sys.executable) -> str:
    """The launcher: a shell script that runs this hep2pcap (``exec``, so Wireshark's
    SIGTERM reaches it)."""
    return (
        f"#!/bin/sh\n{MARKER}; 'hep2pcap extcap --uninstall' removes it.\n"
        f'exec {shlex.quote(python)} -m hep2pcap extcap "$@"\n'
    )


def _ours(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


def install(folder: Path, python: str = sys.executable) -> Path:
    """Write the launcher into ``folder`` (created if missing); replace only our own.

    Raises:
        Hep2PcapError: the folder cannot be written, or holds a file of that name that
            hep2pcap did not write.
    """
    path = folder / LAUNCHER
    if (path.exists() or path.is_symlink()) and not _ours(path):
        raise Hep2PcapError(f"{path} exists and was not written by hep2pcap; not replacing it")
    tmp = folder / f".{LAUNCHER}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(launcher_text(python))
        tmp.chmod(0o755)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise Hep2PcapError(f"{folder}: cannot install: {exc.strerror or exc}") from exc
    return path


def uninstall(folder: Path) -> Path | None:
    """Remove our launcher from ``folder``; ``None`` when there was none.

    Raises:
        Hep2PcapError: the file there was not written by hep2pcap, or cannot be removed.
    """
    path = folder / LAUNCHER
    if not (path.exists() or path.is_symlink()):
        return None
    if not _ours(path):
        raise Hep2PcapError(f"{path} was not written by hep2pcap; not removing it")
    try:
        path.unlink()
    except OSError as exc:
        raise Hep2PcapError(f"{path}: cannot remove: {exc.strerror or exc}") from exc
    return path
