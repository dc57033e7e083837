"""report.py (hep2pcap info): counts, and the warnings that say a capture is incomplete."""

from __future__ import annotations

import json
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from hep2pcap.errors import Reason
from hep2pcap.hep import HepMessage
from hep2pcap.pipeline import Options, observe
from hep2pcap.report import Report
from hep2pcap.sources import open_inputs
from hep2pcap.stats import Stats

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TICKET = FIXTURES / "hep" / "ticket.hep"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FACTS = MANIFEST["hep/ticket.hep"]["ticket"]
SCHEMA = json.loads(resources.files("hep2pcap").joinpath("info-schema.json").read_text())


def report_of(*paths: Path) -> tuple[Report, Stats]:
    report, stats = Report(), Stats()
    with ExitStack() as stack:
        sources = open_inputs(tuple(map(str, paths)), stack, [])
        observe(sources, Options(payload_types=None), stats, report.observe)
    return report, stats


@pytest.fixture(scope="module")
def ticket() -> tuple[Report, Stats, dict[str, Any]]:
    report, stats = report_of(TICKET)
    return report, stats, report.to_dict(stats)


def test_json_is_valid_against_the_schema(ticket: tuple[Report, Stats, dict[str, Any]]) -> None:
    jsonschema.validate(ticket[2], SCHEMA)
    json.dumps(ticket[2])


