"""Counters for one run and the summary printed at its end.

Owns: what was read, written, skipped, dropped (by reason), repaired, and the breakdown by
capture agent, transport and direction. Must never: print, log or read clocks; the caller
decides where the summary goes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TypeVar

from .errors import SKIP_REASONS, Reason
from .frames import transport_label
from .hep import PAYLOAD_TYPE_NAMES

_K = TypeVar("_K")

#: How many directions the summary lists (the busiest first).
TOP_DIRECTIONS = 8
#: Distinct flows tracked for the summary; more are counted per agent and protocol only.
MAX_FLOWS = 100_000

FlowKey = tuple[int | None, int, bytes, int, bytes, int]


@dataclass(slots=True)
class Stats:
    """Counters of one run (offline or live)."""

    read: int = 0
    written: int = 0
    frames: int = 0
    late: int = 0
    filtered: int = 0  # accepted, but left out by a filter (--call-id, --host, …)
    skipped: Counter[Reason] = field(default_factory=Counter)
    dropped: Counter[Reason] = field(default_factory=Counter)
    input_problems: Counter[Reason] = field(default_factory=Counter)
    warnings: Counter[Reason] = field(default_factory=Counter)
    #: messages skipped because their payload type is not written, by payload type
    skipped_types: Counter[int] = field(default_factory=Counter)
    #: inputs that held no HEP: one line each saying what they held instead (issue 11)
    no_hep: Counter[str] = field(default_factory=Counter)
    #: written messages by (agent, HEP ip proto, src, sport, dst, dport); see count_new_flow
    flows: Counter[FlowKey] = field(default_factory=Counter)
    # live capture only (hep2pcap listen); offline runs leave them unset
    kernel_drops: int | None = None  # UDP datagrams the kernel dropped (receive buffer full)
    receive_drops: int = 0  # received but never converted (queue full, or stopped first)
    connections: Counter[str] = field(default_factory=Counter)  # TCP/TLS connection events
    forwarded: int | None = None  # messages relayed by --forward
    forward_drops: int = 0  # messages --forward could not relay (queue full, upstream down)
    #: not converted, by source (a UDP listener's address); the sum is receive_drops
    receive_drops_by: Counter[str] = field(default_factory=Counter)
    #: written before their time because a memory bound was reached, by bound (window_full,
    #: ahead_of_clock, resplit_full): on disk, maybe out of order
    early: Counter[str] = field(default_factory=Counter)
    #: accepted but not on disk, by cause (output_removed, output_failed, stopped): already
    #: taken out of ``written``
    lost: Counter[str] = field(default_factory=Counter)

    def add_difference(self, other: Stats, base: Stats) -> None:
        """Add ``other - base`` field by field: what a copy of ``base`` counted since it
        was made (hep2pcap.offload hands a second process's counts back this way)."""
        for f in fields(Stats):
            mine, theirs, was = (getattr(s, f.name) for s in (self, other, base))
            if isinstance(theirs, Counter):
                mine.update(theirs - was)
            elif theirs != was:
                setattr(self, f.name, (mine or 0) + theirs - (was or 0))

    def count_new_flow(self, key: FlowKey) -> None:
        """Count the first written message of a flow; past MAX_FLOWS flows, only per agent
        and protocol (memory stays bounded on any input)."""
        if len(self.flows) >= MAX_FLOWS:
            key = (key[0], key[1], b"", 0, b"", 0)
        self.flows[key] += 1

    @property
    def agents(self) -> Counter[int | None]:
        """Written messages by capture agent id."""
        out: Counter[int | None] = Counter()
        for key, n in self.flows.items():
            out[key[0]] += n
        return out

    @property
    def transports(self) -> Counter[str]:
        """Written messages by transport label (UDP, TCP, TLS(as TCP), …)."""
        out: Counter[str] = Counter()
        for key, n in self.flows.items():
            out[transport_label(key[1])] += n
        return out

    @property
    def directions(self) -> Counter[tuple[bytes, int, bytes, int]]:
        """Written messages by direction (source → destination), as far as tracked."""
        out: Counter[tuple[bytes, int, bytes, int]] = Counter()
        for (_, _, src, sport, dst, dport), n in self.flows.items():
            if src:
                out[(src, sport, dst, dport)] += n
        return out

    def reject(self, reason: Reason) -> bool:
        """Count a message that was read but not written. Returns True if it was a skip."""
        if reason in SKIP_REASONS:
            self.skipped[reason] += 1
            return True
        self.dropped[reason] += 1
        return False

    @property
    def skipped_total(self) -> int:
        """Messages skipped by design (non-SIP, empty)."""
        return sum(self.skipped.values())

    @property
    def dropped_total(self) -> int:
        """Messages rejected as malformed or unauthorised."""
        return sum(self.dropped.values())

    def summary(self) -> str:
        """The end-of-run summary: one headline, then detail lines where there is detail."""
        head = (
            f"read {self.read}, wrote {self.written}"
            + (f" ({self.frames} frames)" if self.frames != self.written else "")
            + f", skipped {self.skipped_total}{_reasons(self.skipped)}"
            + f", dropped {self.dropped_total}{_reasons(self.dropped)}"
        )
        lines = [head]
        lines.extend(f"  {line}" for line in self.no_hep)
        if self.skipped_types:
            text = ", ".join(f"{_type_label(t)}={n}" for t, n in _sorted(self.skipped_types))
            lines.append(f"  payload types not written: {text}")
        if self.filtered:
            lines.append(f"  left out by filters: {self.filtered}")
        if self.input_problems:
            lines.append(f"  input: {_pairs(self.input_problems)}")
        warned = self.warnings
        wrapped = warned.get(Reason.GZIP_WRAPPED, 0)
        if wrapped:  # not a repair: how a sender (heplify payload_zip) sent them
            warned = warned - Counter({Reason.GZIP_WRAPPED: wrapped})
            lines.append(f"  gzip-wrapped: {wrapped}")
        if warned:
            lines.append(f"  repaired/warned: {_pairs(warned)}")
        if self.early:
            lines.append(f"  written early (a memory bound was reached): {_pairs(self.early)}")
        if self.lost:
            lines.append(f"  accepted but not on disk: {_pairs(self.lost)}")
        if self.late:
            lines.append(f"  late (outside the reorder window, written anyway): {self.late}")
        agents, transports, directions = self.agents, self.transports, self.directions
        if agents:
            text = ", ".join(f"{'none' if a is None else a}={n}" for a, n in _sorted(agents))
            lines.append(f"  by capture agent: {text}")
        if transports:
            lines.append(f"  by transport: {', '.join(f'{t}={n}' for t, n in _sorted(transports))}")
        if directions:
            busiest = directions.most_common(TOP_DIRECTIONS)
            more = len(directions) - len(busiest)
            text = ", ".join(
                f"{_endpoint(s, sp)} -> {_endpoint(d, dp)}={n}" for (s, sp, d, dp), n in busiest
            )
            untracked = self.written - sum(directions.values())
            lines.append(
                f"  by direction ({len(directions)}): {text}"
                + (f", +{more} more" if more else "")
                + (f" (+{untracked} messages past {MAX_FLOWS} flows)" if untracked > 0 else "")
            )
        lines.extend(self._live_lines())
        return "\n".join(lines)

    def _live_lines(self) -> list[str]:
        lines = []
        if self.kernel_drops is not None or self.receive_drops:
            kernel = "unknown" if self.kernel_drops is None else str(self.kernel_drops)
            by = f" ({_pairs(self.receive_drops_by)})" if self.receive_drops_by else ""
            lines.append(
                f"  lost before decoding: kernel drops {kernel}, "
                f"not converted {self.receive_drops}{by}"
            )
        if self.connections:
            lines.append(
                f"  connections: {', '.join(f'{k}={n}' for k, n in _sorted(self.connections))}"
            )
        if self.forwarded is not None:
            lines.append(f"  forwarded {self.forwarded}, forward drops {self.forward_drops}")
        return lines


def _sorted(counter: Counter[_K]) -> list[tuple[_K, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))


def _pairs(counter: Counter[Reason] | Counter[str]) -> str:
    return ", ".join(
        f"{getattr(r, 'value', r)}={n}"
        for r, n in sorted(counter.items(), key=lambda kv: str(getattr(kv[0], "value", kv[0])))
    )


def _reasons(counter: Counter[Reason]) -> str:
    return f" ({_pairs(counter)})" if counter else ""


def _type_label(ptype: int) -> str:
    name = PAYLOAD_TYPE_NAMES.get(ptype)
    return f"{name}({ptype})" if name else str(ptype)


def _endpoint(ip: bytes, port: int) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}:{port}" if addr.version == 4 else f"[{addr}]:{port}"
