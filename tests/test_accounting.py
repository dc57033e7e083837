"""Losses inside the file: Interface Statistics Blocks, written at close and read back."""

from __future__ import annotations

import io
import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

from test_listen import Proc, hep, packets_in, udp_send, wait_until
from test_rotate import FakeClock, read_file

from hep2pcap.accounting import NOT_CONVERTED, Totals, file_statistics, snapshot
from hep2pcap.errors import Reason
from hep2pcap.pcapng import (
    BLOCK_TYPE_ISB,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    InterfaceStatistics,
    PcapngWriter,
    encode_isb,
)
from hep2pcap.rotate import RotatingWriter
from hep2pcap.sources.pcapfile import PcapSource
from hep2pcap.stats import Stats

T0 = 1_700_000_000_000_000


def isbs(data: bytes) -> list[tuple[int, InterfaceStatistics]]:
    """(interface, statistics) of every ISB of a file, read by the reader ``info`` uses."""
    src = PcapSource("f", io.BytesIO(data))
    list(src)
    return [(iface, st) for iface, _, st in src.statistics]


def test_isb_round_trip_every_counter_and_padding() -> None:
    for comment in ("", "a", "ab", "abc", "abcd", "ünïcode"):
        st = InterfaceStatistics(
            T0, T0 + 5_000_001, received=7, kernel_drops=2, filter_accept=5, our_drops=1,
            delivered=4, comment=comment or None,
        )  # fmt: skip
        block = encode_isb(0, st)
        assert len(block) % 4 == 0
        assert struct.unpack_from("<II", block) == (BLOCK_TYPE_ISB, len(block))
        assert block[-4:] == len(block).to_bytes(4, "little")
        out = io.BytesIO()
        w = PcapngWriter(out, LINKTYPE_ETHERNET)
        w.write_statistics([st])
        assert isbs(out.getvalue()) == [(0, st)]


def test_isb_leaves_out_unknown_counters() -> None:
    st = InterfaceStatistics(T0, T0 + 1, delivered=3)
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_ETHERNET)
    w.write_statistics([st])
    assert isbs(out.getvalue()) == [(0, st)]
    both = InterfaceStatistics(T0, T0 + 1, received=0, delivered=3)
    assert len(encode_isb(0, both)) - len(encode_isb(0, st)) == 12  # one u64 option less


def _stats(read: int, by_agent: dict[int | None, int], dropped: int = 0) -> Stats:
    s = Stats(read=read)
    for agent, n in by_agent.items():
        s.flows[(agent, 17, b"\x01" * 4, 1, b"\x02" * 4, 2)] = n
    s.written = sum(by_agent.values())
    if dropped:
        s.dropped[Reason.BAD_MAGIC] = dropped
    return s


def test_file_statistics_split_by_interface_and_causes_named() -> None:
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_ETHERNET)
    for agent in (7, 9):
        w.write_packet(agent, None, T0, b"x" * 60, None)
    start = snapshot(_stats(10, {7: 5}), T0, 1, 0)
    s = _stats(30, {7: 12, 9: 6, None: 1}, dropped=3)
    s.skipped[Reason.UNSUPPORTED_PAYLOAD_TYPE] = 2
    end = snapshot(s, T0 + 60_000_000, 5, 4)
    got = file_statistics(start, end, w)
    assert [g.delivered for g in got] == [1, 7, 6]
    zero = got[0]
    assert (zero.received, zero.kernel_drops, zero.our_drops) == (24, 4, 7)
    assert (zero.start_us, zero.end_us) == (T0, T0 + 60_000_000)
    assert zero.comment is not None
    for text in ("received 24", "written 14", "not written by design 2", "bad_magic=3",
                 f"{NOT_CONVERTED}=4", "dropped by the kernel 4"):  # fmt: skip
        assert text in zero.comment
    assert all(g.received is None and g.kernel_drops is None for g in got[1:])


def test_file_statistics_unknown_kernel_counter_and_shared_interface() -> None:
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_RAW)  # every agent on interface 0
    w.write_packet(7, None, T0, b"x" * 40, None)
    got = file_statistics(
        Totals(T0), snapshot(_stats(3, {7: 2, 8: 1}), T0 + 1, None, 0), w
    )  # fmt: skip
    assert len(got) == 1
    assert got[0].delivered == 3
    assert got[0].kernel_drops is None
    assert got[0].comment is not None
    assert "dropped by the kernel unknown" in got[0].comment


