"""HEP found wherever real senders put it (issue 11, HEP-SPEC §1, §14): the strict v1/v2
signature, gzip-wrapped frames, and no false positives on other traffic."""

from __future__ import annotations

import contextlib
import gzip
import random
import struct
import zlib

import pytest
from hepbuild import SIP, TS_SEC, ip, v2_time, v3, v12
from hypothesis import given
from hypothesis import strategies as st

from hep2pcap.errors import DecodeError, Reason
from hep2pcap.hep import (
    MAX_UNWRAPPED,
    decode,
    gzip_holds_hep3,
    hep12_signature,
    unwrap_gzip,
)
from hep2pcap.stream import HepDeframer

# What Kamailio 5.6 siptrace sends (hep_version 2, IPv4 and IPv6) and sngrep 1.6 (junk
# header-length byte), as seen in the e2e tests.
KAMAILIO_V2 = v12(2, 2, ip("127.0.0.1"), ip("127.0.0.1"), time=v2_time(TS_SEC, 7, 2001))
KAMAILIO_V2_V6 = v12(2, 10, ip("::1"), ip("::1"), proto=6, time=v2_time(TS_SEC, 7, 2001))
SNGREP_V2 = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), hdr_len=0x9C, time=v2_time(TS_SEC, 1, 2002))
KAMAILIO_V1 = v12(1, 2, ip("127.0.0.1"), ip("127.0.0.1"), proto=22)


@pytest.mark.parametrize(
    ("data", "version"),
    [(KAMAILIO_V2, 2), (KAMAILIO_V2_V6, 2), (SNGREP_V2, 2), (KAMAILIO_V1, 1)],
)
def test_real_senders_v12_signature_is_certain(data: bytes, version: int) -> None:
    assert hep12_signature(data) == (version, True)


def test_v12_signature_not_certain_without_sip() -> None:
    data = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, 1, 1), payload=b"x\n")
    assert hep12_signature(data) == (2, False)
    no_time = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=b"\0" * 12)
    assert hep12_signature(no_time) == (2, False)
    first_line_cut = v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), payload=b"OPTIONS sip:a SIP/2.0")
    assert hep12_signature(first_line_cut) == (1, False)


@pytest.mark.parametrize(
    "data",
    [
        v12(3, 2, ip("10.0.0.1"), ip("10.0.0.2")),  # version
        v12(1, 7, ip("10.0.0.1"), ip("10.0.0.2")),  # family
        v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), proto=0),  # "unset" proto is no sign
        v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), proto=99),
        v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"), payload=b""),  # header only
        b"\x01\x10\x02",
    ],
)
def test_v12_signature_does_not_fit(data: bytes) -> None:
    assert hep12_signature(data) is None


# --- no false positives: traffic that is not HEP ---------------------------------------------


def _rtp(rng: random.Random) -> bytes:
    return bytes([0x80, rng.choice([0, 8, 96, 101])]) + rng.randbytes(10 + rng.randrange(160))


def _rtcp(rng: random.Random) -> bytes:
    return bytes([0x81, 200]) + struct.pack("!H", 6) + rng.randbytes(24)


def _dns(rng: random.Random) -> bytes:
    return (
        rng.randbytes(2)
        + bytes.fromhex("0100 0001 0000 0000 0000")
        + b"\x03www\x00\x00\x01\x00\x01"
    )


NOT_HEP_SAMPLES = [
    SIP,
    b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n",
    b"\r\n\r\n",  # keep-alive
    gzip.compress(b"not a HEP frame"),
]


def test_no_false_positives_on_sip_rtp_rtcp_dns_and_random() -> None:
    rng = random.Random(11)
    samples = list(NOT_HEP_SAMPLES)
    for _ in range(2000):
        samples += [_rtp(rng), _rtcp(rng), _dns(rng), rng.randbytes(rng.randrange(1, 1500))]
    # random bytes that start like HEPv1/v2 (version, family, proto all plausible)
    for _ in range(2000):
        head = bytes([rng.choice([1, 2]), rng.randrange(256), rng.choice([2, 10]), 17])
        samples.append(head + rng.randbytes(rng.randrange(0, 600)))
    found = [d for d in samples if (sig := hep12_signature(d)) is not None and sig[1]]
    assert found == []
    assert not any(gzip_holds_hep3(d) for d in samples)


# --- gzip-wrapped frames (heplify payload_zip) ------------------------------------------------


def test_gzip_wrapped_frame_decodes_and_says_so() -> None:
    frame = v3()
    msg = decode(gzip.compress(frame))
    assert msg.warnings == (Reason.GZIP_WRAPPED,)
    plain = decode(frame)
    assert (msg.payload, msg.src_ip, msg.ts_us) == (plain.payload, plain.src_ip, plain.ts_us)
    assert gzip_holds_hep3(gzip.compress(frame))
    assert decode(gzip.compress(KAMAILIO_V2)).version == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (gzip.compress(v3())[:-6], Reason.DECOMPRESS_FAILED),  # cut short
        (gzip.compress(v3()) + b"xx", Reason.DECOMPRESS_FAILED),  # bytes after the member
        (b"\x1f\x8b\x08" + b"\xff" * 30, Reason.DECOMPRESS_FAILED),
        (gzip.compress(gzip.compress(v3())), Reason.DECOMPRESS_FAILED),  # nested
        (gzip.compress(b"HEP3" + bytes(10_000_000)), Reason.DECOMPRESS_TOO_LARGE),  # bomb
        (gzip.compress(b"hello"), Reason.UNKNOWN_VERSION),
    ],
)
def test_gzip_wrapped_bad(data: bytes, reason: Reason) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason


def test_unwrap_is_bounded_at_one_frame() -> None:
    exact = gzip.compress(b"x" * MAX_UNWRAPPED)
    assert len(unwrap_gzip(exact)) == MAX_UNWRAPPED
    with pytest.raises(DecodeError) as info:
        unwrap_gzip(gzip.compress(b"x" * (MAX_UNWRAPPED + 1)))
    assert info.value.reason == Reason.DECOMPRESS_TOO_LARGE


def test_zlib_is_not_a_gzip_wrapper() -> None:
    assert not gzip_holds_hep3(zlib.compress(v3()))


# --- properties: the new framings never raise anything but DecodeError ----------------------

_STARTS = st.sampled_from(
    [
        b"\x1f\x8b\x08",
        gzip.compress(v3())[:12],
        KAMAILIO_V2[:30],
        KAMAILIO_V1[:20],
        b"\x02\x10\x02\x11",
    ]
)


@given(_STARTS, st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_wrapped_and_v12_streams_fail_only_with_decode_error(
    start: bytes, rest: bytes, step: int
) -> None:
    data = start + rest
    with contextlib.suppress(DecodeError):
        decode(data)
    d = HepDeframer()
    with contextlib.suppress(DecodeError):
        for i in range(0, len(data), step):
            for unit in d.feed(data[i : i + step]):
                with contextlib.suppress(DecodeError):
                    decode(unit)
        d.eof()
    assert d.pending <= len(data)
