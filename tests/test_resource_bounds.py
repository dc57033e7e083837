"""Memory stays bounded on hostile inputs (issue 6): ``hep2pcap convert`` runs in a child
process on generated inputs, and its peak RSS (``os.wait4`` rusage of that child alone) must
stay under a fixed ceiling. Each run also has to end with exit 0 and name the reason counter
in its stderr summary. Every input is built in tmp_path in well under a second.

Peak RSS measured when this was written (Linux, CPython 3.11, 2 cores): tiny valid input
20.2 MiB (the baseline: interpreter + click + hep2pcap), zip bomb 21.4, 10 MB of junk with
--lenient 21.0, 100k unfinished IP fragments 27.6, 20k TCP flows with partial messages 41.6,
a 65535-byte length on a short stream 20.2. The ceiling leaves room for other interpreters
and allocators while still catching any buffer that grows with the input.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hepbuild import TS_SEC, hep3, ip, u8, u16, u32, v3

from hep2pcap.hep import ChunkType

CEILING_MIB = 100
TIMEOUT_S = 60
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"


# Peak RSS of a child can not be read from the process pytest starts: ru_maxrss (and VmHWM)
# carry over the memory of the forked parent (pytest, ~100 MiB) through exec. So a small
# wrapper interpreter forks hep2pcap itself and reports that grandchild's own ru_maxrss.
WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_convert(tmp_path: Path, data: bytes, *flags: str) -> tuple[int, str, float]:
    """Convert ``data`` in a child process; return exit code, stderr, peak RSS in MiB."""
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    err_path = tmp_path / "stderr.txt"
    out = str(tmp_path / "o.pcapng")
    cmd = [sys.executable, "-c", WRAPPER, "-m", "hep2pcap", "convert", str(src), "-w", out]
    with err_path.open("wb") as err:
        # cwd=tmp_path: `-m` puts the cwd first on sys.path; the installed package is used.
        proc = subprocess.Popen(
            [*cmd, *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"convert did not finish in {TIMEOUT_S} s")
    peak_mib = int(stdout) / 1024  # ru_maxrss is in KiB on Linux
    print(f"peak RSS {peak_mib:.1f} MiB for {len(data)} input bytes {flags}")
    return proc.returncode, err_path.read_text(), peak_mib


def valid(marker: str = "valid") -> bytes:
    sip = f"OPTIONS sip:bob@example.com SIP/2.0\r\nCall-ID: {marker}\r\n\r\n".encode()
    return v3({ChunkType.PAYLOAD: sip})


def pcap(records: list[bytes]) -> bytes:
    out = [PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, frame in enumerate(records):
        out.append(PCAP_RECORD.pack(TS_SEC + i // 1000, i % 1000, len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def ipv4(src: bytes, payload: bytes, proto: int, ident: int = 0, frag: int = 0) -> bytes:
    head = IPV4.pack(0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, src, ip("10.9.9.9"))
    return ETH + head + payload


def udp_dgram(data: bytes) -> bytes:
    return ipv4(ip("10.0.0.1"), struct.pack("!HHHH", 40000, 9060, 8 + len(data), 0) + data, 17)


def tcp_segment(src: bytes, sport: int, data: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, 9060, 1000, 0, 5 << 4, 0x18, 65535, 0, 0)
    return ipv4(src, tcp + data, 6)


def check(result: tuple[int, str, float], *counters: str) -> None:
    code, stderr, peak = result
    assert code == 0, stderr
    for counter in counters:
        assert counter in stderr, stderr
    assert peak < CEILING_MIB, f"peak RSS {peak:.1f} MiB"


def test_baseline_tiny_input(tmp_path: Path) -> None:
    check(run_convert(tmp_path, valid()), "wrote 1")


def test_zip_bomb(tmp_path: Path) -> None:
    # 40 messages, each a 0x0010 chunk of ~63 KB of zlib that inflates to 63 MiB (> the cap).
    bomb = zlib.compress(b"\0" * (63 * 1024 * 1024), 9)
    assert len(bomb) < 65000
    chunks = [
        (0, int(t), v)
        for t, v in (
            (ChunkType.IP_FAMILY, u8(2)),
            (ChunkType.IP_PROTO, u8(17)),
            (ChunkType.SRC_IP4, ip("192.0.2.1")),
            (ChunkType.DST_IP4, ip("192.0.2.2")),
            (ChunkType.SRC_PORT, u16(5060)),
            (ChunkType.DST_PORT, u16(5060)),
            (ChunkType.TS_SEC, u32(TS_SEC)),
            (ChunkType.TS_USEC, u32(0)),
            (ChunkType.PAYLOAD_TYPE, u8(1)),
            (ChunkType.COMPRESSED_PAYLOAD, bomb),
        )
    ]
    data = hep3(*chunks) * 40 + valid()
    check(run_convert(tmp_path, data), "decompress_too_large=40", "wrote 1")


def test_junk_megabytes_lenient(tmp_path: Path) -> None:
    junk = random.Random(6).randbytes(10 * 1024 * 1024)
    assert b"HEP3" not in junk
    assert b"EEP3" not in junk
    data = valid("first") + junk + valid()
    check(run_convert(tmp_path, data, "--lenient"), "bad_magic=1", "wrote 2")


def test_ip_fragment_flood(tmp_path: Path) -> None:
    # 100k first fragments (more-fragments set, offset 0) of distinct datagrams, never completed.
    udp_head = struct.pack("!HHHH", 40000, 9060, 1000, 0)
    frames = [
        ipv4(bytes([10, 1, i >> 16, 0]), udp_head + b"HEP3" + bytes(44), 17, i & 0xFFFF, 0x2000)
        for i in range(100_000)
    ]
    frames.append(udp_dgram(valid()))
    check(run_convert(tmp_path, pcap(frames)), "ip_fragment_incomplete=100000", "wrote 1")


def test_many_tcp_flows_with_partial_messages(tmp_path: Path) -> None:
    # 20k connections (twice the reader's flow limit), each one segment: a HEP3 header cut
    # after 5 bytes, or a header claiming 65535 bytes followed by 1400.
    partial = [b"HEP3\xff", b"HEP3\xff\xff" + bytes(1400)]
    frames = [
        tcp_segment(bytes([10, 2, i >> 8, i & 0xFF]), 30000 + i % 7, partial[i % 2])
        for i in range(20_000)
    ]
    frames.append(udp_dgram(valid()))
    check(run_convert(tmp_path, pcap(frames)), "stream_truncated_at_eof=20000", "wrote 1")


def test_length_claims_65535_on_a_short_stream(tmp_path: Path) -> None:
    data = valid() + b"HEP3\xff\xff" + bytes(100)
    check(run_convert(tmp_path, data), "stream_truncated_at_eof=1", "wrote 1")
