"""Which messages a user asked for: --call-id, --host, --match and the other filters.

Owns: the filter criteria and the decision per message (addresses, ports, agent, time)
and per dialog (Call-ID, correlation id, method, match expression). A dialog filter keeps
every message of a dialog that matches (as sngrep does), and of the B2BUA legs linked to
it by correlation id. Filters of different kinds combine with AND; repeating one kind ORs.

Offline, the decision is exact: a first pass over the inputs (:meth:`Selector.observe`)
finds the dialogs, the second (:meth:`Selector.stage`) writes them. Live, there is one
pass (:meth:`Selector.live_stage`): messages of a dialog not (yet) matching are held, up
to a bound, and written when a later message of the dialog matches.
Must never: do I/O or read clocks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime

from .dialogs import Dialogs, Keys, keys_of
from .hep import HepMessage
from .items import Item, Stream, Tick
from .stats import Stats

# One bit per dialog test; a group's bits are the OR over its messages.
CALL_ID, CORRELATION, METHOD, MATCH = 1, 2, 4, 8
#: Live: messages held for dialogs that have not matched yet, at most…
MAX_HELD = 20_000
#: …and this many bytes of them (payloads plus HELD_OVERHEAD each); past either bound the
#: dialogs held longest are left out, counted as ``filter_hold_full`` (writing them would
#: put calls the filter did not ask for into the file)…
MAX_HELD_BYTES = 32 * 1024 * 1024
HELD_OVERHEAD = 512
#: …and for at most this long (tick time, i.e. our clock) after the first was held.
HOLD_US = 300_000_000


@dataclass(frozen=True, slots=True)
class Criteria:
    """What to keep. Empty sets and None mean "no filter of this kind"."""

    call_ids: frozenset[str] = frozenset()
    correlation_ids: frozenset[str] = frozenset()
    hosts: frozenset[bytes] = frozenset()  # packed addresses, either side
    ports: frozenset[int] = frozenset()  # either side
    agents: frozenset[int] = frozenset()
    since_us: int | None = None
    until_us: int | None = None
    methods: frozenset[str] = frozenset()  # request method, or the CSeq method of a response
    match: re.Pattern[bytes] | None = None  # searched in the SIP text
    invert: bool = False  # keep the dialogs in which nothing matches

    @property
    def per_message(self) -> bool:
        """Any filter decided message by message."""
        return bool(
            self.hosts
            or self.ports
            or self.agents
            or self.since_us is not None
            or self.until_us is not None
        )

    @property
    def per_dialog(self) -> bool:
        """Any filter decided dialog by dialog."""
        return bool(self.call_ids or self.correlation_ids or self.methods or self.match)

    def __bool__(self) -> bool:
        return self.per_message or self.per_dialog

    @property
    def required(self) -> int:
        """The dialog bits a group must have."""
        bits = 0
        if self.call_ids:
            bits |= CALL_ID
        if self.correlation_ids:
            bits |= CORRELATION
        if self.methods:
            bits |= METHOD
        if self.match is not None and not self.invert:
            bits |= MATCH
        return bits

    def accepts(self, ts_us: int, msg: HepMessage) -> bool:
        """The per-message filters (time, hosts, ports, agent)."""
        if self.since_us is not None and ts_us < self.since_us:
            return False
        if self.until_us is not None and ts_us > self.until_us:
            return False
        hosts = self.hosts
        if hosts and msg.src_ip not in hosts and msg.dst_ip not in hosts:
            return False
        ports = self.ports
        if ports and msg.src_port not in ports and msg.dst_port not in ports:
            return False
        return not self.agents or msg.capture_id in self.agents

    def dialog_bits(self, msg: HepMessage, keys: Keys) -> int:
        """Which dialog tests this one message passes."""
        bits = 0
        if self.call_ids and (
            keys.call_id in self.call_ids or keys.correlation_id in self.call_ids
        ):
            bits |= CALL_ID
        if self.correlation_ids and keys.correlation_id in self.correlation_ids:
            bits |= CORRELATION
        head = keys.head
        if (
            self.methods
            and head is not None
            and (head.method or head.cseq_method or "").upper() in self.methods
        ):
            bits |= METHOD
        if self.match is not None and self.match.search(msg.payload) is not None:
            bits |= MATCH
        return bits

    def wanted(self, bits: int) -> bool:
        """Whether a group with these bits is kept."""
        required = self.required
        return bits & required == required and not (self.invert and bits & MATCH)


def parse_time(text: str) -> int:
    """--since/--until: epoch seconds (``1700000000.5``) or ISO 8601
    (``2026-11-26T10:00:00Z``; without a zone, local time) → microseconds.

    Raises:
        ValueError: neither form.
    """
    try:
        return round(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"{text!r} is not ISO 8601 (2026-11-26T10:00:00Z) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, like date(1)
    return round(when.timestamp() * 1_000_000)


def parse_host(text: str) -> bytes:
    """--host: an IPv4 or IPv6 address → packed bytes (as HEP carries them).

    Raises:
        ValueError: not an address.
    """
    try:
        return ipaddress.ip_address(text.strip("[]")).packed
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def compile_match(expr: str, ignore_case: bool) -> re.Pattern[bytes]:
    """--match: a Python regular expression searched in the SIP text.

    Raises:
        ValueError: the expression does not compile.
    """
    try:
        return re.compile(expr.encode(), re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ValueError(f"{expr!r}: {exc}") from None


class Selector:
    """Applies :class:`Criteria` to the pipeline's message stream.

    Args:
        criteria: what to keep.
        stats: ``stats.filtered`` counts the messages left out.
    """

    def __init__(self, criteria: Criteria, stats: Stats) -> None:
        self.criteria = criteria
        self.stats = stats
        self.dialogs = Dialogs()
        self._bits: dict[str, int] = {}  # group root -> OR of its messages' bits

    # -- offline: observe everything, then select ------------------------------------
    def observe(self, ts_us: int, msg: HepMessage) -> None:
        """First pass (offline): learn a message's dialog and which tests it passes.
        Needed only when ``criteria.per_dialog``."""
        if self.criteria.accepts(ts_us, msg):
            self._see(msg)

    def keeps(self, call_id: str) -> bool:
        """After observe(): whether the dialog filters keep the call of this Call-ID."""
        root = self.dialogs.find(call_id)
        return root is not None and self.criteria.wanted(self._bits.get(root, 0))

    def stage(self, items: Stream) -> Stream:
        """Second pass (offline), or the only pass when no dialog filter is set: the
        messages to write."""
        crit, stats = self.criteria, self.stats
        dialogs, bits, wanted = self.dialogs, self._bits, crit.wanted
        for item in items:
            if isinstance(item, Tick):
                yield item
                continue
            ts, _, msg = item
            if not crit.accepts(ts, msg):
                stats.filtered += 1
                continue
            if crit.per_dialog:
                keys = keys_of(msg)
                root = dialogs.group_of(keys)
                group_bits = crit.dialog_bits(msg, keys) if root is None else bits.get(root, 0)
                if not wanted(group_bits):
                    stats.filtered += 1
                    continue
            yield item

    # -- live: one pass, holding undecided dialogs -----------------------------------
    def live_stage(self, items: Stream) -> Stream:
        """The only pass (live): write a dialog's messages from when it matches, and the
        ones held before that (up to MAX_HELD messages and MAX_HELD_BYTES, for HOLD_US of
        tick time: a sender's clock may be far from ours)."""
        crit, stats = self.criteria, self.stats
        # group root -> (tick time when holding began, messages waiting); oldest first
        held: dict[str, tuple[int, list[Item]]] = {}
        size = [0, 0]  # messages, bytes held
        now: int | None = None
        for item in items:
            if isinstance(item, Tick):
                now = int(item.now_us)
                self._expire(held, size, now - HOLD_US, None)
                yield item
                continue
            ts, _, msg = item
            if not crit.accepts(ts, msg):
                stats.filtered += 1
                continue
            if not crit.per_dialog:
                yield item
                continue
            root, absorbed, bits = self._see(msg)
            if root is not None and absorbed is not None and absorbed in held:
                since, waiting = held.pop(absorbed)
                held.setdefault(root, (since, []))[1].extend(waiting)
            if crit.wanted(bits):
                if root is not None and root in held:
                    waiting = held.pop(root)[1]
                    size[0] -= len(waiting)
                    size[1] -= _held_bytes(waiting)
                    yield from waiting
                yield item
            elif root is None or (crit.invert and bits & MATCH):
                stats.filtered += 1
                if root is not None and root in held:
                    waiting = held.pop(root)[1]
                    size[0] -= len(waiting)
                    size[1] -= _held_bytes(waiting)
                    stats.filtered += len(waiting)
            else:
                held.setdefault(root, (ts if now is None else now, []))[1].append(item)
                size[0] += 1
                size[1] += len(msg.payload) + HELD_OVERHEAD
                if size[0] > MAX_HELD or size[1] > MAX_HELD_BYTES:
                    self._expire(held, size, None, "filter_hold_full")
        self._expire(held, size, None, None)  # the end: what never matched is left out

    def _expire(
        self,
        held: dict[str, tuple[int, list[Item]]],
        size: list[int],
        before_us: int | None,
        full: str | None,
    ) -> None:
        # Leave out held groups, oldest first: those held since before before_us; with
        # ``full`` (a bound was passed), until the hold is within its bounds again (counted
        # under that name); else (the end) all of them.
        stats = self.stats
        while held:
            root = next(iter(held))
            since, waiting = held[root]
            if before_us is not None and since >= before_us:
                break
            if full is not None and size[0] <= MAX_HELD and size[1] <= MAX_HELD_BYTES:
                break
            del held[root]
            size[0] -= len(waiting)
            size[1] -= _held_bytes(waiting)
            if full is not None:
                stats.lost[full] += len(waiting)
            else:
                stats.filtered += len(waiting)

    def _see(self, msg: HepMessage) -> tuple[str | None, str | None, int]:
        # Add a message to the groups: (its root, an absorbed root, the group's bits).
        keys = keys_of(msg)
        mine = self.criteria.dialog_bits(msg, keys)
        root, absorbed = self.dialogs.observe(keys)
        if root is None:
            return None, None, mine
        bits = self._bits
        total = bits.get(root, 0) | mine
        if absorbed is not None:
            total |= bits.pop(absorbed, 0)
        bits[root] = total
        return root, absorbed, total


def _held_bytes(items: list[Item]) -> int:
    return sum(len(msg.payload) for _, _, msg in items) + HELD_OVERHEAD * len(items)
