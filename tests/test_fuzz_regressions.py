"""Regression tests for what the atheris fuzz harness (tests/fuzz.py, ``make fuzz``) found.

Each test replays one crash input (kept as a bytes literal, minimised) through the API the
fuzz target drove. Bugs not fixed yet are ``xfail(strict=True)``: the fix makes them pass,
and strict xfail then reminds whoever fixed it to drop the mark. Fixed: the deframer's
short-tail check (stream.py) now runs however the stream was cut.
"""

from __future__ import annotations

import pytest

from hep2pcap.errors import DecodeError, Reason
from hep2pcap.stream import HepDeframer


def _reason(chunks: list[bytes], *, lenient: bool = False, resync: bool = False) -> Reason | None:
    d = HepDeframer(lenient=lenient, resync=resync)
    try:
        for c in chunks:
            d.feed(c)
        d.eof()
    except DecodeError as exc:
        return exc.reason
    return None


# fuzz target "stream", artifact crash-b0f6cdfc…: input 59 45 45 50 d8 (flags 0x59: lenient,
# no resync; stream "EEP\xd8"). Fed whole, the stream is BAD_MAGIC; fed as "E" + "EP\xd8" it
# is STREAM_TRUNCATED_AT_EOF: feed() returns early while fewer than 6 bytes of a pending
# header are buffered, so the "short tail that can never become HEP3" check never runs.
# Artifact crash-43376235…: input 4f 48 48 40 (flags 0x4f: lenient and resync; stream "HH@"):
# whole, a BAD_MAGIC problem is reported and the stream ends cleanly; split "H" + "H@", the
# same early return makes it STREAM_TRUNCATED_AT_EOF.
SHORT_TAILS = [
    ([b"E", b"EP\xd8"], True, False),
    ([b"H", b"XYZ"], False, False),
    ([b"H", b"\x01\x02"], False, False),
    ([b"H", b"H@"], True, True),
]


@pytest.mark.parametrize(("chunks", "lenient", "resync"), SHORT_TAILS)
def test_short_bad_tail_whole(chunks: list[bytes], lenient: bool, resync: bool) -> None:
    d = HepDeframer(lenient=lenient, resync=resync)
    if resync:
        assert d.feed(b"".join(chunks)) == []
        d.eof()
        assert [p.reason for p in d.problems] == [Reason.BAD_MAGIC]
    else:
        with pytest.raises(DecodeError) as exc:
            d.feed(b"".join(chunks))
        assert exc.value.reason is Reason.BAD_MAGIC


@pytest.mark.parametrize(("chunks", "lenient", "resync"), SHORT_TAILS)
def test_short_bad_tail_split(chunks: list[bytes], lenient: bool, resync: bool) -> None:
    whole = _reason([b"".join(chunks)], lenient=lenient, resync=resync)
    assert _reason(chunks, lenient=lenient, resync=resync) is whole
