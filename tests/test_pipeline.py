"""Unit tests for hep2pcap.pipeline: acceptance rules, the reorder window, merging, TCP
continuity through the loop, strict mode, packet comments and the summary."""

from __future__ import annotations

import dataclasses
import io
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hepbuild import SIP, TS_SEC, ip, u8, u16, u32, v2_time, v3, v12
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import PcapNgReader

from hep2pcap import frames, pipeline
from hep2pcap.errors import Reason, StrictError
from hep2pcap.hep import ChunkType, DecodeOptions, HepMessage
from hep2pcap.items import Problem, Record, Tick
from hep2pcap.pcapng import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapngWriter
from hep2pcap.pipeline import Options, convert, describe
from hep2pcap.stats import Stats

S = 1_000_000  # microseconds per second
T0 = TS_SEC * S
RAW = Options(linktype=LINKTYPE_RAW)


@dataclass
class ListSource:
    items: list[Record | Problem | Tick]
    name: str = "src"
    unit: str = "record"

    def __iter__(self) -> Iterator[Record | Problem | Tick]:
        return iter(self.items)


@dataclass
class Written:
    agent: int | None
    node: str | None
    ts_us: int
    frame: bytes
    comment: str | None


@dataclass
class RecordingWriter:
    """A PacketWriter that keeps every call, flushes included, in order."""

    events: list[Written | str] = field(default_factory=list)

    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        self.events.append(Written(agent, node, ts_us, frame, comment))

    def flush(self) -> None:
        self.events.append("flush")

    def close(self) -> None:
        self.events.append("close")

    @property
    def packets(self) -> list[Written]:
        return [e for e in self.events if isinstance(e, Written)]

    @property
    def times(self) -> list[int]:
        return [p.ts_us - T0 for p in self.packets]

    def payloads(self) -> list[bytes]:
        out = []
        for p in self.packets:
            pkt = IP(p.frame)
            out.append(bytes(pkt[UDP].payload if UDP in pkt else pkt[TCP].payload))
        return out


def msg_at(t_us: int, marker: bytes = b"", **changes: bytes | None) -> bytes:
    """The base v3 SIP message at T0 + t_us, payload tagged with ``marker``."""
    sec, usec = divmod(T0 + t_us, S)
    chunk_changes: dict[int, bytes | None] = {
        ChunkType.TS_SEC: u32(sec),
        ChunkType.TS_USEC: u32(usec),
        ChunkType.PAYLOAD: SIP + marker,
    }
    chunk_changes.update({int(ChunkType[k.upper()]): v for k, v in changes.items()})
    return v3(chunk_changes)


def run(*items: Record | Problem | Tick, options: Options = RAW) -> tuple[Stats, RecordingWriter]:
    writer = RecordingWriter()
    stats = convert([ListSource(list(items))], writer, options)
    return stats, writer


def records(*datas: bytes) -> list[Record]:
    return [Record(d, None, i) for i, d in enumerate(datas)]


# --- the happy path -----------------------------------------------------------------------


def test_one_message_written_with_comment() -> None:
    stats, w = run(*records(msg_at(0)))
    assert (stats.read, stats.written, stats.frames, stats.late) == (1, 1, 1, 0)
    (p,) = w.packets
    assert (p.agent, p.node, p.ts_us) == (2001, None, T0)
    pkt = IP(p.frame)
    assert (pkt.src, pkt.dst, pkt[UDP].sport, pkt[UDP].dport) == (
        "192.0.2.1",
        "192.0.2.2",
        5060,
        5080,
    )
    assert bytes(pkt[UDP].payload) == SIP
    assert p.comment is not None
    assert p.comment.startswith("HEPv3; agent 2001; proto 17 (UDP)")
    assert w.events[-1] == "flush"


def test_comments_off() -> None:
    _, w = run(*records(msg_at(0)), options=Options(linktype=LINKTYPE_RAW, comments=False))
    assert w.packets[0].comment is None


def test_empty_run() -> None:
    stats, w = run()
    assert (stats.read, stats.written) == (0, 0)
    assert w.packets == []
    assert convert([], RecordingWriter(), RAW).read == 0


