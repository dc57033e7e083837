"""Soak benchmark (issue 14): a long live capture that must stay healthy. Not a test.

``hep2pcap listen`` on a free loopback UDP port, rotating every ``--rotate`` seconds
(hourly-style rotation, shortened), while a sender (bench/live.py's sendmmsg sender, each batch
re-stamped with the current time) sends ``--rate`` msg/s for ``--seconds``. Every
``--sample`` seconds the RSS of the listener (parent and receiver process) is sampled. Then
SIGINT, and every file is judged: complete blocks, readable by tshark (its packet count
equals ours), ending with Interface Statistics Blocks; and the ISBs of all files must add up
to what was sent (ifrecv + ifdrop = sent, usrdeliv = written). Exit 1 when anything is
lost or a file is wrong; the figures go to stdout and ``--json``.

    .venv/bin/python bench/soak.py                      # 10 min at 50k msg/s, 60 s files
    .venv/bin/python bench/soak.py --seconds 60 --rate 20000 --rotate 10
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import count_frames, loadavg_1m
from live import send

from hep2pcap.sources.pcapfile import PcapSource


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _statistics(path: Path) -> list[tuple[int, Any]]:
    with open(path, "rb") as f:
        src = PcapSource(str(path), io.BytesIO(f.read()))
    for _ in src:  # the frames are SIP, not HEP: only the blocks matter here
        pass
    return [(iface, st) for iface, _, st in src.statistics]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=50_000, help="messages per second")
    ap.add_argument("--seconds", type=float, default=600, help="how long to send")
    ap.add_argument("--rotate", type=float, default=60, help="-G: seconds per file")
    ap.add_argument("--sample", type=float, default=10, help="RSS sample interval")
    ap.add_argument("--batch", type=int, default=64, help="messages per sendmmsg call")
    ap.add_argument("--work-dir", help="keep the files here (default: a temp dir, removed)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hep2pcap-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("hep2pcap", path=str(Path(sys.executable).parent)) or "hep2pcap"
    out = work / "soak.pcapng"
    load_before = loadavg_1m()
    cmd = [exe, "listen", "-l", "udp:127.0.0.1:0", "-w", str(out), "-G", str(args.rotate)]
    cmd += ["--stats-interval", str(args.sample)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.search(r"listening on udp:127\.0\.0\.1:(\d+)", line)
    if m is None:
        proc.kill()
        print(f"listener did not start: {line!r}", file=sys.stderr)
        return 1
    port = int(m.group(1))
    err_lines: list[str] = []
    threading.Thread(
        target=lambda: err_lines.extend(x.decode() for x in proc.stderr),  # type: ignore[union-attr]
        daemon=True,
    ).start()

    samples: list[tuple[float, int, int]] = []  # (s, parent RSS, receiver RSS)
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(args.sample):
            kids = sum(_rss_kib(p) for p in _children(proc.pid))
            samples.append((round(time.monotonic() - t0, 1), _rss_kib(proc.pid), kids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent = send(port, args.rate, args.seconds, 1, args.batch, 14)
    time.sleep(3)  # the reorder window and the last flush
    stop.set()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(120)
    time.sleep(0.2)
    load_after = loadavg_1m()

    files = sorted(work.glob("soak*.pcapng"))
    tshark = shutil.which("tshark")
    problems: list[str] = []
    ours = tshark_total = 0
    received = kernel = dropped = delivered = 0
    isb_files = 0
    for f in files:
        try:
            n = count_frames(f)
        except ValueError as exc:
            problems.append(f"{f.name}: {exc}")
            continue
        ours += n
        if tshark is not None:
            r = subprocess.run(
                [tshark, "-r", str(f), "-T", "fields", "-e", "frame.number"],
                capture_output=True, timeout=600, check=False,
            )  # fmt: skip
            t = len(r.stdout.splitlines())
            tshark_total += t
            if r.returncode != 0 or t != n:
                problems.append(f"{f.name}: tshark read {t} of {n} (exit {r.returncode})")
        stats = _statistics(f)
        if stats and stats[0][0] == 0:
            isb_files += 1
        else:
            problems.append(f"{f.name}: no statistics blocks")
        for iface, st in stats:
            if iface == 0:
                received += st.received or 0
                kernel += st.kernel_drops or 0
                dropped += st.our_drops or 0
            delivered += st.delivered or 0
    summary = next((x for x in err_lines if x.startswith("read ")), "").strip()
    m2 = re.match(r"read (\d+), wrote (\d+)", summary)
    written = int(m2.group(2)) if m2 else -1
    if rc != 0:
        problems.append(f"listen exit {rc}")
    if received + kernel != sent["sent"]:
        problems.append(f"ISBs: received {received} + kernel drops {kernel} != sent {sent['sent']}")
    if kernel or dropped:
        problems.append(f"lost: kernel {kernel}, hep2pcap {dropped}")
    if delivered != written or ours != written:
        problems.append(f"written {written}, ISB usrdeliv {delivered}, frames in files {ours}")
    rss = [a + b for _, a, b in samples]
    steady = rss[len(rss) // 4 :] or rss
    backlog = [int(x) for x in re.findall(r"backlog (\d+) KiB", "".join(err_lines))]
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "rotate_s": args.rotate,
        **sent,
        "summary": summary,
        "files": len(files),
        "files_with_isb": isb_files,
        "frames_in_files": ours,
        "tshark_frames": tshark_total if tshark else None,
        "isb_received": received,
        "isb_kernel_drops": kernel,
        "isb_our_drops": dropped,
        "isb_delivered": delivered,
        "rss_kib_samples": samples,
        "backlog_kib_max": max(backlog, default=0),
        "backlog_kib_last": backlog[-1] if backlog else None,
        "rss_kib_first_quarter_max": max(rss[: len(rss) // 4], default=0),
        "rss_kib_rest_min_max": [min(steady, default=0), max(steady, default=0)],
        "load_1m_before_after": [load_before, load_after],
        "nproc": os.cpu_count(),
        "problems": problems,
    }
    for k, v in result.items():
        if k != "rss_kib_samples":
            print(f"{k}: {v}")
    print("rss_kib (s: listen+receiver): " + ", ".join(f"{t:.0f}:{a}+{b}" for t, a, b in samples))
    print("backlog_kib: " + ", ".join(map(str, backlog)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
