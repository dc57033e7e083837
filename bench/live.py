"""Live part of the benchmark: a loopback HEP sender at fixed rates, against hep2pcap and sngrep.

Runs only when ``hep2pcap listen --help`` works; otherwise it says so and is skipped. Only
127.0.0.1 is ever targeted. For each phase (rate x seconds) a fresh receiver is started on a
free port, the sender (1+ processes, ``sendmmsg`` batches through ctypes, each batch re-stamped
with the current time) sends exactly ``rate * seconds`` messages or stops at its deadline,
the receiver gets time to drain, the kernel's drop counter for its socket is read from
/proc/net/udp, then it is stopped with SIGINT and its output counted:
sent - written = lost, of which "kernel drops" never reached the process.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import shlex
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
from common import (
    Child,
    count_frames,
    parse_summary,
    tshark_gate,
    udp_port_bound,
    udp_snmp,
    udp_socket_drops,
)

LOOPBACK = "127.0.0.1"
DEFAULT_LISTEN = "{exe} listen -l udp:127.0.0.1:{port} -w {out}"
DEFAULT_SNGREP = "sngrep -L udp:127.0.0.1:{port} -N -q -l 10000000 -O {out}"
TS_CHUNKS = struct.Struct("!HHHIHHHI")
N_TEMPLATES = 8192


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The live options of run.py."""
    g = ap.add_argument_group("live")
    g.add_argument("--rates", default="25000,50000,100000,150000", help="ramp rates, msg/s")
    g.add_argument("--live-seconds", type=float, default=10, help="seconds per ramp rate")
    g.add_argument("--target-rate", type=int, default=150_000)
    g.add_argument(
        "--target-seconds", type=float, default=30, help="the sustained target phase (0 skips it)"
    )
    g.add_argument("--burst-rate", type=int, default=400_000)
    g.add_argument("--burst-seconds", type=float, default=1.0, help="0 skips the burst")
    g.add_argument("--senders", type=int, default=1, help="sender processes")
    g.add_argument(
        "--burst-senders", type=int, default=2, help="sender processes for the burst phase"
    )
    g.add_argument("--batch", type=int, default=64, help="messages per sendmmsg call")
    g.add_argument("--no-sngrep-live", dest="sngrep_live", action="store_false")
    g.add_argument(
        "--sngrep-max-seconds",
        type=float,
        default=10,
        help="cap sngrep phases (it keeps ~1.4 KB per message in memory)",
    )
    g.add_argument(
        "--listen-cmd",
        default=DEFAULT_LISTEN,
        help="hep2pcap receiver command; {exe} {port} {out} are filled in",
    )
    g.add_argument("--sngrep-cmd", default=DEFAULT_SNGREP)
    g.add_argument(
        "--drain-s",
        type=float,
        default=2.5,
        help="the receiver is done when its output has not grown for this long",
    )


def quick(args: argparse.Namespace) -> None:
    """--quick: two short ramp phases and the burst, no 30 s target phase."""
    args.rates = "25000,100000"
    args.live_seconds = 3
    args.target_seconds = 0


# --- the sender -------------------------------------------------------------------------


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def _templates(seed: int) -> tuple[list[bytes], list[int]]:
    """N_TEMPLATES workload messages and the offset of each one's TS_SEC chunk."""
    msgs, ts_offsets = [], []
    for _, _, data in gen.iter_workload(N_TEMPLATES, seed, gen.Summary()):
        pos = 6
        while True:
            ctype, clen = struct.unpack_from("!HH", data, pos + 2)
            if ctype == 0x0009:
                break
            pos += clen
        msgs.append(data)
        ts_offsets.append(pos)
    return msgs, ts_offsets


