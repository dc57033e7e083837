"""A status line for long runs (the CLI shows it on a terminal only).

Owns: when a status line is worth showing (once a run has lasted DELAY_S) and what it says:
the percentage of the input bytes read when every input's size is known (for a gzip input,
its compressed bytes), else the messages read and their rate (stdin). Must never: decide
where the line goes or whether that is a terminal; it is given a ``write`` function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .sources import ByteCounter
from .stats import Stats

#: A run shorter than this shows nothing.
DELAY_S = 1.0


class Progress:
    """Called with the counters now and then (``on_progress``); rewrites one line.

    Args:
        counters: the inputs' byte counters (open_inputs fills them).
        label: what this pass is ("first pass: "), or "".
        write: where the text goes (without a newline; each update starts with ``\\r``).
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        counters: Sequence[ByteCounter],
        label: str,
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters
        self.label = label
        self.write = write
        self.clock = clock
        self.start = clock()
        self.shown = False

    def __call__(self, stats: Stats) -> None:
        """Show the status now (if the run has lasted DELAY_S)."""
        elapsed = self.clock() - self.start
        if elapsed < DELAY_S:
            return
        self.shown = True
        written = f", {stats.written} written" if stats.written else ""
        counters = self.counters
        total = sum(c.total or 0 for c in counters)
        if counters and total and all(c.total is not None for c in counters):
            done = sum(c.done for c in counters)
            gz = " (compressed)" if any(c.compressed for c in counters) else ""
            self.write(
                f"\rhep2pcap: {self.label}{min(100, 100 * done // total):3d}% of "
                f"{total / 1e6:.1f} MB{gz}, {stats.read} messages read{written}"
            )
        else:
            self.write(
                f"\rhep2pcap: {self.label}{stats.read} messages read{written}, "
                f"{stats.read / elapsed:.0f}/s"
            )

    def close(self) -> None:
        """Clear the line, if one was shown."""
        if self.shown:
            self.write("\r\033[K")
            self.shown = False
