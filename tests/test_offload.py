"""Two processes (hep2pcap.offload): the same output and counters as one process, errors and
log lines handed to the parent, and no child left behind whatever happens."""

from __future__ import annotations

import functools
import io
import os
import signal
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner
from public_captures import public_capture

from hep2pcap.cli import cli
from hep2pcap.errors import Hep2PcapError, Reason, StrictError
from hep2pcap.hep import HepMessage
from hep2pcap.items import Item, Tick
from hep2pcap.offload import BATCH, offloaded
from hep2pcap.pcapng import LINKTYPE_ETHERNET, PcapngWriter
from hep2pcap.pipeline import Options, convert
from hep2pcap.sources import ByteCounter, open_inputs
from hep2pcap.stats import Stats

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
INPUTS = [
    FIXTURES / "hep" / "ticket.hep",  # TCP re-cut, copies, truncation, several agents
    FIXTURES / "hep" / "sender-quirks.hep",  # repaired times, vendor chunks
    FIXTURES / "hep" / "sample-call.hep.gz",
    *sorted((FIXTURES / "pcap").glob("*.pcap*")),
    *sorted((FIXTURES / "malformed").glob("*.hep"))[:20],
    *sorted((FIXTURES / "malformed").glob("*.pcap"))[:10],
]
BAD_FIRST = FIXTURES / "malformed" / "ambiguous_payload.hep"  # a dropped message, then a good one


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    yield
    with pytest.raises(ChildProcessError):  # every forked child was waited for
        os.waitpid(-1, os.WNOHANG)


def _convert(paths: list[Path], two: bool, options: Options | None = None) -> tuple[bytes, Stats]:
    options = options if options is not None else Options()
    out = io.BytesIO()
    stats = Stats()
    counters: list[ByteCounter] = []
    with ExitStack() as stack:
        sources = open_inputs(tuple(str(p) for p in paths), stack, counters)
        writer = PcapngWriter(out, LINKTYPE_ETHERNET)
        offload = functools.partial(offloaded, counters=counters) if two else None
        try:
            convert(sources, writer, options, stats, offload=offload)
        except Hep2PcapError as exc:
            return out.getvalue() + repr(exc).encode(), stats
    return out.getvalue(), stats


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_two_processes_write_the_same_bytes_and_count_the_same(path: Path) -> None:
    one, one_stats = _convert([path], two=False)
    two, two_stats = _convert([path], two=True)
    assert two == one
    assert two_stats == one_stats
    assert two_stats.summary() == one_stats.summary()


def test_several_inputs_merged_the_same_way() -> None:
    paths = [FIXTURES / "hep" / "multi-agent.hep", FIXTURES / "hep" / "ticket.hep"]
    assert _convert(paths, two=True) == _convert(paths, two=False)


@pytest.mark.public
@pytest.mark.parametrize("name", ["hep-wireshark_hep.pcap"])
def test_public_capture(name: str) -> None:
    path = public_capture(name)
    one, one_stats = _convert([path], two=False)
    two, two_stats = _convert([path], two=True)
    assert one_stats.written > 0
    assert (two, two_stats) == (one, one_stats)


def test_strict_error_comes_through_after_what_came_before_it() -> None:
    path = BAD_FIRST
    strict = Options(strict=True)
    one, one_stats = _convert([path], two=False, options=strict)
    two, two_stats = _convert([path], two=True, options=strict)
    assert b"StrictError" in one  # the fixture has a malformed message: the run stops there
    assert two == one
    assert two_stats == one_stats


# --- offloaded() itself, with made-up front halves ----------------------------------------


def _item(n: int) -> Item:
    msg = HepMessage(3, 17, b"\1\2\3\4", b"\5\6\7\10", 5060, 5060, n, b"SIP %d" % n)
    return (n, n << 16, msg)