def _sender(
    port: int,
    rate: float,
    count: int,
    deadline_s: float,
    batch: int,
    seed: int,
    start_at: float,
    queue: Any,
) -> None:
    msgs, ts_offsets = _templates(seed)
    k = len(msgs)
    buf = ctypes.create_string_buffer(b"".join(msgs))
    view = memoryview(buf).cast("B")
    base = ctypes.addressof(buf)
    iovs = (_Iovec * k)()
    mm = (_Mmsghdr * k)()
    offsets = []
    off = 0
    for i, m in enumerate(msgs):
        offsets.append(off)
        iovs[i].base = base + off
        iovs[i].len = len(m)
        mm[i].hdr.iov = ctypes.cast(
            ctypes.addressof(iovs) + i * ctypes.sizeof(_Iovec), ctypes.POINTER(_Iovec)
        )
        mm[i].hdr.iovlen = 1
        off += len(m)
    ts_at = [o + t for o, t in zip(offsets, ts_offsets, strict=True)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect((LOOPBACK, port))
    fd = sock.fileno()
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = getattr(libc, "sendmmsg", None)
    size = ctypes.sizeof(_Mmsghdr)
    pack_ts = TS_CHUNKS.pack_into
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic()
    sent = errors = 0
    j = 0
    while sent < count:
        now = time.monotonic() - t0
        if now > deadline_s:
            break
        due = min(count, int(now * rate) + batch)
        if sent >= due:
            time.sleep(min(0.0005, (sent - now * rate) / rate))
            continue
        b = min(batch, due - sent, k - j)
        sec, usec = divmod(time.time_ns() // 1000, 1_000_000)
        for i in range(j, j + b):
            pack_ts(view, ts_at[i], 0, 0x0009, 10, sec, 0, 0x000A, 10, usec)
        if sendmmsg is not None:
            r = sendmmsg(fd, ctypes.byref(mm, j * size), b, 0)
        else:  # pragma: no cover - non-glibc fallback
            r = 0
            for i in range(j, j + b):
                sock.send(view[offsets[i] : offsets[i] + len(msgs[i])])
                r += 1
        if r < 0:
            errors += 1
            if errors > 10_000:
                break
            continue
        sent += r
        j = (j + r) % k
    elapsed = time.monotonic() - t0
    sock.close()
    queue.put((sent, elapsed, errors))


def send(
    port: int, rate: float, seconds: float, senders: int, batch: int, seed: int
) -> dict[str, Any]:
    """Send ``rate * seconds`` messages to 127.0.0.1:port; return what was sent."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    count = round(rate * seconds)
    per = [count // senders + (1 if i < count % senders else 0) for i in range(senders)]
    start_at = time.time() + 0.5 + 0.2 * senders  # every sender has built its buffers
    procs = [
        ctx.Process(
            target=_sender,
            args=(port, rate / senders, c, seconds * 1.5 + 1, batch, seed + i, start_at, queue),
        )
        for i, c in enumerate(per)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds * 2 + 60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    sent = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    return {
        "planned": count,
        "sent": sent,
        "send_seconds": round(elapsed, 3),
        "achieved_rate": round(sent / elapsed) if elapsed else None,
        "send_errors": sum(r[2] for r in results),
    }


# --- one phase --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def run_phase(
    tool: str,
    cmd_template: str,
    exe: str,
    phase: str,
    rate: int,
    seconds: float,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """One receiver, one sending phase; the row for the table and the JSON."""
    port = _free_port()
    out = work / f"live-{tool}-{phase}-{rate}.{'pcapng' if tool == 'hep2pcap' else 'pcap'}"
    out.unlink(missing_ok=True)
    cmd = shlex.split(cmd_template.format(exe=exe, port=port, out=out))
    row: dict[str, Any] = {
        "tool": tool,
        "phase": phase,
        "rate": rate,
        "seconds": seconds,
        "command": shlex.join(cmd),
    }
    err_path = work / f"live-{tool}-{phase}-{rate}.stderr"
    with open(err_path, "wb") as err:
        child = Child(cmd, None, err)
    try:
        deadline = time.monotonic() + 15
        while not udp_port_bound(port):
            if child.poll() is not None or time.monotonic() > deadline:
                row["error"] = f"receiver did not bind 127.0.0.1:{port}: {err_path.read_text()}"
                row["gate"] = "FAIL" if tool == "hep2pcap" else "n/a"
                return row
            time.sleep(0.05)
        snmp0 = udp_snmp()
        senders = args.burst_senders if phase == "burst" else args.senders
        row["senders"] = senders
        row.update(send(port, rate, seconds, senders, args.batch, args.seed))
        # Let the receiver convert what it holds (socket, backlog, reorder window): wait
        # until its output has not grown for --drain-s (it flushes at least every second),
        # at most as long again as the sending took plus 30 s.
        t_end = time.monotonic()
        last, still_since = -1, t_end
        give_up = t_end + row["send_seconds"] + 30
        while time.monotonic() < give_up:
            size = out.stat().st_size if out.exists() else 0
            if size != last:
                last, still_since = size, time.monotonic()
            elif time.monotonic() - still_since >= args.drain_s:
                break
            time.sleep(0.2)
        row["drain_seconds"] = round(time.monotonic() - t_end, 1)
        row["kernel_drops"] = udp_socket_drops(port)
        snmp1 = udp_snmp()
        row["udp_rcvbuf_errors_global"] = snmp1.get("RcvbufErrors", 0) - snmp0.get(
            "RcvbufErrors", 0
        )
    finally:
        rc = child.stop()
    row.update(
        {
            "rc": rc,
            "peak_rss_mib": round(child.maxrss_kib / 1024, 1),
            "cpu_s": round(child.user_s + child.sys_s, 2),
        }
    )
    stderr = err_path.read_text(errors="replace")
    written = count_frames(out) if out.exists() and out.stat().st_size else 0
    row["written"] = written
    row["lost"] = row["sent"] - written
    failures = []
    if tool == "hep2pcap":
        summary = parse_summary(stderr)
        row["summary_read_wrote"] = summary
        row["stderr_tail"] = stderr.strip().splitlines()[-6:]
        if written > row["sent"]:
            failures.append(f"{written} frames written for {row['sent']} messages sent")
        if rc not in (0, 130, -2):
            failures.append(f"exit {rc}: {stderr.strip()[-300:]}")
        if args.tshark and written:
            gate = tshark_gate(out, min(written, args.tshark_sample))
            row["tshark_bad"] = gate.bad
            if not gate.ok:
                failures.append(f"tshark: {gate.bad} bad frames, e.g. {gate.examples}")
        row["gate"] = "FAIL" if failures else "ok"
        row["failures"] = failures
    if not args.keep:
        out.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    return row


def _listen_available(exe: str) -> str | None:
    try:
        proc = subprocess.run(
            [exe, "listen", "--help"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-1]
    return None


def run_live(exe: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]] | None:
    """Every live phase for hep2pcap (and sngrep for reference); None when skipped."""
    why = _listen_available(exe)
    if why is not None:
        print(f"\nLive: skipped, `hep2pcap listen` is not available yet ({why}).")
        return None
    phases: list[tuple[str, int, float]] = [
        ("ramp", int(r), args.live_seconds) for r in args.rates.split(",") if r
    ]
    if args.target_seconds > 0:
        phases.append(("target", args.target_rate, args.target_seconds))
    if args.burst_seconds > 0:
        phases.append(("burst", args.burst_rate, args.burst_seconds))
    tools = [("hep2pcap", args.listen_cmd)]
    if args.sngrep and args.sngrep_live:
        tools.append(("sngrep", args.sngrep_cmd))
    rows = []
    for phase, rate, seconds in phases:
        for tool, template in tools:
            secs = min(seconds, args.sngrep_max_seconds) if tool == "sngrep" else seconds
            row = run_phase(tool, template, exe, phase, rate, secs, args, work)
            rows.append(row)
            print(
                f"  live {tool:8} {phase:6} {rate:>7}/s x {secs:g} s: sent "
                f"{row.get('sent')}, written {row.get('written')}, kernel drops "
                f"{row.get('kernel_drops')}",
                file=sys.stderr,
                flush=True,
            )
    return rows


def print_live(rows: list[dict[str, Any]]) -> None:
    """The live table."""
    print("\nLive reception on loopback (one run per phase)")
    hdr = (
        f"{'tool':9} {'phase':6} {'rate/s':>8} {'secs':>5} {'sent':>9} {'achieved':>9} "
        f"{'written':>9} {'lost':>9} {'lost %':>7} {'kdrops':>8} {'RSS MiB':>8} {'gate':5}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "error" in r and "sent" not in r:
            print(f"{r['tool']:9} {r['phase']:6} {r['rate']:>8} error: {r['error'][:200]}")
            continue
        pct = 100 * r["lost"] / r["sent"] if r["sent"] else 0.0
        rss = r.get("peak_rss_mib")
        print(
            f"{r['tool']:9} {r['phase']:6} {r['rate']:>8} {r['seconds']:>5g} {r['sent']:>9} "
            f"{r['achieved_rate'] or 0:>9} {r['written']:>9} {r['lost']:>9} {pct:>6.1f}% "
            f"{r['kernel_drops'] if r['kernel_drops'] is not None else '-':>8} "
            f"{rss if rss is not None else '-':>8} {r.get('gate', 'n/a'):5}"
        )
        for f in r.get("failures", []):
            print(f"  GATE FAIL live {r['tool']} {r['phase']} {r['rate']}: {f}")
    print(
        "  sent < planned means the sender could not reach the rate on this machine; "
        "kdrops = the receiver socket's kernel drop counter (/proc/net/udp)"
    )
