"""Property tests (hypothesis) for hep2pcap.hep and hep2pcap.stream: round trips, chunk order
independence, and "a HepMessage or a DecodeError, never anything else" on any input."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import pytest
from hepbuild import Chunk, hep3
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hep2pcap import hep
from hep2pcap.errors import DecodeError, Reason
from hep2pcap.hep import (
    MIN_PLAUSIBLE_S,
    NTP_EPOCH_OFFSET_S,
    DecodeOptions,
    HepMessage,
    decode,
    encode,
)
from hep2pcap.stream import HepDeframer

SETTINGS = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])

KNOWN_PROTOS = st.sampled_from([0, 6, 17, 22, 50, 132])
PORTS = st.integers(0, 65535)
# HEP-SPEC §9: with no reference time the plausible window is 2000-01-01 … the NTP epoch.
PLAUSIBLE_TS_US = st.integers(MIN_PLAUSIBLE_S * 10**6, NTP_EPOCH_OFFSET_S * 10**6 + 999_999)
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
OPTIONS = st.builds(
    DecodeOptions,
    strict=st.booleans(),
    lenient=st.booleans(),
    use_receive_time=st.booleans(),
    unknown_proto_udp=st.booleans(),
)
REF_TIMES = st.none() | st.integers(0, 2**40)


@st.composite
def addresses(draw: st.DrawFn) -> tuple[bytes, bytes]:
    size = draw(st.sampled_from([4, 16]))
    return draw(st.binary(min_size=size, max_size=size)), draw(
        st.binary(min_size=size, max_size=size)
    )


@st.composite
def v3_messages(draw: st.DrawFn) -> HepMessage:
    src, dst = draw(addresses())
    return HepMessage(
        version=3,
        ip_proto=draw(KNOWN_PROTOS),
        src_ip=src,
        dst_ip=dst,
        src_port=draw(PORTS),
        dst_port=draw(PORTS),
        ts_us=draw(PLAUSIBLE_TS_US),
        payload=draw(st.binary(min_size=1, max_size=600)),
        payload_type=draw(st.none() | st.integers(0, 255)),
        capture_id=draw(st.none() | st.integers(0, 2**32 - 1)),
        auth_key=draw(st.none() | st.binary(max_size=20)),
        correlation_id=draw(st.none() | st.binary(max_size=40)),
        node_name=draw(st.none() | TEXT),
        vlan_id=draw(st.none() | st.integers(0, 65535)),
        compressed=draw(st.booleans()),
    )


@st.composite
def v12_messages(draw: st.DrawFn) -> HepMessage:
    src, dst = draw(addresses())
    version = draw(st.sampled_from([1, 2]))
    return HepMessage(
        version=version,
        ip_proto=draw(KNOWN_PROTOS),
        src_ip=src,
        dst_ip=dst,
        src_port=draw(PORTS),
        dst_port=draw(PORTS),
        ts_us=draw(PLAUSIBLE_TS_US) if version == 2 else None,
        payload=draw(st.binary(min_size=1, max_size=600)),
        capture_id=draw(st.integers(0, 65535)) if version == 2 else None,
    )


def outcome(
    data: bytes, ref: int | None = None, opts: DecodeOptions = hep.DEFAULT_OPTIONS
) -> tuple[object, ...]:
    """What decode() did, comparable: the message with its warnings, or the error."""
    try:
        msg = decode(data, ref, opts)
    except DecodeError as exc:
        return ("error", exc.reason, exc.offset)
    return ("ok", msg, Counter(msg.warnings))


# --- round trips ------------------------------------------------------------------------


@SETTINGS
@given(v3_messages())
def test_v3_round_trip(msg: HepMessage) -> None:
    decoded = decode(encode(msg))
    assert decoded == msg
    assert decoded.warnings == ((Reason.TS_RECEIVE_TIME,) if msg.version == 1 else ())


@SETTINGS
@given(v12_messages())
def test_v1_v2_round_trip(msg: HepMessage) -> None:
    decoded = decode(encode(msg))
    assert decoded == msg
    assert decoded.warnings == ((Reason.TS_RECEIVE_TIME,) if msg.version == 1 else ())


@SETTINGS
@given(v3_messages(), st.data())
def test_shuffled_chunks_decode_identically(msg: HepMessage, data: st.DataObject) -> None:
    chunks = split_chunks(encode(msg))
    chunks += data.draw(
        st.lists(
            st.tuples(st.integers(1, 9), st.integers(0, 0xFFFF), st.binary(max_size=8))
            | st.tuples(st.just(0), st.sampled_from([0x19, 0x2A, 0x99]), st.binary(max_size=8)),
            max_size=3,
        )
    )
    reference = outcome(hep3(*chunks))
    shuffled = data.draw(st.permutations(chunks))
    assert outcome(hep3(*shuffled)) == reference
    assert reference[0] == "ok"


def split_chunks(message: bytes) -> list[Chunk]:
    out, pos = [], 6
    while pos < len(message):
        vendor, ctype, length = (
            int.from_bytes(message[pos + i : pos + i + 2], "big") for i in (0, 2, 4)
        )
        out.append((vendor, ctype, message[pos + 6 : pos + length]))
        pos += length
    return out


# --- never anything but a HepMessage or a DecodeError ------------------------------------------


@SETTINGS
@given(st.binary(max_size=4096), REF_TIMES, OPTIONS)
def test_decode_never_raises_anything_else(
    data: bytes, ref: int | None, opts: DecodeOptions
) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(decode(data, ref, opts), HepMessage)


@SETTINGS
@given(st.binary(max_size=200).map(lambda b: b"HEP3" + (len(b) + 6).to_bytes(2, "big") + b))
def test_decode_framed_garbage(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


MUTATIONS: list[Callable[[bytes, int, int], bytes]] = [
    lambda d, i, v: d[:i] + bytes([v]) + d[i + 1 :],  # replace a byte
    lambda d, i, v: d[:i] + d[i + 1 :],  # delete a byte
    lambda d, i, v: d[:i] + bytes([v]) + d[i:],  # insert a byte
    lambda d, i, v: d[:i],  # truncate
    lambda d, i, v: d[:i] + (v * 257).to_bytes(2, "big") + d[i + 2 :],  # a 16-bit field
]


@SETTINGS
@given(
    st.one_of(v3_messages(), v12_messages()),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
             max_size=4),
    REF_TIMES,
    OPTIONS,
)  # fmt: skip
def test_mutated_messages_give_a_message_or_a_decode_error(
    msg: HepMessage, edits: list[tuple[int, int, int]], ref: int | None, opts: DecodeOptions
) -> None:
    data = encode(msg)
    for kind, where, value in edits:
        data = MUTATIONS[kind](data, where % (len(data) + 1), value)
    with contextlib.suppress(DecodeError):
        assert isinstance(decode(data, ref, opts), HepMessage)


# --- decoding does not depend on what was decoded before -----------------------------------------


@SETTINGS
@given(st.lists(st.one_of(v3_messages(), st.binary(max_size=300)), min_size=1, max_size=4),
       st.data())  # fmt: skip
def test_decode_is_independent_of_history(
    items: list[HepMessage | bytes], data: st.DataObject
) -> None:
    # hep.decode learns chunk layouts as a cache; the result must never depend on it.
    wire = []
    for item in items:
        if isinstance(item, HepMessage):
            chunks = data.draw(st.permutations(split_chunks(encode(item))))
            item_bytes = hep3(*chunks)
            if data.draw(st.booleans()):  # a damaged copy that shares the layout
                pos = data.draw(st.integers(6, len(item_bytes) - 1))
                item_bytes = (
                    item_bytes[:pos] + bytes([item_bytes[pos] ^ 0xFF]) + item_bytes[pos + 1 :]
                )
            wire.append(item_bytes)
        else:
            wire.append(item)
    cache = getattr(hep, "_layouts", None)
    if cache is None:  # no layout cache any more: nothing to compare
        return
    saved, limit = list(cache), hep.MAX_LAYOUTS
    try:
        cache.clear()
        hep.MAX_LAYOUTS = 0  # generic scan only
        reference = [outcome(w) for w in wire]
        hep.MAX_LAYOUTS = limit
        learning = [outcome(w) for w in wire]  # learns layouts from these very messages
        learned = [outcome(w) for w in wire]  # and now uses them
    finally:
        cache[:] = saved
        hep.MAX_LAYOUTS = limit
    assert learning == reference
    assert learned == reference


# --- the stream deframer on any input ---------------------------------------------------------


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=8), st.booleans())
def test_deframer_gives_units_or_a_decode_error(feeds: list[bytes], lenient: bool) -> None:
    d = HepDeframer(lenient=lenient)
    got = b""
    failed = False
    for part in feeds:
        try:
            units = d.feed(part)
        except DecodeError:
            failed = True
            continue
        assert not failed, "a feed after a framing error must raise"
        for unit in units:
            assert unit[:4] in (b"HEP3", b"EEP3")
            assert int.from_bytes(unit[4:6], "big") == len(unit) >= 6
        got += b"".join(units)
    assert b"".join(feeds).startswith(got)
    with contextlib.suppress(DecodeError):
        d.eof()


@SETTINGS
@given(st.lists(v3_messages(), min_size=1, max_size=5), st.data())
def test_deframer_ignores_split_points(msgs: list[HepMessage], data: st.DataObject) -> None:
    units = [encode(m) for m in msgs]
    stream = b"".join(units)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    d = HepDeframer()
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += d.feed(stream[start:end])
    d.eof()
    assert out == units
    assert [decode(u) for u in out] == msgs


@SETTINGS
@given(st.lists(v3_messages(), min_size=1, max_size=3), st.binary(min_size=1, max_size=20))
def test_deframer_keeps_messages_before_trailing_garbage(
    msgs: list[HepMessage], garbage: bytes
) -> None:
    assume(not b"HEP3".startswith(garbage[:4]))
    units = [encode(m) for m in msgs]
    d = HepDeframer()
    assert d.feed(b"".join(units) + garbage) == units
    with pytest.raises(DecodeError) as info:
        d.eof()
    allowed = {Reason.BAD_MAGIC, Reason.V12_ON_STREAM}
    if garbage[0] in (1, 2) or b"\x1f\x8b\x08".startswith(garbage[:3]):
        # the start of a HEPv1/v2 message (framed by its SIP) or of a gzip-wrapped frame,
        # cut by the end of the stream (issue 11)
        allowed |= {Reason.STREAM_TRUNCATED_AT_EOF, Reason.DECOMPRESS_FAILED}
    assert info.value.reason in allowed
    assert info.value.offset == sum(map(len, units))
