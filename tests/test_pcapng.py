"""Unit and property tests for hep2pcap.pcapng: block layouts checked by an independent
struct parser, and the files read back by scapy's readers."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hepbuild import TS_US, v3
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgReader, PcapReader, rdpcap

from hep2pcap import __version__
from hep2pcap.hep import ChunkType
from hep2pcap.items import Record
from hep2pcap.pcapng import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    MAX_INTERFACES,
    SNAPLEN,
    PcapngWriter,
    PcapWriter,
    encode_epb,
    encode_idb,
    encode_shb,
    interface_description,
    interface_name,
)
from hep2pcap.pipeline import Options, convert

# --- a tiny independent pcapng reader ------------------------------------------------------


@dataclass
class Block:
    type: int
    body: bytes
    options: dict[int, list[bytes]] = field(default_factory=dict)


def parse_options(data: bytes) -> dict[int, list[bytes]]:
    """Options of one block; an options section, when present, ends with opt_endofopt."""
    opts: dict[int, list[bytes]] = {}
    pos = 0
    while pos < len(data):
        code, length = struct.unpack_from("<HH", data, pos)
        pos += 4
        if code == 0:
            assert length == 0
            assert pos == len(data), "bytes after opt_endofopt"
            return opts
        value = data[pos : pos + length]
        assert len(value) == length, "option overruns its block"
        pad = -length % 4
        assert data[pos + length : pos + length + pad] == bytes(pad), "option padding not zero"
        opts.setdefault(code, []).append(value)
        pos += length + pad
    assert not data, "options without opt_endofopt"
    return opts


def parse_pcapng(data: bytes) -> list[Block]:
    blocks = []
    pos = 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0, f"block length {total} not a multiple of 4"
        assert pos + total <= len(data), "block overruns the file"
        assert struct.unpack_from("<I", data, pos + total - 4)[0] == total, "trailing length"
        body = data[pos + 8 : pos + total - 4]
        if btype == 0x0A0D0D0A:
            magic, major, minor, section = struct.unpack_from("<IHHq", body)
            assert (magic, major, minor, section) == (0x1A2B3C4D, 1, 0, -1)
            blocks.append(Block(btype, body[:16], parse_options(body[16:])))
        elif btype == 1:
            blocks.append(Block(btype, body[:8], parse_options(body[8:])))
        elif btype == 6:
            caplen, origlen = struct.unpack_from("<II", body, 12)
            assert caplen == origlen
            pad = -caplen % 4
            packet_end = 20 + caplen
            assert body[packet_end : packet_end + pad] == bytes(pad), "packet padding not zero"
            blocks.append(Block(btype, body[:packet_end], parse_options(body[packet_end + pad :])))
        else:
            raise AssertionError(f"unexpected block type {btype:#x}")
        pos += total
    return blocks


@dataclass
class Epb:
    interface: int
    ts_us: int
    frame: bytes
    comments: list[str]


def epb(block: Block) -> Epb:
    iface, high, low, caplen, _ = struct.unpack_from("<IIIII", block.body)
    comments = [c.decode("utf-8") for c in block.options.get(1, [])]
    return Epb(iface, high << 32 | low, block.body[20 : 20 + caplen], comments)


def idb(block: Block) -> tuple[int, int, str, str]:
    linktype, reserved, snaplen = struct.unpack_from("<HHI", block.body)
    assert reserved == 0
    name = block.options[2][0].decode()
    description = block.options[3][0].decode()
    return linktype, snaplen, name, description


def frame(n: int, ethernet: bool = True) -> bytes:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5060, dport=5060) / (b"x" * n)
    return bytes(Ether(src="02:00:0a:00:00:01", dst="02:00:0a:00:00:02") / pkt if ethernet else pkt)


# --- block encoders -----------------------------------------------------------------------


def test_shb() -> None:
    (block,) = parse_pcapng(encode_shb("hep2pcap 9.9"))
    assert block.options == {4: [b"hep2pcap 9.9"]}


def test_idb() -> None:
    (block,) = parse_pcapng(encode_idb(LINKTYPE_RAW, 65535, "hep-agent-1", "desc"))
    assert idb(block) == (101, 65535, "hep-agent-1", "desc")
    assert 9 not in block.options  # no if_tsresol: the default is microseconds


@pytest.mark.parametrize("size", range(12))
@pytest.mark.parametrize("comment", [None, "", "a", "ab", "abc", "abcd", "é", "日本"])
def test_epb_padding_every_length(size: int, comment: str | None) -> None:
    data = bytes(range(1, size + 1))
    raw = encode_epb(3, TS_US, data, comment)
    (block,) = parse_pcapng(raw)
    got = epb(block)
    assert (got.interface, got.ts_us, got.frame) == (3, TS_US, data)
    assert got.comments == ([comment] if comment else [])
    expected = 32 + size + (-size % 4)
    if comment:
        text = comment.encode()
        expected += 4 + len(text) + (-len(text) % 4) + 4
    assert len(raw) == expected


@settings(max_examples=200)
@given(
    data=st.binary(max_size=300),
    comment=st.none() | st.text(max_size=40),
    ts_us=st.integers(0, 2**64 - 1),
    iface=st.integers(0, 2**32 - 1),
)
def test_epb_property(data: bytes, comment: str | None, ts_us: int, iface: int) -> None:
    raw = encode_epb(iface, ts_us, data, comment)
    assert len(raw) % 4 == 0
    (block,) = parse_pcapng(raw)
    got = epb(block)
    assert (got.interface, got.ts_us, got.frame) == (iface, ts_us, data)
    if comment:
        assert got.comments == [comment.encode("utf-8", "replace").decode()]
    else:
        assert got.comments == []


def test_epb_timestamp_split() -> None:
    body = encode_epb(0, (7 << 32) | 5, b"abcd")[8:28]
    assert struct.unpack("<IIIII", body) == (0, 7, 5, 4, 4)


def test_epb_comment_longer_than_an_option_is_clipped() -> None:
    # Bug: a comment above 65535 UTF-8 bytes made struct.pack fail ("ushort format requires").
    comment = "é" * 40_000  # 80000 bytes
    (block,) = parse_pcapng(encode_epb(0, TS_US, b"x", comment))
    (text,) = epb(block).comments
    assert text == "é" * 32767  # 65534 bytes: cut on a character boundary


def test_idb_description_longer_than_an_option_is_clipped() -> None:
    (block,) = parse_pcapng(encode_idb(1, SNAPLEN, "n", "\ufffd" * 30_000))
    assert idb(block)[3] == "\ufffd" * 21845


def test_interface_names() -> None:
    assert interface_name(2001) == "hep-agent-2001"
    assert interface_name(0) == "hep-agent-0"
    assert interface_name(None) == "hep-no-agent-id"
    assert interface_description(7, "kam1") == "HEP capture agent 7 (node kam1)"
    assert interface_description(None, None) == "HEP sender without capture agent id"


# --- PcapngWriter -------------------------------------------------------------------------


def write_four(comments: bool = True) -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_ETHERNET, comments=comments)
    w.write_packet(1, "kam1", TS_US, frame(1), "first")
    w.write_packet(None, None, TS_US + 1, frame(2), "second")
    w.write_packet(2, None, TS_US + 2, frame(3), None)
    w.write_packet(1, "other", TS_US + 3_000_000, frame(4), "fourth")
    w.close()
    assert w.bytes_written == len(out.getvalue())
    return out.getvalue()


def test_writer_interfaces_created_lazily_per_agent() -> None:
    blocks = parse_pcapng(write_four())
    # interface 0 (no agent id) comes with the section header, so the file always has one
    assert [b.type for b in blocks] == [0x0A0D0D0A, 1, 1, 6, 6, 1, 6, 6]
    assert blocks[0].options == {4: [f"hep2pcap {__version__}".encode()]}
    assert [idb(b) for b in blocks if b.type == 1] == [
        (1, SNAPLEN, "hep-no-agent-id", "HEP sender without capture agent id"),
        (1, SNAPLEN, "hep-agent-1", "HEP capture agent 1 (node kam1)"),
        (1, SNAPLEN, "hep-agent-2", "HEP capture agent 2"),
    ]
    packets = [epb(b) for b in blocks if b.type == 6]
    assert [(p.interface, p.ts_us - TS_US, p.frame) for p in packets] == [
        (1, 0, frame(1)),
        (0, 1, frame(2)),
        (2, 2, frame(3)),
        (1, 3_000_000, frame(4)),
    ]
    assert [p.comments for p in packets] == [["first"], ["second"], [], ["fourth"]]


def test_writer_without_comments() -> None:
    packets = [epb(b) for b in parse_pcapng(write_four(comments=False)) if b.type == 6]
    assert [p.comments for p in packets] == [[], [], [], []]
    assert [p.frame for p in packets] == [frame(n) for n in range(1, 5)]


def test_raw_ip_shares_one_interface_for_libpcap() -> None:
    # libpcap 1.10 rejects a second IDB of type 101 (it compares it with the first IDB's
    # mapped DLT_RAW=12), so sngrep and tcpdump would stop reading at the second agent.
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_RAW)
    for agent in (1, 2, None, 1):
        w.write_packet(agent, None, TS_US, frame(1, ethernet=False), f"agent {agent}")
    blocks = parse_pcapng(out.getvalue())
    assert [b.type for b in blocks] == [0x0A0D0D0A, 1, 6, 6, 6, 6]
    assert idb(blocks[1])[:3] == (LINKTYPE_RAW, SNAPLEN, "hep")
    packets = [epb(b) for b in blocks if b.type == 6]
    assert {p.interface for p in packets} == {0}
    assert [p.comments for p in packets] == [["agent 1"], ["agent 2"], ["agent None"], ["agent 1"]]


def test_interfaces_are_bounded_past_max_interfaces() -> None:
    out = io.BytesIO()
    w = PcapngWriter(out, LINKTYPE_ETHERNET, comments=False)
    own = MAX_INTERFACES - 1  # interface 0 is the one for messages without an agent id
    agents = [*range(own + 50), 0, own + 7]
    for agent in agents:
        w.write_packet(agent, None, TS_US, frame(1), None)
    blocks = parse_pcapng(out.getvalue())
    names = [idb(b)[2] for b in blocks if b.type == 1]
    assert len(names) == MAX_INTERFACES + 1
    assert names[0] == "hep-no-agent-id"
    assert names[-1] == "hep-other-agents"
    ifaces = [epb(b).interface for b in blocks if b.type == 6]
    assert ifaces[:own] == list(range(1, MAX_INTERFACES))
    assert set(ifaces[own : own + 50]) == {MAX_INTERFACES}
    assert ifaces[-2:] == [1, MAX_INTERFACES]


def test_empty_pcapng_has_an_interface_for_libpcap() -> None:
    # libpcap (sngrep, tcpdump) refuses a pcapng without any IDB: "the capture file has no
    # Interface Description Blocks". An empty capture still opens everywhere.
    for linktype, name in ((LINKTYPE_RAW, "hep"), (LINKTYPE_ETHERNET, "hep-no-agent-id")):
        out = io.BytesIO()
        PcapngWriter(out, linktype).close()
        blocks = parse_pcapng(out.getvalue())
        assert [b.type for b in blocks] == [0x0A0D0D0A, 1]
        assert idb(blocks[1])[:3] == (linktype, SNAPLEN, name)


def test_scapy_reads_our_pcapng() -> None:
    reader = PcapNgReader(io.BytesIO(write_four()))  # type: ignore[arg-type]
    packets = list(reader)
    assert [bytes(p) for p in packets] == [frame(n) for n in range(1, 5)]
    assert [p.time for p in packets] == [
        Decimal(TS_US + d) / 1_000_000 for d in (0, 1, 2, 3_000_000)
    ]
    assert [p.sniffed_on for p in packets] == [
        "hep-agent-1",
        "hep-no-agent-id",
        "hep-agent-2",
        "hep-agent-1",
    ]
    assert [p.comments for p in packets] == [[b"first"], [b"second"], None, [b"fourth"]]
    assert [p[UDP].load for p in packets] == [b"x" * n for n in range(1, 5)]
    assert len(rdpcap(io.BytesIO(write_four()))) == 4


def test_writer_flush_and_close_flush_the_file() -> None:
    class Out(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    out = Out()
    w = PcapngWriter(out, LINKTYPE_RAW)
    w.flush()
    w.close()
    assert out.flushes == 2
    assert not out.closed  # the caller owns the file


# --- classic pcap --------------------------------------------------------------------------


def test_pcap_writer() -> None:
    out = io.BytesIO()
    w = PcapWriter(out, LINKTYPE_RAW)
    w.write_packet(1, "n", TS_US, frame(5, ethernet=False), "dropped")
    w.write_packet(None, None, TS_US + 999_999, frame(6, ethernet=False), None)
    w.close()
    data = out.getvalue()
    assert w.bytes_written == len(data)
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 101)
    pos, records = 24, []
    while pos < len(data):
        sec, usec, caplen, origlen = struct.unpack_from("<IIII", data, pos)
        assert caplen == origlen
        records.append((sec * 1_000_000 + usec, data[pos + 16 : pos + 16 + caplen]))
        pos += 16 + caplen
    assert pos == len(data)
    assert records == [(TS_US, frame(5, False)), (TS_US + 999_999, frame(6, False))]
    scapy_packets = list(PcapReader(io.BytesIO(data)))  # type: ignore[arg-type]
    assert [bytes(p) for p in scapy_packets] == [frame(5, False), frame(6, False)]
    assert [p.time for p in scapy_packets] == [
        Decimal(TS_US) / 1_000_000,
        Decimal(TS_US + 999_999) / 1_000_000,
    ]


# --- through the pipeline -----------------------------------------------------------------


class One:
    name, unit = "t", "record"

    def __init__(self, *datas: bytes) -> None:
        self.datas = datas

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([Record(d, None, i) for i, d in enumerate(self.datas)])


def test_huge_node_name_does_not_crash_the_run() -> None:
    # Bug repro: a valid message whose node-name chunk holds 30000 invalid UTF-8 bytes
    # decodes to 30000 U+FFFD (90000 UTF-8 bytes); the IDB description and the packet
    # comment overflowed the 16-bit option length and convert() died with struct.error.
    data = v3({}, (0, ChunkType.NODE_NAME, b"\xff" * 30_000))
    for comments in (True, False):
        out = io.BytesIO()
        stats = convert(
            [One(data)], PcapngWriter(out, LINKTYPE_ETHERNET, comments=comments), Options()
        )
        assert stats.written == 1
        blocks = parse_pcapng(out.getvalue())
        assert [b.type for b in blocks] == [0x0A0D0D0A, 1, 1, 6]
        assert len(idb(blocks[2])[3].encode()) <= 65535
        assert len(epb(blocks[3]).comments) == (1 if comments else 0)


def test_pipeline_into_pcapng_read_by_scapy() -> None:
    big = zlib.compress(b"SIP/2.0 200 OK\r\n" + b"y" * 1000)
    datas = [
        v3({}),
        v3({ChunkType.CAPTURE_ID: None, ChunkType.PAYLOAD: None},
           (0, ChunkType.COMPRESSED_PAYLOAD, big)),
    ]  # fmt: skip
    out = io.BytesIO()
    convert([One(*datas)], PcapngWriter(out, LINKTYPE_ETHERNET), Options())
    packets = list(PcapNgReader(io.BytesIO(out.getvalue())))  # type: ignore[arg-type]
    assert [p.sniffed_on for p in packets] == ["hep-agent-2001", "hep-no-agent-id"]
    assert packets[1][UDP].load.endswith(b"y" * 1000)
    comments = packets[1].comments
    assert comments is not None
    assert b"compressed payload" in comments[0]
