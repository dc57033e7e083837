"""The template fast path of hep.decode (learned byte regions): same results as the full
decoder for every input, actually taken on the usual messages, and bounded in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hepbuild import TS_SEC, Chunk, base_chunks, hep3, u16, u32
from hypothesis import given
from hypothesis import strategies as st
from test_hep_properties import (
    MUTATIONS,
    OPTIONS,
    REF_TIMES,
    SETTINGS,
    outcome,
    split_chunks,
    v3_messages,
)

from hep2pcap import hep
from hep2pcap.hep import ChunkType, DecodeOptions, HepMessage, decode, encode

FULL = DecodeOptions(templates=False)


@pytest.fixture(autouse=True)
def fresh_templates() -> Iterator[None]:
    hep.reset_templates()
    yield
    hep.reset_templates()


def full(data: bytes, ref: int | None, opts: DecodeOptions) -> tuple[object, ...]:
    """decode() without the fast path: the reference."""
    return outcome(data, ref, dataclasses.replace(opts, templates=False))


def fast_path_taken(data: bytes, ref: int | None = None) -> bool:
    return hep._decode_template(data, ref) is not None


def test_a_repeated_message_takes_the_fast_path_with_the_same_result() -> None:
    data = hep3(*base_chunks())
    assert not fast_path_taken(data)  # nothing learned yet
    first = decode(data)
    assert fast_path_taken(data)  # learned from the first, cleanly decoded one
    second = decode(data)
    assert second == first == decode(data, None, FULL)
    assert second.warnings == ()


def test_another_time_and_payload_of_a_known_direction_take_the_fast_path() -> None:
    decode(hep3(*base_chunks()))
    other = hep3(
        *base_chunks(
            {ChunkType.TS_SEC: u32(TS_SEC + 5), ChunkType.PAYLOAD: b"SIP/2.0 200 OK\r\n\r\n"}
        )
    )
    assert fast_path_taken(other)
    assert decode(other) == decode(other, None, FULL)


@pytest.mark.parametrize(
    "changes",
    [
        {ChunkType.TS_USEC: u32(1_000_000)},  # repaired time: the full decoder decides
        {ChunkType.TS_SEC: u32(0)},
        {ChunkType.TS_SEC: u32(3_000_000_000)},  # NTP-epoch seconds
        {ChunkType.TS_USEC: None},
        {ChunkType.PAYLOAD: b""},
        {ChunkType.SRC_PORT: u16(1)},  # another direction
    ],
)
def test_what_the_fast_path_cannot_vouch_for_goes_to_the_full_decoder(
    changes: dict[int, bytes | None],
) -> None:
    decode(hep3(*base_chunks()))
    data = hep3(*base_chunks(changes))
    assert not fast_path_taken(data)
    assert outcome(data) == full(data, None, hep.DEFAULT_OPTIONS)


def test_nothing_is_learned_from_a_message_with_warnings() -> None:
    vendor: Chunk = (7, 0x99, b"x")
    with_vendor = hep3(*base_chunks(), vendor)  # decodes, with VENDOR_CHUNK_SKIPPED
    assert decode(with_vendor).warnings
    plain = hep3(*base_chunks())
    assert not fast_path_taken(plain)


def test_the_reference_time_bounds_the_fast_path_too() -> None:
    decode(hep3(*base_chunks()))
    data = hep3(*base_chunks())
    ref_before = (TS_SEC - 2 * 86400) * 10**6  # the message is 2 days after its record time
    assert not fast_path_taken(data, ref_before)
    assert outcome(data, ref_before) == full(data, ref_before, hep.DEFAULT_OPTIONS)


@SETTINGS
@given(
    st.lists(v3_messages(), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6), st.integers(0, 255)),
             max_size=3),
    REF_TIMES,
    OPTIONS,
    st.data(),
)  # fmt: skip
def test_decode_equals_the_full_decoder_on_learned_and_damaged_messages(
    msgs: list[HepMessage],
    edits: list[tuple[int, int, int]],
    ref: int | None,
    opts: DecodeOptions,
    data: st.DataObject,
) -> None:
    hep.reset_templates()
    wire: list[bytes] = []
    for msg in msgs:
        clean = encode(msg)
        wire.append(clean)
        # The same message with its chunks reordered, or with vendor / unknown chunks
        # added, shares some regions with the clean one.
        chunks = split_chunks(clean)
        chunks += data.draw(
            st.lists(
                st.tuples(st.integers(0, 9), st.sampled_from([0x19, 0x2A, 0x99, 0x0F, 0x09]),
                          st.binary(max_size=8)),
                max_size=2,
            )
        )  # fmt: skip
        wire.append(hep3(*data.draw(st.permutations(chunks))))
        damaged = clean
        for kind, where, value in edits:
            damaged = MUTATIONS[kind](damaged, where % (len(damaged) + 1), value)
        wire.append(damaged)
    for _ in range(2):  # the first round learns, the second uses what was learned
        for w in wire:
            assert outcome(w, ref, opts) == full(w, ref, opts)
    # Not vacuous: a clean message decoded without warnings was learned, and takes the
    # fast path now (encode() writes the usual chunk order).
    for msg, clean in zip(msgs, wire[::3], strict=True):
        result = decode(clean, None, FULL)
        if not result.warnings and not msg.compressed and msg.ip_proto in hep.KNOWN_IP_PROTOS:
            assert fast_path_taken(clean)


def test_tables_stay_bounded() -> None:
    hep.reset_templates(capacity=8)
    for port in range(100):
        data = hep3(*base_chunks({ChunkType.SRC_PORT: u16(port)}))
        decode(data)
        assert fast_path_taken(data)
    r1 = hep._r1
    assert len(r1.hot) <= 8
    assert len(r1.old) <= 8
    # The oldest directions were forgotten; decoding them again still gives the same result.
    oldest = hep3(*base_chunks({ChunkType.SRC_PORT: u16(0)}))
    assert not fast_path_taken(oldest)
    assert decode(oldest) == decode(oldest, None, FULL)


def test_a_recalled_entry_survives_the_next_generation() -> None:
    hep.reset_templates(capacity=4)
    keep = hep3(*base_chunks({ChunkType.SRC_PORT: u16(9999)}))
    decode(keep)
    for port in range(30):
        decode(hep3(*base_chunks({ChunkType.SRC_PORT: u16(port)})))
        decode(keep)  # used once per generation at least: stays
    assert fast_path_taken(keep)


def test_a_shorter_region_does_not_shadow_a_longer_one() -> None:
    # Same direction, once without and once with chunks between the time and the payload:
    # the empty region is a prefix of every other, and must not hide the longer one.
    bare = hep3(*base_chunks({ChunkType.PAYLOAD_TYPE: None, ChunkType.CAPTURE_ID: None}))
    dressed = hep3(*base_chunks())
    decode(bare)
    decode(dressed)
    assert fast_path_taken(bare)
    assert fast_path_taken(dressed)
    assert decode(dressed) == decode(dressed, None, FULL)
