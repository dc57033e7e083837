"""Command line: thin click layer over the library.

Owns: option parsing, opening the output, logging setup, exit codes (0 ok, 1 error,
2 usage). Must never: hold conversion logic; everything it grows moves into the library.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import BinaryIO

import click

from . import __version__
from .errors import Hep2PcapError
from .frames import LINKTYPE_ETHERNET, LINKTYPE_RAW
from .hep import DecodeOptions, PayloadType
from .pcapng import PacketWriter, PcapngWriter, PcapWriter
from .pipeline import Options, convert
from .sources import ByteCounter, open_inputs
from .stats import Stats

# A fixed width keeps --help identical everywhere (the README shows it verbatim).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}
LINKTYPES = {"ethernet": LINKTYPE_ETHERNET, "raw": LINKTYPE_RAW}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version")
def cli() -> None:
    """Turn HEP (Homer Encapsulation Protocol) into pcapng for Wireshark and sngrep."""


def _open_output(path: str, stack: ExitStack) -> BinaryIO:
    if path == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(open(path, "wb"))
    except OSError as exc:
        raise Hep2PcapError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _payload_types(values: tuple[str, ...]) -> frozenset[int] | None:
    if "all" in values:
        return None
    types = {int(PayloadType.SIP)}
    for v in values:
        try:
            types.add(int(v, 0))
        except ValueError:
            raise click.BadParameter(
                f"{v!r} is not a number or 'all'", param_hint="--include-type"
            ) from None
    return frozenset(types)


#: Inputs smaller than this convert too fast to need a progress display.
PROGRESS_MIN_BYTES = 20_000_000


def _progress_printer(counters: list[ByteCounter]) -> Callable[[Stats], None] | None:
    total = sum(c.total or 0 for c in counters)
    if total < PROGRESS_MIN_BYTES or any(c.total is None for c in counters):
        return None

    def show(stats: Stats) -> None:
        done = sum(c.done for c in counters)
        click.echo(
            f"\rhep2pcap: {100 * done // total:3d}% of {total / 1e6:.0f} MB,"
            f" {stats.read} messages read, {stats.written} written",
            nl=False,
            err=True,
        )

    return show


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hep2pcap: %(message)s"))
    logger = logging.getLogger("hep2pcap")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-w", "--write", "output", required=True, metavar="FILE", help="Output file, '-' for stdout."
)
@click.option(
    "--format", "fmt", type=click.Choice(["pcapng", "pcap"]), default="pcapng", show_default=True,
    help="pcap drops interfaces and comments.",
)  # fmt: skip
@click.option(
    "--linktype", type=click.Choice(sorted(LINKTYPES)), default="ethernet", show_default=True,
    help="Link layer of the rebuilt frames.",
)  # fmt: skip
@click.option("--no-comments", is_flag=True, help="Do not write a HEP comment on each packet.")
@click.option(
    "--password", metavar="KEY", help="Drop messages whose HEP auth key is missing or differs."
)
@click.option(
    "--include-type", "include_types", multiple=True, metavar="N|all",
    help="Also write this HEP payload type (e.g. 100 for LOG); 'all' writes every type.",
)  # fmt: skip
@click.option(
    "--window", "window_s", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
    metavar="SECONDS",
    help="Reorder window in seconds of HEP time.",
)  # fmt: skip
@click.option(
    "--use-receive-time", is_flag=True, help="Use the capture time when HEPv3 has no timestamp."
)
@click.option("--strict", is_flag=True, help="Fail (exit 1) on the first malformed message.")
@click.option("--lenient", is_flag=True, help="Accept the 'EEP3' magic alias.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log every rejected message, not the first 5 of each reason.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print no summary or warnings.")
def convert_cmd(
    inputs: tuple[str, ...],
    output: str,
    fmt: str,
    linktype: str,
    no_comments: bool,
    password: str | None,
    include_types: tuple[str, ...],
    window_s: float,
    use_receive_time: bool,
    strict: bool,
    lenient: bool,
    verbose: bool,
    quiet: bool,
) -> None:
    """Convert saved HEP dumps (raw HEPv3, pcap or pcapng, gzip or not) to pcapng.

    Several inputs are merged by time; '-' reads stdin. Only SIP is written unless
    --include-type says otherwise. A summary goes to stderr.

    Example: hep2pcap convert hep-traffic.pcap agent2.hep.gz -w calls.pcapng
    """
    _setup_logging(verbose, quiet)
    options = Options(
        decode=DecodeOptions(strict=strict, lenient=lenient, use_receive_time=use_receive_time),
        password=password.encode() if password is not None else None,
        payload_types=_payload_types(include_types),
        window_us=round(window_s * 1_000_000),
        comments=not no_comments,
        strict=strict,
        linktype=LINKTYPES[linktype],
        warn_limit=None if verbose else 5,
    )
    counters: list[ByteCounter] = []
    with ExitStack() as stack:
        try:
            sources = open_inputs(inputs, stack, counters)
            out = _open_output(output, stack)
            writer: PacketWriter
            if fmt == "pcap":
                writer = PcapWriter(out, options.linktype)
            else:
                writer = PcapngWriter(out, options.linktype, comments=options.comments)
            progress = _progress_printer(counters) if not quiet and sys.stderr.isatty() else None
            stats = convert(sources, writer, options, on_progress=progress)
            if progress is not None:
                click.echo("\r\033[K", nl=False, err=True)
        except Hep2PcapError as exc:
            raise click.ClickException(str(exc)) from exc
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): end quietly
            return
    if not quiet:
        click.echo(stats.summary(), err=True)


convert_cmd.name = "convert"


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hep2pcap")
