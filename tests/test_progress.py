"""progress.py: a status line for long runs, on a terminal only (cli._on_terminal)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from hep2pcap import cli, pipeline, progress
from hep2pcap.progress import Progress
from hep2pcap.sources import ByteCounter
from hep2pcap.stats import Stats

TICKET = Path(__file__).resolve().parent.parent / "fixtures" / "hep" / "ticket.hep"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _counter(total: int | None, done: int, compressed: bool = False) -> ByteCounter:
    c = ByteCounter(io.BytesIO(), total)
    c.done, c.compressed = done, compressed
    return c


def test_nothing_before_a_second_then_a_percentage_then_cleared() -> None:
    shown: list[str] = []
    clock = Clock()
    p = Progress([_counter(4_000_000, 1_000_000)], "first pass: ", shown.append, clock)
    stats = Stats()
    stats.read = 500
    p(stats)
    p.close()
    assert shown == [], "a short run shows nothing and clears nothing"
    clock.now += progress.DELAY_S
    p(stats)
    stats.written = 20
    p(stats)
    p.close()
    assert shown == [
        "\rhep2pcap: first pass:  25% of 4.0 MB, 500 messages read",
        "\rhep2pcap: first pass:  25% of 4.0 MB, 500 messages read, 20 written",
        "\r\033[K",
    ]


def test_gzip_shows_its_compressed_bytes_and_stdin_its_rate() -> None:
    shown: list[str] = []
    clock = Clock()
    gz = Progress([_counter(2_000_000, 1_500_000, compressed=True)], "", shown.append, clock)
    pipe = Progress([_counter(None, 123)], "", shown.append, clock)
    clock.now += 2
    stats = Stats()
    stats.read = 3000
    gz(stats)
    pipe(stats)
    assert shown == [
        "\rhep2pcap:  75% of 2.0 MB (compressed), 3000 messages read",
        "\rhep2pcap: 3000 messages read, 1500/s",  # no percentage without a size
    ]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every item is a progress point and every run is long enough, on a "terminal".
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)


def _stderr(args: list[str], stdin: bytes | None = None) -> str:
    result = CliRunner().invoke(cli.cli, args, input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stderr


@pytest.mark.usefixtures("terminal")
@pytest.mark.parametrize(
    ("args", "labels"),
    [
        (["info", str(TICKET)], ["\rhep2pcap: "]),
        (["convert", str(TICKET), "-w", "-", "--method", "INVITE"],
         ["\rhep2pcap: first pass: ", "\rhep2pcap: second pass: "]),
        (["split", str(TICKET), "-d", "{tmp}"],
         ["\rhep2pcap: first pass: ", "\rhep2pcap: second pass: "]),
        (["convert", "{gz}", "-w", "-"], ["% of ", " MB (compressed), "]),
        (["convert", "-", "-w", "-"], [" messages read, ", "/s"]),
    ],
    ids=["info", "filtered convert", "split", "gzip", "stdin"],
)  # fmt: skip
def test_long_runs_show_progress_on_a_terminal(
    tmp_path: Path, args: list[str], labels: list[str]
) -> None:
    gz = tmp_path / "ticket.hep.gz"
    gz.write_bytes(gzip.compress(TICKET.read_bytes()))
    args = [a.format(tmp=tmp_path / "calls", gz=gz) for a in args]
    err = _stderr(args, stdin=TICKET.read_bytes() if "-" in args[1:2] else None)
    for label in labels:
        assert label in err
    assert "\r\033[K" in err, "the status line is cleared before the summary"


def test_no_progress_when_not_a_terminal_or_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 1)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    assert "\r" not in _stderr(["info", str(TICKET)])  # CliRunner's stderr is no terminal
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    assert _stderr(["convert", str(TICKET), "-w", "-", "-q"]) == ""
