"""Measure the prototypes against ``hep2pcap convert`` and sngrep on one workload.

Every variant runs as a fresh child (wall, CPU of the process tree, peak RSS via GNU time) and
its output must be byte-identical to ``hep2pcap convert``'s, or the variant is marked WRONG.
sngrep runs on the pcap of the same messages, as in run.py.

Usage: python bench/experiments/run_all.py [-n 1000000] [--runs 2] [--no-sngrep]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402
from common import loadavg_1m, measure  # noqa: E402

VARIANTS = {
    "hep2pcap convert": ["{exe}", "convert", "{src}", "-w", "{out}", "-q"],
    "fused (layout decode)": ["{py}", str(HERE / "fused.py"), "{src}", "{out}"],
    "template": ["{py}", str(HERE / "template.py"), "{src}", "{out}", "--join"],
    "parallel 2 workers": ["{py}", str(HERE / "parallel.py"), "{src}", "{out}"],
    "patch 2 workers": ["{py}", str(HERE / "patch.py"), "{src}", "{out}"],
}


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Run every variant ``--runs`` times; print median wall, CPU, RSS and x sngrep."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-sngrep", dest="sngrep", action="store_false")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args(argv)
    raw, pcap, _ = gen.ensure(args.messages, args.seed)
    py = sys.executable
    exe = str(Path(py).parent / "hep2pcap")
    rows = []
    ref_digest = None
    with tempfile.TemporaryDirectory(prefix="hep2pcap-exp-") as tmp:
        out = Path(tmp) / "out.pcapng"
        names = [v for v in VARIANTS if not args.only or v in args.only.split(",")]
        if "hep2pcap convert" not in names:
            names.insert(0, "hep2pcap convert")
        for name in names:
            cmd = [a.format(exe=exe, py=py, src=raw, out=out) for a in VARIANTS[name]]
            runs, ok, loads = [], True, []
            for _ in range(args.runs):
                out.unlink(missing_ok=True)
                loads.append(loadavg_1m())
                m = measure(cmd, timeout_s=900)
                if m.rc != 0:
                    print(f"{name}: exit {m.rc}: {m.stderr[-300:]}", file=sys.stderr)
                    ok = False
                    break
                d = _digest(out)
                if ref_digest is None:
                    ref_digest = d
                ok &= d == ref_digest
                runs.append(m)
                print(f"  {name}: {m.wall_s:.2f} s", file=sys.stderr, flush=True)
            if runs:
                rows.append((name, runs, ok, loads))
        if args.sngrep:
            spcap = Path(tmp) / "sngrep.pcap"
            cmd = ["sngrep", "-I", str(pcap), "-E", "-N", "-q", "-l", "10000000", "-O", str(spcap)]
            runs, loads = [], []
            for _ in range(args.runs):
                spcap.unlink(missing_ok=True)
                loads.append(loadavg_1m())
                runs.append(measure(cmd, timeout_s=900))
                print(f"  sngrep: {runs[-1].wall_s:.2f} s", file=sys.stderr, flush=True)
            rows.append(("sngrep -E (pcap input)", runs, True, loads))
    sng = next((r for r in rows if r[0].startswith("sngrep")), None)
    sng_wall = statistics.median(m.wall_s for m in sng[1]) if sng else None
    print(f"\n{args.messages} messages, raw input (sngrep: the pcap), median of {args.runs}")
    print(f"{'variant':26} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} {'msg/s':>9} "
          f"{'x sngrep':>8}  same bytes  load")  # fmt: skip
    for name, runs, ok, loads in rows:
        wall = statistics.median(m.wall_s for m in runs)
        cpu = statistics.median(m.user_s + m.sys_s for m in runs)
        rss = max(m.maxrss_mib for m in runs)
        ratio = f"{wall / sng_wall:.2f}x" if sng_wall else "-"
        same = "n/a" if name.startswith("sngrep") else ("yes" if ok else "WRONG")
        print(f"{name:26} {wall:7.2f} {cpu:7.2f} {rss:8.1f} {args.messages / wall:9,.0f} "
              f"{ratio:>8}  {same:10}  {min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
    return 0 if all(ok for _, _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
