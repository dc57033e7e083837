"""The frame engine: validated values in, frames and pcapng blocks out, a batch per call.

Owns: the choice between the two implementations of one narrow API —
:mod:`~hep2pcap.engine.reference` (pure Python, always there, the reference) and
``_native`` (C, built by ``pip install`` where a compiler is available; same bytes, proved by
tests/test_engine.py). Must never: parse untrusted bytes. Everything it is given was checked
by the decoders and by :meth:`hep2pcap.frames.FrameBuilder.plan`.

``HEP2PCAP_ENGINE=python`` in the environment selects the pure-Python engine even where the
native one is built (benchmarks, and to rule the native engine out when in doubt).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Protocol, cast

from . import reference
from .reference import Packet

__all__ = ["DEFAULT", "NATIVE", "PYTHON", "Engine", "Packet", "describe"]


class Engine(Protocol):
    """What both engines provide (see reference.py for the contract of each function)."""

    NAME: str

    def frames(self, linktype: int, packets: Sequence[Packet]) -> list[bytes]: ...

    def encode_epbs(
        self,
        linktype: int,
        comments: bool,
        interfaces: Mapping[int | None, int],
        shared: int,
        packets: Sequence[Packet],
        start: int,
    ) -> tuple[bytes, int]: ...

    def encode_records(self, linktype: int, packets: Sequence[Packet]) -> bytes: ...


PYTHON: Engine = reference
NATIVE: Engine | None
try:  # the C extension implements Engine (tests/test_engine.py holds it to the reference)
    NATIVE = cast(Engine, importlib.import_module(f"{__name__}._native"))
except ImportError:  # built without a compiler: pure Python
    NATIVE = None

#: The engine writers use unless told otherwise.
DEFAULT: Engine = (
    NATIVE if NATIVE is not None and os.environ.get("HEP2PCAP_ENGINE") != "python" else PYTHON
)


def describe() -> str:
    """One line for ``--version``: which engine runs, and why when it is not the native one."""
    if DEFAULT is NATIVE:
        return "frame engine: native (C)"
    if NATIVE is not None:
        return "frame engine: pure Python (HEP2PCAP_ENGINE=python)"
    return "frame engine: pure Python (the native one was not built: no C compiler at install)"