def test_rotating_writer_ends_every_file_with_statistics(tmp_path: Path) -> None:
    clock = FakeClock()
    stats = Stats()
    now = [T0]

    def totals() -> Totals:
        now[0] += 1_000_000
        return snapshot(stats, now[0], 0, 0)

    w = RotatingWriter(
        str(tmp_path / "r.pcapng"), LINKTYPE_ETHERNET, interval_s=60, clock=clock, totals=totals
    )
    for i in range(5):
        if i in (2, 4):
            clock.now += 61
        w.write_packet(2001, None, T0, b"x" * 60, None)
        stats.read += 1
        stats.written += 1
        stats.count_new_flow((2001, 17, b"\x01" * 4, 1, b"\x02" * 4, 2))
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [len(read_file(f)) for f in files] == [2, 2, 1]
    per_file = [isbs(f.read_bytes()) for f in files]
    assert [[i for i, _ in f] for f in per_file] == [[0, 1]] * 3
    assert [f[1][1].delivered for f in per_file] == [2, 2, 1]
    assert [f[0][1].received for f in per_file] == [2, 2, 1]
    # Back to back: one file ends when the next one starts.
    assert per_file[0][0][1].end_us == per_file[1][0][1].start_us


# --- the CLI: a capture that accounts for every loss ---------------------------------------


def _info(*paths: Path) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-m", "hep2pcap", "info", "--json", *map(str, paths)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(r.stdout)
    return data


def test_cli_rotated_files_statistics_add_up_and_info_reads_them(tmp_path: Path) -> None:
    out = tmp_path / "cap.pcapng"
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", str(out), "-C", "0.001", "--window", "0")
    ep = proc.ep()
    for i in range(20):
        udp_send(ep, hep(i))
    udp_send(ep, b"junk", b"HEP3\x00")
    wait_until(lambda: sum(len(packets_in(f)) for f in tmp_path.iterdir()) == 20, what="20 on disk")
    rc, err = proc.finish(signal.SIGTERM)
    assert rc == 0, err
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    entries = [e for f in files for e in isbs(f.read_bytes())]
    zeros = [st for iface, st in entries if iface == 0]
    assert len(zeros) == len(files)  # one ISB per interface per file
    assert sum(st.received or 0 for st in zeros) == 22
    assert sum(st.our_drops or 0 for st in zeros) == 2
    assert sum(st.kernel_drops or 0 for st in zeros) == 0
    assert sum(st.delivered or 0 for _, st in entries) == 20
    assert sum(len(read_file(f)) for f in files) == 20
    report = _info(*files)
    stats = report["capture_statistics"]
    assert isinstance(stats, list)
    assert len(stats) == len(entries)
    assert sum(e["received"] or 0 for e in stats) == 22
    assert any("lost while capturing" in w for w in report["warnings"])  # type: ignore[attr-defined]


def test_cli_stdout_ends_with_statistics(tmp_path: Path) -> None:
    proc = Proc("-l", "udp:127.0.0.1:0", "-w", "-", "-c", "3", stdout=subprocess.PIPE)
    udp_send(proc.ep(), hep(1), hep(2), b"junk", hep(3))
    assert proc.p.stdout is not None
    data = proc.p.stdout.read()
    rc, err = proc.finish(None)
    assert rc == 0, err
    got = isbs(data)
    assert [i for i, _ in got] == [0, 1]
    assert got[0][1].received == 4
    assert got[0][1].our_drops == 1
    assert got[1][1].delivered == 3


def test_info_without_statistics_has_an_empty_list() -> None:
    sample = Path(__file__).resolve().parent.parent / "fixtures" / "hep" / "sample-call.hep"
    assert _info(sample)["capture_statistics"] == []


def test_isb_option_longer_than_its_block_ends_the_options() -> None:
    out = io.BytesIO()
    PcapngWriter(out, LINKTYPE_ETHERNET)
    block = bytearray(encode_isb(0, InterfaceStatistics(T0, T0 + 9, received=1, comment="x")))
    struct.pack_into("<HH", block, 20, 4, 0xFFF0)  # the first option claims 65520 bytes
    assert isbs(out.getvalue() + bytes(block)) == [(0, InterfaceStatistics(T0 + 9, T0 + 9))]
    assert isbs(out.getvalue() + bytes(block[:16])) == []  # cut short: not read at all
