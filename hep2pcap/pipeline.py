"""The one loop shared by offline conversion and live capture.

Owns: decode → accept (auth, payload type) → merge inputs → reorder by HEP time within a
bounded window → build frames → write. Sources (files, sockets) yield :class:`Record`,
:class:`Problem` and, for live inputs, :class:`Tick` items; this module never opens files
or sockets itself and reads no clock (ticks carry the time).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import hmac
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from heapq import heappop, heappush

from .engine import DEFAULT, Engine, Packet
from .errors import SKIP_REASONS, DecodeError, Reason, StopNow, StrictError
from .frames import BUILT_AS_SCTP, SCTP_PPIDS, FrameBuilder, proto_label
from .hep import (
    DEFAULT_OPTIONS,
    PAYLOAD_TYPE_NAMES,
    DecodeOptions,
    HepMessage,
    PayloadType,
    decode,
)
from .items import Item, Offload, Problem, Record, Source, Stage, Tick
from .pcapng import LINKTYPE_ETHERNET, PacketWriter
from .redact import redact
from .render import FAITHFUL_TYPES, RenderError, render
from .repair import ARRIVAL_STEP, drop_copies, marked, repair_sip
from .stats import Stats

log = logging.getLogger("hep2pcap")


#: What one held message costs besides its payload (the message object, its tuple, its
#: addresses), for the byte bounds of the reorder window.
ITEM_OVERHEAD = 512
#: Live: a message stamped more than this (plus the window) ahead of the wall clock is not
#: held in the window (it would wait for hours): it waits one window of wall time with the
#: others like it, then is written, counted ``ahead_of_clock``.
AHEAD_US = 2_000_000


@dataclass(frozen=True, slots=True)
class Options:
    """What the pipeline accepts and how it writes.

    Attributes:
        decode: decoder switches.
        password: when set, the auth key must be present and equal (HEP-SPEC §8).
        payload_types: payload types to write; ``None`` writes all (types without a
            rendering as they are). By default the types render.py writes faithfully.
        window_us: reorder window in HEP time.
        max_pending: cap on messages held in the window.
        max_window_bytes: cap on the bytes held in the window (payloads plus
            ITEM_OVERHEAD each); past either cap the oldest are written early, counted
            ``window_full``.
        comments: write a per-packet comment.
        strict: the first malformed message ends the run with :class:`StrictError`.
        linktype: LINKTYPE_ETHERNET or LINKTYPE_RAW.
        warn_limit: how many rejections of each reason are logged in detail before the
            rest are only counted; ``None`` logs them all.
        resplit: re-cut SIP over TCP/TLS at message boundaries (repair.repair_sip).
        mark_truncated: note SIP messages shorter than their Content-Length.
        dedup: drop copies of a packet that another agent already mirrored.
        redact: mask secrets in SIP (redact.py), keeping every length.
        render: turn non-SIP payloads into what Wireshark shows (render.py); off for
            ``hep2pcap info``, which reports the dump as it is.
    """

    decode: DecodeOptions = DEFAULT_OPTIONS
    password: bytes | None = None
    payload_types: frozenset[int] | None = FAITHFUL_TYPES
    window_us: int = 2_000_000
    max_pending: int = 100_000
    max_window_bytes: int = 64 * 1024 * 1024
    comments: bool = True
    strict: bool = False
    linktype: int = LINKTYPE_ETHERNET
    warn_limit: int | None = 5
    resplit: bool = True
    mark_truncated: bool = True
    dedup: bool = False
    redact: bool = False
    render: bool = True


def describe(msg: HepMessage, extra: Reason | None = None) -> str:
    """The packet comment: the HEP facts a person needs next to the frame.

    Example: ``HEPv3; agent 2001; node kam1; proto 22 (TLS); correlation abc@host``.
    """
    head = _comment_head(msg.version, msg.capture_id, msg.node_name, msg.ip_proto, msg.payload_type)
    if msg.note is not None:
        head = f"{head}; {msg.note}"
    tail = (
        _comment_tail(msg.compressed, msg.warnings, extra)
        if msg.warnings or extra or msg.compressed
        else ""
    )
    corr = msg.correlation_id
    if corr:
        return f"{head}; correlation {corr[:200].decode('utf-8', 'replace')}{tail}"
    return head + tail


# The parts of a comment that repeat from message to message are built once.
@functools.lru_cache(maxsize=4096)
def _comment_head(
    version: int, agent: int | None, node: str | None, ip_proto: int, ptype: int | None
) -> str:
    parts = [f"HEPv{version}", f"agent {agent}" if agent is not None else "no agent id"]
    if node:
        parts.append(f"node {node}")
    parts.append(f"proto {proto_label(ip_proto)}")
    if ptype is not None and ptype != PayloadType.SIP:
        parts.append(f"type {type_label(ptype)}")
    return "; ".join(parts)


@functools.lru_cache(maxsize=256)
def _comment_tail(compressed: bool, warnings: tuple[Reason, ...], extra: Reason | None) -> str:
    parts = ["; compressed payload"] if compressed else []
    notes = [r.value for r in warnings if r in _NOTED]
    if extra is not None:
        notes.append(extra.value)
    if notes:
        parts.append("; notes: " + ", ".join(notes))
    return "".join(parts)


# Warnings worth a note in the packet comment (the others are structural trivia).
_NOTED = frozenset(
    {
        Reason.TS_RECEIVE_TIME,
        Reason.TS_BYTE_SWAPPED,
        Reason.TS_NTP_EPOCH,
        Reason.V2_TIME_BIG_ENDIAN,
        Reason.MISSING_USEC,
        Reason.FAMILY_MISMATCH,
        Reason.SIP_SPLIT,
        Reason.SIP_JOINED,
        Reason.SIP_TRUNCATED,
        Reason.REDACTED,
        Reason.GZIP_WRAPPED,
    }
)


SIP = int(PayloadType.SIP)


def type_label(ptype: int) -> str:
    """``"32 (QoS-JSON)"`` — a payload type with its name, if it has one."""
    name = PAYLOAD_TYPE_NAMES.get(ptype)
    return f"{ptype} ({name})" if name else str(ptype)


def _looks_like_sip(payload: bytes) -> bool:
    # A request line ends in " SIP/2.0", a status line starts with "SIP/2.0 ".
    head = payload[:512].split(b"\n", 1)[0].rstrip(b"\r")
    return head.startswith(b"SIP/2.0 ") or head.endswith(b" SIP/2.0")


@dataclass(slots=True)
class _Reporter:
    """Counts rejections and logs the first few of each reason in detail."""

    stats: Stats
    strict: bool
    limit: int | None
    logged: dict[Reason, int] = field(default_factory=dict)

    def reject(self, reason: Reason, where: str, detail: str) -> None:
        skipped = self.stats.reject(reason)
        if self.strict and not skipped:  # the error itself is the message: no log line too
            raise StrictError(f"{where}: {reason.value}: {detail} (--strict)")
        self._log(reason, where, detail, skipped)

    def input_problem(self, problem: Problem, where: str, name: str) -> None:
        if problem.reason is Reason.NO_HEP:  # a diagnosis of the whole input, for the summary
            self.stats.no_hep[f"no HEP in {name}: {problem.detail}"] += 1
            return
        skipped = problem.reason in SKIP_REASONS
        self.stats.input_problems[problem.reason] += 1
        if self.strict and not skipped:
            raise StrictError(f"{where}: {problem.reason.value}: {problem.detail} (--strict)")
        self._log(problem.reason, where, problem.detail, skipped)

    def _log(self, reason: Reason, where: str, detail: str, quiet: bool) -> None:
        seen = self.logged.get(reason, 0)
        self.logged[reason] = seen + 1
        limit = self.limit
        if limit is None or seen < limit:
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "%s: %s: %s", where, reason.value, detail)
            if seen + 1 == limit:
                log.log(level, "(further %s messages are counted, not shown)", reason.value)


def iter_messages(
    source: Source, options: Options, reporter: _Reporter, order: Iterator[int]
) -> Iterator[Item | Tick]:
    """Decode and accept one source's records; yield ``(ts_us, arrival, message)``."""
    stats = reporter.stats
    dopts = options.decode
    password = options.password
    types = options.payload_types
    rendering = options.render
    name, unit = source.name, source.unit
    for item in source:
        if type(item) is Record:
            data, rec_ts, pos = item
            stats.read += 1
            try:
                msg = decode(data, rec_ts, dopts)
            except DecodeError as exc:
                reporter.reject(exc.reason, f"{name} {unit} {pos}", exc.detail)
                continue
            if password is not None:
                reason = _check_auth(msg, password)
                if reason is not None:
                    reporter.reject(reason, f"{name} {unit} {pos}", "auth key check failed")
                    continue
            ptype = msg.payload_type
            if types is not None and ptype not in types:
                if ptype is not None:
                    stats.skipped_types[ptype] += 1
                    reporter.reject(
                        Reason.UNSUPPORTED_PAYLOAD_TYPE,
                        f"{name} {unit} {pos}",
                        f"payload type {type_label(ptype)}",
                    )
                    continue
                if PayloadType.SIP not in types or not _looks_like_sip(msg.payload):
                    reporter.reject(
                        Reason.MISSING_PAYLOAD_TYPE,
                        f"{name} {unit} {pos}",
                        "no payload type, not SIP",
                    )
                    continue
                stats.warnings[Reason.MISSING_PAYLOAD_TYPE] += 1
            ts = msg.ts_us
            if ts is None:
                if rec_ts is None:
                    reporter.reject(
                        Reason.MISSING_TIMESTAMP,
                        f"{name} {unit} {pos}",
                        "no HEP time and no receive time",
                    )
                    continue
                ts = rec_ts
            if ptype != SIP and ptype is not None and rendering:  # one test on the SIP path
                try:
                    msg = render(msg)
                except RenderError as exc:
                    reporter.reject(exc.reason, f"{name} {unit} {pos}", exc.detail)
                    continue
            for w in msg.warnings:
                stats.warnings[w] += 1
            yield (ts, next(order), msg)
        elif type(item) is Problem:
            if item.read:
                stats.read += 1
                reporter.reject(item.reason, f"{name} {unit} {item.pos}", item.detail)
            else:
                reporter.input_problem(item, f"{name} {unit} {item.pos}", name)
        else:
            assert type(item) is Tick
            yield item