def test_v1_uses_record_time() -> None:
    v1 = v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"))
    stats, w = run(Record(v1, T0 + 5, 0), Record(v1, None, 1))
    assert w.times == [5]
    assert stats.dropped == {Reason.MISSING_TIMESTAMP: 1}
    assert w.packets[0].comment is not None
    assert w.packets[0].comment.startswith("HEPv1; no agent id")


def test_v2_capture_id_is_the_agent() -> None:
    v2 = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, 0, 77))
    _, w = run(*records(v2))
    assert w.packets[0].agent == 77


def test_receive_time_used_when_hep_time_missing() -> None:
    data = msg_at(0, ts_sec=None)
    opts = Options(linktype=LINKTYPE_RAW, decode=DecodeOptions(use_receive_time=True))
    stats, w = run(Record(data, T0 + 9, 0), options=opts)
    assert w.times == [9]
    assert stats.warnings[Reason.TS_RECEIVE_TIME] == 1
    assert w.packets[0].comment is not None
    assert "ts_receive_time" in w.packets[0].comment


def test_record_time_bounds_hep_time() -> None:
    # HEP-SPEC §9.4: not more than one day after the receive time.
    stats, w = run(Record(msg_at(86401 * S), T0, 0), Record(msg_at(86400 * S), T0, 1))
    assert stats.dropped == {Reason.BAD_TIMESTAMP: 1}
    assert w.times == [86400 * S]


# --- acceptance: payload types and auth (HEP-SPEC §4, §8) ---------------------------------


def test_unsupported_payload_type_skipped() -> None:
    # QoS JSON (32) has no faithful rendering: counted by name, kept out of the file
    qos = msg_at(0, payload_type=u8(0x20), payload=b'{"mos": 4.1}')
    stats, w = run(*records(qos, msg_at(1)))
    assert stats.skipped == {Reason.UNSUPPORTED_PAYLOAD_TYPE: 1}
    assert stats.skipped_types == {0x20: 1}
    assert "  payload types not written: QoS-JSON(32)=1" in stats.summary().splitlines()
    assert stats.dropped_total == 0
    assert w.times == [1]


def test_faithful_types_written_by_default() -> None:
    # LOG (as syslog), RTP (as it is) and RTCP-JSON (rebuilt) need no option
    rtcp = b'{"ssrc":1,"type":201,"report_count":0,"report_blocks":[]}'
    datas = [
        msg_at(0, payload_type=u8(0x64), payload=b"routing to bob"),
        msg_at(1, payload_type=u8(4), payload=b"\x80\x00\x00\x01rtp"),
        msg_at(2, payload_type=u8(5), payload=rtcp),
    ]
    stats, w = run(*records(*datas))
    assert (stats.written, stats.skipped_total) == (3, 0)
    log, rtp, rr = (UDP(IP(p.frame).payload.build()) for p in w.packets)
    assert (log.dport, bytes(log.payload)) == (514, b"<14>routing to bob")
    assert bytes(rtp.payload) == b"\x80\x00\x00\x01rtp"
    assert bytes(rr.payload) == bytes.fromhex("80c9000100000001")
    comments = [p.comment or "" for p in w.packets]
    assert "type 100 (LOG); LOG as syslog to port 514 (HEP ports 5060 -> 5080)" in comments[0]
    assert "type 4 (RTP)" in comments[1]
    assert "type 5 (RTCP-JSON); RTCP rebuilt from the HEP JSON report" in comments[2]


def test_sigtran_as_sctp_counted_as_sctp() -> None:
    aspup = bytes.fromhex("0100030100000008")
    m3ua = msg_at(0, payload_type=u8(9), ip_proto=u8(132), payload=aspup)
    sip_over_sctp = msg_at(1, ip_proto=u8(132))
    stats, w = run(*records(m3ua, sip_over_sctp))
    assert [IP(p.frame).proto for p in w.packets] == [132, 17]
    assert stats.transports == {"SCTP": 1, "SCTP(as UDP)": 1}


