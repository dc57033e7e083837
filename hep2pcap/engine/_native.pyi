from collections.abc import Mapping, Sequence

from .reference import Packet

NAME: str

def frames(linktype: int, packets: Sequence[Packet]) -> list[bytes]: ...
def encode_epbs(
    linktype: int,
    comments: bool,
    interfaces: Mapping[int | None, int],
    shared: int,
    packets: Sequence[Packet],
    start: int,
) -> tuple[bytes, int]: ...
def encode_records(linktype: int, packets: Sequence[Packet]) -> bytes: ...
