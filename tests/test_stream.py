"""Unit tests for hep2pcap.stream.HepDeframer (HEP-SPEC §5, §11 "Streams and files")."""

from __future__ import annotations

import contextlib
import gzip

import pytest
from hepbuild import SIP, TS_SEC, base_chunks, hep3, ip, u16, v2_time, v3, v12
from hypothesis import given, settings
from hypothesis import strategies as st

from hep2pcap.errors import DecodeError, Reason
from hep2pcap.hep import ChunkType, decode
from hep2pcap.stream import HepDeframer

MSG_A = v3()
MSG_B = v3({ChunkType.SRC_PORT: u16(5070), ChunkType.PAYLOAD: b"SIP/2.0 200 OK\r\n\r\n"})
MSG_C = hep3(*base_chunks({ChunkType.PAYLOAD: b"x" * 3000}))
TWO_MESSAGES = MSG_A + MSG_B
THREE = MSG_A + MSG_B + MSG_C
V1_DATAGRAM = v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"))


def raises(reason: Reason, offset: int) -> pytest.RaisesExc[DecodeError]:
    return pytest.raises(DecodeError, check=lambda e: (e.reason, e.offset) == (reason, offset))


def test_whole_stream_in_one_feed() -> None:
    d = HepDeframer()
    assert d.feed(THREE) == [MSG_A, MSG_B, MSG_C]
    assert (d.offset, d.pending) == (len(THREE), 0)
    d.eof()


def test_units_decode_to_the_messages() -> None:
    d = HepDeframer()
    units = d.feed(THREE)
    assert [decode(u).src_port for u in units] == [5060, 5070, 5060]
    assert decode(units[2]).payload == b"x" * 3000


def test_one_byte_at_a_time() -> None:
    d = HepDeframer()
    out: list[bytes] = []
    offsets = []
    for i in range(len(THREE)):
        got = d.feed(THREE[i : i + 1])
        out += got
        if got:
            offsets.append(d.offset)
        assert d.offset + d.pending == i + 1
    assert out == [MSG_A, MSG_B, MSG_C]
    assert offsets == [len(MSG_A), len(MSG_A) + len(MSG_B), len(THREE)]
    d.eof()


@pytest.mark.parametrize("cut", range(1, len(TWO_MESSAGES)))
def test_deframer_ignores_split_point(cut: int) -> None:
    d = HepDeframer()
    assert d.feed(TWO_MESSAGES[:cut]) + d.feed(TWO_MESSAGES[cut:]) == [MSG_A, MSG_B]
    d.eof()


def test_empty_feeds_are_harmless() -> None:
    d = HepDeframer()
    assert d.feed(b"") == []
    assert d.feed(MSG_A[:3]) == []
    assert d.feed(b"") == []
    assert d.feed(MSG_A[3:]) == [MSG_A]
    assert d.feed(b"") == []
    d.eof()


def test_clean_eof_on_empty_stream() -> None:
    d = HepDeframer()
    d.eof()
    assert d.offset == 0


def test_offset_and_pending_mid_message() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + MSG_B[:10]) == [MSG_A]
    assert (d.offset, d.pending) == (len(MSG_A), 10)


def test_largest_message() -> None:
    big = hep3(*base_chunks({ChunkType.PAYLOAD: b"y" * (65535 - len(MSG_A) + len(SIP))}))
    assert len(big) == 65535
    d = HepDeframer()
    out = []
    for start in range(0, len(big) * 2, 4096):
        out += d.feed((big + big)[start : start + 4096])
    assert out == [big, big]
    d.eof()


def test_empty_message_is_framed_and_left_to_the_decoder() -> None:
    empty = b"HEP3\x00\x06"
    d = HepDeframer()
    assert d.feed(empty + MSG_A) == [empty, MSG_A]
    with raises(Reason.EMPTY_MESSAGE, 4):
        decode(empty)


# --- framing errors ---------------------------------------------------------------------


def test_bad_magic_at_start_raises_immediately() -> None:
    d = HepDeframer()
    with raises(Reason.BAD_MAGIC, 0):
        d.feed(b"GET / HTTP/1.1\r\n\r\n")


def test_bad_magic_after_messages_is_deferred_to_the_next_feed() -> None:
    d = HepDeframer()
    assert d.feed(TWO_MESSAGES + b"garbage!") == [MSG_A, MSG_B]
    assert d.offset == len(TWO_MESSAGES)
    with raises(Reason.BAD_MAGIC, len(TWO_MESSAGES)):
        d.feed(MSG_A)


