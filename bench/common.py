"""Shared benchmark helpers: run a command and measure it, count frames, the tshark gate.

Nothing here imports hep2pcap: the benchmark measures the installed command line from outside.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

#: tshark preferences of the correctness gate: validate every checksum.
TSHARK_CHECKSUM_PREFS = (
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
)
#: A frame matching this is a gate failure (status 0 is "Bad" for every checksum field).
TSHARK_BAD_FILTER = (
    "ip.checksum.status == 0 || udp.checksum.status == 0 || tcp.checksum.status == 0"
    " || tcp.analysis.flags || _ws.malformed"
)


@dataclass(slots=True)
class Measured:
    """One finished child process: exit status, wall time and its own resource usage."""

    cmd: list[str]
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    stderr: str
    timed_out: bool = False
    tree_rss_kib: int = 0
    tree_pss_kib: int = 0

    @property
    def maxrss_mib(self) -> float:
        """Peak resident set size in MiB."""
        return self.maxrss_kib / 1024


TIME = "/usr/bin/time"


#: How often a measured command's processes are sampled for their memory together.
SAMPLE_S = 0.1


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux: /proc/PID/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


class Child:
    """A measured child process in its own session.

    Peak RSS comes from GNU time (``/usr/bin/time -f %M``) when present: Linux carries a
    process's RSS high-water mark across ``exec``, so a child spawned straight from this
    runner would report at least the runner's own peak. time forks the command from its own
    small image, so the number is the command's alone. Without GNU time, ``wait4`` is used
    and the runner keeps itself small (no mmap of outputs) so its peak stays below the tools'.
    Signals go to the whole session (time itself ignores SIGINT while it waits).
    """

    def __init__(self, cmd: list[str], stdout: Path | None, stderr: BinaryIO) -> None:
        self.cmd = cmd
        self._time_out = tempfile.NamedTemporaryFile(prefix="bench-time-", delete=False)  # noqa: SIM115
        self._time_out.close()
        wrapped = cmd
        if os.access(TIME, os.X_OK):
            wrapped = [TIME, "-f", "%M", "-o", self._time_out.name, *cmd]
        out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                wrapped,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self.rc: int | None = None
        self.wall_s = 0.0
        self.user_s = self.sys_s = 0.0
        self.maxrss_kib = 0
        #: All processes of the command together (GNU time's own left out), sampled every
        #: SAMPLE_S from /proc: the peak of the summed RSS (pages shared after a fork counted
        #: once per process) and of the summed PSS (shared pages split between the sharers).
        self.tree_rss_kib = self.tree_pss_kib = 0
        self._wrapped = wrapped is not cmd
        self._next_sample = 0.0

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole session."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def poll(self) -> int | None:
        """Reap the child if it has ended; its exit code, or None while it runs."""
        if self.rc is None:
            now = time.monotonic()
            if now >= self._next_sample:
                self._next_sample = now + SAMPLE_S
                self._sample()
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._reaped(status, usage)
        return self.rc

    def _sample(self) -> None:
        pids = _descendants(self.proc.pid) if self._wrapped else [self.proc.pid]
        if not self._wrapped:
            pids += _descendants(self.proc.pid)
        rss = pss = 0
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        self.tree_rss_kib = max(self.tree_rss_kib, rss)
        self.tree_pss_kib = max(self.tree_pss_kib, pss)

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s``; the exit code, or None if it still runs."""
        deadline = time.monotonic() + timeout_s
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.rc

    def stop(self, timeout_s: float = 30) -> int:
        """SIGINT, then SIGTERM, then SIGKILL to the session; the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.poll() is not None:
                break
            self.signal(sig)
            if self.wait(timeout_s) is not None:
                break
        rc = self.wait(timeout_s)
        assert rc is not None
        return rc

    def _reaped(self, status: int, usage: resource.struct_rusage) -> None:
        self.wall_s = time.perf_counter() - self.started
        self.rc = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.user_s, self.sys_s = usage.ru_utime, usage.ru_stime
        self.maxrss_kib = usage.ru_maxrss
        try:
            lines = Path(self._time_out.name).read_text().split()
            if lines and lines[-1].isdigit():
                self.maxrss_kib = int(lines[-1])
        finally:
            Path(self._time_out.name).unlink(missing_ok=True)


def measure(cmd: list[str], timeout_s: float, stdout: Path | None = None) -> Measured:
    """Run ``cmd`` as a fresh child; its wall time, CPU time and peak RSS."""
    with tempfile.TemporaryFile() as err:
        child = Child(cmd, stdout, err)
        rc = child.wait(timeout_s)
        timed_out = rc is None
        if timed_out:
            rc = child.stop(5)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    assert rc is not None
    return Measured(
        cmd=cmd,
        rc=rc,
        wall_s=child.wall_s,
        user_s=child.user_s,
        sys_s=child.sys_s,
        maxrss_kib=child.maxrss_kib,
        tree_rss_kib=child.tree_rss_kib,
        tree_pss_kib=child.tree_pss_kib,
        stderr=text,
        timed_out=timed_out,
    )


_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_EPB, _SPB, _OPB = 6, 3, 2


def _records(f: BinaryIO, pos: int, hdr: struct.Struct, length: Any) -> Iterator[tuple[int, ...]]:
    """Yield each record's unpacked header, reading in blocks (no mmap: see Child)."""
    f.seek(pos)
    buf = b""
    off = 0  # where the next record starts in buf
    while True:
        block = f.read(1 << 22)
        if not block:
            if off != len(buf):
                raise ValueError(f"truncated record at the end ({len(buf) - off} bytes left)")
            return
        buf = buf[off:] + block
        off = 0
        while len(buf) - off >= hdr.size:
            fields = hdr.unpack_from(buf, off)
            size = length(fields, buf, off)
            if len(buf) - off < size:
                break
            yield fields
            off += size