def test_rtcp_json_reasons_counted() -> None:
    bad = msg_at(0, payload_type=u8(5), payload=b"not json")
    unknown = msg_at(1, payload_type=u8(5), payload=b'{"ssrc":1,"type":201,"mos":4}')
    stats, w = run(*records(bad, unknown, msg_at(2)))
    assert stats.dropped == {Reason.RTCP_JSON_INVALID: 1}
    assert stats.skipped == {Reason.RTCP_JSON_UNMAPPED: 1}
    assert w.times == [2]


def test_all_payload_types_when_asked() -> None:
    opts = Options(linktype=LINKTYPE_RAW, payload_types=None)
    stats, w = run(*records(msg_at(0, payload_type=u8(0x20))), options=opts)
    assert stats.written == 1
    assert w.packets[0].comment is not None
    assert "type 32 (QoS-JSON)" in w.packets[0].comment


def test_selected_payload_types() -> None:
    opts = Options(linktype=LINKTYPE_RAW, payload_types=frozenset({4}))
    stats, _ = run(*records(msg_at(0, payload_type=u8(4)), msg_at(1)), options=opts)
    assert (stats.written, stats.skipped) == (1, {Reason.UNSUPPORTED_PAYLOAD_TYPE: 1})


def test_missing_payload_type() -> None:
    sip = msg_at(0, payload_type=None)
    not_sip = msg_at(1, payload_type=None, payload=b'{"json": true}')
    stats, w = run(*records(sip, not_sip))
    assert w.times == [0]
    assert stats.warnings[Reason.MISSING_PAYLOAD_TYPE] == 1  # kept: looks like SIP
    assert stats.skipped == {Reason.MISSING_PAYLOAD_TYPE: 1}


@pytest.mark.parametrize(
    "payload", [b"SIP/2.0 200 OK\r\n", b"SIP/2.0 180 Ringing\n", b"BYE sip:a@b SIP/2.0\r\n"]
)
def test_missing_payload_type_sip_detection(payload: bytes) -> None:
    stats, _ = run(*records(msg_at(0, payload_type=None, payload=payload)))
    assert stats.written == 1


def test_missing_payload_type_skipped_when_sip_not_wanted() -> None:
    opts = Options(linktype=LINKTYPE_RAW, payload_types=frozenset({5}))
    stats, _ = run(*records(msg_at(0, payload_type=None)), options=opts)
    assert stats.skipped == {Reason.MISSING_PAYLOAD_TYPE: 1}


PW = Options(linktype=LINKTYPE_RAW, password=b"s3cret")


def test_auth_ok_and_key_not_in_comment() -> None:
    stats, w = run(*records(msg_at(0, auth_key=b"s3cret")), options=PW)
    assert stats.written == 1
    assert w.packets[0].comment is not None
    assert "s3cret" not in w.packets[0].comment


def test_auth_missing() -> None:
    stats, w = run(*records(msg_at(0), msg_at(1, auth_key=b"")), options=PW)
    assert stats.dropped == {Reason.AUTH_MISSING: 2}
    assert w.packets == []


@pytest.mark.parametrize("key", [b"s3cre", b"s3cret!", b"S3CRET", b"x"])
def test_auth_mismatch(key: bytes) -> None:
    # exact comparison: sngrep 1.6 compares a prefix; we must not
    stats, _ = run(*records(msg_at(0, auth_key=key)), options=PW)
    assert stats.dropped == {Reason.AUTH_MISMATCH: 1}


def test_v12_auth_required() -> None:
    v1 = v12(1, 2, ip("10.0.0.1"), ip("10.0.0.2"))
    v2 = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, 0, 1))
    stats, _ = run(Record(v1, T0, 0), Record(v2, T0, 1), options=PW)
    assert stats.dropped == {Reason.V12_AUTH_REQUIRED: 2}


def test_no_password_ignores_keys() -> None:
    stats, _ = run(*records(msg_at(0, auth_key=b"anything")))
    assert stats.written == 1


# --- rejections, strict mode, input problems -----------------------------------------------