def _check_auth(msg: HepMessage, password: bytes) -> Reason | None:
    if msg.version != 3:
        return Reason.V12_AUTH_REQUIRED
    if not msg.auth_key:
        return Reason.AUTH_MISSING
    if not hmac.compare_digest(msg.auth_key, password):  # exact, constant time (HEP-SPEC §8)
        return Reason.AUTH_MISMATCH
    return None


class Converter:
    """Reorder window + frame builder + writer: the back half of the loop.

    Args:
        writer: where frames go.
        options: pipeline options.
        stats: counters to update.
        route: when set, picks the writer of each message (split); ``writer`` is then
            only flushed.
        engine: the frame engine (default: the native one when built).

    Frames are handed to the writer in batches of up to BATCH packets: call :meth:`flush`
    (or :meth:`finish`) to have everything released from the window written.
    """

    def __init__(
        self,
        writer: PacketWriter,
        options: Options,
        stats: Stats,
        route: Callable[[HepMessage], PacketWriter] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.writer = writer
        self.route = route
        self.options = options
        self.stats = stats
        self.builder = FrameBuilder(options.linktype)
        self.engine = engine if engine is not None else DEFAULT
        # Frames go out in batches: the engine builds a batch of packets per call. A
        # writer that takes single frames only (write_packet) gets each message at once.
        self._pending: list[Packet] = []
        self._pending_bytes = 0  # payload bytes in _pending
        self._target: PacketWriter = writer
        self._batching = hasattr(writer, "write_frames")
        # The window holds messages in two parts: a run of messages that arrived in time
        # order (the usual case: a deque, O(1) per message) and a heap of the others.
        self._run: deque[Item] = deque()
        self._heap: list[Item] = []
        self._bytes = 0  # held, payloads plus ITEM_OVERHEAD each
        self._newest = -1
        self._last_written = -1
        # Live only (after the first tick): messages stamped far ahead of the wall clock,
        # and the tick time when the oldest of them arrived.
        self._now = 0
        self._ahead_at = 1 << 62  # messages stamped later are "ahead" (never, offline)
        self._ahead: list[Item] = []
        self._ahead_since = 0

    def push(self, item: Item) -> None:
        """Add a message; write every message now older than the window."""
        ts = item[0]
        opts = self.options
        if ts > self._ahead_at:
            if not self._ahead:
                self._ahead_since = self._now
            heappush(self._ahead, item)
            self._bytes += len(item[2].payload) + ITEM_OVERHEAD
            if self._bytes > opts.max_window_bytes:
                self._write_ahead()
            return
        run = self._run
        if not run or item > run[-1]:  # (ts, arrival): arrival numbers are unique
            run.append(item)
        else:
            heappush(self._heap, item)
        self._bytes += len(item[2].payload) + ITEM_OVERHEAD
        if ts > self._newest:
            self._newest = ts
        self._drain(self._newest - opts.window_us, opts.max_pending)

    def drain_until(self, now_us: int) -> None:
        """Live: write what has waited a whole window of wall time (HEP time assumed ~wall)."""
        self._now = now_us
        self._ahead_at = now_us + self.options.window_us + AHEAD_US
        if self._ahead and now_us - self._ahead_since >= self.options.window_us:
            self._write_ahead()
        self._drain(now_us - self.options.window_us, self.options.max_pending)

    def finish(self) -> None:
        """Write everything still held, in time order."""
        self._drain(None, 0)
        self._write_ahead()
        self._emit()

    def flush(self) -> None:
        """Hand the pending batch to the writer and flush the writer."""
        self._emit()
        self.writer.flush()

    @property
    def held(self) -> int:
        """Messages the window holds now."""
        return len(self._run) + len(self._heap) + len(self._ahead)

    @property
    def held_bytes(self) -> int:
        """Bytes the window holds now (payloads plus ITEM_OVERHEAD each)."""
        return self._bytes

    def _write_ahead(self) -> None:
        # Far ahead of the clock: written in their own time order, without moving the
        # window's idea of "written so far" (the others would all look late).
        ahead, last = self._ahead, self._last_written
        if not ahead:
            return
        self.stats.early["ahead_of_clock"] += len(ahead)
        while ahead:
            item = heappop(ahead)
            self._bytes -= len(item[2].payload) + ITEM_OVERHEAD
            self._write(item)
        self._last_written = last

    def _drain(self, horizon: int | None, keep_at_most: int) -> None:
        # Write, oldest first, every message at or before the horizon (None: all), and
        # more while more than keep_at_most (or more than max_window_bytes) are held.
        run, heap, write = self._run, self._heap, self._write
        max_bytes = self.options.max_window_bytes
        if not heap:  # the usual case: everything held arrived in time order
            held = len(run)
            while held:
                oldest = run[0]
                if horizon is not None and oldest[0] > horizon:
                    if held <= keep_at_most and self._bytes <= max_bytes:
                        return
                    self.stats.early["window_full"] += 1
                write(run.popleft())
                self._bytes -= len(oldest[2].payload) + ITEM_OVERHEAD
                held -= 1
            return
        held = len(run) + len(heap)
        while held:
            from_heap = bool(heap) and (not run or heap[0] < run[0])
            oldest = heap[0] if from_heap else run[0]
            if horizon is not None and oldest[0] > horizon:
                if held <= keep_at_most and self._bytes <= max_bytes:
                    return
                self.stats.early["window_full"] += 1
            write(heappop(heap) if from_heap else run.popleft())
            self._bytes -= len(oldest[2].payload) + ITEM_OVERHEAD
            held -= 1

    def _write(self, item: Item) -> None:
        ts, _, msg = item
        stats = self.stats
        if ts < self._last_written:
            stats.late += 1
        else:
            self._last_written = ts
        segments, warning = self.builder.plan(msg)
        if warning is not None:
            stats.warnings[warning] += 1
        comment = describe(msg, warning) if self.options.comments else None
        agent, node = msg.capture_id, msg.node_name
        src, dst, sport, dport = msg.src_ip, msg.dst_ip, msg.src_port, msg.dst_port
        if self.route is not None:
            self._emit()  # route() may write out a finished call's file: ours first
            self._target = self.route(msg)
        pending = self._pending
        for ip_id, seq, ack, payload in segments:
            pending.append(
                (agent, node, ts, src, dst, sport, dport, ip_id, seq, ack, payload, comment)
            )
        self._pending_bytes += len(msg.payload)
        if (
            len(pending) >= BATCH
            or self._pending_bytes >= BATCH_BYTES
            or self.route is not None
            or not self._batching
        ):
            self._emit()
        stats.written += 1
        stats.frames += len(segments)
        proto = msg.ip_proto
        if msg.note is not None and msg.payload_type in SCTP_PPIDS:
            proto = BUILT_AS_SCTP
        key = (agent, proto, src, sport, dst, dport)
        flows = stats.flows
        n = flows.get(key)
        if n is not None:
            flows[key] = n + 1
        else:
            stats.count_new_flow(key)

    def _emit(self) -> None:
        # Hand the pending packets to their writer (taken first: a failed write is not retried).
        packets = self._pending
        if not packets:
            return
        self._pending = []
        self._pending_bytes = 0
        target = self._target
        write_frames = getattr(target, "write_frames", None)  # a pcapng.BatchWriter
        if write_frames is not None:
            write_frames(packets)
            return
        frames = self.engine.frames(self.options.linktype, packets)
        for p, frame in zip(packets, frames, strict=True):
            target.write_packet(p[0], p[1], p[2], frame, p[11])


#: Packets per engine call (and per write to the output) at the most ...
BATCH = 512
#: ... and payload bytes: a batch of large payloads is written sooner (the batch, its
#: frames and the output buffer each hold a copy).
BATCH_BYTES = 1 << 20

#: ``on_progress`` is called once per this many items.
PROGRESS_EVERY = 1 << 16


def messages(sources: Iterable[Source], options: Options, stats: Stats) -> Iterator[Item | Tick]:
    """The accepted messages of every source, merged by time and repaired, as
    ``(ts_us, arrival, message)`` items (and ticks from live sources).

    Rejections are counted in ``stats`` (and raise :class:`StrictError` under
    ``options.strict``). Not in strict time order: the reorder window comes later.
    """
    reporter = _Reporter(stats, options.strict, options.warn_limit)
    order = itertools.count(0, ARRIVAL_STEP)
    streams = [iter_messages(s, options, reporter, order) for s in sources]
    # Several inputs are merged by (approximate) time; the window fixes local disorder.
    items = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_merge_key)
    if options.resplit or options.mark_truncated:
        items = repair_sip(items, stats, order, resplit=options.resplit)
    if options.dedup:
        items = drop_copies(items, stats)
    if options.redact:
        items = _redact(items, stats)
    return items