def test_schema_rejects_what_it_should() -> None:
    # The schema is a real check: a wrong type or a missing key fails.
    report, stats = report_of(TICKET)
    data = report.to_dict(stats)
    data["messages"]["read"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)
    del data["messages"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_counts(ticket: tuple[Report, Stats, dict[str, Any]]) -> None:
    _, stats, d = ticket
    hep_messages = MANIFEST["hep/ticket.hep"]["hep_messages"]
    assert d["messages"]["read"] == hep_messages
    assert d["messages"]["dropped"] == 0
    # the TCP agent's 7 HEP packets carry 7 SIP messages, one cut over two packets and two
    # packed in one: re-cut before counting
    assert d["messages"]["accepted"] == hep_messages
    assert d["versions"] == {"HEPv3": hep_messages}
    assert d["transports"]["TLS"] > 0
    assert d["transports"]["UDP"] > 0
    assert d["transports"]["TCP"] == 7
    assert {a["id"] for a in d["agents"]} == {300, 301, 302, 303}
    assert next(a for a in d["agents"] if a["id"] == 301)["nodes"] == ["fs1"]
    assert d["sip"]["requests"]["INVITE"] >= 7
    assert d["sip"]["responses"]["401"] == 1
    assert d["sip"]["calls"] == 3 + 3 + 1  # a B2BUA call's two legs are one call
    assert d["repairs"]["sip_split"] == 1
    assert d["repairs"]["sip_joined"] == 1
    assert stats.warnings[Reason.SIP_TRUNCATED] == FACTS["truncated"]


def test_fs_9657_one_direction_warning(ticket: tuple[Report, Stats, dict[str, Any]]) -> None:
    _, _, d = ticket
    one_way = {(x["agent"], x["transport"]): x for x in d["one_way_dialogs"]}
    fs = one_way[(FACTS["one_way"]["agent"], FACTS["one_way"]["transport"])]
    assert fs["one_way"] == fs["dialogs"] == FACTS["one_way"]["dialogs"]
    assert all(x["one_way"] == 0 for k, x in one_way.items() if k[0] != 301)
    # The transaction check names it (and the dialog check, saying the same, stays quiet).
    one_sided = {(x["agent"], x["transport"]): x for x in d["one_sided_transactions"]}
    assert one_sided[(301, "TLS")]["requests_only"] == 6
    assert one_sided[(301, "TLS")]["one_sided_dialogs"] == 3
    assert any(
        w.startswith("agent 301: 6 of 6 TLS transactions in 3 of 3 dialogs were mirrored from")
        and "FS-9657" in w
        for w in d["warnings"]
    )
    assert not any("TLS dialogs have messages in one direction only" in w for w in d["warnings"])


def test_copies_truncation_warnings(ticket: tuple[Report, Stats, dict[str, Any]]) -> None:
    _, _, d = ticket
    assert d["duplicates"] == FACTS["copies"]
    assert any("mirrored again by another agent" in w and "302" in w for w in d["warnings"])
    assert d["sip"]["truncated"] == FACTS["truncated"]
    assert any("shorter than their Content-Length" in w for w in d["warnings"])


def test_complete_capture_has_no_direction_warning() -> None:
    report, stats = report_of(FIXTURES / "hep" / "sample-call.hep")
    d = report.to_dict(stats)
    assert d["warnings"] == []
    assert all(x["one_way"] == 0 for x in d["one_way_dialogs"])
    assert "warnings:    none" in report.to_text(stats)


def test_time_going_backwards_per_agent() -> None:
    # multi-agent.hep: agent 2002's batch is written after agent 2001's later messages,
    # but each agent's own time only moves forwards.
    report, stats = report_of(FIXTURES / "hep" / "multi-agent.hep")
    d = report.to_dict(stats)
    assert all(a["time_backwards"] == 0 for a in d["agents"])
    jsonschema.validate(d, SCHEMA)


def test_backwards_jump_is_a_warning() -> None:
    from hep2pcap.hep import HepMessage

    report = Report()
    for ts in (10_000_000, 12_000_000, 9_000_000):
        report.observe(
            ts,
            HepMessage(3, 17, b"\1\2\3\4", b"\1\2\3\5", 1, 2, ts, b"x", capture_id=9),
        )
    d = report.to_dict(Stats())
    assert d["agents"][0]["time_backwards"] == 1
    assert d["agents"][0]["max_backwards_s"] == 3.0
    assert any(
        "agent 9: HEP time went backwards 1 times, by up to 3.000 s" in w for w in d["warnings"]
    )


def test_text_report_mentions_every_section(ticket: tuple[Report, Stats, dict[str, Any]]) -> None:
    report, stats, _ = ticket
    text = report.to_text(stats)
    for head in (
        "time:",
        "messages:",
        "agents:",
        "transports:",
        "requests:",
        "dialogs:",
        "warnings:",
    ):
        assert head in text
    assert "TLS=" in text
    assert "fs1" in text


def test_copies_from_the_same_agent_are_reported() -> None:
    # One packet received three times (a sender mirroring to a broadcast and a forwarded
    # address, like hep-wireshark's compressed sample), and a SIP retransmission 500 ms
    # later: only the copies count, with their usual spacing.
    from hep2pcap.hep import HepMessage

    report = Report()
    for ts in (10_000_000, 10_000_000, 10_000_040, 10_500_000):
        report.observe(ts, HepMessage(3, 6, b"\1\2\3\4", b"\1\2\3\5", 1, 2, ts, b"x", capture_id=9))
    d = report.to_dict(Stats())
    jsonschema.validate(d, SCHEMA)
    assert d["duplicates"] == 0
    assert d["same_agent_copies"] == {"messages": 2, "agents": [9], "usual_spacing_s": 4e-05}
    assert (
        "2 messages are exact copies of a packet the same agent sent just before (agent 9; "
        "usually 40 µs apart): the packet was received more than once; --dedup keeps them, "
        "it drops copies from other agents only"
    ) in d["warnings"]


def test_the_ticket_has_copies_from_another_agent_only(
    ticket: tuple[Report, Stats, dict[str, Any]],
) -> None:
    assert ticket[2]["same_agent_copies"]["messages"] == 0


def test_an_empty_input_says_no_hep_messages(tmp_path: Path) -> None:
    empty = tmp_path / "empty.hep"
    empty.write_bytes(b"")
    report, stats = report_of(empty)
    d = report.to_dict(stats)
    jsonschema.validate(d, SCHEMA)
    assert d["warnings"] == ["no HEP messages in the input"]
    text = report.to_text(stats)
    assert "warnings:    none" not in text
    assert text.endswith("warnings:    1\n  ! no HEP messages in the input")


def test_an_input_of_rejected_messages_says_none_accepted() -> None:
    stats = Stats()
    stats.read = 3  # three messages read, every one rejected: none reached the report
    assert Report().to_dict(stats)["warnings"][0] == "no HEP messages accepted (3 read)"


# --- issue 11: transactions, not 5-tuples -----------------------------------------------


def _msg(
    first: str, src: int, dst: int, branch: str, cseq: str, proto: int = 22, call: str = "c1"
) -> HepMessage:
    text = (
        f"{first}\r\nVia: SIP/2.0/TLS 10.0.0.{src}:5061;branch={branch};rport\r\n"
        f"Call-ID: {call}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    return HepMessage(
        3, proto, bytes([10, 0, 0, src]), bytes([10, 0, 0, dst]), 5061, 5061, 0,
        text.encode(), capture_id=2001,
    )  # fmt: skip


CALL = [  # a proxy (10.0.0.2) between a TLS UAC (.1) and a UAS (.3); ports never pair up
    _msg("INVITE sip:b@x SIP/2.0", 1, 2, "z9hG4bK-a", "1 INVITE"),
    _msg("SIP/2.0 100 Trying", 2, 1, "z9hG4bK-a", "1 INVITE"),
    _msg("INVITE sip:b@x SIP/2.0", 2, 3, "z9hG4bK-b", "1 INVITE", proto=17),
    _msg("SIP/2.0 200 OK", 3, 2, "z9hG4bK-b", "1 INVITE", proto=17),
    _msg("SIP/2.0 200 OK", 2, 1, "z9hG4bK-a", "1 INVITE"),
    _msg("ACK sip:b@x SIP/2.0", 1, 2, "z9hG4bK-c", "1 ACK"),
    _msg("BYE sip:b@x SIP/2.0", 1, 2, "z9hG4bK-d", "2 BYE"),
    _msg("BYE sip:b@x SIP/2.0", 2, 3, "z9hG4bK-e", "2 BYE", proto=17),
    _msg("SIP/2.0 200 OK", 3, 2, "z9hG4bK-e", "2 BYE", proto=17),
    _msg("SIP/2.0 200 OK", 2, 1, "z9hG4bK-d", "2 BYE"),
]


def _warnings_of(messages: list[HepMessage]) -> list[str]:
    report = Report()
    for i, m in enumerate(messages):
        report.observe(i, m)
    return report.warnings(Stats())


def test_complete_proxied_tls_call_raises_no_alarm() -> None:
    assert _warnings_of(CALL) == []


def test_incoming_tls_half_missing_is_named() -> None:
    received = {0, 5, 6}  # what the proxy received over TLS (the UAC's requests)
    (warning,) = _warnings_of([m for i, m in enumerate(CALL) if i not in received])
    assert warning.startswith(
        "agent 2001: 2 of 2 TLS transactions in 1 of 1 dialogs were mirrored from one side only"
        " (2 responses without their request, 0 requests without a response)"
    )
    assert "FS-9657" in warning


def test_one_leg_of_a_proxy_only_raises_no_alarm() -> None:
    # The collector legitimately sees only the UDP leg (another agent mirrors the TLS one).
    assert _warnings_of([m for m in CALL if m.ip_proto == 17]) == []


def test_one_lost_response_is_not_a_pattern() -> None:
    calls = []
    for n in range(5):
        calls.append(_msg("OPTIONS sip:b@x SIP/2.0", 1, 2, f"b-{n}", "1 OPTIONS", call=f"c{n}"))
        calls.append(_msg("SIP/2.0 200 OK", 2, 1, f"b-{n}", "1 OPTIONS", call=f"c{n}"))
    assert _warnings_of(calls[:-1]) == []
    (warning,) = _warnings_of([m for i, m in enumerate(calls) if i not in (5, 7, 9)])
    assert "3 of 5 TLS transactions in 3 of 5 dialogs" in warning  # most of them: a pattern
