"""The messages that flow through the loop, and the stage protocol.

Owns: what a source yields (:class:`Record`, :class:`Problem`, :class:`Tick`), what flows
between stages once decoded (:data:`Item`, or a :class:`Tick` on a live input), and the
shapes of a source, a stage and the front half of the loop. Every module below the loop
(sources, repairs, filters, split, offload) imports these from here, never from
``pipeline``. Must never: import any other module of the package but ``errors``, ``hep``
and ``stats`` (everything imports this one), or hold behaviour: these are types only.

Stages tell a tick from a message by its type (``isinstance(item, Tick)``), never by
looking at the shape of a tuple: an :data:`Item` is a plain tuple, a :class:`Tick` is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from .errors import Reason
from .hep import HepMessage
from .stats import Stats


class Record(NamedTuple):
    """One unit of HEP from a source: a datagram, or one message cut from a stream.

    ``ts_us`` is the receive or file-record time (``None`` for raw dumps);
    ``pos`` is where it came from, in the source's ``unit`` (record number, offset…).
    """

    data: bytes
    ts_us: int | None
    pos: int


class Problem(NamedTuple):
    """Something a source could not turn into a record (counted, never fatal).

    ``read`` marks a message the source rejected before decoding for a reason the pipeline
    would have found (live ``--password``): it counts as read and dropped, like the rest.
    """

    reason: Reason
    pos: int
    detail: str
    read: bool = False


#: A message on its way through the loop: (HEP time, arrival number, message).
Item = tuple[int, int, HepMessage]


class Tick(NamedTuple):
    """Live sources yield this when idle, so the reorder window drains by wall time."""

    now_us: int


class Source(Protocol):
    """A named iterable of records; ``unit`` names what ``Record.pos`` counts."""

    name: str
    unit: str

    def __iter__(self) -> Iterator[Record | Problem | Tick]: ...


#: What flows between the stages of the loop: messages and (live) ticks.
Stream = Iterator[Item | Tick]
#: A stage between decoding and writing (e.g. filters.Selector.stage): items in, items out.
Stage = Callable[[Stream], Stream]
#: The front half of the loop (everything before the reorder window), as a function of the
#: counters it updates.
Front = Callable[[Stats], Stream]
#: Runs a Front somewhere else and yields its items: offload.offloaded.
Offload = Callable[[Front, Stats], Stream]