def test_bad_magic_after_messages_is_deferred_to_eof() -> None:
    d = HepDeframer()
    assert d.feed(TWO_MESSAGES + b"garbage!") == [MSG_A, MSG_B]
    with raises(Reason.BAD_MAGIC, len(TWO_MESSAGES)):
        d.eof()
    d.eof()  # the error has been reported once; a second eof is quiet


def test_short_trailing_garbage_that_cannot_become_hep3() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + b"HX") == [MSG_A]
    with raises(Reason.BAD_MAGIC, len(MSG_A)):
        d.eof()


def test_short_trailing_garbage_in_a_later_feed() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A) == [MSG_A]
    with raises(Reason.BAD_MAGIC, len(MSG_A)):
        d.feed(b"\xff")


def test_garbage_split_across_feeds() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + b"HEP") == [MSG_A]
    with raises(Reason.BAD_MAGIC, len(MSG_A)):
        d.feed(b"4\x00\x10")


def test_stream_desync_after_error_was_raised() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + b"garbage!") == [MSG_A]
    with raises(Reason.BAD_MAGIC, len(MSG_A)):
        d.feed(b"")
    for _ in range(2):
        with raises(Reason.STREAM_DESYNC, len(MSG_A)):
            d.feed(MSG_B)
    d.eof()


def test_stream_desync_when_error_raised_in_the_same_feed() -> None:
    d = HepDeframer()
    with raises(Reason.BAD_MAGIC, 0):
        d.feed(b"nope")
    with raises(Reason.STREAM_DESYNC, 0):
        d.feed(MSG_A)


def test_v12_whose_payload_is_not_sip_on_stream() -> None:
    d = HepDeframer()
    with raises(Reason.V12_ON_STREAM, 0):
        d.feed(v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), payload=b"hello world\r\n"))


@pytest.mark.parametrize("version", [b"\x01", b"\x02"])
def test_v12_on_stream_after_v3_messages(version: bytes) -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + version) == [MSG_A]
    with raises(Reason.STREAM_TRUNCATED_AT_EOF, len(MSG_A)):
        d.eof()


# Kamailio 5.6 siptrace with hep_version 1 or 2 and a ;transport=tcp duplicate_uri streams
# v1/v2 messages over TCP, back to back: each ends where its SIP message ends (issue 11).
V2_INVITE = v12(
    2,
    2,
    ip("10.0.0.1"),
    ip("10.0.0.2"),
    proto=6,
    time=v2_time(TS_SEC, 5, 2001),
    payload=b"INVITE sip:b@x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nv=0\n",
)
V1_OPTIONS_V6 = v12(1, 10, ip("2001:db8::1"), ip("2001:db8::2"), proto=22)
KAMAILIO_V12_STREAM = V2_INVITE + V1_OPTIONS_V6 + MSG_A + V2_INVITE


@pytest.mark.parametrize("cut", range(1, len(KAMAILIO_V12_STREAM)))
def test_v12_stream_framed_by_sip_length_at_any_split(cut: int) -> None:
    d = HepDeframer()
    out = d.feed(KAMAILIO_V12_STREAM[:cut]) + d.feed(KAMAILIO_V12_STREAM[cut:])
    assert out == [V2_INVITE, V1_OPTIONS_V6, MSG_A, V2_INVITE]
    d.eof()
    assert decode(out[0]).payload.endswith(b"v=0\n")
    assert decode(out[1]).version == 1


def test_v12_stream_starts() -> None:
    d = HepDeframer()
    d.feed(KAMAILIO_V12_STREAM)
    lengths = [len(V2_INVITE), len(V1_OPTIONS_V6), len(MSG_A)]
    assert d.starts == [0, lengths[0], sum(lengths[:2]), sum(lengths)]


def test_v12_longer_than_a_hep3_message_fails() -> None:
    d = HepDeframer()
    big = v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), payload=b"OPTIONS sip:a SIP/2.0\r\n")
    with raises(Reason.V12_ON_STREAM, 0):
        d.feed(big + b"X-Long: " + b"y" * 70_000)


# heplify v2 payload_zip: one gzip member per TCP write, each holding one HEP frame; frames
# buffered on disk are replayed unwrapped on the same connection (HEP-SPEC §14).
GZ_A = gzip.compress(MSG_A)
GZ_C = gzip.compress(MSG_C, mtime=0)
HEPLIFY_STREAM = GZ_A + GZ_C + MSG_B + GZ_A


