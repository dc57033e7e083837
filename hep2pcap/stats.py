"""Counters for one run and the summary printed at its end.

Owns: what was read, written, skipped, dropped (by reason), repaired, and the breakdown by
capture agent, transport and direction. Must never: print, log or read clocks; the caller
decides where the summary goes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import SKIP_REASONS, Reason

_K = TypeVar("_K")

#: How many directions the summary lists (the busiest first).
TOP_DIRECTIONS = 8


@dataclass(slots=True)
class Stats:
    """Counters of one run (offline or live)."""

    read: int = 0
    written: int = 0
    frames: int = 0
    late: int = 0
    skipped: Counter[Reason] = field(default_factory=Counter)
    dropped: Counter[Reason] = field(default_factory=Counter)
    input_problems: Counter[Reason] = field(default_factory=Counter)
    warnings: Counter[Reason] = field(default_factory=Counter)
    agents: Counter[int | None] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)
    directions: Counter[tuple[bytes, int, bytes, int]] = field(default_factory=Counter)

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
        if self.input_problems:
            lines.append(f"  input: {_pairs(self.input_problems)}")
        if self.warnings:
            lines.append(f"  repaired/warned: {_pairs(self.warnings)}")
        if self.late:
            lines.append(f"  late (outside the reorder window, written anyway): {self.late}")
        if self.agents:
            agents = ", ".join(f"{'none' if a is None else a}={n}" for a, n in _sorted(self.agents))
            lines.append(f"  by capture agent: {agents}")
        if self.transports:
            lines.append(
                f"  by transport: {', '.join(f'{t}={n}' for t, n in _sorted(self.transports))}"
            )
        if self.directions:
            busiest = self.directions.most_common(TOP_DIRECTIONS)
            more = len(self.directions) - len(busiest)
            text = ", ".join(
                f"{_endpoint(s, sp)} -> {_endpoint(d, dp)}={n}" for (s, sp, d, dp), n in busiest
            )
            lines.append(
                f"  by direction ({len(self.directions)}): {text}"
                + (f", +{more} more" if more else "")
            )
        return "\n".join(lines)


def _sorted(counter: Counter[_K]) -> list[tuple[_K, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))


def _pairs(counter: Counter[Reason]) -> str:
    return ", ".join(
        f"{r.value}={n}" for r, n in sorted(counter.items(), key=lambda kv: kv[0].value)
    )


def _reasons(counter: Counter[Reason]) -> str:
    return f" ({_pairs(counter)})" if counter else ""


def _endpoint(ip: bytes, port: int) -> str:
    addr = ipaddress.ip_address(ip)
    return f"{addr}:{port}" if addr.version == 4 else f"[{addr}]:{port}"
