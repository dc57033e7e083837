"""Faults of the machine, for real: a file system that fills up under the output.

A tiny tmpfs is mounted for the test (root only: CI and this project's machines run as
root; elsewhere the test is skipped with the reason).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hep2pcap import hep

FULL_AFTER = 256 * 1024  # the tmpfs size


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FULL_AFTER}", "tmpfs", str(mnt)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30, check=False)


def big_dump(path: Path, n: int = 3000) -> None:
    sip = b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: %d\r\nContent-Length: 0\r\n\r\n"
    ts0 = 1_700_000_000_000_000
    path.write_bytes(b"".join(hep.encode(_msg(ts0 + i, sip % i + b"x" * 200)) for i in range(n)))


def _msg(ts_us: int, payload: bytes) -> hep.HepMessage:
    return hep.HepMessage(
        3, 17, b"\x0a\0\0\1", b"\x0a\0\0\2", 5060, 5060, ts_us, payload, capture_id=7
    )


def complete_blocks(data: bytes) -> tuple[int, int]:
    """(pcapng blocks, EPBs) when the file is a whole number of valid blocks; else fail."""
    pos = blocks = epbs = 0
    while pos < len(data):
        assert pos + 12 <= len(data), f"a block header cut at {pos}"
        btype, blen = struct.unpack_from("<II", data, pos)
        assert blen >= 12, f"bad block length at {pos}"
        assert blen % 4 == 0, f"bad block length at {pos}"
        assert pos + blen <= len(data), f"block cut at {pos}"
        (trailer,) = struct.unpack_from("<I", data, pos + blen - 4)
        assert trailer == blen
        blocks += 1
        epbs += btype == 6
        pos += blen
    return blocks, epbs


@pytest.mark.parametrize("command", ["convert", "listen"])
def test_disk_full_gives_one_clear_line_and_a_valid_file(
    tiny_fs: Path, tmp_path: Path, command: str
) -> None:
    out = tiny_fs / "out.pcapng"
    if command == "convert":
        dump = tmp_path / "big.hep"
        big_dump(dump)
        args = ["convert", str(dump), "-w", str(out)]
        proc = subprocess.run(
            [sys.executable, "-m", "hep2pcap", *args], capture_output=True, timeout=60, check=False
        )
    else:  # live: fill the disk from a sender
        proc = _listen_until_full(out)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "No space left on device" in err
    assert "Traceback" not in err
    if command == "convert":  # written under a temporary name: what fitted is kept apart
        assert not out.exists()
        assert len(err.splitlines()) == 1
        assert f"are in {out}.partial" in err
        out = tiny_fs / "out.pcapng.partial"
        assert sorted(p.name for p in tiny_fs.iterdir()) == [out.name]
    data = out.read_bytes()
    _, epbs = complete_blocks(data)
    assert epbs > 100, "what fitted was kept"
    assert len(data) <= FULL_AFTER


def _listen_until_full(out: Path) -> subprocess.CompletedProcess[bytes]:
    import re
    import select
    import socket
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "hep2pcap", "listen", "-l", "udp:127.0.0.1:0", "-w", str(out),
         "--window", "0", "--duration", "30"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 15
    port = None
    while port is None and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 1)[0]:
            seen += os.read(proc.stderr.fileno(), 4096)
            m = re.search(rb"listening on udp:127\.0\.0\.1:(\d+)", seen)
            port = int(m.group(1)) if m else None
    assert port is not None, seen
    payload = b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(20_000):  # ~6 MB of frames for a 256 KiB disk; bounded
            msg = _msg(int(time.time() * 1e6), payload + b"x" * 200)
            s.sendto(hep.encode(msg), ("127.0.0.1", port))
            if i % 200 == 199:
                time.sleep(0.01)
                if proc.poll() is not None:
                    break
    try:
        rest = proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        rest = proc.communicate(timeout=10)[1]
    return subprocess.CompletedProcess(proc.args, proc.returncode, b"", seen + rest)
