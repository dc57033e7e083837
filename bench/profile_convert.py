"""Profile ``hep2pcap convert`` on a benchmark workload with py-spy (sampling, whole process).

Writes the collapsed stacks to bench/results/profile-<input>-<N>.folded (open it with
speedscope or flamegraph.pl) and prints the top functions by self time and by inclusive time,
in percent of all samples. ``--tool pyinstrument`` prints pyinstrument's call tree instead.

Usage: python bench/profile_convert.py [-n 1000000] [--input raw|pcap] [--top 15] [--rate 200]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Files of the package, for the inclusive-time list.
OURS = {p.name for p in (Path(__file__).resolve().parents[1] / "hep2pcap").rglob("*.py")}


def _short(frame: str) -> str:
    # "decode (hep2pcap/hep.py:212)" -> "hep.py:decode"; stdlib frames keep their file name.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{Path(path).name}:{name}" if path else name


def summarise(
    folded: Path, top: int
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, top self %, top inclusive %) from py-spy's collapsed stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")[1:]]  # [0] is the process
        if not frames:
            continue
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            if f.split(":", 1)[0] in OURS:
                incl[f] += n
    pct = 100.0 / total if total else 0.0
    # Skip the wrappers every sample passes through (cli, pipeline.convert).
    incl = collections.Counter({f: n for f, n in incl.items() if n < 0.95 * total})
    return (
        total,
        [(f, n * pct) for f, n in self_t.most_common(top)],
        [(f, n * pct) for f, n in incl.most_common(top)],
    )


def main(argv: list[str] | None = None) -> int:
    """Profile one conversion and print the top functions."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--input", choices=("raw", "pcap"), default="raw")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    ap.add_argument("--extra", default="", help="extra convert options, e.g. --no-comments")
    args = ap.parse_args(argv)
    raw, pcap, _ = gen.ensure(args.messages, args.seed)
    src = raw if args.input == "raw" else pcap
    bindir = Path(sys.executable).parent
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"profile-{args.input}-{args.messages}"
    with tempfile.TemporaryDirectory(prefix="hep2pcap-prof-") as tmp:
        out = Path(tmp) / "out.pcapng"
        convert = [sys.executable, "-m", "hep2pcap", "convert", str(src), "-w", str(out), "-q"]
        convert += args.extra.split()
        if args.tool == "pyinstrument":
            exe = bindir / "pyinstrument"
            if not exe.exists():
                sys.exit("pyinstrument missing: make install-dev")
            text = stem.with_suffix(".pyinstrument.txt")
            cmd = [str(exe), "-o", str(text), "-r", "text", "-m", *convert[2:]]
            subprocess.run(cmd, check=True)
            print(text.read_text())
            return 0
        spy = bindir / "py-spy" if (bindir / "py-spy").exists() else shutil.which("py-spy")
        if spy is None:
            sys.exit("py-spy missing: make install-dev")
        folded = stem.with_suffix(".folded")
        cmd = [str(spy), "record", "--format", "raw", "--function", "--rate", str(args.rate)]
        cmd += ["-o", str(folded), "--", *convert]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    total, top_self, top_incl = summarise(folded, args.top)
    print(f"py-spy, {args.input} input, {args.messages} messages: {total} samples ({folded})")
    print(f"\n{'self %':>7}  function")
    for f, p in top_self:
        print(f"{p:7.1f}  {f}")
    print(f"\n{'incl %':>7}  function")
    for f, p in top_incl:
        print(f"{p:7.1f}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
