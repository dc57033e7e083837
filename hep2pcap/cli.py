"""Command line: thin click layer over the library.

Owns: option parsing, opening the output, logging setup, exit codes (0 ok, 1 error in one
line, 2 usage, 130/143 after SIGINT/SIGTERM in one line; README's table). Must never: hold
conversion logic; everything it grows moves into the library (outputs.py: what a failed run
leaves; progress.py: status lines).
"""

# ruff: noqa: E402 - the early signal handlers below go before the heavier imports
from __future__ import annotations

import signal
import sys

#: ``listen`` starting up: signals that came before its handlers were in place (a SIGHUP
#: from logrotate, a Ctrl-C) are remembered here instead of killing the half-started process
#: (or printing a KeyboardInterrupt traceback). Set before the heavier imports below.
_EARLY_SIGNALS: list[int] = []
if sys.argv[1:2] == ["listen"] and hasattr(signal, "SIGHUP"):
    for _sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda signum, frame: _EARLY_SIGNALS.append(signum))

import contextlib
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import click

from . import __version__, engine
from .errors import Hep2PcapError
from .extcap import TRANSPORTS
from .filters import Criteria, Selector, compile_match, parse_host, parse_time
from .hep import DecodeOptions, HepMessage
from .items import Offload, Stage
from .offload import available as offloading_available
from .offload import offloaded
from .outputs import Interrupted, SafeOutput, refuse_same_file, signals_raise
from .pcapng import LINKTYPE_ETHERNET, LINKTYPE_RAW, PacketWriter, PcapngWriter, PcapWriter
from .pipeline import Options, convert, observe
from .progress import Progress
from .render import FAITHFUL_TYPES, parse_payload_type
from .sources import ByteCounter, open_inputs
from .stats import Stats

# A fixed width keeps --help identical everywhere (the README shows it verbatim).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}
LINKTYPES = {"ethernet": LINKTYPE_ETHERNET, "raw": LINKTYPE_RAW}


@click.group(context_settings=CONTEXT)
@click.version_option(
    __version__, "-V", "--version", message=f"%(prog)s %(version)s; {engine.describe()}"
)
def cli() -> None:
    """Turn HEP (Homer Encapsulation Protocol) into pcapng for Wireshark and sngrep."""


#: Output buffer: fewer, larger writes (each pcapng block is one write call).
OUTPUT_BUFFER = 1 << 20


def _failed(exc: BaseException, output: str | None, note: str | None) -> Exception:
    """One line for a run that did not finish: the error and what became of the output.

    Returns the exception to raise: exit 1 for an error, 128 + the signal number (130 for
    Ctrl-C) after an interruption, whose line is printed here (not as an "Error:").
    """
    tail = f"; {note}" if note else ""
    if isinstance(exc, KeyboardInterrupt):  # SIGINT outside signals_raise
        exc = Interrupted(2)
    if isinstance(exc, Interrupted):
        click.echo(f"hep2pcap: {exc}{tail}", err=True)
        return click.exceptions.Exit(exc.exit_code)
    if isinstance(exc, Hep2PcapError):
        return click.ClickException(f"{exc}{tail}")
    assert isinstance(exc, OSError)  # inputs raise InputError, so this is the output
    return click.ClickException(f"{output}: cannot write: {exc.strerror or exc}{tail}")


def _on_terminal() -> bool:
    # Status lines are for a person watching (never in a pipe or a log file).
    return sys.stderr.isatty()


def _progress(counters: list[ByteCounter], label: str, show: bool) -> Progress | None:
    # A status line on stderr, when ``show`` (a terminal, not --quiet).
    if not show:
        return None
    return Progress(counters, label, lambda text: click.echo(text, nl=False, err=True, color=True))


