"""Raw dumps real tools write (issue 11, HEP-SPEC §14): heplify's disk buffer, HFP's
``HEP-saved.arch`` and ``nc`` dumps, and HEPv1/v2 streamed back to back — recognised by
content, through ``open_input`` as the commands use it."""

from __future__ import annotations

import gzip
import io
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner
from hepbuild import TS_SEC, ip, v2_time, v3, v12

from hep2pcap.cli import cli
from hep2pcap.errors import InputError, Reason
from hep2pcap.hep import ChunkType, decode
from hep2pcap.items import Problem, Record, Tick
from hep2pcap.sources import open_input
from hep2pcap.sources.rawfile import BufferFileSource, RawHepSource, looks_like_buffer_file

FRAMES = [v3({ChunkType.SRC_PORT: (5060 + i).to_bytes(2, "big")}) for i in range(3)]
V2 = v12(2, 2, ip("127.0.0.1"), ip("127.0.0.1"), time=v2_time(TS_SEC, 1, 2001))


def buffer_file(*frames: bytes) -> bytes:
    """heplify's bufferToFile: u32 big-endian length, then the frame (docs/HEP_BUFFERING.md)."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in frames)


def items_of(tmp_path: Path, data: bytes, name: str = "HEP-Buffer.dump") -> list[Record | Problem]:
    path = tmp_path / name
    path.write_bytes(data)
    with ExitStack() as stack:
        out = list(open_input(str(path), stack))
    items = [i for i in out if not isinstance(i, Tick)]
    assert len(items) == len(out)  # a file source never ticks
    return items


def test_heplify_buffer_file_by_content(tmp_path: Path) -> None:
    data = buffer_file(*FRAMES, V2, gzip.compress(FRAMES[0]))
    items = items_of(tmp_path, data, "anything.bin")
    assert [i.data for i in items if isinstance(i, Record)] == [
        *FRAMES,
        V2,
        gzip.compress(FRAMES[0]),
    ]
    assert [i.pos for i in items if isinstance(i, Record)][:2] == [0, 4 + len(FRAMES[0])]
    assert decode(items[-1].data).warnings == (Reason.GZIP_WRAPPED,)  # type: ignore[union-attr]


def test_buffer_file_gzip_compressed_and_read_in_pieces(tmp_path: Path) -> None:
    data = buffer_file(*FRAMES * 100)
    items = items_of(tmp_path, gzip.compress(data), "hep-buffer.dump.gz")
    assert [i.data for i in items if isinstance(i, Record)] == FRAMES * 100


def test_buffer_file_cut_in_a_record(tmp_path: Path) -> None:
    data = buffer_file(*FRAMES)[:-5]
    items = items_of(tmp_path, data)
    assert [i.data for i in items if isinstance(i, Record)] == FRAMES[:2]
    assert [(p.reason, p.pos) for p in items if isinstance(p, Problem)] == [
        (Reason.STREAM_TRUNCATED_AT_EOF, 2 * (4 + len(FRAMES[0])))
    ]


def test_buffer_file_bad_length_ends_it(tmp_path: Path) -> None:
    data = buffer_file(FRAMES[0]) + (70_000).to_bytes(4, "big") + FRAMES[1]
    items = items_of(tmp_path, data)
    assert [i.data for i in items if isinstance(i, Record)] == FRAMES[:1]
    assert [p.reason for p in items if isinstance(p, Problem)] == [Reason.STREAM_DESYNC]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (buffer_file(FRAMES[0])[:8], True),
        (buffer_file(V2)[:8], True),
        (buffer_file(gzip.compress(FRAMES[0]))[:8], True),
        (b"\x00\x00\x00\x05HEP3", False),  # too short for a frame
        (b"\x00\x01\x00\x00HEP3", False),  # longer than a HEPv3 message
        (b"\x00\x00\x02\x9dABCD", False),
        (b"\x00\x00\x02", False),
    ],
)
def test_buffer_file_detection(head: bytes, expected: bool) -> None:
    assert looks_like_buffer_file(head) is expected


def test_hfp_arch_and_nc_dumps_stay_raw_hep3(tmp_path: Path) -> None:
    # HFP (ivlovric/HFP) HEP-saved.arch and `nc -lu 9060 > dump`: HEP3 back to back.
    path = tmp_path / "HEP-saved.arch"
    path.write_bytes(b"".join(FRAMES))
    with ExitStack() as stack:
        source = open_input(str(path), stack)
        assert isinstance(source, RawHepSource)
        assert [i.data for i in source if isinstance(i, Record)] == FRAMES


def test_v2_stream_dump(tmp_path: Path) -> None:
    # `nc -l 9061 > dump` of Kamailio's HEPv2 over TCP: framed by each message's SIP.
    items = items_of(tmp_path, V2 * 3, "kamailio-v2-tcp.dump")
    assert [i.data for i in items if isinstance(i, Record)] == [V2] * 3


def test_unknown_format_names_the_buffer_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00\x00\x02\x9dnothing we know")
    with ExitStack() as stack, pytest.raises(InputError, match="heplify buffer file"):
        open_input(str(path), stack)


@pytest.mark.parametrize("command", ["convert", "info", "split"])
def test_buffer_file_in_every_command(tmp_path: Path, command: str) -> None:
    path = tmp_path / "HEP-Buffer.dump"
    path.write_bytes(buffer_file(*FRAMES))
    args = {
        "convert": ["convert", str(path), "-w", str(tmp_path / "o.pcapng")],
        "info": ["info", str(path), "--json"],
        "split": ["split", str(path), "-d", str(tmp_path / "calls")],
    }[command]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if command == "info":
        assert '"accepted": 3' in result.stdout
    else:
        assert "read 3, wrote 3" in result.stderr


def test_buffer_source_from_a_stream() -> None:
    source = BufferFileSource("b", io.BytesIO(buffer_file(*FRAMES)))
    assert [i.data for i in source if isinstance(i, Record)] == FRAMES
