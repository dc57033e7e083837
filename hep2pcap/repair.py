"""Real-sender repairs on the stream of decoded messages (issue 4, HEP-SPEC §10).

Owns: re-cutting SIP carried over TCP/TLS at SIP message boundaries (a sender that split
one message over several HEP packets, or packed several into one), marking messages whose
body is shorter than their Content-Length, and finding copies of one packet mirrored by
several agents. Must never: drop or change a payload byte (a repair only moves the cuts
between messages), or read clocks (time comes from the messages and ticks).

Each repair is a generator stage over the pipeline's items ``(ts_us, arrival, message)``
and :class:`~hep2pcap.items.Tick`; ticks and the end of input release what is held.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Iterator
from hashlib import blake2b

from . import sip
from .errors import Reason
from .hep import HepMessage, IpProto, PayloadType
from .items import Item, Stream, Tick
from .stats import Stats

#: Transports whose SIP is a byte stream cut by Content-Length (RFC 3261 §18.3). WebSocket
#: is not: one WebSocket message is one SIP message and needs no Content-Length (RFC 7118).
STREAM_PROTOS = frozenset({IpProto.TCP, IpProto.TLS})
#: A message held for its rest is written as it is (and marked truncated) past this size…
MAX_HELD_BYTES = 256 * 1024
#: …or when this many flows hold a partial message, or all of them hold more than
#: MAX_HELD_TOTAL bytes (the oldest goes first, counted ``resplit_full``)…
MAX_HELD_FLOWS = 4096
MAX_HELD_TOTAL = 32 * 1024 * 1024
#: …or when its rest has not come for this long.
HOLD_US = 2_000_000

_SIP = PayloadType.SIP
#: Arrival numbers are drawn in steps of this size: the messages cut from one HEP packet
#: number arrival + 1, + 2, … and so stay between it and the next packet.
ARRIVAL_STEP = 1 << 16


def marked(msg: HepMessage, *reasons: Reason, payload: bytes | None = None) -> HepMessage:
    """A copy of ``msg`` with these warnings added (and, if given, another payload)."""
    return dataclasses.replace(
        msg,
        payload=msg.payload if payload is None else payload,
        warnings=msg.warnings + reasons,
    )


def is_truncated(payload: bytes) -> bool:
    """True for a SIP message whose headers never end or whose body is shorter than
    its Content-Length; False for anything that is not SIP."""
    return sip.is_start(payload) and sip.message_end(payload) is None


def repair_sip(
    items: Stream,
    stats: Stats,
    order: Iterator[int],
    *,
    resplit: bool,
    hold_us: int = HOLD_US,
) -> Stream:
    """Re-cut TCP/TLS SIP at message boundaries and mark truncated messages.

    Args:
        items: the pipeline's message stream (one source, or several merged).
        stats: warnings are counted here (SIP_SPLIT, SIP_JOINED, SIP_TRUNCATED).
        order: the pipeline's arrival counter (steps of ARRIVAL_STEP); a message held for
            its rest draws a new number from it.
        resplit: re-cut TCP/TLS SIP; when False only truncation is marked.
        hold_us: how long the start of a message waits for its rest (not the reorder
            window: a sender's next packet may come later than frames are written).

    Yields:
        The same items, with TCP/TLS SIP re-cut so each carries exactly one message.
    """
    held: OrderedDict[tuple[object, ...], tuple[Item, bytes]] = OrderedDict()
    warnings = stats.warnings
    # Live, a held part waits hold_us of tick time (our clock; the sender's may be off),
    # counted from the tick before it arrived; offline (no ticks), hold_us of HEP time.
    since: dict[tuple[object, ...], int] = {}
    last_tick: int | None = None
    size = [0]  # bytes held, all flows

    def release(key: tuple[object, ...]) -> Item:
        since.pop(key, None)
        (ts, arrival, msg), data = held.pop(key)
        size[0] -= len(data)
        warnings[Reason.SIP_TRUNCATED] += 1
        joined = (Reason.SIP_JOINED,) if len(data) != len(msg.payload) else ()
        return (ts, arrival, marked(msg, *joined, Reason.SIP_TRUNCATED, payload=data))

    def expire(now_us: int | None) -> Iterator[Item]:
        # Held messages whose rest did not come within hold_us (all of them at the end).
        while held:
            key, ((ts, _, _), _) = next(iter(held.items()))
            start = since.get(key, ts) if last_tick is not None else ts
            if now_us is not None and start + hold_us > now_us:
                if len(held) <= MAX_HELD_FLOWS and size[0] <= MAX_HELD_TOTAL:
                    return
                stats.early["resplit_full"] += 1
            yield release(key)

    for item in items:
        if isinstance(item, Tick):
            last_tick = item.now_us
            yield from expire(last_tick)
            yield item
            continue
        ts, arrival, msg = item
        if msg.payload_type not in (_SIP, None):
            yield item
            continue
        if not resplit or msg.ip_proto not in STREAM_PROTOS:
            if is_truncated(msg.payload):
                warnings[Reason.SIP_TRUNCATED] += 1
                item = (ts, arrival, marked(msg, Reason.SIP_TRUNCATED))
            yield item
            continue
        if held and last_tick is None:
            yield from expire(ts)
        key = (msg.capture_id, msg.ip_proto, msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port)
        data = msg.payload
        first: Item = item
        joined = False
        if key in held:
            if b"\n" in held[key][1] and sip.is_start(data):
                yield release(key)  # a new message begins: the held one was cut short
            else:
                first, head = held.pop(key)
                size[0] -= len(head)
                data = head + data
                joined = True
        yield from _cut(first, data, joined, key, held, stats, order)
        if key in held:
            size[0] += len(held[key][1])
            if size[0] > MAX_HELD_TOTAL or len(held) > MAX_HELD_FLOWS:
                yield from expire(ts if last_tick is None else last_tick)
        if last_tick is not None and key in held and key not in since:
            since[key] = last_tick
    yield from expire(None)  # the end: what is still held is written as it is


def _cut(
    first: Item,
    data: bytes,
    joined: bool,
    key: tuple[object, ...],
    held: OrderedDict[tuple[object, ...], tuple[Item, bytes]],
    stats: Stats,
    order: Iterator[int],
) -> Iterator[Item]:
    # Cut data at SIP message ends. Bytes before a message's start line (keep-alive CRLFs)
    # stay with the message before them; an incomplete last message is held for its rest.
    ts, arrival, msg = first
    size = len(data)
    cuts: list[int] = []
    pos = 0
    rest_held = False
    while True:
        start = sip.skip_keepalive(data, pos)
        if start >= size:
            break
        if sip.is_start(data, start):
            end = sip.message_end(data, start)
        elif _first_line_cut(data, start):
            end = None
        else:
            break  # bytes that are not a SIP start: they stay with what precedes
        if cuts:
            cuts[-1] = pos = start  # keep-alives go with the message before them
        if end is None:
            if size - pos <= MAX_HELD_BYTES:  # else written as it is, marked truncated
                held[key] = ((ts, arrival, msg) if not cuts else (ts, next(order), msg), data[pos:])
                rest_held = True
            break
        cuts.append(end)
        pos = end
    if rest_held:
        if not cuts:
            return  # all of it waits for its rest
    elif cuts:
        cuts[-1] = size  # trailing bytes stay with the last message
    else:
        cuts = [size]  # nothing recognisable to cut: one message as it came
    if len(cuts) == 1 and not joined and cuts[0] == len(msg.payload):
        yield first
        return
    warnings = stats.warnings
    extra: tuple[Reason, ...] = ()
    if joined:
        extra += (Reason.SIP_JOINED,)
        warnings[Reason.SIP_JOINED] += 1
    if len(cuts) > 1 or rest_held:  # this packet's bytes go to more than one message
        extra += (Reason.SIP_SPLIT,)
        warnings[Reason.SIP_SPLIT] += 1
    begin = 0
    for i, end in enumerate(cuts):
        part = data[begin:end]
        marks = extra
        if is_truncated(part):
            marks += (Reason.SIP_TRUNCATED,)
            warnings[Reason.SIP_TRUNCATED] += 1
        yield (ts, arrival + i, marked(msg, *marks, payload=part))
        begin = end


def _first_line_cut(data: bytes, start: int) -> bool:
    # The stream was cut inside what may be a request or status line ("INV", "SIP/2.0 1"):
    # no line end yet, a short run of printable text beginning with a capital letter.
    rest = data[start : start + 256]
    return (
        len(rest) < 256
        and b"\n" not in rest
        and rest[:1].isupper()
        and rest.isascii()
        and all(32 <= c < 127 or c == 13 for c in rest)
    )


class CopyFinder:
    """Finds a packet that another agent already mirrored (same payload, transport and
    addresses) within ``window_us`` of HEP time. Retransmissions seen by the same agent
    are not copies. Memory is bounded by the window and by ``max_entries``: a payload is
    remembered by a 16-byte BLAKE2b digest, never by its bytes (~200 bytes an entry).
    """

    def __init__(self, window_us: int, max_entries: int = 200_000) -> None:
        self.window_us = window_us
        self.max_entries = max_entries
        self._seen: dict[tuple[object, ...], tuple[int, int | None]] = {}
        self._fifo: deque[tuple[int, tuple[object, ...]]] = deque()

    def is_copy(self, ts_us: int, msg: HepMessage) -> bool:
        """True if another agent sent this packet within the window; else remember it."""
        return self.check(ts_us, msg)[0]

    def check(self, ts_us: int, msg: HepMessage) -> tuple[bool, int | None]:
        """``(copy, gap_us)``: ``copy`` as :meth:`is_copy`; ``gap_us`` is how long ago the
        same agent sent this very packet, when it did within the window (a packet received
        more than once: ``hep2pcap info`` reports it; --dedup keeps it), else None."""
        seen, fifo = self._seen, self._fifo
        horizon = ts_us - self.window_us
        while fifo and (fifo[0][0] < horizon or len(fifo) > self.max_entries):
            old_ts, old_key = fifo.popleft()
            entry = seen.get(old_key)
            if entry is not None and entry[0] == old_ts:
                del seen[old_key]
        digest = blake2b(msg.payload, digest_size=16).digest()
        key = (digest, msg.ip_proto, msg.src_ip, msg.src_port, msg.dst_ip, msg.dst_port)
        prev = seen.get(key)
        gap = None
        if prev is not None and abs(ts_us - prev[0]) <= self.window_us:
            if prev[1] != msg.capture_id:
                return True, None
            gap = abs(ts_us - prev[0])
        seen[key] = (ts_us, msg.capture_id)
        fifo.append((ts_us, key))
        return False, gap


#: --dedup's default window: copies of one packet arrive within milliseconds; a SIP
#: retransmission comes 500 ms (T1) later at the earliest, so it is never taken for a copy.
DEDUP_WINDOW_US = 200_000


def drop_copies(items: Stream, stats: Stats, window_us: int = DEDUP_WINDOW_US) -> Stream:
    """--dedup: keep the first copy of a packet that several agents mirrored."""
    finder = CopyFinder(window_us)
    for item in items:
        if not isinstance(item, Tick) and finder.is_copy(item[0], item[2]):
            stats.skipped[Reason.DUPLICATE] += 1
            continue
        yield item