def test_items_ticks_and_counters_arrive_in_order() -> None:
    def front(stats: Stats) -> Iterator[Item | Tick]:
        for n in range(3 * BATCH + 7):
            stats.read += 1
            stats.warnings[Reason.SIP_SPLIT] += n % 2
            yield _item(n)
            if n % 100 == 0:
                yield Tick(n)

    stats = Stats(written=5)
    got = list(offloaded(front, stats))
    want: list[Item | Tick] = []
    for n in range(3 * BATCH + 7):
        want.append(_item(n))
        if n % 100 == 0:
            want.append(Tick(n))
    assert got == want
    assert stats.read == 3 * BATCH + 7
    assert stats.warnings[Reason.SIP_SPLIT] == (3 * BATCH + 7) // 2
    assert stats.written == 5  # the parent's own counts are kept


def test_an_exception_in_the_child_is_raised_in_the_parent_after_its_items() -> None:
    def front(stats: Stats) -> Iterator[Item | Tick]:
        yield _item(1)
        stats.dropped[Reason.BAD_MAGIC] += 1
        raise StrictError("x offset 7: bad_magic (--strict)")

    stats = Stats()
    got: list[object] = []
    with pytest.raises(StrictError, match="bad_magic"):
        got.extend(offloaded(front, stats))
    assert got == [_item(1)]
    assert stats.dropped[Reason.BAD_MAGIC] == 1


def test_an_exception_that_cannot_cross_is_sent_as_text() -> None:
    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:  # pickle cannot rebuild it
            super().__init__(f"{a}/{b}")

    def front(stats: Stats) -> Iterator[Item | Tick]:
        yield _item(1)
        raise Odd(1, 2)

    with pytest.raises(Hep2PcapError, match="input reader failed"):
        list(offloaded(front, Stats()))


def test_a_child_killed_mid_way_is_an_error_and_its_items_are_kept() -> None:
    def front(stats: Stats) -> Iterator[Item | Tick]:
        yield from (_item(n) for n in range(BATCH))  # one whole batch is sent
        os.kill(os.getpid(), signal.SIGKILL)
        yield _item(BATCH)

    got: list[object] = []
    with pytest.raises(Hep2PcapError, match="ended without finishing"):
        got.extend(offloaded(front, Stats()))
    assert got == [_item(n) for n in range(BATCH)]


def test_a_parent_that_stops_reading_ends_the_child() -> None:
    def front(stats: Stats) -> Iterator[Item | Tick]:
        n = 0
        while True:  # endless: only the parent closing the pipe ends it
            yield _item(n)
            n += 1

    items = offloaded(front, Stats())
    assert isinstance(items, Generator)
    assert next(items) == _item(0)
    items.close()  # the fixture checks the child was waited for


# --- the command line --------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout_bytes, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [str(FIXTURES / "hep" / "ticket.hep")],
        [str(FIXTURES / "hep" / "ticket.hep"), "--dedup", "--redact"],
        [str(FIXTURES / "hep" / "ticket.hep"), "--method", "INVITE", "--host", "10.0.0.1"],
        [str(FIXTURES / "hep" / "sender-quirks.hep"), "--verbose"],
        [str(BAD_FIRST)],
        [str(BAD_FIRST), "--strict"],
    ],
    ids=["plain", "dedup-redact", "filters", "verbose-log", "warning", "strict"],
)
def test_cli_default_equals_one_process(args: list[str]) -> None:
    two = _cli("convert", *args, "-w", "-")
    one = _cli("convert", *args, "-w", "-", "--one-process")
    assert two == one


def test_cli_log_lines_of_the_reader_reach_stderr() -> None:
    code, _, err = _cli("convert", str(BAD_FIRST), "-w", "-")
    assert code == 0
    # logged in the child, printed here, before the summary
    assert (
        err.index("hep2pcap: ") < err.index("ambiguous_payload: both payload") < err.index("read 2")
    )


@pytest.mark.parametrize("other", ["file", "drop"])
def test_cli_split_default_equals_one_process(tmp_path: Path, other: str) -> None:
    ticket = str(FIXTURES / "hep" / "ticket.hep")
    outputs = []
    for extra in ([], ["--one-process"]):
        out = tmp_path / ("one" if extra else "two")
        code, _, err = _cli("split", ticket, "-d", str(out), "--other", other, *extra)
        assert code == 0
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        outputs.append((files, err.replace(str(out), "DIR")))
    assert len(outputs[0][0]) > 2  # calls, index.tsv (and other.pcapng)
    assert outputs[0] == outputs[1]