@pytest.mark.parametrize("cut", range(1, len(HEPLIFY_STREAM), 7))
def test_gzip_members_at_any_split(cut: int) -> None:
    d = HepDeframer()
    out = d.feed(HEPLIFY_STREAM[:cut]) + d.feed(HEPLIFY_STREAM[cut:])
    assert out == [GZ_A, GZ_C, MSG_B, GZ_A]
    assert [decode(u).payload for u in out] == [decode(m).payload for m in (MSG_A, MSG_C)] + [
        decode(MSG_B).payload,
        decode(MSG_A).payload,
    ]
    assert decode(out[0]).warnings == (Reason.GZIP_WRAPPED,)
    d.eof()


def test_gzip_members_one_byte_at_a_time() -> None:
    d = HepDeframer()
    out = []
    offsets = []
    for i in range(len(HEPLIFY_STREAM)):
        out += d.feed(HEPLIFY_STREAM[i : i + 1])
        offsets += d.starts
    assert out == [GZ_A, GZ_C, MSG_B, GZ_A]
    assert offsets == [0, len(GZ_A), len(GZ_A) + len(GZ_C), len(GZ_A) + len(GZ_C) + len(MSG_B)]
    d.eof()


def test_gzip_member_cut_at_eof() -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + GZ_A[:-3]) == [MSG_A]
    assert d.pending == len(GZ_A) - 3
    with raises(Reason.STREAM_TRUNCATED_AT_EOF, len(MSG_A)):
        d.eof()


def test_corrupt_gzip_member_ends_the_stream_after_the_messages_before_it() -> None:
    d = HepDeframer()
    bad = GZ_A[:10] + b"\xff" * 20
    assert d.feed(MSG_A + bad) == [MSG_A]
    with raises(Reason.DECOMPRESS_FAILED, len(MSG_A)):
        d.eof()


def test_gzip_bomb_on_a_stream_is_bounded() -> None:
    d = HepDeframer()
    bomb = gzip.compress(b"HEP3" + b"\0" * 10_000_000)
    with raises(Reason.DECOMPRESS_TOO_LARGE, 0):
        for i in range(0, len(bomb), 4096):
            d.feed(bomb[i : i + 4096])
    assert d.pending == 0


@pytest.mark.parametrize("total", [0, 1, 5])
def test_length_too_small_on_stream(total: int) -> None:
    d = HepDeframer()
    assert d.feed(MSG_A) == [MSG_A]
    with raises(Reason.LENGTH_TOO_SMALL, len(MSG_A)):
        d.feed(b"HEP3" + u16(total) + b"\0" * 10)


def test_stream_truncated_at_eof() -> None:
    d = HepDeframer()
    assert d.feed(TWO_MESSAGES[:-1]) == [MSG_A]
    with raises(Reason.STREAM_TRUNCATED_AT_EOF, len(MSG_A)):
        d.eof()
    d.eof()  # the partial message was dropped; nothing is left


@pytest.mark.parametrize("left", [1, 4, 5, 6, 7])
def test_stream_truncated_at_eof_inside_header(left: int) -> None:
    d = HepDeframer()
    assert d.feed(MSG_A + MSG_B[:left]) == [MSG_A]
    assert d.pending == left
    with raises(Reason.STREAM_TRUNCATED_AT_EOF, len(MSG_A)):
        d.eof()


# --- the EEP3 alias --------------------------------------------------------------------


def test_eep3_alias_framed_only_when_lenient() -> None:
    eep = b"EEP3" + MSG_A[4:]
    with raises(Reason.BAD_MAGIC, 0):
        HepDeframer().feed(eep)
    d = HepDeframer(lenient=True)
    assert d.feed(eep + MSG_B) == [eep, MSG_B]
    d.eof()


def test_eep3_prefix_kept_pending_only_when_lenient() -> None:
    d = HepDeframer(lenient=True)
    assert d.feed(MSG_A + b"EE") == [MSG_A]
    assert d.pending == 2
    d = HepDeframer()
    assert d.feed(MSG_A + b"EE") == [MSG_A]
    with raises(Reason.BAD_MAGIC, len(MSG_A)):
        d.eof()


# --- resync (lenient raw dumps, HEP-SPEC §11 BAD_MAGIC) --------------------------------

JUNK = b"\x00stray-udp-datagram\r\nHE"  # ends like the start of a magic, to be tricky
WITH_JUNK = MSG_A + JUNK + MSG_B + b"\x02" * 30 + MSG_C


