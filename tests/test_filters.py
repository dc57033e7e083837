"""filters.py and dialogs.py: what --call-id, --host, --match … keep, offline and live."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest

from hep2pcap.dialogs import Dialogs, Keys, keys_of
from hep2pcap.filters import (
    HELD_OVERHEAD,
    HOLD_US,
    MAX_HELD,
    MAX_HELD_BYTES,
    Criteria,
    Selector,
    compile_match,
    parse_host,
    parse_time,
)
from hep2pcap.hep import HepMessage, PayloadType
from hep2pcap.items import Tick
from hep2pcap.stats import Stats

T0 = 1_764_158_400_000_000
Item = tuple[int, int, HepMessage]


def sip(start: str, call_id: str | None, cseq: str = "1 INVITE", extra: str = "") -> bytes:
    cid = f"Call-ID: {call_id}\r\n" if call_id is not None else ""
    return (
        f"{start}\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n{cid}CSeq: {cseq}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def m(
    payload: bytes,
    *,
    src: bytes = b"\x0a\x00\x00\x01",
    dst: bytes = b"\x0a\x00\x00\x02",
    sport: int = 5060,
    dport: int = 5060,
    agent: int | None = 1,
    corr: bytes | None = None,
    ptype: int | None = PayloadType.SIP,
) -> HepMessage:
    return HepMessage(
        version=3,
        ip_proto=17,
        src_ip=src,
        dst_ip=dst,
        src_port=sport,
        dst_port=dport,
        ts_us=T0,
        payload=payload,
        payload_type=ptype,
        capture_id=agent,
        correlation_id=corr,
    )


INVITE = "INVITE sip:bob@example.com SIP/2.0"
OK = "SIP/2.0 200 OK"
BYE = "BYE sip:bob@example.com SIP/2.0"


def call(cid: str, corr: bytes | None = None, agent: int = 1, who: str = "") -> list[HepMessage]:
    """INVITE, 200, BYE of one dialog."""
    return [
        m(
            sip(INVITE, cid, extra=f"From: <sip:{who or 'alice'}@example.com>;tag=1\r\n"),
            corr=corr,
            agent=agent,
        ),
        m(sip(OK, cid), corr=corr, agent=agent, src=b"\x0a\x00\x00\x02", dst=b"\x0a\x00\x00\x01"),
        m(sip(BYE, cid, "2 BYE"), corr=corr, agent=agent),
    ]


def items(msgs: Iterable[HepMessage], step_us: int = 1000) -> list[Item]:
    return [(T0 + i * step_us, i, x) for i, x in enumerate(msgs)]


def offline(criteria: Criteria, msgs: list[Item]) -> tuple[list[HepMessage], Stats]:
    stats = Stats()
    sel = Selector(criteria, stats)
    if criteria.per_dialog:
        for ts, _, x in msgs:
            sel.observe(ts, x)
    out = [i[2] for i in sel.stage(iter(msgs)) if not isinstance(i, Tick)]
    return out, stats


def live(criteria: Criteria, msgs: list[Any]) -> tuple[list[Any], Stats]:
    stats = Stats()
    out = list(Selector(criteria, stats).live_stage(iter(msgs)))
    return [i if isinstance(i, Tick) else i[2] for i in out], stats


def cids(msgs: list[HepMessage]) -> list[str | None]:
    return [keys_of(x).call_id for x in msgs if isinstance(x, HepMessage)]


# --- B2BUA legs, call-id ------------------------------------------------------------------

LEG_A = call("a@x")
LEG_B = call("b@y", corr=b"a@x")
OTHER = call("c@z")
MIXED = items([LEG_A[0], LEG_B[0], OTHER[0], LEG_A[1], LEG_B[1], OTHER[1], LEG_A[2], LEG_B[2]])


@pytest.mark.parametrize("run", [offline, live])
def test_call_id_keeps_both_legs_of_a_b2bua_call(run: Any) -> None:
    out, stats = run(Criteria(call_ids=frozenset({"a@x"})), MIXED)
    assert cids(out) == ["a@x", "b@y", "a@x", "b@y", "a@x", "b@y"]
    assert stats.filtered == 2


@pytest.mark.parametrize("run", [offline, live])
def test_call_id_of_the_b_leg_also_brings_the_a_leg(run: Any) -> None:
    out, _ = run(Criteria(call_ids=frozenset({"b@y"})), MIXED)
    assert sorted(map(str, set(cids(out)))) == ["a@x", "b@y"]


def test_b_leg_linked_late_is_found_offline() -> None:
    # The correlation id that links the legs comes only in the last message.
    b = call("b@y")
    b[2] = m(sip(BYE, "b@y", "2 BYE"), corr=b"a@x")
    msgs = items([*b, *LEG_A])
    out, _ = offline(Criteria(call_ids=frozenset({"a@x"})), msgs)
    assert cids(out) == ["b@y", "b@y", "b@y", "a@x", "a@x", "a@x"]


def test_correlation_id_keeps_messages_without_sip() -> None:
    rtcp = m(b'{"type":200}', ptype=PayloadType.RTCP_JSON, corr=b"a@x")
    out, _ = offline(Criteria(call_ids=frozenset({"a@x"})), items([*LEG_A, rtcp, *OTHER]))
    assert len(out) == 4
    assert out[3] is rtcp


@pytest.mark.parametrize("run", [offline, live])
def test_correlation_id_filter(run: Any) -> None:
    out, _ = run(Criteria(correlation_ids=frozenset({"a@x"})), MIXED)
    # the B leg carries the correlation id; the A leg is linked to it
    assert sorted(map(str, set(cids(out)))) == ["a@x", "b@y"]


# --- per-message filters ----------------------------------------------------------------


@pytest.mark.parametrize("run", [offline, live])
def test_host_either_side(run: Any) -> None:
    msgs = items(
        [
            m(sip(INVITE, "1"), src=parse_host("192.0.2.1")),
            m(sip(INVITE, "2"), dst=parse_host("192.0.2.1")),
            m(sip(INVITE, "3")),
            m(sip(INVITE, "4"), src=parse_host("2001:db8::1"), dst=parse_host("2001:db8::2")),
        ]
    )
    out, stats = run(Criteria(hosts=frozenset({parse_host("192.0.2.1")})), msgs)
    assert cids(out) == ["1", "2"]
    assert stats.filtered == 2
    out, _ = run(Criteria(hosts=frozenset({parse_host("[2001:db8::2]")})), msgs)
    assert cids(out) == ["4"]


@pytest.mark.parametrize("run", [offline, live])
def test_port_either_side(run: Any) -> None:
    msgs = items(
        [m(sip(INVITE, "1"), sport=5061), m(sip(INVITE, "2"), dport=5061), m(sip(INVITE, "3"))]
    )
    out, _ = run(Criteria(ports=frozenset({5061})), msgs)
    assert cids(out) == ["1", "2"]


@pytest.mark.parametrize("run", [offline, live])
def test_agent(run: Any) -> None:
    msgs = items([*call("1", agent=1), *call("2", agent=2), m(sip(INVITE, "3"), agent=None)])
    out, _ = run(Criteria(agents=frozenset({2})), msgs)
    assert cids(out) == ["2", "2", "2"]


@pytest.mark.parametrize("run", [offline, live])
def test_since_until_inclusive(run: Any) -> None:
    msgs = items([m(sip(INVITE, str(i))) for i in range(10)], step_us=1_000_000)
    out, _ = run(Criteria(since_us=T0 + 2_000_000, until_us=T0 + 4_000_000), msgs)
    assert cids(out) == ["2", "3", "4"]


# --- dialog filters -----------------------------------------------------------------------


@pytest.mark.parametrize("run", [offline, live])
def test_method_keeps_whole_dialogs(run: Any) -> None:
    reg = [m(sip("REGISTER sip:example.com SIP/2.0", "r", "1 REGISTER")),
           m(sip("SIP/2.0 200 OK", "r", "1 REGISTER"))]  # fmt: skip
    out, _ = run(Criteria(methods=frozenset({"REGISTER"})), items([*call("c"), *reg]))
    assert cids(out) == ["r", "r"]
    out, _ = run(Criteria(methods=frozenset({"INVITE"})), items([*call("c"), *reg]))
    assert cids(out) == ["c", "c", "c"]


def test_method_matched_late_keeps_the_dialog_from_its_start() -> None:
    # --method BYE: the dialog matches at its last message; offline gets all of it.
    out, _ = offline(Criteria(methods=frozenset({"BYE"})), items([*call("c"), *OTHER[:2]]))
    assert cids(out) == ["c", "c", "c"]


def test_live_holds_a_dialog_until_it_matches() -> None:
    out, stats = live(Criteria(methods=frozenset({"BYE"})), items([*call("c"), *OTHER[:2]]))
    assert cids(out) == ["c", "c", "c"]
    assert stats.filtered == 2


@pytest.mark.parametrize("run", [offline, live])
def test_match_like_sngrep(run: Any) -> None:
    msgs = items([*call("1", who="alice"), *call("2", who="bob")])
    out, _ = run(Criteria(match=compile_match("From: <sip:bob@", False)), msgs)
    assert cids(out) == ["2", "2", "2"]
    out, _ = run(Criteria(match=compile_match("from: <SIP:BOB@", True)), msgs)
    assert cids(out) == ["2", "2", "2"]
    out, _ = run(Criteria(match=compile_match("from: <SIP:BOB@", False)), msgs)
    assert cids(out) == []


def test_invert_match_offline_leaves_out_whole_dialogs() -> None:
    msgs = items([*call("1", who="alice"), *call("2", who="carol")])
    out, _ = offline(Criteria(match=compile_match("carol", False), invert=True), msgs)
    assert cids(out) == ["1", "1", "1"]


def test_filters_combine_with_and() -> None:
    msgs = items([*call("1", agent=1), *call("2", agent=2), *call("3", agent=2, who="carol")])
    crit = Criteria(agents=frozenset({2}), match=compile_match("carol", False))
    out, _ = offline(crit, msgs)
    assert cids(out) == ["3", "3", "3"]


def test_repeated_filter_ors() -> None:
    out, _ = offline(
        Criteria(call_ids=frozenset({"1", "3"})), items([*call("1"), *call("2"), *call("3")])
    )
    assert cids(out) == ["1", "1", "1", "3", "3", "3"]


def test_messages_without_any_key_are_left_out_by_dialog_filters() -> None:
    out, stats = offline(
        Criteria(call_ids=frozenset({"1"})), items([m(b"not sip at all"), *call("1")])
    )
    assert cids(out) == ["1", "1", "1"]
    assert stats.filtered == 1


def test_ticks_pass_through_live() -> None:
    out, _ = live(Criteria(call_ids=frozenset({"1"})), [Tick(T0), *items(call("1"))])
    assert isinstance(out[0], Tick)
    assert len(out) == 4


def test_live_held_messages_expire() -> None:
    msgs: list[Any] = items(call("1")[:2])
    msgs.append(Tick(T0 + HOLD_US + 10_000))
    out, stats = live(Criteria(methods=frozenset({"BYE"})), msgs)
    assert cids(out) == []
    assert stats.filtered == 2


def test_live_hold_is_bounded() -> None:
    msgs = items(m(sip(INVITE, f"c{i}")) for i in range(MAX_HELD + 100))
    sel = Selector(Criteria(methods=frozenset({"BYE"})), Stats())
    assert list(sel.live_stage(iter(msgs))) == []
    assert sel.stats.lost == {"filter_hold_full": 100}  # the oldest, while the hold was full
    assert sel.stats.filtered == MAX_HELD  # the end: never matched


def test_live_hold_is_bounded_in_bytes() -> None:
    big = b"x" * 60_000
    n = MAX_HELD_BYTES // 60_000 + 50
    msgs = items(m(sip(INVITE, f"c{i}") + big) for i in range(n))
    msgs += items([m(sip(BYE, f"c{n - 1}", "2 BYE"))])
    sel = Selector(Criteria(methods=frozenset({"BYE"})), Stats())
    out = [x[2] for x in sel.live_stage(iter(msgs)) if not isinstance(x, Tick)]
    assert cids(out) == [f"c{n - 1}", f"c{n - 1}"]  # the newest dialog was still held
    per = len(msgs[0][2].payload) + HELD_OVERHEAD
    lost = sel.stats.lost["filter_hold_full"]
    assert lost == n - MAX_HELD_BYTES // per  # the oldest went as the bytes bound was passed
    assert lost + sel.stats.filtered + 1 == n


# --- parsing ------------------------------------------------------------------------------


def test_parse_time() -> None:
    assert parse_time("1764158400") == 1_764_158_400_000_000
    assert parse_time("1764158400.25") == 1_764_158_400_250_000
    assert parse_time("2025-11-26T12:00:00Z") == 1_764_158_400_000_000
    assert parse_time("2025-11-26 13:00:00+01:00") == 1_764_158_400_000_000
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_parse_host_and_match_errors() -> None:
    assert parse_host("10.0.0.1") == b"\x0a\x00\x00\x01"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_host("example.com")
    with pytest.raises(ValueError, match=r"unterminated|missing"):
        compile_match("(abc", False)
    assert isinstance(compile_match("x", True), re.Pattern)


# --- dialogs --------------------------------------------------------------------------------


def test_dialogs_link_and_cap() -> None:
    d = Dialogs(max_keys=4, max_group_keys=3)
    assert d.observe(Keys(None, "a", None)) == ("a", None)
    root, absorbed = d.observe(Keys(None, "b", "a"))
    assert {root, absorbed} == {"a", "b"}
    assert d.find("a") == d.find("b")
    d.observe(Keys(None, "c", "a"))
    assert d.find("c") == d.find("a")
    # a fourth key would pass max_group_keys: it stays apart
    d.observe(Keys(None, "d", "a"))
    assert d.find("d") == "d" != d.find("a")
    # past max_keys nothing more is tracked
    assert d.observe(Keys(None, "e", None)) == (None, None)
    assert d.untracked == 1
    assert sorted(map(sorted, d.members().values())) == [["a", "b", "c"], ["d"]]


def test_keys_of() -> None:
    k = keys_of(m(sip(INVITE, "  x@y  "), corr=b"corr"))
    assert (k.call_id, k.correlation_id) == ("x@y", "corr")
    k = keys_of(m(b"binary", ptype=PayloadType.RTCP_JSON, corr=b""))
    assert (k.head, k.call_id, k.correlation_id) == (None, None, None)
