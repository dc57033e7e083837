"""Output files for live capture: whole blocks, rotation by size/time/count, reopen (SIGHUP)."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest

from hep2pcap.pcapng import BLOCK_TYPE_EPB, BLOCK_TYPE_IDB, BLOCK_TYPE_SHB, LINKTYPE_ETHERNET
from hep2pcap.rotate import BlockFile, RotatingWriter, indexed

_HEADER = struct.Struct("<II")


def read_pcapng(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """Parse a pcapng written by hep2pcap (little-endian, one section or more).

    Returns ``([(interface, ts_us, frame), ...], sections)``. Fails the test on any block
    that is cut short or malformed: a valid file is whole blocks only (a file still being
    written: pass it through hepbuild.whole_blocks first).
    """
    packets: list[tuple[int, int, bytes]] = []
    sections = 0
    interfaces = 0
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 12, f"partial block header at {pos}"
        btype, total = _HEADER.unpack_from(data, pos)
        assert total % 4 == 0, f"block length {total} at {pos}"
        assert total >= 12, f"block length {total} at {pos}"
        assert pos + total <= len(data), f"block at {pos} cut short"
        assert data[pos + total - 4 : pos + total] == total.to_bytes(4, "little")
        if btype == BLOCK_TYPE_SHB:
            sections += 1
            interfaces = 0
        elif btype == BLOCK_TYPE_IDB:
            interfaces += 1
        elif btype == BLOCK_TYPE_EPB:
            iface, hi, lo, caplen, _ = struct.unpack_from("<IIIII", data, pos + 8)
            assert iface < interfaces, "packet on an undeclared interface"
            packets.append((iface, hi << 32 | lo, data[pos + 28 : pos + 28 + caplen]))
        pos += total
    assert sections >= 1 or not data, "no section header"
    return packets, sections


def read_file(path: Path) -> list[tuple[int, int, bytes]]:
    packets, sections = read_pcapng(path.read_bytes())
    assert sections == 1
    return packets


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _write(w: RotatingWriter, n: int, agent: int | None = 1, size: int = 100) -> None:
    for i in range(n):
        w.write_packet(agent, None, 1_700_000_000_000_000 + i, bytes(size), f"c{i}")


def test_block_file_writes_whole_blocks_only() -> None:
    raw = io.BytesIO()
    out = BlockFile(raw, limit=10)
    out.write(b"abcd")
    assert raw.getvalue() == b""
    out.write(b"efghijk")  # over the limit: both blocks go, in one write
    assert raw.getvalue() == b"abcdefghijk"
    out.write(b"xy")
    out.flush()
    assert raw.getvalue() == b"abcdefghijkxy"


def test_indexed_names() -> None:
    assert indexed("/tmp/calls.pcapng", 3) == "/tmp/calls.00003.pcapng"
    assert indexed("calls", 12) == "calls.00012"


def test_plain_file_is_valid_after_each_flush(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    w = RotatingWriter(str(path), LINKTYPE_ETHERNET)
    assert read_file(path) == []  # the SHB and first IDB are on disk from the start
    _write(w, 3)
    w.flush()
    assert len(read_file(path)) == 3
    _write(w, 2, agent=None)
    w.close()
    packets = read_file(path)
    assert [p[0] for p in packets] == [1, 1, 1, 0, 0]  # interface 0: no agent id
    assert w.files_opened == 1


def test_rotation_by_size_gives_complete_files(tmp_path: Path) -> None:
    w = RotatingWriter(str(tmp_path / "c.pcapng"), LINKTYPE_ETHERNET, max_bytes=1000)
    _write(w, 30)
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files[:2]] == ["c.00000.pcapng", "c.00001.pcapng"]
    assert len(files) == w.files_opened > 2
    total = 0
    for f in files:
        packets = read_file(f)  # each file: its own SHB and IDB
        assert packets
        total += len(packets)
        assert f.stat().st_size < 1000 + 300  # rotated once past the limit
    assert total == 30


def test_rotation_by_time_with_strftime_names(tmp_path: Path) -> None:
    clock = FakeClock()
    template = str(tmp_path / "calls-%Y%m%d-%H%M%S.pcapng")
    w = RotatingWriter(template, LINKTYPE_ETHERNET, interval_s=60, clock=clock)
    _write(w, 2)
    clock.now += 30
    _write(w, 2)  # same file
    clock.now += 31
    _write(w, 1)  # a minute after opening: new file
    w.close()
    names = sorted(f.name for f in tmp_path.iterdir())
    expected = [
        time.strftime("calls-%Y%m%d-%H%M%S.pcapng", time.localtime(t))
        for t in (1_700_000_000.0, 1_700_000_061.0)
    ]
    assert names == sorted(expected)
    assert [len(read_file(tmp_path / n)) for n in expected] == [4, 1]


def test_time_name_without_pattern_is_numbered(tmp_path: Path) -> None:
    clock = FakeClock()
    w = RotatingWriter(str(tmp_path / "x.pcapng"), LINKTYPE_ETHERNET, interval_s=1, clock=clock)
    _write(w, 1)
    clock.now += 1
    _write(w, 1)
    w.close()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.00000.pcapng", "x.00001.pcapng"]


def test_ring_buffer_keeps_the_newest_files(tmp_path: Path) -> None:
    w = RotatingWriter(str(tmp_path / "r.pcapng"), LINKTYPE_ETHERNET, max_bytes=500, max_files=3)
    _write(w, 40)
    w.close()
    names = sorted(f.name for f in tmp_path.iterdir())
    assert len(names) == 3
    assert names[-1] == Path(w.current_path).name
    assert w.files_opened > 3
    assert names[0] == f"r.{w.files_opened - 3:05d}.pcapng"
    for n in names:
        assert read_file(tmp_path / n)


def test_reopen_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"
    w = RotatingWriter(str(path), LINKTYPE_ETHERNET)
    _write(w, 2)
    path.rename(tmp_path / "live.pcapng.1")  # what logrotate does, then it sends SIGHUP
    w.reopen()
    w.flush()  # a flush (every tick) is enough to honour it
    _write(w, 3)
    w.close()
    assert len(read_file(tmp_path / "live.pcapng.1")) == 2
    assert len(read_file(path)) == 3


def test_reopen_never_overwrites_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"
    w = RotatingWriter(str(path), LINKTYPE_ETHERNET)
    _write(w, 2)
    w.reopen()
    _write(w, 1)
    w.close()
    assert len(read_file(path)) == 2
    assert len(read_file(tmp_path / "live.00000.pcapng")) == 1


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    from hep2pcap.errors import Hep2PcapError

    with pytest.raises(Hep2PcapError, match="cannot write"):
        RotatingWriter(str(tmp_path / "missing-dir" / "x.pcapng"), LINKTYPE_ETHERNET)


@pytest.mark.parametrize("fault", ["removed", "replaced by a file"])
def test_next_file_impossible_capture_goes_on_in_the_current_one(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The output directory disappears (or becomes a file) mid-rotation: nothing is lost
    # that can be kept, no exception reaches the capture loop, and the rotation is tried
    # again later — and succeeds once the directory is back.
    import shutil

    from hep2pcap import rotate

    outdir = tmp_path / "out"
    outdir.mkdir()
    now = [1000.0]
    w = RotatingWriter(
        str(outdir / "live.pcapng"), LINKTYPE_ETHERNET, interval_s=60, clock=lambda: now[0]
    )
    _write(w, 2)
    first = outdir / "live.00000.pcapng"
    moved = tmp_path / "kept.pcapng"
    w.flush()
    shutil.copy(first, moved)  # what was flushed before the fault
    shutil.rmtree(outdir)
    if fault == "replaced by a file":
        outdir.write_text("not a directory")
    now[0] += 61
    with caplog.at_level("WARNING", logger="hep2pcap"):
        _write(w, 3)
    assert w.rotate_failures == 1
    assert "cannot write" in caplog.text
    assert "still writing to" in caplog.text
    assert len(read_file(moved)) == 2
    # back again: the next attempt (after ROTATE_RETRY_S) opens a new file
    if fault == "replaced by a file":
        outdir.unlink()
    outdir.mkdir()
    now[0] += rotate.ROTATE_RETRY_S + 1
    _write(w, 4)
    w.close()
    files = sorted(outdir.iterdir())
    assert len(files) == 1
    assert len(read_file(files[0])) == 4


# --- a capture is never lost in silence (issue 16) -------------------------------------------


def test_existing_capture_gets_a_new_section_never_truncated(tmp_path: Path) -> None:
    from hep2pcap.rotate import RotatingWriter

    out = tmp_path / "c.pcapng"
    for _ in range(2):
        w = RotatingWriter(str(out), LINKTYPE_ETHERNET)
        _write(w, 1)
        w.close()
    packets, sections = read_pcapng(out.read_bytes())
    assert (len(packets), sections) == (2, 2)


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    from hep2pcap.errors import Hep2PcapError
    from hep2pcap.rotate import RotatingWriter

    out = tmp_path / "c.pcapng"
    first = RotatingWriter(str(out), LINKTYPE_ETHERNET)
    with pytest.raises(Hep2PcapError, match="another process is writing"):
        RotatingWriter(str(out), LINKTYPE_ETHERNET)
    first.close()
    RotatingWriter(str(out), LINKTYPE_ETHERNET).close()  # free again once closed


def test_existing_file_that_is_not_a_pcapng_is_refused(tmp_path: Path) -> None:
    from hep2pcap.errors import Hep2PcapError
    from hep2pcap.rotate import RotatingWriter

    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    with pytest.raises(Hep2PcapError, match="not overwriting it"):
        RotatingWriter(str(out), LINKTYPE_ETHERNET)
    assert out.read_text() == "my notes\n"


def test_block_cut_short_by_a_crash_is_cut_off_before_appending(tmp_path: Path) -> None:
    from hep2pcap.rotate import RotatingWriter

    out = tmp_path / "c.pcapng"
    w = RotatingWriter(str(out), LINKTYPE_ETHERNET)
    _write(w, 1)
    w.close()
    whole = out.read_bytes()
    out.write_bytes(whole + whole[-40:-10])  # half a block, as a SIGKILL inside write() leaves
    RotatingWriter(str(out), LINKTYPE_ETHERNET).close()
    data = out.read_bytes()
    assert data.startswith(whole)
    packets, _ = read_pcapng(data)
    assert len(packets) == 1


def test_removed_file_is_recreated_and_its_packets_counted(tmp_path: Path) -> None:
    from hep2pcap.rotate import RotatingWriter

    out = tmp_path / "c.pcapng"
    w = RotatingWriter(str(out), LINKTYPE_ETHERNET)
    _write(w, 3)
    w.flush()
    out.unlink()
    w.flush()
    assert out.exists()
    assert w.lost == {"output_removed": 3}
    _write(w, 1)
    w.close()
    assert len(read_pcapng(out.read_bytes())[0]) == 1


def test_removed_folder_is_an_error(tmp_path: Path) -> None:
    from hep2pcap.errors import Hep2PcapError
    from hep2pcap.rotate import RotatingWriter

    folder = tmp_path / "d"
    folder.mkdir()
    out = folder / "c.pcapng"
    w = RotatingWriter(str(out), LINKTYPE_ETHERNET)
    _write(w, 1)
    w.flush()
    out.unlink()
    folder.rmdir()
    with pytest.raises(Hep2PcapError, match="removed while being written"):
        w.flush()
    assert w.lost == {"output_removed": 1}
