"""repair.py: SIP over TCP/TLS re-cut at message boundaries, truncation, copies."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from hep2pcap.errors import Reason
from hep2pcap.hep import HepMessage
from hep2pcap.items import Item, Tick
from hep2pcap.repair import ARRIVAL_STEP, CopyFinder, drop_copies, is_truncated, repair_sip
from hep2pcap.stats import Stats

T0 = 1_700_000_000_000_000


def only_items(out: list[Item | Tick]) -> list[Item]:
    """The stage's output, which must hold no tick."""
    items = [m for m in out if not isinstance(m, Tick)]
    assert len(items) == len(out)
    return items


def sip_msg(n: int, body: bytes = b"") -> bytes:
    head = (
        f"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: c{n}@x\r\nCSeq: {n} INVITE\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def msg(payload: bytes, *, proto: int = 6, agent: int | None = 1, sport: int = 40000) -> HepMessage:
    return HepMessage(
        version=3,
        ip_proto=proto,
        src_ip=b"\x0a\x00\x00\x01",
        dst_ip=b"\x0a\x00\x00\x02",
        src_port=sport,
        dst_port=5060,
        ts_us=T0,
        payload=payload,
        capture_id=agent,
    )


def run(
    *payloads: bytes | Tick, resplit: bool = True, hold_us: int = 1_000_000, **kw: Any
) -> tuple[list[HepMessage], Stats]:
    stats = Stats()
    order = itertools.count(0, ARRIVAL_STEP)
    items: list[Any] = []
    for i, p in enumerate(payloads):
        if isinstance(p, Tick):
            items.append(p)
        else:
            items.append((T0 + i, next(order), msg(p, **kw)))
    out = list(repair_sip(iter(items), stats, order, resplit=resplit, hold_us=hold_us))
    return [m[2] for m in out if not isinstance(m, Tick)], stats


BODY = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n"
A, B, C = sip_msg(1, BODY), sip_msg(2), sip_msg(3, BODY * 3)


def test_one_message_per_packet_passes_unchanged() -> None:
    out, stats = run(A, B, C)
    assert [m.payload for m in out] == [A, B, C]
    assert all(m.warnings == () for m in out)
    assert not stats.warnings


def test_packed_messages_are_split_one_per_frame() -> None:
    out, stats = run(A + B + C)
    assert [m.payload for m in out] == [A, B, C]
    assert stats.warnings[Reason.SIP_SPLIT] == 1
    assert all(Reason.SIP_SPLIT in m.warnings for m in out)


def test_a_message_and_the_start_of_the_next_count_as_a_split() -> None:
    # One packet: A whole, then the first half of B (its rest never comes). Two messages
    # come out of one packet, so the first is marked split (the fuzzer found it unmarked).
    out, stats = run(A + B[:40])
    assert [m.payload for m in out] == [A, B[:40]]
    assert Reason.SIP_SPLIT in out[0].warnings
    assert Reason.SIP_TRUNCATED in out[1].warnings
    assert stats.warnings[Reason.SIP_SPLIT] == 1


@pytest.mark.parametrize("cut", range(1, len(A + B)))
def test_split_anywhere_is_joined(cut: int) -> None:
    # The sender cut the stream of two messages at every possible offset.
    stream = A + B
    out, _ = run(stream[:cut], stream[cut:])
    assert [m.payload for m in out] == [A, B]
    assert b"".join(m.payload for m in out) == stream


def test_byte_by_byte_stream_is_rebuilt() -> None:
    stream = A + B + C
    out, stats = run(*(stream[i : i + 1] for i in range(len(stream))))
    assert [m.payload for m in out] == [A, B, C]
    assert stats.warnings[Reason.SIP_JOINED] == 3
    assert not stats.warnings[Reason.SIP_TRUNCATED]


def test_keepalives_stay_with_the_message_before() -> None:
    out, _ = run(A + b"\r\n\r\n" + B)
    assert [m.payload for m in out] == [A + b"\r\n\r\n", B]


def test_udp_is_never_recut() -> None:
    out, _ = run(A + B, proto=17)
    assert [m.payload for m in out] == [A + B]


def test_websocket_is_never_recut() -> None:
    out, _ = run(A + B, proto=50)
    assert [m.payload for m in out] == [A + B]


def test_no_resplit_only_marks_truncation() -> None:
    out, stats = run(A + B, A[:-5], resplit=False)
    assert [m.payload for m in out] == [A + B, A[:-5]]
    assert stats.warnings == {Reason.SIP_TRUNCATED: 1}


def test_truncated_udp_message_is_written_and_marked() -> None:
    out, stats = run(A[:-5], proto=17)
    assert out[0].payload == A[:-5]
    assert out[0].warnings == (Reason.SIP_TRUNCATED,)
    assert stats.warnings[Reason.SIP_TRUNCATED] == 1


def test_unfinished_message_is_written_marked_at_the_end() -> None:
    out, stats = run(A, B[:30])
    assert [m.payload for m in out] == [A, B[:30]]
    assert Reason.SIP_TRUNCATED in out[1].warnings
    assert stats.warnings[Reason.SIP_TRUNCATED] == 1


def test_new_message_start_releases_the_cut_one() -> None:
    out, _ = run(A[:40], B)
    assert [m.payload for m in out] == [A[:40], B]
    assert Reason.SIP_TRUNCATED in out[0].warnings


def test_held_part_is_released_after_hold_time_by_a_tick() -> None:
    stats = Stats()
    order = itertools.count(0, ARRIVAL_STEP)

    def feed() -> Iterator[Any]:
        yield (T0, next(order), msg(A[:40]))
        yield Tick(T0 + 10)
        yield Tick(T0 + 2_000_000)

    out = list(repair_sip(feed(), stats, order, resplit=True, hold_us=1_000_000))
    assert isinstance(out[0], Tick)  # still held at the first tick
    assert not isinstance(out[1], Tick)
    assert out[1][2].payload == A[:40]
    assert isinstance(out[2], Tick)


def test_flows_are_joined_separately() -> None:
    stats = Stats()
    order = itertools.count(0, ARRIVAL_STEP)
    items = [
        (T0, 0, msg(A[:30], sport=1)),
        (T0 + 1, 1, msg(B[:30], sport=2)),
        (T0 + 2, 2, msg(A[30:], sport=1)),
        (T0 + 3, 3, msg(B[30:], sport=2)),
    ]
    out = list(
        repair_sip(
            iter(items),
            stats,
            itertools.count(4 * ARRIVAL_STEP, ARRIVAL_STEP),
            resplit=True,
            hold_us=10**6,
        )
    )
    assert [(m[2].src_port, m[2].payload) for m in only_items(out)] == [(1, A), (2, B)]
    del order


def test_non_sip_stream_bytes_pass_as_they_are() -> None:
    junk = b"\x00\x01binary" * 10
    out, _ = run(junk, A)
    assert [m.payload for m in out] == [junk, A]


def test_trailing_junk_stays_with_the_last_message() -> None:
    out, _ = run(A + B + b"\x00junk")
    assert [m.payload for m in out] == [A, B + b"\x00junk"]


def test_arrival_numbers_stay_unique() -> None:
    stats = Stats()
    order = itertools.count(0, ARRIVAL_STEP)
    items = [(T0, next(order), msg(A + B + C)), (T0, next(order), msg(A))]
    out = list(repair_sip(iter(items), stats, order, resplit=True, hold_us=10**6))
    keys = [(t, a) for t, a, _ in only_items(out)]
    assert len(set(keys)) == len(keys) == 4
    assert sorted(keys) == keys


def test_is_truncated() -> None:
    assert not is_truncated(A)
    assert is_truncated(A[:-1])
    assert is_truncated(A[:60])  # headers never end
    assert not is_truncated(A[:20])  # not even a whole first line: not recognisably SIP
    assert not is_truncated(b"\x16\x03\x01binary")


# --- copies ---------------------------------------------------------------------------------


def test_copy_from_another_agent_is_found() -> None:
    finder = CopyFinder(200_000)
    assert not finder.is_copy(T0, msg(A, agent=1))
    assert finder.is_copy(T0 + 500, msg(A, agent=2))


def test_retransmission_by_the_same_agent_is_not_a_copy() -> None:
    finder = CopyFinder(200_000)
    assert not finder.is_copy(T0, msg(A, agent=1))
    assert not finder.is_copy(T0 + 100, msg(A, agent=1))


def test_copy_outside_the_window_is_not_a_copy() -> None:
    finder = CopyFinder(200_000)
    assert not finder.is_copy(T0, msg(A, agent=1))
    assert not finder.is_copy(T0 + 500_000, msg(A, agent=2))


def test_copy_finder_memory_is_bounded() -> None:
    finder = CopyFinder(10**12, max_entries=100)
    for i in range(1000):
        finder.is_copy(T0 + i, msg(sip_msg(i)))
    assert len(finder._seen) <= 101


def test_drop_copies_counts_duplicates_as_skipped() -> None:
    stats = Stats()
    items: list[Item | Tick] = [(T0, 0, msg(A, agent=1)), Tick(T0), (T0 + 10, 1, msg(A, agent=2))]
    out = list(drop_copies(iter(items), stats))
    assert out[:2] == items[:2]
    assert len(out) == 2
    assert stats.skipped[Reason.DUPLICATE] == 1


def test_partial_messages_held_are_bounded_in_bytes_over_all_flows() -> None:
    # Many TCP flows, each the start of a message whose Content-Length never comes: past
    # MAX_HELD_TOTAL bytes the oldest is written as it is (truncated), counted.
    from hep2pcap import repair

    part = sip_msg(1, b"x" * 60_000)[: 60_000 - 10]  # promises 60000, is short
    n = repair.MAX_HELD_TOTAL // len(part) + 20
    stats = Stats()
    order = itertools.count(0, ARRIVAL_STEP)
    items = [(T0 + i, next(order), msg(part, sport=10_000 + i)) for i in range(n)]
    released = 0
    for item in repair_sip(iter(items), stats, order, resplit=True, hold_us=10**12):
        released += 1
        assert not isinstance(item, Tick)
        assert Reason.SIP_TRUNCATED in item[2].warnings
    assert released == n  # all of them in the end (the input ends)
    assert stats.early["resplit_full"] == n - repair.MAX_HELD_TOTAL // len(part)
