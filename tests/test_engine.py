"""The frame engine (issue 12): the native engine writes exactly what the pure-Python
reference writes, and counts the same.

Per function, hypothesis draws packets (IPv4 / IPv6, UDP / TCP, payloads of every length
parity up to the largest one IP packet holds, comments in any Unicode, missing agents) and
compares the bytes. Whole conversions — every fixture, the malformed corpus and a slice of
the benchmark workload, in each output format and link type — must give byte-identical
files and identical counters with either engine. The native engine must also refuse values
outside its contract instead of writing them.

Skipped with a reason where the native engine is not built, except under CI (``CI`` set),
where ``make test`` builds it and a missing engine is a failure.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hep2pcap import engine
from hep2pcap.engine import Packet, reference
from hep2pcap.engine.reference import SCTP_PACKET
from hep2pcap.frames import MAX_TCP_SEGMENT, MAX_UDP_PAYLOAD
from hep2pcap.hep import DecodeOptions
from hep2pcap.pcapng import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    MAX_INTERFACES,
    PacketWriter,
    PcapngWriter,
    PcapWriter,
)
from hep2pcap.pipeline import Options, convert
from hep2pcap.sources import open_inputs
from hep2pcap.stats import Stats

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted(
    p
    for d in ("hep", "pcap", "malformed")
    for p in (ROOT / "fixtures" / d).iterdir()
    if p.suffix in (".hep", ".pcap", ".pcapng", ".gz")
)

NATIVE = engine.NATIVE
PCAP_TIME_LIMIT = 2**32 * 1_000_000


def test_the_native_engine_is_built_in_ci() -> None:
    if NATIVE is None and os.environ.get("CI"):
        pytest.fail("CI: the native frame engine was not built (make test builds it)")
    if NATIVE is None:
        pytest.skip("the native frame engine is not built here (no C compiler at install)")
    assert NATIVE.NAME == "native"


needs_native = pytest.mark.skipif(NATIVE is None, reason="native frame engine not built")

# --- per function, hypothesis ---------------------------------------------------------------

agents = st.one_of(st.none(), st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3]))
comments = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    v4 = draw(st.booleans())
    alen = 4 if v4 else 16
    kind = draw(st.sampled_from(["udp", "tcp", "sctp"]))
    udp = kind == "udp"
    if kind == "sctp":  # the payload is a whole SCTP packet: no transport header added
        limit = MAX_UDP_PAYLOAD[4 if v4 else 6] + 8
    else:
        limit = (MAX_UDP_PAYLOAD if udp else MAX_TCP_SEGMENT)[4 if v4 else 6]
    size = draw(st.one_of(st.integers(0, 80), st.integers(limit - 9, limit)))
    payload = draw(st.binary(min_size=size, max_size=size)) if size <= 80 else bytes(size)
    return (
        draw(agents),
        draw(st.one_of(st.none(), st.text(max_size=8))),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.binary(min_size=alen, max_size=alen)),
        draw(st.binary(min_size=alen, max_size=alen)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)) if v4 else 0,
        {"udp": -1, "sctp": SCTP_PACKET}.get(kind) or draw(st.integers(0, 2**32 - 1)),
        0 if kind != "tcp" else draw(st.integers(0, 2**32 - 1)),
        payload,
        draw(comments),
    )


batches = st.lists(packets(), max_size=6)
linktypes = st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW])


@needs_native
@settings(max_examples=300)
@given(linktypes, batches)
def test_frames_match(linktype: int, batch: list[Packet]) -> None:
    assert NATIVE is not None
    assert NATIVE.frames(linktype, batch) == reference.frames(linktype, batch)


@needs_native
@settings(max_examples=300)
@given(
    linktypes,
    st.booleans(),
    st.dictionaries(agents, st.integers(0, 300), max_size=4),
    st.sampled_from([-1, 0, 7]),
    batches,
    st.integers(0, 7),
)
def test_epbs_match(
    linktype: int,
    comments_on: bool,
    interfaces: dict[int | None, int],
    shared: int,
    batch: list[Packet],
    start: int,
) -> None:
    assert NATIVE is not None
    args = (linktype, comments_on, interfaces, shared, batch, min(start, len(batch)))
    assert NATIVE.encode_epbs(*args) == reference.encode_epbs(*args)


@needs_native
@settings(max_examples=200)
@given(linktypes, batches)
def test_records_match(linktype: int, batch: list[Packet]) -> None:
    assert NATIVE is not None
    batch = [(*p[:2], p[2] % PCAP_TIME_LIMIT, *p[3:]) for p in batch]  # pcap: 32-bit seconds
    assert NATIVE.encode_records(linktype, batch) == reference.encode_records(linktype, batch)


def test_a_comment_past_the_option_limit_is_clipped_the_same_way() -> None:
    long = "é" * 40_000  # 80,000 bytes of UTF-8: clipped to 65534, on a character boundary
    batch = [(1, None, 5, b"\1" * 4, b"\2" * 4, 1, 2, 3, -1, 0, b"x", long)]
    blocks, stop = reference.encode_epbs(LINKTYPE_ETHERNET, True, {1: 0}, -1, batch, 0)
    assert stop == 1
    assert len(blocks) > 65_000
    if NATIVE is not None:
        assert NATIVE.encode_epbs(LINKTYPE_ETHERNET, True, {1: 0}, -1, batch, 0) == (blocks, 1)


GOOD: Packet = (1, None, 5, b"\1" * 4, b"\2" * 4, 1, 2, 3, -1, 0, b"x", None)


@needs_native
@pytest.mark.parametrize(
    ("index", "value", "error"),
    [
        (3, b"\1" * 5, ValueError),  # address neither 4 nor 16 bytes
        (4, b"\2" * 16, ValueError),  # addresses of two families
        (3, "1.2.3.4", TypeError),
        (5, 65536, ValueError),
        (6, -1, ValueError),
        (7, 1 << 16, ValueError),
        (8, -3, ValueError),
        (8, 1 << 32, ValueError),
        (9, 1 << 32, ValueError),
        (2, -1, ValueError),
        (10, bytes(MAX_UDP_PAYLOAD[4] + 1), ValueError),  # too large for one IP packet
        (10, bytearray(b"x"), TypeError),
        (11, b"bytes", TypeError),
    ],
)
def test_the_native_engine_refuses_values_outside_its_contract(
    index: int, value: object, error: type[Exception]
) -> None:
    assert NATIVE is not None
    bad = (*GOOD[:index], value, *GOOD[index + 1 :])
    with pytest.raises(error):
        NATIVE.encode_epbs(LINKTYPE_ETHERNET, True, {1: 0}, -1, [bad], 0)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        NATIVE.frames(LINKTYPE_ETHERNET, [GOOD[:11]])  # type: ignore[list-item]


# --- whole conversions --------------------------------------------------------------------


def _convert(
    paths: list[Path], eng: engine.Engine, fmt: str, linktype: int, **opts: object
) -> tuple[bytes, Stats]:
    out = io.BytesIO()
    options = Options(linktype=linktype, decode=DecodeOptions(lenient=True), **opts)  # type: ignore[arg-type]
    writer: PacketWriter
    if fmt == "pcap":
        writer = PcapWriter(out, linktype, engine=eng)
    else:
        writer = PcapngWriter(out, linktype, comments=options.comments, engine=eng)
    stats = Stats()
    with ExitStack() as stack:
        sources = open_inputs(tuple(map(str, paths)), stack, lenient=True)
        convert(sources, writer, options, stats)
    return out.getvalue(), stats


def _same(paths: list[Path], fmt: str, linktype: int, **opts: object) -> bytes:
    assert NATIVE is not None
    a, sa = _convert(paths, reference, fmt, linktype, **opts)
    b, sb = _convert(paths, NATIVE, fmt, linktype, **opts)
    assert a == b
    assert sa == sb
    assert sa.summary() == sb.summary()
    return a


@needs_native
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_converts_to_the_same_bytes(path: Path) -> None:
    _same([path], "pcapng", LINKTYPE_ETHERNET)


@needs_native
@pytest.mark.parametrize(
    ("fmt", "linktype", "opts"),
    [
        ("pcapng", LINKTYPE_RAW, {}),
        ("pcapng", LINKTYPE_ETHERNET, {"comments": False}),
        ("pcap", LINKTYPE_ETHERNET, {}),
        ("pcap", LINKTYPE_RAW, {"window_us": 0}),
    ],
)
def test_all_fixtures_together_in_every_format(
    fmt: str, linktype: int, opts: dict[str, object]
) -> None:
    good = [p for p in FIXTURES if p.parent.name != "malformed"]
    assert _same(good, fmt, linktype, **opts)


@needs_native
def test_more_agents_than_interfaces_share_one_the_same_way(tmp_path: Path) -> None:
    # Agents past MAX_INTERFACES fall back to the shared interface mid-batch.
    from hepbuild import v3

    from hep2pcap.hep import ChunkType

    path = tmp_path / "agents.hep"
    path.write_bytes(
        b"".join(
            v3({ChunkType.CAPTURE_ID: n.to_bytes(4, "big")}) for n in range(MAX_INTERFACES + 50)
        )
    )
    assert _same([path], "pcapng", LINKTYPE_ETHERNET)


@needs_native
def test_a_slice_of_the_benchmark_workload_converts_to_the_same_bytes(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gen  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = tmp_path / "bench.hep"
    path.write_bytes(b"".join(m for _, _, m in gen.iter_workload(3000, 1, gen.Summary())))
    data = _same([path], "pcapng", LINKTYPE_ETHERNET)
    assert data.count(b"SIP/2.0") >= 3000


@needs_native
def test_sigtran_built_as_sctp_converts_to_the_same_bytes(tmp_path: Path) -> None:
    # M2UA / M3UA / M2PA (issue 15) are whole SCTP packets built by FrameBuilder; the engine
    # puts them in IP packets (seq SCTP_PACKET), next to SIP over UDP and TCP.
    from hepbuild import u8, v3

    from hep2pcap.hep import ChunkType

    aspup = bytes.fromhex("0100030100000008")
    msgs = [
        v3({ChunkType.PAYLOAD_TYPE: u8(t), ChunkType.IP_PROTO: u8(132), ChunkType.PAYLOAD: aspup})
        for t in (8, 9, 13, 9)
    ]
    msgs.append(v3({ChunkType.IP_PROTO: u8(6)}))
    msgs.append(v3())
    path = tmp_path / "sctp.hep"
    path.write_bytes(b"".join(msgs))
    data = _same([path], "pcapng", LINKTYPE_ETHERNET)
    assert data.count(b"\x40\x00\x40\x84") == 4  # DF, TTL 64, protocol 132: four SCTP packets