def _feed_resync(pieces: list[bytes]) -> tuple[list[bytes], list[int], list[DecodeError]]:
    d = HepDeframer(resync=True)
    out: list[bytes] = []
    starts: list[int] = []
    problems: list[DecodeError] = []
    for piece in pieces:
        out += d.feed(piece)
        starts += d.starts
        problems += d.problems
        d.problems.clear()
    d.eof()  # junk at the end is not a cut message
    return out, starts, problems


@pytest.mark.parametrize("step", [1, 2, 5, 7, 64, len(WITH_JUNK)])
def test_resync_skips_to_the_next_magic_at_any_split(step: int) -> None:
    pieces = [WITH_JUNK[i : i + step] for i in range(0, len(WITH_JUNK), step)]
    out, starts, problems = _feed_resync([*pieces, b"trailing junk"])
    assert out == [MSG_A, MSG_B, MSG_C]
    assert starts == [0, len(MSG_A) + len(JUNK), len(WITH_JUNK) - len(MSG_C)]
    assert [(p.reason, p.offset) for p in problems] == [
        (Reason.BAD_MAGIC, len(MSG_A)),
        (Reason.V12_ON_STREAM, len(MSG_A) + len(JUNK) + len(MSG_B)),
        (Reason.BAD_MAGIC, len(WITH_JUNK)),
    ]


def test_resync_skips_a_magic_with_an_impossible_length() -> None:
    bad = b"HEP3\x00\x03"
    out, _, problems = _feed_resync([MSG_A + bad + MSG_B])
    assert out == [MSG_A, MSG_B]
    assert [(p.reason, p.offset) for p in problems] == [(Reason.LENGTH_TOO_SMALL, len(MSG_A))]


def test_resync_still_reports_a_message_cut_at_eof() -> None:
    d = HepDeframer(resync=True)
    assert d.feed(MSG_A + MSG_B[:10]) == [MSG_A]
    with pytest.raises(DecodeError) as info:
        d.eof()
    assert info.value.reason is Reason.STREAM_TRUNCATED_AT_EOF


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([MSG_A, MSG_B, b"HEP3", b"\x00\x05", b"junk", b"\x01"]), max_size=12),
    st.integers(1, 50),
)
def test_resync_never_raises_and_keeps_every_whole_message(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    d = HepDeframer(resync=True)
    out: list[bytes] = []
    for i in range(0, len(data), step):
        out += d.feed(data[i : i + step])
    with contextlib.suppress(DecodeError):
        d.eof()
    # A stray "HEP3" can swallow what follows (its length field is garbage), so the only
    # promises are: no exception, everything returned is framed, and clean input is exact.
    assert all(m.startswith(b"HEP3") for m in out)
    if all(p in (MSG_A, MSG_B) for p in parts):
        assert out == parts


def test_dripped_message_costs_its_bytes_not_an_object_per_byte() -> None:
    # 1,000 TCP peers dripping single bytes grew the receiver to 764 MB from 4.7 MB (issue 16):
    # the partial message is a few pieces, joined as they pile up.
    import sys

    d = HepDeframer()
    msg = b"HEP3\xff\xff" + bytes(65_529)
    for i in range(20_000):
        assert d.feed(msg[i : i + 1]) == []
    assert d.pending == 20_000
    held = sum(sys.getsizeof(p) for p in d._parts) + sys.getsizeof(d._parts)
    assert len(d._parts) <= 65
    assert held < 20_000 + 65 * 64  # about the bytes, not 20,000 objects
    assert d.feed(msg[20_000:]) == [msg]


def test_v12_trickled_byte_by_byte_is_not_rescanned() -> None:
    # A peer sending a v1/v2 message one byte per read: what is held is looked at again only
    # when the new byte can end the start line or the head, so the work stays linear.
    long_head = v12(
        1, 2, ip("10.0.0.1"), ip("10.0.0.2"),
        payload=b"OPTIONS sip:a SIP/2.0\r\n" + b"X-Pad: p\r\n" * 3000
        + b"Content-Length: 4\r\n\r\nbody",
    )  # fmt: skip

    class Counting(HepDeframer):
        looks = 0

        def _v12_end(self, buf: bytes, pos: int) -> int:
            Counting.looks += 1
            return super()._v12_end(buf, pos)

    d = Counting()
    out: list[bytes] = []
    for i in range(len(long_head)):
        out += d.feed(long_head[i : i + 1])
    assert out == [long_head]
    assert len(long_head) > 30_000
    assert Counting.looks < 100