def count_frames(path: Path) -> int:
    """Count packet records in a pcap or pcapng file, checking the block structure.

    Raises:
        ValueError: not a capture file, or a truncated / inconsistent record.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 4:
            raise ValueError(f"{path}: empty or tiny file")
        magic = head[:4]
        try:
            if magic in _PCAP_MAGICS:
                rec = struct.Struct(_PCAP_MAGICS[magic] + "IIII")
                return sum(1 for _ in _records(f, 24, rec, lambda fl, _b, _o: rec.size + fl[2]))
            if magic == _PCAPNG_SHB:
                order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
                blk = struct.Struct(order + "II")
                tail = struct.Struct(order + "I")

                def length(fields: tuple[int, int], buf: bytes, off: int) -> int:
                    blen = fields[1]
                    if blen < 12 or blen % 4:
                        raise ValueError(f"bad pcapng block length {blen}")
                    if len(buf) - off >= blen and tail.unpack_from(buf, off + blen - 4)[0] != blen:
                        raise ValueError("pcapng block trailer differs from its header")
                    return blen

                return sum(
                    1 for fields in _records(f, 0, blk, length) if fields[0] in (_EPB, _SPB, _OPB)
                )
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    raise ValueError(f"{path}: not a pcap or pcapng file")


@dataclass(slots=True)
class GateResult:
    """What tshark said about one output file."""

    checked_frames: int | None  # None: every frame
    bad: int
    examples: list[str]
    rc: int
    seconds: float

    @property
    def ok(self) -> bool:
        """No bad checksum, no TCP analysis flag, no malformed frame, tshark exited 0."""
        return self.rc == 0 and self.bad == 0


def tshark_gate(path: Path, limit: int | None, timeout_s: float = 900) -> GateResult:
    """Run tshark with checksum validation over ``path`` (the first ``limit`` frames)."""
    cmd = ["tshark", "-n", "-r", str(path), *TSHARK_CHECKSUM_PREFS]
    if limit is not None:
        cmd += ["-c", str(limit)]
    cmd += ["-Y", TSHARK_BAD_FILTER, "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    return GateResult(
        checked_frames=limit,
        bad=len(lines),
        examples=lines[:3],
        rc=proc.returncode,
        seconds=time.perf_counter() - started,
    )


def tool_version(cmd: list[str]) -> str:
    """First line of a tool's version output, or 'missing'."""
    if shutil.which(cmd[0]) is None:
        return "missing"
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    text = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "unknown"


_SUMMARY = re.compile(r"read (\d+), wrote (\d+)")


def parse_summary(stderr: str) -> tuple[int, int] | None:
    """(read, wrote) from hep2pcap's end-of-run summary on stderr, if present."""
    found = _SUMMARY.findall(stderr)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def udp_socket_drops(port: int) -> int | None:
    """Kernel drops of the UDP socket bound to 127.0.0.1/::1/any on ``port`` (/proc/net/udp*)."""
    total = None
    want = f":{port:04X}"
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[1].endswith(want):
                total = (total or 0) + int(fields[-1])
    return total


def udp_port_bound(port: int) -> bool:
    """True once some socket has bound UDP ``port``."""
    return udp_socket_drops(port) is not None


def udp_snmp() -> dict[str, int]:
    """The kernel's global UDP counters (/proc/net/snmp 'Udp:' lines)."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def loadavg_1m() -> float:
    """The 1-minute load average."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return 0.0