def _redact(items: Iterator[Item | Tick], stats: Stats) -> Iterator[Item | Tick]:
    # --redact: secrets masked in place (same length); the frame's comment says so.
    for item in items:
        if not isinstance(item, Tick):
            ts, arrival, msg = item
            masked, what = redact(msg.payload)
            if what:
                stats.warnings[Reason.REDACTED] += 1
                item = (ts, arrival, marked(msg, Reason.REDACTED, payload=masked))
        yield item


def observe(
    sources: Iterable[Source],
    options: Options,
    stats: Stats,
    *observers: Callable[[int, HepMessage], None],
    on_progress: Callable[[Stats], None] | None = None,
) -> Stats:
    """One pass over every accepted message, in arrival order, calling each observer
    with ``(ts_us, message)``: ``hep2pcap info``, and the first pass of the filters and
    of ``split``. Nothing is written. ``on_progress(stats)`` (optional) is called every
    PROGRESS_EVERY items.
    """
    for count, item in enumerate(messages(sources, options, stats), 1):
        if on_progress is not None and count % PROGRESS_EVERY == 0:
            on_progress(stats)
        if not isinstance(item, Tick):
            ts, _, msg = item
            for see in observers:
                see(ts, msg)
    return stats


def convert(
    sources: Iterable[Source],
    writer: PacketWriter,
    options: Options,
    stats: Stats | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    select: Stage | None = None,
    route: Callable[[HepMessage], PacketWriter] | None = None,
    offload: Offload | None = None,
) -> Stats:
    """Run the loop: read every source (merged by time), write frames, return the counters.

    ``on_progress(stats)`` (optional) is called every PROGRESS_EVERY messages;
    ``select`` (optional) filters the messages before the reorder window; ``route``
    (optional) picks each message's writer; ``offload`` (optional, e.g.
    :func:`hep2pcap.offload.offloaded`) runs everything before the reorder window
    elsewhere: it is called with the front half and ``stats`` and yields its items.

    Raises:
        StrictError: ``options.strict`` and a malformed message was found; everything
            accepted before it has been written.
        Hep2PcapError: a source failed as a whole (unreadable input).
    """
    stats = stats if stats is not None else Stats()

    def front(counts: Stats) -> Iterator[Item | Tick]:
        items = messages(sources, options, counts)
        return select(items) if select is not None else items

    items = front(stats) if offload is None else offload(front, stats)
    conv = Converter(writer, options, stats, route)
    count = 0
    try:
        for item in items:
            count += 1
            if on_progress is not None and count % PROGRESS_EVERY == 0:
                on_progress(stats)
            if isinstance(item, Tick):
                conv.drain_until(item.now_us)
                conv.flush()
            else:
                conv.push(item)
    except StopNow:
        # Asked to end at once: the batch already counted as written (at most BATCH
        # packets) still goes out; what the window holds is not written.
        with contextlib.suppress(Exception):
            conv.flush()
        stats.lost["stopped"] += conv.held
        raise
    except BaseException:
        # Write what the window still holds if the output can take it (--strict, a
        # signal), but never let a second failure (full disk, closed pipe) hide the first.
        with contextlib.suppress(Exception):
            conv.finish()
            writer.flush()
        raise
    conv.finish()
    writer.flush()
    return stats


def _merge_key(item: Item | Tick) -> int:
    return item.now_us if isinstance(item, Tick) else item[0]