def _payload_types(include: tuple[str, ...], exclude: tuple[str, ...]) -> frozenset[int] | None:
    def parsed(value: str, hint: str) -> int:
        try:
            return parse_payload_type(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from None

    excluded = {parsed(v, "--exclude-type") for v in exclude}
    if "all" in include:
        if not excluded:
            return None
        types = set(range(256))
    else:
        types = set(FAITHFUL_TYPES) | {parsed(v, "--include-type") for v in include}
    return frozenset(types - excluded)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hep2pcap: %(message)s"))
    logger = logging.getLogger("hep2pcap")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


F = TypeVar("F", bound=Callable[..., None])
_T = TypeVar("_T")


def frame_options(command: F) -> F:
    """The options convert and listen share: what is written, and how much is said.

    --include-type and --exclude-type reach the command as one ``payload_types`` argument.
    """

    @functools.wraps(command)
    def wrapper(
        *, include_types: tuple[str, ...], exclude_types: tuple[str, ...], **kwargs: Any
    ) -> None:
        command(payload_types=_payload_types(include_types, exclude_types), **kwargs)

    for option in reversed(
        (
            click.option(
                "--linktype",
                type=click.Choice(sorted(LINKTYPES)),
                default="ethernet",
                show_default=True,
                help="Link layer of the rebuilt frames.",
            ),
            click.option(
                "--no-comments", is_flag=True, help="Do not write a HEP comment on each packet."
            ),
            click.option(
                "--include-type",
                "include_types",
                multiple=True,
                metavar="TYPE|all",
                help="Also write this HEP payload type (number or name, e.g. 32 or qos-json), "
                "as it is; 'all': every type. Repeatable.",
            ),
            click.option(
                "--exclude-type",
                "exclude_types",
                multiple=True,
                metavar="TYPE",
                help="Do not write this HEP payload type (e.g. log, rtcp-json, 4). Repeatable.",
            ),
            click.option(
                "--use-receive-time",
                is_flag=True,
                help="Use the capture/receive time when HEPv3 has no timestamp.",
            ),
            click.option(
                "--verbose",
                is_flag=True,
                help="Log every rejected message, not the first 5 of each reason.",
            ),
            click.option(
                "-q", "--quiet", is_flag=True, help="Print no summary, status or warnings."
            ),
        )
    ):
        wrapper = option(wrapper)
    return cast(F, wrapper)


def select_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options convert, listen and split share: filters, repairs, redaction.

    They reach the command as one ``selection: Selection`` argument.
    """

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        values = {n: kwargs.pop(n) for n in inspect.signature(_selection).parameters}
        command(selection=_selection(**values), **kwargs)

    for option in reversed(_SELECT_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_SELECT_OPTIONS = (
    click.option(
        "--call-id", "call_ids", multiple=True, metavar="ID",
        help="Keep this call: its Call-ID, and legs linked to it by HEP correlation id.",
    ),
    click.option(
        "--correlation-id", "correlation_ids", multiple=True, metavar="ID",
        help="Keep the dialogs of messages with this HEP correlation id.",
    ),
    click.option(
        "--host", "hosts", multiple=True, metavar="IP", help="Keep messages from or to this IP."
    ),
    click.option(
        "--port", "ports", multiple=True, type=click.IntRange(0, 65535), metavar="N",
        help="Keep messages from or to this port.",
    ),
    click.option(
        "--agent", "agents", multiple=True, type=click.IntRange(0, 0xFFFFFFFF), metavar="ID",
        help="Keep messages from this HEP capture agent id.",
    ),
    click.option(
        "--since", metavar="TIME", help="Keep messages at or after TIME (ISO 8601 or epoch s)."
    ),
    click.option("--until", metavar="TIME", help="Keep messages at or before TIME."),
    click.option(
        "--method", "methods", multiple=True, metavar="NAME",
        help="Keep dialogs with this SIP method (INVITE, REGISTER, ...).",
    ),
    click.option(
        "--match", "match_expr", metavar="REGEX",
        help="Keep dialogs with a message whose SIP text matches REGEX (like sngrep).",
    ),
    click.option("-i", "--ignore-case", is_flag=True, help="--match ignores case."),
    click.option(
        "-v", "--invert-match", is_flag=True, help="Keep the dialogs --match does not match."
    ),
    click.option(
        "--redact", is_flag=True,
        help="Mask SRTP keys and digest credentials (same lengths; see README).",
    ),
    click.option(
        "--dedup", is_flag=True, help="Keep one copy of a packet that several agents mirrored."
    ),
    click.option(
        "--no-resplit", is_flag=True,
        help="Do not re-cut SIP over TCP/TLS at message boundaries (Content-Length).",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Selection:
    """The filter and repair options, parsed."""

    criteria: Criteria
    redact: bool
    dedup: bool
    resplit: bool


def _selection(
    call_ids: tuple[str, ...],
    correlation_ids: tuple[str, ...],
    hosts: tuple[str, ...],
    ports: tuple[int, ...],
    agents: tuple[int, ...],
    since: str | None,
    until: str | None,
    methods: tuple[str, ...],
    match_expr: str | None,
    ignore_case: bool,
    invert_match: bool,
    redact: bool,
    dedup: bool,
    no_resplit: bool,
) -> Selection:
    def parsed(hint: str, parse: Callable[[str], _T], value: str) -> _T:
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from None

    if (ignore_case or invert_match) and match_expr is None:
        raise click.UsageError("-i/--ignore-case and -v/--invert-match go with --match")
    criteria = Criteria(
        call_ids=frozenset(call_ids),
        correlation_ids=frozenset(correlation_ids),
        hosts=frozenset(parsed("--host", parse_host, h) for h in hosts),
        ports=frozenset(ports),
        agents=frozenset(agents),
        since_us=parsed("--since", parse_time, since) if since is not None else None,
        until_us=parsed("--until", parse_time, until) if until is not None else None,
        methods=frozenset(m.upper() for m in methods),
        match=(
            parsed("--match", lambda e: compile_match(e, ignore_case), match_expr)
            if match_expr is not None
            else None
        ),
        invert=invert_match,
    )
    return Selection(criteria, redact=redact, dedup=dedup, resplit=not no_resplit)


def _options(
    linktype: str,
    no_comments: bool,
    payload_types: frozenset[int] | None,
    use_receive_time: bool,
    verbose: bool,
    password: str | None,
    window_s: float,
    selection: Selection | None = None,
    *,
    strict: bool = False,
    lenient: bool = False,
) -> Options:
    return Options(
        decode=DecodeOptions(strict=strict, lenient=lenient, use_receive_time=use_receive_time),
        password=password.encode() if password is not None else None,
        payload_types=payload_types,
        window_us=round(window_s * 1_000_000),
        comments=not no_comments,
        strict=strict,
        linktype=LINKTYPES[linktype],
        warn_limit=None if verbose else 5,
        resplit=selection.resplit if selection is not None else True,
        dedup=selection.dedup if selection is not None else False,
        redact=selection.redact if selection is not None else False,
    )


#: Options of the commands that read saved dumps (convert, info, split).
#: Paths are checked when opened: a directory or an unreadable file is a one-line error
#: (exit 1), not a usage error.
INPUTS = click.argument("inputs", nargs=-1, required=True, type=click.Path(allow_dash=True))
HEP_PORT = click.option(
    "--hep-port", "hep_ports", multiple=True, type=click.IntRange(1, 65535), metavar="PORT",
    help="In pcaps, UDP/TCP port whose traffic is HEP whatever it looks like (HEP is found on "
    "any port by its signature; this forces it). Repeatable; default 9060.",
)  # fmt: skip
LENIENT = click.option(
    "--lenient", is_flag=True,
    help="Accept the 'EEP3' alias; in raw dumps, skip stray bytes to the next HEP3 header.",
)  # fmt: skip
ONE_PROCESS = click.option(
    "--one-process", is_flag=True,
    help="Read and decode in the same process that writes (by default a second process "
    "does, so the work uses two cores; the output is the same).",
)  # fmt: skip


def _offload(one_process: bool, counters: list[ByteCounter]) -> Offload | None:
    # Two processes unless asked not to, or the platform cannot fork.
    if one_process or not offloading_available():
        return None
    return functools.partial(offloaded, counters=counters)


@cli.command(context_settings=CONTEXT)
@INPUTS
@click.option(
    "-w", "--write", "output", required=True, metavar="FILE", help="Output file, '-' for stdout."
)
@click.option(
    "--format", "fmt", type=click.Choice(["pcapng", "pcap"]), default="pcapng", show_default=True,
    help="pcap drops interfaces and comments.",
)  # fmt: skip
@click.option(
    "--password", metavar="KEY", help="Drop messages whose HEP auth key is missing or differs."
)
@click.option(
    "--window", "window_s", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
    metavar="SECONDS",
    help="Reorder window in seconds of HEP time.",
)  # fmt: skip
@HEP_PORT
@click.option("--strict", is_flag=True, help="Fail (exit 1) on the first malformed message.")
@LENIENT
@ONE_PROCESS
@frame_options
@select_options
def convert_cmd(
    inputs: tuple[str, ...],
    output: str,
    fmt: str,
    linktype: str,
    no_comments: bool,
    password: str | None,
    payload_types: frozenset[int] | None,
    window_s: float,
    use_receive_time: bool,
    hep_ports: tuple[int, ...],
    strict: bool,
    lenient: bool,
    one_process: bool,
    verbose: bool,
    quiet: bool,
    selection: Selection,
) -> None:
    """Convert saved HEP dumps (raw HEPv3, pcap or pcapng, gzip or not) to pcapng.

    Several inputs are merged by time; '-' reads stdin. SIP, RTP, RTCP reports (rebuilt
    from their JSON) and logs (as syslog) are written; --include-type and --exclude-type
    change that. Filters keep whole dialogs (a first pass finds them). A summary goes to
    stderr.

    Example: hep2pcap convert hep-traffic.pcap agent2.hep.gz -w calls.pcapng
    """
    _setup_logging(verbose, quiet)
    options = _options(
        linktype, no_comments, payload_types, use_receive_time, verbose, password, window_s,
        selection, strict=strict, lenient=lenient,
    )  # fmt: skip
    ports = frozenset(hep_ports) if hep_ports else None
    counters: list[ByteCounter] = []
    stats = Stats()
    tty = not quiet and _on_terminal()
    safe: SafeOutput | None = None
    try:
        with signals_raise() as stop, ExitStack() as stack:
            refuse_same_file(inputs, [output])
            select = None
            if selection.criteria:
                selector = Selector(selection.criteria, stats)
                if selection.criteria.per_dialog:
                    inputs = _spool_stdin(inputs, stack)
                    _first_pass(inputs, options, ports, lenient, selector.observe,
                                progress="first pass: " if tty else None)  # fmt: skip
                select = selector.stage
            sources = open_inputs(inputs, stack, counters, lenient=lenient, hep_ports=ports)
            if output == "-":
                out = sys.stdout.buffer
            else:
                from .rotate import BlockFile  # whole blocks: a full disk leaves a valid file

                safe = SafeOutput(output)
                out = cast(BinaryIO, BlockFile(safe.file, limit=OUTPUT_BUFFER))
            writer: PacketWriter
            if fmt == "pcap":
                writer = PcapWriter(out, options.linktype)
            else:
                writer = PcapngWriter(out, options.linktype, comments=options.comments)
            progress = _progress(counters, "second pass: " if select else "", tty)
            try:
                convert(sources, writer, options, stats, on_progress=progress, select=select,
                        offload=_offload(one_process, counters))  # fmt: skip
            finally:
                if progress is not None:
                    progress.close()
            stop.check()
            if safe is not None:
                safe.commit()
                safe = None
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): end quietly
        return
    except (Hep2PcapError, OSError, KeyboardInterrupt) as exc:
        note = safe.abandon(stats.written) if safe is not None else None
        raise _failed(exc, output, note) from exc
    if not quiet:
        click.echo(stats.summary(), err=True)


def _spool_stdin(inputs: tuple[str, ...], stack: ExitStack) -> tuple[str, ...]:
    # A first pass needs to read the inputs twice: stdin is copied to a temporary file.
    if "-" not in inputs:
        return inputs
    import shutil
    import tempfile

    tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="hep2pcap-stdin-"))  # noqa: SIM115
    shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
    tmp.flush()
    return tuple(tmp.name if i == "-" else i for i in inputs)


def _first_pass(
    inputs: tuple[str, ...],
    options: Options,
    hep_ports: frozenset[int] | None,
    lenient: bool,
    *observers: Callable[[int, HepMessage], None],
    progress: str | None = None,
) -> None:
    # Read the inputs once without writing (dialog filters, split); the counters of this
    # pass are discarded (the second pass counts), and so are its log lines. ``progress``:
    # the label of a status line on stderr (None: none).
    quiet = dataclasses.replace(options, warn_limit=0, strict=False)
    counters: list[ByteCounter] = []
    with ExitStack() as stack:
        sources = open_inputs(inputs, stack, counters, lenient=lenient, hep_ports=hep_ports)
        shown = _progress(counters, progress or "", progress is not None)
        try:
            observe(sources, quiet, Stats(), *observers, on_progress=shown)
        finally:
            if shown is not None:
                shown.close()


convert_cmd.name = "convert"


# ---- listen (issue 3: live capture) ------------------------------------------------------
# Kept in one block, apart from convert; imports are local so convert does not pay for them.

DEFAULT_LISTEN = ("udp:127.0.0.1:9060", "tcp:127.0.0.1:9060")


@cli.command("listen", context_settings=CONTEXT)
@click.option(
    "-l", "--listen", "listen_urls", multiple=True, metavar="URL",
    help="udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT (IPv6 in brackets); repeatable. "
    "[default: udp:127.0.0.1:9060 and tcp:127.0.0.1:9060]",
)  # fmt: skip
@click.option(
    "-w", "--write", "output", required=True, metavar="FILE",
    help="Output pcapng, '-' for stdout. With -G, strftime patterns are expanded.",
)  # fmt: skip
@click.option(
    "-c", "--count", type=click.IntRange(1), metavar="N", help="Stop after N written messages."
)
@click.option(
    "--duration", "duration_s", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
    help="Stop after this many seconds.",
)  # fmt: skip
@click.option(
    "-C", "file_size_mb", type=click.FloatRange(0, min_open=True), metavar="MB",
    help="Start a new file when the current one reaches MB million bytes.",
)  # fmt: skip
@click.option(
    "-G", "rotate_s", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
    help="Start a new file every SECONDS.",
)  # fmt: skip
@click.option(
    "-W", "max_files", type=click.IntRange(1), metavar="N",
    help="Keep at most N files (ring buffer; the oldest is deleted).",
)  # fmt: skip
@click.option(
    "--rcvbuf", type=click.IntRange(4096, 1 << 30), default=32 * 1024 * 1024, show_default=True,
    metavar="BYTES", help="UDP socket receive buffer to ask the kernel for.",
)  # fmt: skip
@click.option(
    "--backlog", "backlog_mb", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
    metavar="MB", help="Received data held while conversion catches up, shared fairly between "
    "UDP, TCP and TLS sources; beyond a source's share UDP is dropped (counted as 'not "
    "converted', per listener) and TCP is not read.",
)  # fmt: skip
@click.option("--tls-cert", metavar="FILE", help="Certificate (PEM) for tls:.")
@click.option("--tls-key", metavar="FILE", help="Private key (PEM) for tls:.")
@click.option(
    "--tls-client-ca", metavar="FILE",
    help="Require TLS clients to show a certificate signed by this CA (PEM).",
)  # fmt: skip
@click.option(
    "--password", metavar="KEY",
    help="Require this HEP auth key (HEPv3 only; v1/v2 are then rejected).",
)  # fmt: skip
@click.option(
    "--allow", "allow_cidrs", multiple=True, metavar="CIDR",
    help="Accept datagrams and connections only from this network; repeatable.",
)  # fmt: skip
@click.option(
    "--forward", "forward_url", metavar="URL",
    help="Relay every accepted HEP message unchanged to udp:HOST:PORT or tcp:HOST:PORT.",
)  # fmt: skip
@click.option(
    "--tcp-idle-timeout", "idle_s", type=click.FloatRange(0, min_open=True), default=60.0,
    show_default=True, metavar="SECONDS",
    help="Close TCP/TLS connections that sent no whole HEP message this long.",
)  # fmt: skip
@click.option(
    "--max-connections", type=click.IntRange(1), default=1024, show_default=True, metavar="N",
    help="TCP/TLS connections at once; a new one displaces the one quiet longest (no whole "
    "HEP message for 1 s or more), else it is refused; both counted.",
)  # fmt: skip
@click.option(
    "--stats-interval", "stats_s", type=click.FloatRange(0), default=0, metavar="SECONDS",
    help="Print a one-line status on stderr every SECONDS (0: never).",
)  # fmt: skip
@click.option(
    "--window", "window_s", type=click.FloatRange(0, 3600), default=0.5, show_default=True,
    metavar="SECONDS", help="Reorder window (frames are written this late).",
)  # fmt: skip
@click.option(
    "--window-mb", "window_mb", type=click.IntRange(1, 1 << 20), default=64, show_default=True,
    metavar="MB", help="Memory for messages in the reorder window; when full the oldest are "
    "written early (counted as 'window_full').",
)  # fmt: skip
@frame_options
@select_options
def listen_cmd(
    listen_urls: tuple[str, ...],
    output: str,
    count: int | None,
    duration_s: float | None,
    file_size_mb: float | None,
    rotate_s: float | None,
    max_files: int | None,
    rcvbuf: int,
    backlog_mb: int,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    password: str | None,
    allow_cidrs: tuple[str, ...],
    forward_url: str | None,
    idle_s: float,
    max_connections: int,
    stats_s: float,
    window_s: float,
    window_mb: int,
    linktype: str,
    no_comments: bool,
    payload_types: frozenset[int] | None,
    use_receive_time: bool,
    verbose: bool,
    quiet: bool,
    selection: Selection,
) -> None:
    """Capture live HEP (UDP, TCP, TLS) to pcapng that can be opened at any moment.

    Listens on 127.0.0.1:9060 (UDP and TCP) unless -l says otherwise, prints the bound
    addresses on stderr, and writes frames in HEP-time order, flushed every second.
    SIGINT/SIGTERM flush, close and print the summary (exit 0); SIGHUP starts a new file.
    Rotated files are named NAME.00000.EXT, NAME.00001.EXT, ... Filters are applied as
    messages arrive: a dialog's messages are held (up to 20000, 32 MiB) until one matches.
    Memory is bounded in bytes everywhere (see the README); an existing file gets a new
    pcapng section, never truncated, and a second writer of the same file is refused.

    Example: hep2pcap listen -l udp:0.0.0.0:9060 -w 'calls-%H%M.pcapng' -G 3600 -W 24
    """
    import time

    from .accounting import Totals, file_statistics, snapshot
    from .errors import StopNow
    from .rotate import BlockFile, RotatingWriter
    from .sources.live import Forwarder, LiveOptions, LiveSource, parse_allow
    from .sources.tcp import make_server_context
    from .sources.udp import parse_endpoint
    from .stats import Stats

    # Signal handlers first, before any socket is opened: a stop or a SIGHUP that comes
    # early is remembered and honoured, never fatal.
    source: LiveSource | None = None
    rotator: RotatingWriter | None = None
    stops = [sum(1 for sig in _EARLY_SIGNALS if sig != signal.SIGHUP)]

    def on_stop(signum: int, frame: object) -> None:
        stops[0] += 1
        if stops[0] > 1:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise StopNow  # the second one ends the run at once
        if source is not None:
            source.stop()

    def on_hup(signum: int, frame: object) -> None:
        if rotator is not None:
            rotator.reopen()

    with ExitStack() as handlers:
        for sig, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGHUP, on_hup),
        ):
            old = signal.signal(sig, handler)
            handlers.callback(signal.signal, sig, old)
        _setup_logging(verbose, quiet)
        log = logging.getLogger("hep2pcap")
        try:
            endpoints = tuple(parse_endpoint(u) for u in (listen_urls or DEFAULT_LISTEN))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-l/--listen") from None
        try:
            networks = tuple(parse_allow(c) for c in allow_cidrs) if allow_cidrs else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--allow") from None
        try:
            upstream = parse_endpoint(forward_url, ("udp", "tcp")) if forward_url else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--forward") from None
        rotating = file_size_mb is not None or rotate_s is not None or max_files is not None
        if output == "-" and rotating:
            raise click.UsageError("-C, -G and -W need a file name, not '-w -'")
        if (tls_cert is None) != (tls_key is None):
            raise click.UsageError("--tls-cert and --tls-key go together")
        if any(ep.scheme == "tls" for ep in endpoints) and tls_cert is None:
            raise click.UsageError("a tls: listener needs --tls-cert and --tls-key")
        if tls_client_ca is not None and tls_cert is None:
            raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")

        options = _options(
            linktype, no_comments, payload_types, use_receive_time, verbose, password, window_s,
            selection,
        )  # fmt: skip
        options = dataclasses.replace(options, max_window_bytes=window_mb * 1024 * 1024)
        stats = Stats()
        select = Selector(selection.criteria, stats).live_stage if selection.criteria else None
        with ExitStack() as stack:
            try:
                tls = (
                    make_server_context(tls_cert, tls_key, tls_client_ca)
                    if tls_cert is not None and tls_key is not None
                    else None
                )
                live = LiveOptions(
                    endpoints=endpoints,
                    rcvbuf=rcvbuf,
                    tls=tls,
                    allow=networks,
                    tcp_idle_timeout_s=idle_s,
                    max_connections=max_connections,
                    max_backlog_bytes=backlog_mb * 1024 * 1024,
                    password=password.encode() if password is not None else None,
                    log_limit=None if verbose else 5,
                )
                source = LiveSource(live, stats, count=count, duration_s=duration_s)
                if stops[0]:
                    source.stop()
                source.open()
                stack.callback(source.close)
                for u in source.udp:
                    if u.rcvbuf < u.rcvbuf_requested:
                        log.warning(
                            "%s: the OS capped the receive buffer at %d bytes (asked %d); "
                            "raise the cap with: sysctl -w net.core.rmem_max=%d",
                            u.address, u.rcvbuf, u.rcvbuf_requested, u.rcvbuf_requested,
                        )  # fmt: skip
                live_source = source

                def totals() -> Totals:  # for the Interface Statistics Blocks at each end
                    return snapshot(stats, time.time_ns() // 1000, *live_source.losses())

                start = totals()
                writer: PacketWriter
                if output == "-":
                    writer = PcapngWriter(
                        BlockFile(sys.stdout.buffer),  # type: ignore[arg-type]
                        options.linktype,
                        comments=options.comments,
                    )
                    writer.flush()
                else:
                    rotator = RotatingWriter(
                        output,
                        options.linktype,
                        comments=options.comments,
                        max_bytes=round(file_size_mb * 1_000_000) if file_size_mb else None,
                        interval_s=rotate_s,
                        max_files=max_files,
                        totals=totals,
                    )
                    stack.callback(rotator.close)
                    writer = rotator
                if upstream is not None:
                    source.forward = Forwarder(upstream)
                next_status = [0.0]

                def on_tick(now: float) -> None:
                    if stats_s <= 0 or quiet or now < next_status[0]:
                        return
                    next_status[0] = now + stats_s
                    drops = live_source.kernel_drops()
                    rejected = stats.dropped + stats.input_problems
                    reasons = ", ".join(f"{r.value}={n}" for r, n in rejected.most_common(4))
                    click.echo(
                        f"hep2pcap: received {live_source.received}, wrote {stats.written}, "
                        f"dropped {sum(rejected.values())}"
                        f"{f' ({reasons})' if reasons else ''}, "
                        f"kernel drops {'?' if drops is None else drops}, "
                        f"backlog {live_source.backlog_bytes // 1024} KiB, "
                        f"connections {live_source.open_connections}, "
                        f"file {rotator.current_path if rotator is not None else 'stdout'}",
                        err=True,
                    )

                source.on_tick = on_tick
                for ep in source.addresses:
                    if not quiet:
                        click.echo(f"listening on {ep}", err=True)
                # A second stop raises StopNow: end at once (what was written so far is
                # flushed; what the window held is counted as lost "stopped").
                with contextlib.suppress(StopNow):
                    convert([source], writer, options, stats, select=select)
                source.close()
                if isinstance(writer, PcapngWriter):  # stdout; a RotatingWriter does it itself
                    writer.write_statistics(file_statistics(start, totals(), writer))
                writer.close()
                _settle(stats, rotator)
            except Hep2PcapError as exc:
                on_disk = _failed_output(stats, rotator)
                raise click.ClickException(f"{exc}{on_disk}") from exc
            except BrokenPipeError:
                sys.stderr.close()  # the reader went away (| tshark stopped): end quietly
                return
            except OSError as exc:  # the output: disk full, file system gone (one line)
                on_disk = _failed_output(stats, rotator)
                raise click.ClickException(
                    f"{output}: cannot write: {exc.strerror or exc}{on_disk}"
                ) from exc
        if not quiet:
            click.echo(stats.summary(), err=True)


def _settle(stats: Stats, rotator: Any) -> None:
    # What the output files lost (removed while written, a failed write) comes out of
    # "written": the summary never claims more than is on disk.
    if rotator is None:
        return
    for cause, n in rotator.lost.items():
        n = min(n, stats.written)
        stats.written -= n
        stats.frames -= n
        stats.lost[cause] += n
    rotator.lost.clear()


def _failed_output(stats: Stats, rotator: Any) -> str:
    # The run ends on an error: drop what cannot be written any more (counted), and say
    # how many messages are on disk (never more than are), for the one error line.
    if rotator is not None:
        rotator.abandon()
    _settle(stats, rotator)
    # Accepted, but still held (window, filter, re-cut) when the output failed.
    rest = (
        stats.read - stats.written - stats.skipped_total - stats.dropped_total - stats.filtered
    ) - sum(stats.lost.values())
    if rest > 0:
        stats.lost["output_failed"] += rest
    if not stats.read:
        return ""
    lost = sum(stats.lost.values())
    return f" (after {stats.written} messages written" + (
        f"; {lost} accepted but not on disk)" if lost else ")"
    )


# ---- end of listen ------------------------------------------------------------------------


# ---- info and split (issue 4: the support-ticket workflow) -------------------------------


@cli.command("info", context_settings=CONTEXT)
@INPUTS
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--password", metavar="KEY", help="Count messages whose HEP auth key differs.")
@HEP_PORT
@LENIENT
@click.option(
    "--use-receive-time", is_flag=True,
    help="Use the capture/receive time when HEPv3 has no timestamp.",
)  # fmt: skip
@click.option("--verbose", is_flag=True, help="Log every rejected message.")
def info_cmd(
    inputs: tuple[str, ...],
    as_json: bool,
    password: str | None,
    hep_ports: tuple[int, ...],
    lenient: bool,
    use_receive_time: bool,
    verbose: bool,
) -> None:
    """Report what HEP dumps hold and whether the capture looks complete.

    Time range, agents, HEP versions, payload types, transports, directions, SIP methods
    and responses, calls, rejected messages by reason, repairs, and warnings: SIP
    transactions mirrored from one side only (the FS-9657 signature), dialogs seen in one
    direction only, copies from several agents, truncated SIP, time going backwards, and
    what an input without HEP holds instead.

    Example: hep2pcap info hep-traffic.pcap --json
    """
    import json

    from .report import Report

    _setup_logging(verbose, quiet=False)
    options = dataclasses.replace(
        _options("ethernet", True, None, use_receive_time, verbose, password, 2.0,
                 lenient=lenient),
        warn_limit=0 if not verbose else None,
        render=False,  # what the dump holds, not how it is written
    )  # fmt: skip
    report, stats = Report(), Stats()
    counters: list[ByteCounter] = []
    try:
        with signals_raise() as stop, ExitStack() as stack:
            sources = open_inputs(
                inputs, stack, counters, lenient=lenient,
                hep_ports=frozenset(hep_ports) if hep_ports else None,
            )  # fmt: skip
            progress = _progress(counters, "", _on_terminal())
            try:
                observe(sources, options, stats, report.observe, on_progress=progress)
                for name, source in zip(inputs, sources, strict=True):
                    report.add_statistics(name, getattr(source, "statistics", []))
            finally:
                if progress is not None:
                    progress.close()
            stop.check()
    except (Hep2PcapError, KeyboardInterrupt) as exc:
        raise _failed(exc, None, None) from exc
    try:
        if as_json:
            click.echo(json.dumps(report.to_dict(stats), indent=2))
        else:
            click.echo(report.to_text(stats))
    except BrokenPipeError:
        sys.stderr.close()


@cli.command("split", context_settings=CONTEXT)
@INPUTS
@click.option(
    "-d", "--directory", required=True, metavar="DIR",
    help="Write one pcapng per call here (created if missing), and index.tsv.",
)  # fmt: skip
@click.option(
    "--other", type=click.Choice(["file", "drop"]), default="file", show_default=True,
    help="Non-dialog traffic (REGISTER, OPTIONS, ...): to other.pcapng, or left out.",
)  # fmt: skip
@click.option("--password", metavar="KEY", help="Drop messages whose HEP auth key differs.")
@click.option(
    "--window", "window_s", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
    metavar="SECONDS", help="Reorder window in seconds of HEP time.",
)  # fmt: skip
@HEP_PORT
@LENIENT
@ONE_PROCESS
@frame_options
@select_options
def split_cmd(
    inputs: tuple[str, ...],
    directory: str,
    other: str,
    password: str | None,
    window_s: float,
    hep_ports: tuple[int, ...],
    lenient: bool,
    one_process: bool,
    linktype: str,
    no_comments: bool,
    payload_types: frozenset[int] | None,
    use_receive_time: bool,
    verbose: bool,
    quiet: bool,
    selection: Selection,
) -> None:
    """Split HEP dumps into one pcapng per call, with an index of the calls.

    A call is a Call-ID with an INVITE, SUBSCRIBE or REFER, together with the legs linked
    to it by HEP correlation id. index.tsv lists each call: file, start, method, from,
    to, final response, messages, Call-IDs. Filters choose which calls are written.

    Example: hep2pcap split hep-traffic.pcap -d calls/ --other drop
    """
    import os

    from .outputs import SafeFolder
    from .split import INDEX_NAME, OTHER_NAME, CallIndex, SplitWriter, write_index

    _setup_logging(verbose, quiet)
    options = _options(
        linktype, no_comments, payload_types, use_receive_time, verbose, password, window_s,
        selection, lenient=lenient,
    )  # fmt: skip
    ports = frozenset(hep_ports) if hep_ports else None
    stats = Stats()
    index = CallIndex()
    criteria = selection.criteria
    selector = Selector(criteria, stats) if criteria else None
    tty = not quiet and _on_terminal()
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise click.ClickException(f"{directory}: not a directory")
    folder: SafeFolder | None = None
    try:
        with signals_raise() as stop, ExitStack() as stack:
            inputs = _spool_stdin(inputs, stack)
            observers: list[Callable[[int, HepMessage], None]] = [index.observe]
            keep = None
            if selector is not None:
                # the index learns only what the filters let through, so calls have no gaps
                accepts = criteria.accepts
                observers = [lambda ts, msg: index.observe(ts, msg) if accepts(ts, msg) else None]
                if criteria.per_dialog:
                    observers.append(selector.observe)
                    keep = selector.keeps
            _first_pass(inputs, options, ports, lenient, *observers,
                        progress="first pass: " if tty else None)  # fmt: skip
            calls = index.plan(keep)
            try:  # after the first pass: a bad input fails before anything is created
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise Hep2PcapError(f"{directory}: cannot create: {exc.strerror or exc}") from exc
            names = [c.file for c in calls if c.file] + [OTHER_NAME, INDEX_NAME]
            refuse_same_file(inputs, [os.path.join(directory, n) for n in names])
            folder = SafeFolder(directory)
            writer = SplitWriter(folder.path, index, options.linktype, comments=options.comments)
            stages: list[Stage] = []
            if selector is not None:
                stages.append(selector.stage)
            if other == "drop":
                stages.append(index.calls_only(stats))
            counters: list[ByteCounter] = []
            sources = open_inputs(inputs, stack, counters, lenient=lenient, hep_ports=ports)
            progress = _progress(counters, "second pass: ", tty)
            try:
                convert(sources, writer, options, stats, select=_chain(stages),
                        route=writer.writer_for, offload=_offload(one_process, counters),
                        on_progress=progress)  # fmt: skip
            finally:
                if progress is not None:
                    progress.close()
            writer.close()
            files = set(writer.files)
            write_index(os.path.join(folder.path, INDEX_NAME),
                        [c for c in calls if c.file in files])  # fmt: skip
            stop.check()
            folder.commit([*writer.files, INDEX_NAME])
            folder = None
    except (Hep2PcapError, OSError, KeyboardInterrupt) as exc:
        note = folder.abandon(stats.written) if folder is not None else None
        raise _failed(exc, directory, note) from exc
    if not quiet:
        written = [f for f in writer.files if f != OTHER_NAME]
        click.echo(
            f"{len(written)} calls written to {directory} (index: {INDEX_NAME})"
            + (f", other traffic in {OTHER_NAME}" if OTHER_NAME in writer.files else ""),
            err=True,
        )
        click.echo(stats.summary(), err=True)


# ---- extcap (issue 14: hep2pcap as a Wireshark capture interface) -------------------------


def _wireshark(*names: str, **kw: Any) -> Callable[[F], F]:
    """An option only Wireshark passes (hidden from --help)."""
    return click.option(*names, hidden=True, **kw)


@cli.command("extcap", context_settings=CONTEXT)
@click.option(
    "--install", is_flag=True, help="Install the launcher into Wireshark's extcap folder."
)
@click.option("--uninstall", is_flag=True, help="Remove the launcher --install wrote.")
@click.option(
    "--dir", "folder", metavar="DIR",
    help="Extcap folder to (un)install in. [default: the personal extcap folder tshark names, "
    "or ~/.config/wireshark/extcap]",
)  # fmt: skip
@click.option(
    "--port", type=click.IntRange(1, 65535), default=9060, show_default=True, metavar="PORT",
    help="Capture: UDP/TCP port to listen on.",
)  # fmt: skip
@click.option(
    "--bind", default="127.0.0.1", show_default=True, metavar="IP",
    help="Capture: address to listen on.",
)  # fmt: skip
@click.option(
    "--transport", type=click.Choice(list(TRANSPORTS)), default="udp+tcp", show_default=True,
    metavar="KINDS", help=f"Capture: listeners to open: {', '.join(TRANSPORTS)}.",
)  # fmt: skip
@click.option(
    "--tls-port", type=click.IntRange(1, 65535), default=9061, show_default=True, metavar="PORT",
    help="Capture: TCP port of the TLS listener.",
)  # fmt: skip
@click.option("--tls-cert", metavar="FILE", help="Capture: certificate (PEM) for TLS.")
@click.option("--tls-key", metavar="FILE", help="Capture: private key (PEM) for TLS.")
@click.option("--password", metavar="KEY", help="Capture: require this HEP auth key.")
@click.option("--call-id", metavar="ID", help="Capture: keep this call.")
@click.option("--host", metavar="IP", help="Capture: keep messages from or to this IP.")
@click.option("--method", metavar="NAME", help="Capture: keep dialogs with this SIP method.")
@_wireshark("--extcap-interfaces", "list_interfaces", is_flag=True)
@_wireshark("--extcap-version", "ws_version")
@_wireshark("--extcap-interface", "interface")
@_wireshark("--extcap-dlts", "list_dlts", is_flag=True)
@_wireshark("--extcap-config", "list_config", is_flag=True)
@_wireshark("--capture", is_flag=True)
@_wireshark("--fifo")
@_wireshark("--extcap-capture-filter", "capture_filter")
@_wireshark("--extcap-control-in", "control_in")
@_wireshark("--extcap-control-out", "control_out")
@_wireshark("--debug", is_flag=True)
@_wireshark("--debug-file")
def extcap_cmd(
    install: bool,
    uninstall: bool,
    folder: str | None,
    port: int,
    bind: str,
    transport: str,
    tls_port: int,
    tls_cert: str | None,
    tls_key: str | None,
    password: str | None,
    call_id: str | None,
    host: str | None,
    method: str | None,
    list_interfaces: bool,
    ws_version: str | None,
    interface: str | None,
    list_dlts: bool,
    list_config: bool,
    capture: bool,
    fifo: str | None,
    capture_filter: str | None,
    control_in: str | None,
    control_out: str | None,
    debug: bool,
    debug_file: str | None,
) -> None:
    """Live HEP in Wireshark: install hep2pcap as the capture interface 'hep'.

    After --install, Wireshark and tshark list the interface 'hep' (tshark -D); its options
    dialog sets the port, address, transports (UDP, TCP, TLS), HEP password and filters,
    and starting it runs 'hep2pcap listen' writing to Wireshark. The other options are what
    Wireshark passes; with tshark: -o extcap.hep.port:9060, extcap.hep.callid:ID, ...

    Example: hep2pcap extcap --install && tshark -i hep -o extcap.hep.port:9060
    """
    from . import extcap

    try:
        if install or uninstall:
            if install and uninstall:
                raise click.UsageError("--install or --uninstall, not both")
            where = Path(folder) if folder else extcap.default_folder()
            if install:
                path = extcap.install(where)
                click.echo(f"installed {path}; restart Wireshark, then capture on 'hep'")
            else:
                removed = extcap.uninstall(where)
                click.echo(f"removed {removed}" if removed else f"nothing to remove in {where}")
            return
        if list_interfaces:
            click.echo(extcap.interfaces_text(), nl=False)
            return
        if not (list_dlts or list_config or capture):
            raise click.UsageError(
                "say --install or --uninstall (the other options are Wireshark's)"
            )
        if interface != extcap.INTERFACE:
            raise click.UsageError(
                f"--extcap-interface: expected {extcap.INTERFACE!r}, got {interface!r}"
            )
        if list_dlts:
            click.echo(extcap.dlts_text(), nl=False)
        elif list_config:
            click.echo(extcap.config_text(), nl=False)
        else:
            if fifo is None:
                raise click.UsageError("--capture needs --fifo")
            if capture_filter:
                raise click.UsageError(
                    "capture filters are not supported: use the Call-ID, Host or Method options"
                )
            args = extcap.listen_args(extcap.CaptureOptions(
                port=port, bind=bind, transport=transport, tls_port=tls_port, tls_cert=tls_cert,
                tls_key=tls_key, password=password, call_id=call_id, host=host, method=method,
            ))  # fmt: skip
            for pipe, mode in ((control_in, "r"), (control_out, "w")):
                if pipe:
                    extcap.watch_control_pipe(pipe, mode)
            extcap.redirect_stdout_to(fifo)
            with listen_cmd.make_context("hep2pcap extcap", args) as sub:
                listen_cmd.invoke(sub)
    except Hep2PcapError as exc:
        raise click.ClickException(str(exc)) from exc


def _chain(stages: list[Callable[[Any], Any]]) -> Callable[[Any], Any] | None:
    if not stages:
        return None

    def run(items: Any) -> Any:
        for stage in stages:
            items = stage(items)
        return items

    return run


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hep2pcap")
