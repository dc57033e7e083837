"""Placeholder replaced by the pcap/pcapng reader."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import InputError
from ..pipeline import Problem, Record


class PcapSource:
    """Records from a pcap or pcapng file of HEP traffic."""

    unit = "record"

    def __init__(self, name: str, stream: object) -> None:
        self.name = name
        raise InputError(f"{name}: pcap input is not implemented yet")

    def __iter__(self) -> Iterator[Record | Problem]:
        raise NotImplementedError
