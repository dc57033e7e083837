"""split.py: the per-call index, file names, and many files written with bounded memory."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from scapy.utils import PcapNgReader

from hep2pcap import split
from hep2pcap.pcapng import LINKTYPE_ETHERNET
from hep2pcap.pipeline import Options, convert, observe
from hep2pcap.sources import open_inputs
from hep2pcap.split import OTHER_NAME, CallIndex, SplitWriter, file_name, write_index
from hep2pcap.stats import Stats

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TICKET = FIXTURES / "hep" / "ticket.hep"


def split_ticket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[list[split.Call], SplitWriter, Stats]:
    index = CallIndex()
    opts = Options()
    with ExitStack() as stack:
        observe(open_inputs((str(TICKET),), stack, []), opts, Stats(), index.observe)
    calls = index.plan()
    writer = SplitWriter(str(tmp_path), index, LINKTYPE_ETHERNET, comments=True)
    stats = Stats()
    with ExitStack() as stack:
        convert(
            open_inputs((str(TICKET),), stack, []), writer, opts, stats, route=writer.writer_for
        )
    writer.close()
    write_index(str(tmp_path / split.INDEX_NAME), calls)
    return calls, writer, stats


def test_calls_are_numbered_by_start_and_linked(tmp_path: Path) -> None:
    calls, writer, stats = split_ticket(tmp_path)
    assert [c.file for c in calls] == sorted(c.file or "" for c in calls)
    assert [c.first_us for c in calls] == sorted(c.first_us for c in calls)
    b2bua = [c for c in calls if len(c.call_ids) == 2]
    assert len(b2bua) == 3
    assert all(c.method == "INVITE" and c.final == 200 for c in b2bua)
    assert all(c.from_uri == "sip:alice@example.com" for c in b2bua)
    assert sum(c.messages for c in calls) + _count(tmp_path / OTHER_NAME) == stats.written
    assert set(writer.files) == {c.file for c in calls} | {OTHER_NAME}


def _count(path: Path) -> int:
    with PcapNgReader(str(path)) as r:
        return sum(1 for _ in r)


def test_each_file_holds_its_call(tmp_path: Path) -> None:
    calls, _, _ = split_ticket(tmp_path)
    for c in calls:
        assert c.file is not None
        assert _count(tmp_path / c.file) == c.messages


def test_small_buffer_appends_in_many_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(split, "MAX_BUFFERED_BYTES", 1)
    calls, _, _ = split_ticket(tmp_path)
    for c in calls:
        assert c.file is not None
        assert _count(tmp_path / c.file) == c.messages


def test_index_file(tmp_path: Path) -> None:
    calls, _, _ = split_ticket(tmp_path)
    lines = (tmp_path / split.INDEX_NAME).read_text().splitlines()
    assert lines[0] == "file\tstart\tmethod\tfrom\tto\tfinal\tmessages\tcall_ids"
    assert len(lines) == len(calls) + 1
    first = lines[1].split("\t")
    assert first[0] == calls[0].file
    assert first[2] == "INVITE"
    assert first[1].endswith("+00:00")


@pytest.mark.parametrize(
    ("call_id", "name"),
    [
        ("a84b4c76e66710@pc33.atlanta.com", "00007_a84b4c76e66710@pc33.atlanta.com.pcapng"),
        ("../../etc/passwd", "00007_etc_passwd.pcapng"),
        ("x/y\\z:*?", "00007_x_y_z.pcapng"),
        ("...", "00007_call.pcapng"),
        ("a" * 300, f"00007_{'a' * 80}.pcapng"),
    ],
)
def test_file_names_are_safe(call_id: str, name: str) -> None:
    assert file_name(7, call_id) == name


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    from hep2pcap.errors import Hep2PcapError

    index = CallIndex()
    writer = SplitWriter(str(tmp_path / "missing"), index, LINKTYPE_ETHERNET, comments=True)
    with ExitStack() as stack, pytest.raises(Hep2PcapError, match="cannot write"):
        convert(open_inputs((str(TICKET),), stack, []), writer, Options(), route=writer.writer_for)
