"""Unit tests for hep2pcap.stats: counting rules and the end-of-run summary text."""

from __future__ import annotations

import pytest
from hepbuild import ip

from hep2pcap import stats as stats_module
from hep2pcap.errors import SKIP_REASONS, Reason
from hep2pcap.stats import Stats

A, B = ip("192.0.2.1"), ip("192.0.2.2")
A6, B6 = ip("2001:db8::1"), ip("2001:db8::2")


def written(s: Stats, agent: int | None, proto: int, src: bytes, sport: int, dst: bytes,
            dport: int, n: int = 1) -> None:  # fmt: skip
    """Count n written messages the way Converter._write does."""
    key = (agent, proto, src, sport, dst, dport)
    for _ in range(n):
        s.written += 1
        s.frames += 1
        if key in s.flows:
            s.flows[key] += 1
        else:
            s.count_new_flow(key)


def test_empty_summary() -> None:
    assert Stats().summary() == "read 0, wrote 0, skipped 0, dropped 0"


@pytest.mark.parametrize("reason", [r for r in Reason if r in SKIP_REASONS])
def test_skip_reasons_are_skips(reason: Reason) -> None:
    s = Stats()
    assert s.reject(reason) is True
    assert (s.skipped_total, s.dropped_total) == (1, 0)


@pytest.mark.parametrize("reason", [Reason.BAD_MAGIC, Reason.AUTH_MISMATCH, Reason.CHUNK_OVERRUN])
def test_other_reasons_are_drops(reason: Reason) -> None:
    s = Stats()
    assert s.reject(reason) is False
    assert (s.skipped_total, s.dropped_total) == (0, 1)


def test_headline_lists_reasons_sorted_by_name() -> None:
    s = Stats(read=10)
    for r in (Reason.TRUNCATED_HEADER, Reason.BAD_MAGIC, Reason.BAD_MAGIC):
        s.reject(r)
    s.reject(Reason.UNSUPPORTED_PAYLOAD_TYPE)
    written(s, 1, 17, A, 1, B, 2, n=6)
    assert s.summary().splitlines()[0] == (
        "read 10, wrote 6, skipped 1 (unsupported_payload_type=1), "
        "dropped 3 (bad_magic=2, truncated_header=1)"
    )


def test_frames_shown_only_when_they_differ() -> None:
    s = Stats(read=1)
    written(s, 1, 6, A, 1, B, 2)
    assert s.summary().startswith("read 1, wrote 1, skipped 0")
    s.frames = 3
    assert s.summary().startswith("read 1, wrote 1 (3 frames), skipped 0")


def test_detail_lines() -> None:
    s = Stats(read=4, late=2)
    s.input_problems[Reason.STREAM_DESYNC] += 1
    s.input_problems[Reason.NOT_HEP] += 3
    s.warnings[Reason.TS_NTP_EPOCH] += 2
    s.warnings[Reason.FAMILY_MISMATCH] += 1
    written(s, 2001, 22, A, 5061, B, 5061, n=3)
    written(s, None, 17, B, 5060, A, 5060)
    lines = s.summary().splitlines()
    assert lines[1:] == [
        "  input: not_hep=3, stream_desync=1",
        "  repaired/warned: family_mismatch=1, ts_ntp_epoch=2",
        "  late (outside the reorder window, written anyway): 2",
        "  by capture agent: 2001=3, none=1",
        "  by transport: TLS(as TCP)=3, UDP=1",
        "  by direction (2): 192.0.2.1:5061 -> 192.0.2.2:5061=3, "
        "192.0.2.2:5060 -> 192.0.2.1:5060=1",
    ]


def test_ties_sorted_by_key_text() -> None:
    s = Stats()
    written(s, 20, 17, A, 1, B, 2)
    written(s, 3, 17, A, 1, B, 3)
    written(s, None, 17, A, 1, B, 4)
    assert "  by capture agent: 20=1, 3=1, none=1" in s.summary().splitlines()


def test_ipv6_endpoints_in_brackets() -> None:
    s = Stats()
    written(s, 1, 17, A6, 5060, B6, 5080)
    assert "[2001:db8::1]:5060 -> [2001:db8::2]:5080=1" in s.summary()


def test_directions_top_list_and_more() -> None:
    s = Stats()
    for port in range(1, 11):
        written(s, 1, 17, A, port, B, 5060, n=port)
    line = s.summary().splitlines()[-1]
    assert line.startswith("  by direction (10): 192.0.2.1:10 -> 192.0.2.2:5060=10, ")
    assert line.endswith("192.0.2.1:3 -> 192.0.2.2:5060=3, +2 more")


def test_agents_and_directions_aggregate_over_flows() -> None:
    s = Stats()
    written(s, 1, 17, A, 1, B, 2, n=2)
    written(s, 1, 6, A, 1, B, 2)  # same direction, other protocol: another flow
    written(s, 2, 17, A, 1, B, 2)
    assert s.agents == {1: 3, 2: 1}
    assert s.transports == {"UDP": 3, "TCP": 1}
    assert s.directions == {(A, 1, B, 2): 4}


def test_flows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "MAX_FLOWS", 2)
    s = Stats()
    for port in range(1, 6):
        written(s, 7, 17, A, port, B, 5060)
    written(s, 7, 17, A, 1, B, 5060)  # a tracked flow keeps counting
    assert len(s.flows) == 3  # two tracked + one per (agent, protocol) bucket
    assert s.agents == {7: 6}
    assert s.transports == {"UDP": 6}
    assert s.directions == {(A, 1, B, 5060): 2, (A, 2, B, 5060): 1}
    assert s.summary().splitlines()[-1].endswith(" (+3 messages past 2 flows)")


def test_live_lines_only_when_set() -> None:
    s = Stats()
    assert "lost before decoding" not in s.summary()
    s.kernel_drops = 5
    s.connections["accepted"] += 2
    s.forwarded = 9
    text = s.summary()
    assert "  lost before decoding: kernel drops 5, not converted 0" in text
    assert "  connections: accepted=2" in text
    assert "  forwarded 9, forward drops 0" in text