def test_bad_message_counted_and_run_continues() -> None:
    stats, w = run(*records(b"HEP4garbage", msg_at(0), b"\x07", msg_at(1)))
    assert stats.read == 4
    assert stats.dropped == {Reason.BAD_MAGIC: 1, Reason.UNKNOWN_VERSION: 1}
    assert w.times == [0, 1]


def test_strict_raises_after_writing_earlier_messages() -> None:
    opts = Options(linktype=LINKTYPE_RAW, strict=True)
    writer = RecordingWriter()
    items = records(msg_at(1), msg_at(0), b"HEP3\x00\x03", msg_at(2))
    with pytest.raises(StrictError, match=r"src record 2: length_too_small"):
        convert([ListSource(list(items))], writer, opts)
    assert writer.times == [0, 1]  # held in the window, written (in order) before raising
    assert writer.events[-1] == "flush"


class FullDisk(RecordingWriter):
    def write_packet(
        self, agent: int | None, node: str | None, ts_us: int, frame: bytes, comment: str | None
    ) -> None:
        raise OSError(28, "No space left on device")


def test_a_write_error_is_not_hidden_by_the_final_flush() -> None:
    # The second failure (finishing the window on the same full disk) must not replace
    # the first: the user is told about the disk, not about a secondary error.
    items = records(*(msg_at(i) for i in range(5)))
    with pytest.raises(OSError, match="No space left") as info:
        convert([ListSource(list(items))], FullDisk(), Options(linktype=LINKTYPE_RAW, window_us=1))
    assert info.value.__context__ is None


def test_strict_does_not_raise_on_skips() -> None:
    opts = Options(linktype=LINKTYPE_RAW, strict=True)
    stats, w = run(*records(msg_at(0, payload_type=u8(0x20)), msg_at(1)), options=opts)
    assert stats.skipped == {Reason.UNSUPPORTED_PAYLOAD_TYPE: 1}
    assert w.times == [1]


def test_strict_raises_on_auth_failure() -> None:
    opts = Options(linktype=LINKTYPE_RAW, strict=True, password=b"pw")
    with pytest.raises(StrictError, match="auth_missing"):
        run(*records(msg_at(0)), options=opts)


def test_source_problems_counted_not_hep_is_quiet() -> None:
    items: list[Record | Problem | Tick] = [
        Problem(Reason.NOT_HEP, 10, "UDP port 53"),
        Record(msg_at(0), None, 20),
        Problem(Reason.STREAM_DESYNC, 30, "garbage"),
    ]
    stats, _ = run(*items)
    assert stats.input_problems == {Reason.NOT_HEP: 1, Reason.STREAM_DESYNC: 1}
    assert stats.written == 1
    strict = Options(linktype=LINKTYPE_RAW, strict=True)
    stats, _ = run(items[0], items[1], options=strict)  # NOT_HEP never fatal
    assert stats.written == 1
    with pytest.raises(StrictError, match="stream_desync"):
        run(*items, options=strict)


def test_rejections_logged_up_to_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hep2pcap")
    run(*records(*[b"\x07"] * 8))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 6  # WARN_LIMIT = 5 details, then one "further ... counted" line
    assert "src record 0: unknown_version" in warned[0].getMessage()
    assert "further unknown_version messages are counted" in warned[-1].getMessage()


def test_warn_limit_none_logs_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hep2pcap")
    run(*records(*[b"\x07"] * 8), options=Options(linktype=LINKTYPE_RAW, warn_limit=None))
    assert len(caplog.records) == 8


# --- the reorder window --------------------------------------------------------------------


def test_out_of_order_within_window_comes_out_sorted() -> None:
    times = [5, 3, 4, 0, 1, 2]
    stats, w = run(*records(*[msg_at(t * 100_000) for t in times]))
    assert w.times == [t * 100_000 for t in sorted(times)]
    assert stats.late == 0


def test_equal_times_keep_arrival_order() -> None:
    datas = [msg_at(0, bytes([65 + i])) for i in range(5)]
    _, w = run(*records(*datas))
    assert [p[-1:] for p in w.payloads()] == [b"A", b"B", b"C", b"D", b"E"]


