"""Losses inside the file: the Interface Statistics Blocks of a live capture file.

Owns: what a closed capture file says about its own completeness — a snapshot of the run's
counters when the file was opened and when it was closed, turned into one
:class:`~hep2pcap.pcapng.InterfaceStatistics` per interface of the file
(draft-ietf-opsawg-pcapng §4.6). Must never: read clocks, sockets or files (the caller
passes the time and the live loss counters), or run per packet: it runs at file close.

What goes where. Interfaces are capture agents, but most losses cannot be pinned on one:
a datagram the kernel dropped, or one that does not decode, has no known agent. So
interface 0 (always present) carries the counters of the whole capture, all agents:
``isb_ifrecv`` messages that reached hep2pcap, ``isb_ifdrop`` the kernel's drops (UDP receive
buffer full), ``isb_osdrop`` what hep2pcap dropped (malformed, refused, not converted), and a
comment naming each cause. Every interface has ``isb_usrdeliv``, the messages written on it.
Messages still in the reorder window when a file is rotated are written to, and counted in,
the next file: over all the files of a run, ifrecv + ifdrop is what the senders sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from .pcapng import InterfaceStatistics
from .stats import Stats

#: The cause name of messages received but never converted (backlog cap, stopped first).
NOT_CONVERTED = "not_converted"


@dataclass(frozen=True, slots=True)
class Totals:
    """A run's counters at one moment (all cumulative since the run started).

    Attributes:
        now_us: when (µs since the epoch).
        received: messages that reached hep2pcap: read by the pipeline, refused as input
            problems, or received but not converted.
        kernel_drops: the UDP sockets' kernel drop counter (``None``: not readable).
        drops: what hep2pcap dropped, by cause (reason values and ``not_converted``).
        skipped: not written by design (payload types not asked for, empty).
        filtered: left out by a filter.
        written_by_agent: written messages by capture agent id.
    """

    now_us: int
    received: int = 0
    kernel_drops: int | None = None
    drops: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    filtered: int = 0
    written_by_agent: Counter[int | None] = field(default_factory=Counter)


def snapshot(stats: Stats, now_us: int, kernel_drops: int | None, not_converted: int) -> Totals:
    """The counters of ``stats`` now, with the live source's own loss counters.

    Args:
        stats: the run's counters.
        now_us: the time of the snapshot.
        kernel_drops: the sockets' kernel drop counter so far (``None``: unknown).
        not_converted: messages received but never handed to the pipeline so far.
    """
    drops: Counter[str] = Counter()
    for counter in (stats.dropped, stats.input_problems):
        for reason, n in counter.items():
            drops[reason.value] += n
    if not_converted:
        drops[NOT_CONVERTED] += not_converted
    return Totals(
        now_us=now_us,
        received=stats.read + sum(stats.input_problems.values()) + not_converted,
        kernel_drops=kernel_drops,
        drops=drops,
        skipped=stats.skipped_total,
        filtered=stats.filtered,
        written_by_agent=stats.agents,
    )


class Interfaces(Protocol):
    """What the statistics need of a pcapng writer: its interfaces."""

    @property
    def interface_count(self) -> int: ...

    def interface_of(self, agent: int | None) -> int | None: ...


def _pairs(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={n}" for k, n in sorted(counter.items()) if n)


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat(timespec="seconds")


def file_statistics(start: Totals, end: Totals, writer: Interfaces) -> list[InterfaceStatistics]:
    """One InterfaceStatistics per interface of a file opened at ``start`` and closed at
    ``end`` (see the module docstring for what goes where)."""
    written: Counter[int] = Counter()
    for agent, n in (end.written_by_agent - start.written_by_agent).items():
        iface = writer.interface_of(agent)
        written[iface if iface is not None else 0] += n
    drops = end.drops - start.drops
    kernel = (
        None if end.kernel_drops is None else max(0, end.kernel_drops - (start.kernel_drops or 0))
    )
    received = end.received - start.received
    ours = sum(drops.values())
    skipped = end.skipped - start.skipped
    filtered = end.filtered - start.filtered
    causes = [
        f"received {received}",
        f"written {sum(written.values())}",
        f"not written by design {skipped}" if skipped else "",
        f"left out by filters {filtered}" if filtered else "",
        f"dropped by hep2pcap {ours}" + (f" ({_pairs(drops)})" if ours else ""),
        f"dropped by the kernel {'unknown' if kernel is None else kernel}"
        + (" (receive buffer full)" if kernel else ""),
    ]
    summary = (
        f"hep2pcap, all capture agents, {_iso(start.now_us)} to {_iso(end.now_us)}: "
        + ", ".join(c for c in causes if c)
    )
    out = [
        InterfaceStatistics(
            start.now_us,
            end.now_us,
            received=received,
            kernel_drops=kernel,
            our_drops=ours,
            delivered=written[0],
            comment=summary,
        )
    ]
    for iface in range(1, writer.interface_count):
        out.append(
            InterfaceStatistics(
                start.now_us,
                end.now_us,
                delivered=written[iface],
                comment=f"written {written[iface]}; received and lost (all agents): interface 0",
            )
        )
    return out