def test_later_than_window_still_written_and_counted_late() -> None:
    opts = Options(linktype=LINKTYPE_RAW, window_us=1 * S)
    stats, w = run(*records(msg_at(10 * S), msg_at(20 * S), msg_at(30 * S), msg_at(5 * S)),
                   options=opts)  # fmt: skip
    assert w.times == [10 * S, 20 * S, 5 * S, 30 * S]
    assert (stats.written, stats.late) == (4, 1)
    assert "late (outside the reorder window, written anyway): 1" in stats.summary()


def test_window_edge_is_inclusive() -> None:
    opts = Options(linktype=LINKTYPE_RAW, window_us=S)
    writer = RecordingWriter()
    conv = pipeline.Converter(writer, opts, Stats())
    conv.push((T0, 0, _msg()))
    conv.push((T0 + S - 1, 1, _msg()))
    assert writer.packets == []
    conv.push((T0 + S, 2, _msg()))
    assert writer.times == [0]


def test_max_pending_bounds_the_window() -> None:
    opts = Options(linktype=LINKTYPE_RAW, window_us=10**12, max_pending=2)
    writer = RecordingWriter()
    conv = pipeline.Converter(writer, opts, Stats())
    for pushed, t in enumerate([5, 4, 3, 2, 1], start=1):
        conv.push((T0 + t, pushed, _msg()))
        assert pushed - len(writer.packets) <= 2  # never more than max_pending held
    assert writer.times == [3, 2, 1]
    conv.finish()
    assert writer.times == [3, 2, 1, 4, 5]
    assert conv.stats.late == 2


def test_window_is_bounded_in_bytes() -> None:
    big = SIP + b"x" * 60_000
    per = len(big) + pipeline.ITEM_OVERHEAD
    opts = Options(linktype=LINKTYPE_RAW, window_us=10**12, max_window_bytes=10 * per)
    writer = RecordingWriter()
    conv = pipeline.Converter(writer, opts, Stats())
    for i in range(30):
        conv.push((T0 + i, i, _msg(payload=big)))
        assert conv.held_bytes <= 10 * per  # the bound, in bytes, whatever the count
    assert writer.times == list(range(20))  # the oldest were written, in order
    assert conv.stats.early == {"window_full": 20}
    conv.finish()
    assert writer.times == list(range(30))
    assert conv.held_bytes == 0


def test_live_message_far_ahead_of_the_clock_is_not_held() -> None:
    # An agent (or attacker) stamping messages 20 h ahead: they wait one window of wall
    # time among themselves, then are written; the others are neither held nor made late.
    opts = Options(linktype=LINKTYPE_RAW, window_us=S)
    writer = RecordingWriter()
    conv = pipeline.Converter(writer, opts, Stats())
    hours = 20 * 3600 * S
    conv.drain_until(T0)
    conv.push((T0 + hours + 2, 0, _msg()))
    conv.push((T0 + hours + 1, 1, _msg()))
    conv.push((T0 + 1, 2, _msg()))
    conv.drain_until(T0 + S // 2)
    assert writer.times == []
    conv.push((T0 + S // 2, 3, _msg()))
    conv.drain_until(T0 + S + 2)
    assert writer.times == [hours + 1, hours + 2, 1]  # the far ones after a window of wall time
    conv.drain_until(T0 + 2 * S)
    assert writer.times == [hours + 1, hours + 2, 1, S // 2]
    assert conv.stats.late == 0
    assert conv.stats.early == {"ahead_of_clock": 2}


def test_ticks_drain_by_wall_time() -> None:
    opts = Options(linktype=LINKTYPE_RAW, window_us=2 * S)
    items: list[Record | Problem | Tick] = [
        Record(msg_at(0), T0, 0),
        Record(msg_at(1 * S), T0, 1),
        Tick(T0 + 2 * S),  # the first message has waited a whole window
        Record(msg_at(int(1.5 * S)), T0, 2),
        Tick(T0 + 10 * S),
    ]
    _, w = run(*items, options=opts)
    kinds = [e if isinstance(e, str) else (e.ts_us - T0) // 1000 for e in w.events]
    assert kinds == [0, "flush", 1000, 1500, "flush", "flush"]


def test_multiple_sources_merged_by_time() -> None:
    opts = Options(linktype=LINKTYPE_RAW, window_us=0)
    a = ListSource([Record(msg_at(t * S, b"a"), None, i) for i, t in enumerate([1, 3, 5])], "a")
    b = ListSource([Record(msg_at(t * S, b"b"), None, i) for i, t in enumerate([2, 4, 6])], "b")
    c = ListSource([Problem(Reason.STREAM_DESYNC, 0, "x")], "c")
    writer = RecordingWriter()
    stats = convert([a, b, c], writer, opts)
    assert writer.times == [t * S for t in range(1, 7)]
    assert [p[-1:] for p in writer.payloads()] == [b"a", b"b"] * 3
    assert (stats.read, stats.written, stats.late) == (6, 6, 0)
    assert stats.input_problems == {Reason.STREAM_DESYNC: 1}


def test_progress_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 2)
    seen: list[int] = []
    convert([ListSource(list(records(*[msg_at(i) for i in range(5)])))], RecordingWriter(), RAW,
            on_progress=lambda s: seen.append(s.read))  # fmt: skip
    assert seen == [2, 4]


# --- TCP through the loop (HEP-SPEC §12) -------------------------------------------------


def test_tcp_seq_continuity_across_messages_both_directions() -> None:
    a, b = ip("10.0.0.1"), ip("10.0.0.2")
    fwd: dict[int, bytes | None] = {
        ChunkType.IP_PROTO: u8(22),
        ChunkType.SRC_IP4: a,
        ChunkType.DST_IP4: b,
    }
    rev: dict[int, bytes | None] = {
        ChunkType.IP_PROTO: u8(22),
        ChunkType.SRC_IP4: b,
        ChunkType.DST_IP4: a,
        ChunkType.SRC_PORT: u16(5080),
        ChunkType.DST_PORT: u16(5060),
    }
    payloads = [b"INVITE x", b"SIP/2.0 100 Trying", b"SIP/2.0 200", b"ACK xyz"]
    datas = [
        v3({**fwd, ChunkType.PAYLOAD: payloads[0], ChunkType.TS_SEC: u32(TS_SEC)}),
        v3({**rev, ChunkType.PAYLOAD: payloads[1], ChunkType.TS_SEC: u32(TS_SEC + 1)}),
        v3({**rev, ChunkType.PAYLOAD: payloads[2], ChunkType.TS_SEC: u32(TS_SEC + 2)}),
        v3({**fwd, ChunkType.PAYLOAD: payloads[3], ChunkType.TS_SEC: u32(TS_SEC + 3)}),
    ]
    # arrival order differs from time order: the frames follow time order
    stats, w = run(*records(datas[1], datas[0], datas[3], datas[2]))
    segs = [IP(p.frame)[TCP] for p in w.packets]
    assert [bytes(s.payload) for s in segs] == payloads
    assert all(int(s.flags) == 0x18 for s in segs)
    f0, r1, r2, f3 = segs
    assert r1.seq == f0.ack
    assert r1.ack == f0.seq + len(payloads[0])
    assert r2.seq == r1.seq + len(payloads[1])
    assert r2.ack == r1.ack
    assert f3.seq == f0.seq + len(payloads[0])
    assert f3.ack == r2.seq + len(payloads[2])
    assert stats.transports == {"TLS(as TCP)": 4}


def test_udp_payload_truncated_is_noted() -> None:
    big = b"SIP/2.0 200 OK\r\n" + b"x" * (65_535 - 16)  # the inflated cap; > 65507
    data = v3({ChunkType.PAYLOAD: None}, (0, ChunkType.COMPRESSED_PAYLOAD, zlib.compress(big)))
    stats, w = run(*records(data))
    assert stats.warnings[Reason.UDP_PAYLOAD_TRUNCATED] == 1
    assert len(w.payloads()[0]) == 65507
    comment = w.packets[0].comment
    assert comment is not None
    assert "compressed payload" in comment
    assert "udp_payload_truncated" in comment


def test_tcp_large_payload_gives_several_frames() -> None:
    big = b"SIP/2.0 200 OK\r\n" + b"x" * (65_535 - 16)  # the inflated cap
    data = v3(
        {ChunkType.PAYLOAD: None, ChunkType.IP_PROTO: u8(6)},
        (0, ChunkType.COMPRESSED_PAYLOAD, zlib.compress(big)),
    )
    stats, w = run(*records(data))
    assert (stats.written, stats.frames) == (1, 2)
    assert b"".join(w.payloads()) == big
    assert "read 1, wrote 1 (2 frames)" in stats.summary()


# --- describe() -----------------------------------------------------------------------------


def _msg(**kw: object) -> HepMessage:
    base: dict[str, object] = dict(
        version=3, ip_proto=17, src_ip=ip("10.0.0.1"), dst_ip=ip("10.0.0.2"), src_port=1,
        dst_port=2, ts_us=T0, payload=SIP,
    )  # fmt: skip
    base.update(kw)
    return HepMessage(**base)  # type: ignore[arg-type]


def test_describe_minimal() -> None:
    assert describe(_msg()) == "HEPv3; no agent id; proto 17 (UDP)"


def test_describe_everything() -> None:
    msg = _msg(
        capture_id=2001,
        node_name="kam1",
        ip_proto=22,
        payload_type=5,
        correlation_id=b"abc@host",
        compressed=True,
        warnings=(Reason.TS_NTP_EPOCH, Reason.UNKNOWN_CHUNK, Reason.FAMILY_MISMATCH),
    )
    text = describe(msg, Reason.UDP_PAYLOAD_TRUNCATED)
    assert text.startswith("HEPv3; agent 2001; node kam1; proto 22 (TLS); type 5 (RTCP-JSON)")
    assert "correlation abc@host" in text
    assert "compressed payload" in text
    for noted in ("ts_ntp_epoch", "family_mismatch", "udp_payload_truncated"):
        assert noted in text
    assert "unknown_chunk" not in text  # structural trivia is not noted


@pytest.mark.parametrize(("proto", "label"), [(0, "0 (unset)"), (50, "50 (WebSocket)"),
                                               (132, "132 (SCTP)"), (99, "99")])  # fmt: skip
def test_describe_proto_labels(proto: int, label: str) -> None:
    assert f"proto {label}" in describe(_msg(ip_proto=proto))


def test_describe_correlation_is_clipped_and_made_text() -> None:
    text = describe(_msg(correlation_id=b"\xff" + b"c" * 500))
    assert "correlation \ufffd" + "c" * 199 in text
    assert "c" * 200 not in text


@pytest.mark.parametrize(
    ("proto", "label"),
    [(17, "UDP"), (6, "TCP"), (22, "TLS(as TCP)"), (50, "WebSocket(as TCP)"),
     (132, "SCTP(as UDP)"), (0, "unset(as UDP)"), (99, "proto-99(as UDP)")],
)  # fmt: skip
def test_transport_label(proto: int, label: str) -> None:
    assert frames.transport_label(proto) == label


# --- the summary ---------------------------------------------------------------------------


def test_summary_of_a_mixed_run() -> None:
    six: dict[int, bytes | None] = {
        ChunkType.SRC_IP4: None,
        ChunkType.DST_IP4: None,
        ChunkType.IP_FAMILY: u8(10),
        ChunkType.CAPTURE_ID: None,
    }
    datas = [
        msg_at(0),
        msg_at(1, ip_proto=u8(22)),
        msg_at(2, payload_type=u8(0x20)),
        b"HEP4\x00\x10",
        v3(six, (0, ChunkType.SRC_IP6, ip("2001:db8::1")), (0, ChunkType.DST_IP6, ip("::2"))),
    ]
    stats, _ = run(*records(*datas))
    lines = stats.summary().splitlines()
    assert lines[0] == (
        "read 5, wrote 3, skipped 1 (unsupported_payload_type=1), dropped 1 (bad_magic=1)"
    )
    text = stats.summary()
    assert "  by capture agent: 2001=2, none=1" in lines
    assert "  by transport: UDP=2, TLS(as TCP)=1" in lines
    assert "192.0.2.1:5060 -> 192.0.2.2:5080=2" in text
    assert "[2001:db8::1]:5060 -> [::2]:5080=1" in text


# --- properties of the whole loop ------------------------------------------------------------


@st.composite
def any_records(draw: st.DrawFn) -> list[Record]:
    out = []
    for pos in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data = draw(st.binary(max_size=80))
        elif kind == 3:
            data = v12(2, 2, ip("10.0.0.1"), ip("10.0.0.2"), time=v2_time(TS_SEC, 0, 3))
        else:
            data = msg_at(
                draw(st.integers(-5 * S, 5 * S)),
                payload_type=draw(st.sampled_from([u8(1), u8(5), None])),
                ip_proto=draw(st.sampled_from([u8(17), u8(6), u8(22), u8(99)])),
                auth_key=draw(st.sampled_from([None, b"pw", b"nope"])),
            )
            if kind == 2:
                i = draw(st.integers(0, len(data) - 1))
                data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
        out.append(Record(data, draw(st.sampled_from([None, T0])), pos))
    return out


@settings(max_examples=200)
@given(
    any_records(),
    st.sampled_from([None, b"pw"]),
    st.integers(0, 3 * S),
    st.integers(1, 5),
)
def test_every_record_is_written_skipped_or_dropped(
    recs: list[Record], password: bytes | None, window_us: int, max_pending: int
) -> None:
    opts = Options(password=password, window_us=window_us, max_pending=max_pending)
    out = io.BytesIO()
    stats = convert([ListSource(list(recs))], PcapngWriter(out, LINKTYPE_ETHERNET), opts)
    assert stats.read == len(recs)
    assert stats.read == stats.written + stats.skipped_total + stats.dropped_total
    assert stats.frames == stats.written
    times = [p.time for p in PcapNgReader(io.BytesIO(out.getvalue()))]  # type: ignore[arg-type]
    assert len(times) == stats.written
    late = sum(1 for i, t in enumerate(times) if any(t < u for u in times[:i]))
    assert stats.late == late


@settings(max_examples=100)
@given(st.lists(st.integers(0, 20), max_size=15))
def test_big_window_sorts_stably(offsets: list[int]) -> None:
    datas = [msg_at(t * 1000, b"%d" % i) for i, t in enumerate(offsets)]
    stats, w = run(*records(*datas), options=Options(linktype=LINKTYPE_RAW, window_us=S))
    expected = sorted(range(len(offsets)), key=lambda i: (offsets[i], i))
    assert [int(p[len(SIP) :]) for p in w.payloads()] == expected
    assert stats.late == 0


# --- issue 4: redaction, repairs and filters in the loop ------------------------------------

SDP_SDES = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:S3cr3tK3yS3cr3t|2^20\r\n"
INVITE_SDES = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: k1\r\nContent-Type: application/sdp\r\n"
    + f"Content-Length: {len(SDP_SDES)}\r\n\r\n".encode()
    + SDP_SDES
)


def test_redact_masks_in_place_and_says_so() -> None:
    data = v3({ChunkType.PAYLOAD: INVITE_SDES})
    stats, writer = run(*records(data), options=dataclasses.replace(RAW, redact=True))
    (packet,) = writer.packets
    assert b"S3cr3t" not in packet.frame
    assert len(packet.frame) == len(run(*records(data))[1].packets[0].frame)
    assert "redacted" in (packet.comment or "")
    assert stats.warnings[Reason.REDACTED] == 1


def test_repairs_run_in_convert() -> None:
    two = SIP + SIP.replace(b"abc", b"def")
    data = v3({ChunkType.PAYLOAD: two, ChunkType.IP_PROTO: u8(6)})
    stats, writer = run(*records(data))
    assert [p.frame.endswith(SIP.replace(b"abc", b"def")) for p in writer.packets] == [False, True]
    assert stats.warnings[Reason.SIP_SPLIT] == 1
    assert (stats.read, stats.written, stats.frames) == (1, 2, 2)
