"""hep2pcap vs sngrep: offline conversion and live reception, with a correctness gate.

Offline: ``hep2pcap convert`` on N messages from a raw HEPv3 dump and from a pcap of HEP over
UDP, and ``sngrep -I FILE.pcap -E -N -q -l 10000000 -O out.pcap`` on the same pcap, each run
``--runs`` times in a fresh child (median wall time, messages/s, peak RSS from wait4).
Every hep2pcap run is gated: the summary says every message was read and written, the output
holds exactly one frame per SIP message, the outputs of all runs are identical, and tshark with
checksum validation finds no bad checksum, TCP analysis flag or malformed frame (all frames up
to --tshark-full, the first --tshark-sample frames beyond). A fast wrong result fails the run.

Live (only when ``hep2pcap listen`` exists): see live.py.

Results: a table on stdout and bench/results/<UTC timestamp>.json. Exit status 1 when a gate
failed, 2 when a required tool is missing.

Usage: python bench/run.py [--quick] [--runs 3] [--sizes 100000,1000000] [--no-live]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
from common import (
    Measured,
    count_frames,
    loadavg_1m,
    measure,
    parse_summary,
    tool_version,
    tshark_gate,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SNGREP_LIMIT = 10_000_000


def _hep2pcap_exe() -> str:
    here = Path(sys.executable).parent / "hep2pcap"
    if here.exists():
        return str(here)
    found = shutil.which("hep2pcap")
    if found is None:
        sys.exit("hep2pcap is not installed in this Python's environment (make install-dev)")
    return found


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _median(runs: list[Measured], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in runs))


def _summarise(runs: list[Measured], messages: int) -> dict[str, Any]:
    wall = _median(runs, "wall_s")
    return {
        "wall_s": round(wall, 3),
        "msg_per_s": round(messages / wall) if wall else None,
        "peak_rss_mib": round(max(r.maxrss_kib for r in runs) / 1024, 1),
        "cpu_s": round(statistics.median(r.user_s + r.sys_s for r in runs), 3),
        "tree_rss_mib": round(max(r.tree_rss_kib for r in runs) / 1024, 1),
        "tree_pss_mib": round(max(r.tree_pss_kib for r in runs) / 1024, 1),
        "walls_s": [round(r.wall_s, 3) for r in runs],
    }


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_hep2pcap(
    exe: str,
    label: str,
    src: Path,
    n: int,
    args: argparse.Namespace,
    work: Path,
    engine: str = "native",
) -> dict[str, Any]:
    """Median of ``args.runs`` conversions of ``src``, gated; a dict for the JSON.

    ``engine`` "python" runs the pure-Python frame engine (HEP2PCAP_ENGINE=python).
    """
    tool = "hep2pcap" if engine == "native" else "hep2pcap-py"
    row: dict[str, Any] = {"tool": tool, "input": label, "messages": n, "engine": engine}
    runs: list[Measured] = []
    digests: set[str] = set()
    failures: list[str] = []
    out = work / f"hep2pcap-{label}-{n}.pcapng"
    for i in range(args.runs):
        out.unlink(missing_ok=True)
        load = loadavg_1m()
        os.environ["HEP2PCAP_ENGINE"] = engine
        try:
            m = measure([exe, "convert", str(src), "-w", str(out)], timeout_s=args.timeout)
        finally:
            del os.environ["HEP2PCAP_ENGINE"]
        row.setdefault("load_1m_before", []).append(load)
        if m.rc != 0 or m.timed_out:
            if "not implemented" in m.stderr:
                row["skipped"] = f"{label} input not supported yet: {_tail(m.stderr, 1)}"
                return row
            failures.append(
                f"run {i + 1}: exit {m.rc}{' (timeout)' if m.timed_out else ''}: {_tail(m.stderr)}"
            )
            break
        runs.append(m)
        summary = parse_summary(m.stderr)
        if summary != (n, n):
            failures.append(f"run {i + 1}: summary says read/wrote {summary}, expected ({n}, {n})")
        frames = count_frames(out)
        row["frames"] = frames
        if frames != n:
            failures.append(f"run {i + 1}: {frames} frames in the output for {n} SIP messages")
        digests.add(_digest(out))
        if i == 0 and args.tshark:
            limit = None if n <= args.tshark_full else args.tshark_sample
            gate = tshark_gate(out, limit)
            row["tshark"] = dataclasses.asdict(gate)
            if not gate.ok:
                failures.append(
                    f"tshark: {gate.bad} bad frames (rc {gate.rc}), e.g. {gate.examples}"
                )
        print(
            f"  {tool:11} {label:4} {n:>8} run {i + 1}: {m.wall_s:6.2f} s, "
            f"{m.user_s + m.sys_s:6.2f} CPU s, {m.tree_pss_kib / 1024:6.1f} MiB PSS together",
            file=sys.stderr,
            flush=True,
        )
    if len(digests) > 1:
        failures.append(f"outputs differ between runs ({len(digests)} distinct)")
    row["digest"] = min(digests) if digests else None
    if runs:
        row.update(_summarise(runs, n))
    row["output_bytes"] = out.stat().st_size if out.exists() else None
    row["gate"] = "ok" if not failures else "FAIL"
    row["failures"] = failures
    if not args.keep:
        out.unlink(missing_ok=True)
    return row


def run_sngrep(pcap: Path, n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Median of ``args.runs`` sngrep HEP-in-pcap conversions of the same pcap."""
    row: dict[str, Any] = {"tool": "sngrep", "input": "pcap", "messages": n}
    out = work / f"sngrep-{n}.pcap"
    cmd = ["sngrep", "-I", str(pcap), "-E", "-N", "-q", "-l", str(SNGREP_LIMIT), "-O", str(out)]
    row["command"] = " ".join(cmd)
    runs: list[Measured] = []
    for i in range(args.runs):
        out.unlink(missing_ok=True)
        row.setdefault("load_1m_before", []).append(loadavg_1m())
        m = measure(cmd, timeout_s=args.timeout)
        if m.rc != 0 or m.timed_out:
            row["error"] = f"exit {m.rc}{' (timeout)' if m.timed_out else ''}: {_tail(m.stderr)}"
            break
        runs.append(m)
        print(
            f"  sngrep   pcap {n:>8} run {i + 1}: {m.wall_s:6.2f} s, {m.maxrss_mib:6.1f} MiB",
            file=sys.stderr,
            flush=True,
        )
    if runs:
        row.update(_summarise(runs, n))
        frames = count_frames(out) if out.exists() else 0
        row["frames"] = frames
        row["frames_per_message"] = round(frames / n, 3)
        if args.tshark and out.exists():
            gate = tshark_gate(out, min(n, 20_000))
            row["tshark_first_20k"] = {"bad": gate.bad, "examples": gate.examples[:1]}
    if not args.keep:
        out.unlink(missing_ok=True)
    return row


def run_sngrep_default_limit(pcap: Path, n: int, args: argparse.Namespace, work: Path) -> dict:
    """One sngrep run without -l: how far its default dialog limit lets it get."""
    out = work / f"sngrep-default-{n}.pcap"
    cmd = ["sngrep", "-I", str(pcap), "-E", "-N", "-q", "-O", str(out)]
    m = measure(cmd, timeout_s=args.timeout)
    frames = count_frames(out) if out.exists() else 0
    out.unlink(missing_ok=True)
    return {
        "command": " ".join(cmd),
        "rc": m.rc,
        "wall_s": round(m.wall_s, 3),
        "peak_rss_mib": round(m.maxrss_mib, 1),
        "frames": frames,
        "messages": n,
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_offline(rows: list[dict[str, Any]], runs: int) -> bool:
    """The offline table; the ratios are hep2pcap / sngrep (wall time, CPU time) for the same
    N. RSS is GNU time's (the larger process); "PSS all" is every process of the run
    together (sampled, shared pages split between the processes that share them).
    Returns False when the two frame engines wrote different files (a gate failure)."""
    print(f"\nOffline conversion (median of {runs} run(s), {os.cpu_count()} CPUs)")
    hdr = (
        f"{'messages':>9} {'tool':11} {'input':5} {'wall s':>8} {'msg/s':>9} {'RSS MiB':>8} "
        f"{'PSS all':>8} {'RSS all':>8} {'CPU s':>7} {'frames':>9} {'gate':5} "
        f"{'x sngrep':>8} {'CPU x':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    sng = {r["messages"]: r for r in rows if r["tool"] == "sngrep" and "wall_s" in r}
    for r in rows:
        if "skipped" in r:
            print(f"{r['messages']:>9} {r['tool']:11} {r['input']:5} skipped: {r['skipped']}")
            continue
        if "error" in r and "wall_s" not in r:
            print(f"{r['messages']:>9} {r['tool']:11} {r['input']:5} error: {r['error']}")
            continue
        ratio = cpu_ratio = None
        s = sng.get(r["messages"])
        if r["tool"] != "sngrep" and s and r.get("wall_s"):
            ratio = r["wall_s"] / s["wall_s"]
            cpu_ratio = r["cpu_s"] / s["cpu_s"] if s.get("cpu_s") else None
        gate = r.get("gate", "n/a")
        print(
            f"{r['messages']:>9} {r['tool']:11} {r['input']:5} {_fmt(r.get('wall_s'), '8.2f')} "
            f"{_fmt(r.get('msg_per_s'), '9,d')} {_fmt(r.get('peak_rss_mib'), '8.1f')} "
            f"{_fmt(r.get('tree_pss_mib'), '8.1f')} {_fmt(r.get('tree_rss_mib'), '8.1f')} "
            f"{_fmt(r.get('cpu_s'), '7.2f')} {_fmt(r.get('frames'), '9,d')} {gate:5} "
            f"{_fmt(ratio, '7.3f') + 'x' if ratio else '-':>8} "
            f"{_fmt(cpu_ratio, '5.2f') + 'x' if cpu_ratio else '-':>6}"
        )
    agree = True
    digests: dict[tuple[str, int], set[str]] = {}
    for r in rows:
        if r.get("digest"):
            digests.setdefault((r["input"], r["messages"]), set()).add(r["digest"])
    for (label, n), found in sorted(digests.items()):
        engines = sorted({r["tool"] for r in rows if r.get("digest") and r["input"] == label})
        if len(engines) > 1:
            same = "identical" if len(found) == 1 else "DIFFERENT"
            print(f"  outputs of {', '.join(engines)} on {label} {n}: {same} (blake2b)")
            if len(found) > 1:
                print(f"  GATE FAIL {label} {n}: the frame engines wrote different files")
                agree = False
    loads = [x for r in rows for x in r.get("load_1m_before", [])]
    if loads:
        print(
            f"  1-min load average before the runs: {min(loads):.2f}-{max(loads):.2f} "
            f"on {os.cpu_count()} CPUs (other work on the machine inflates wall time, "
            "not CPU s)"
        )
    for r in rows:
        if r["tool"] == "sngrep" and "frames_per_message" in r:
            bad = r.get("tshark_first_20k", {}).get("bad")
            print(
                f"  sngrep {r['messages']}: {r['frames']} frames = {r['frames_per_message']} "
                f"per message (it writes every HEP-in-pcap frame twice); tshark finds "
                f"{bad} bad of its first 20k frames (IPv4 header checksums)"
            )
        for f in r.get("failures", []):
            print(f"  GATE FAIL {r['tool']} {r['input']} {r['messages']}: {f}")
        t = r.get("tshark")
        if t:
            scope = "all frames" if t["checked_frames"] is None else f"first {t['checked_frames']}"
            print(
                f"  tshark gate {r['tool']} {r['input']} {r['messages']}: {scope}, "
                f"{t['bad']} bad, {t['seconds']:.1f} s"
            )
    return agree


def targets(rows: list[dict[str, Any]], live: list[dict[str, Any]] | None) -> list[str]:
    """The issue's targets, each marked met / NOT met / not measured."""
    out = []
    by = {(r["tool"], r["input"], r["messages"]): r for r in rows if "wall_s" in r}
    sizes = sorted({r["messages"] for r in rows})
    limits = {"hep2pcap": 0.10, "hep2pcap-py": 0.30}  # issue 12: native, pure Python
    for n in sizes:
        s = by.get(("sngrep", "pcap", n))
        for tool, limit in limits.items():
            for label in ("raw", "pcap"):
                h = by.get((tool, label, n))
                name = f"offline {n} {label}, {tool} wall <= {limit:.2f}x sngrep"
                if not (h and s):
                    if h or tool == "hep2pcap":
                        out.append(f"{name}: not measured")
                    continue
                ratio = h["wall_s"] / s["wall_s"]
                ok = ratio <= limit and h.get("gate") == "ok"
                out.append(
                    f"{name}: {'met' if ok else 'NOT met'} ({ratio:.3f}x, "
                    f"{h['wall_s']:.2f} s vs {s['wall_s']:.2f} s)"
                )
                if tool == "hep2pcap":
                    cpu = h["cpu_s"] / s["cpu_s"]
                    out.append(
                        f"offline {n} {label}, hep2pcap CPU <= 0.15x sngrep: "
                        f"{'met' if cpu <= 0.15 else 'NOT met'} ({cpu:.3f}x, "
                        f"{h['cpu_s']:.2f} vs {s['cpu_s']:.2f} CPU s)"
                    )
    for tool in limits:
        for label in ("raw", "pcap"):
            vals = [
                (n, r["tree_pss_mib"], r["tree_rss_mib"])
                for (t, i, n), r in sorted(by.items(), key=lambda kv: kv[0][2])
                if t == tool and i == label and "tree_pss_mib" in r
            ]
            if not vals:
                continue
            peak = max(v for _, v, _ in vals)
            flat = len(vals) < 2 or vals[-1][1] - vals[0][1] <= 8
            ok = peak <= 64 and flat
            detail = ", ".join(f"{n}: {p:.1f} MiB PSS ({r:.1f} RSS)" for n, p, r in vals)
            out.append(
                f"peak memory of all processes <= 64 MiB, flat ({tool} {label}): "
                f"{'met' if ok else 'NOT met'} ({detail})"
            )
    if live is None:
        out.append("live targets: not measured (hep2pcap listen not available or --no-live)")
    else:
        for r in live:
            if r["tool"] != "hep2pcap" or r.get("error"):
                continue
            if r["phase"] in ("target", "burst"):
                ok = r["lost"] == 0 and r["sent"] == r["planned"]
                out.append(
                    f"live {r['phase']} {r['rate']}/s x {r['seconds']} s: "
                    f"{'met' if ok else 'NOT met'} (sent {r['sent']}, written "
                    f"{r['written']}, lost {r['lost']}, kernel drops "
                    f"{r['kernel_drops']})"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if any hep2pcap run failed its correctness gate."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run, 100k messages, short live")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--sizes", default="200000,1000000", help="message counts, comma separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--inputs", default="raw,pcap", help="hep2pcap inputs: raw, pcap or both")
    ap.add_argument(
        "--engines", default="native,python", help="frame engines to run: native, python or both"
    )
    ap.add_argument(
        "--ledger-messages",
        type=int,
        default=200_000,
        help="messages for the cost ledger (0: no ledger)",
    )
    ap.add_argument("--no-sngrep", dest="sngrep", action="store_false")
    ap.add_argument(
        "--no-tshark",
        dest="tshark",
        action="store_false",
        help="skip the checksum gate (the run then cannot pass as verified)",
    )
    ap.add_argument(
        "--tshark-full",
        type=int,
        default=100_000,
        help="gate every frame of outputs up to this many messages",
    )
    ap.add_argument(
        "--tshark-sample",
        type=int,
        default=200_000,
        help="beyond that, gate the first this many frames",
    )
    ap.add_argument("--no-live", dest="live", action="store_false")
    ap.add_argument("--live-only", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep output files in --work-dir")
    ap.add_argument("--work-dir", type=Path, default=None, help="where outputs go (default: tmp)")
    ap.add_argument("--timeout", type=float, default=900, help="per-run timeout, seconds")
    ap.add_argument("--json", type=Path, default=None, help="results file (default: results/)")
    import live as live_mod  # the live options live with the live code

    live_mod.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 1
        args.sizes = "100000"
        live_mod.quick(args)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    inputs = [s for s in args.inputs.split(",") if s]
    engines = [s for s in args.engines.split(",") if s]

    missing = [t for t in ("tshark",) if args.tshark and shutil.which(t) is None]
    if missing:
        print(
            f"{', '.join(missing)} not found: install it (make tools) or pass --no-tshark",
            file=sys.stderr,
        )
        return 2
    if args.sngrep and shutil.which("sngrep") is None:
        print(
            "sngrep not found: the comparison rows are skipped (make tools installs it)",
            file=sys.stderr,
        )
        args.sngrep = False

    exe = _hep2pcap_exe()
    started = time.time()
    result: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "versions": {
            "hep2pcap": tool_version([exe, "--version"]),
            "git": _git_head(),
            "sngrep": tool_version(["sngrep", "-V"]),
            "tshark": tool_version(["tshark", "-v"]),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workloads": {},
        "offline": [],
        "live": None,
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="hep2pcap-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.live_only:
            for n in sizes:
                t0 = time.perf_counter()
                raw, pcap, meta = gen.ensure(n, args.seed)
                print(
                    f"workload {n}: {raw.name}, {pcap.name} ({time.perf_counter() - t0:.1f} s)",
                    file=sys.stderr,
                )
                result["workloads"][str(n)] = meta
                files = {"raw": raw, "pcap": pcap}
                for eng in engines:
                    for label in inputs:
                        row = run_hep2pcap(exe, label, files[label], n, args, work, eng)
                        failed |= row.get("gate") == "FAIL"
                        result["offline"].append(row)
                if args.sngrep:
                    result["offline"].append(run_sngrep(pcap, n, args, work))
            if args.sngrep and sizes and max(sizes) >= 200_000:
                n = max(sizes)
                result["sngrep_default_limit"] = run_sngrep_default_limit(
                    gen.paths(n, args.seed)[1], n, args, work
                )
            failed |= not print_offline(result["offline"], args.runs)
            d = result.get("sngrep_default_limit")
            if d:
                print(
                    f"  sngrep without -l on {d['messages']} messages: {d['frames']} frames "
                    f"written ({d['wall_s']:.1f} s): its default dialog limit stops it "
                    "silently"
                )
        if args.ledger_messages and not args.live_only:
            import ledger

            raw_path = gen.ensure(args.ledger_messages, args.seed)[0]
            result["ledger"] = ledger.ledger(raw_path)
            ledger.print_ledger(result["ledger"])
        if args.live:
            live_rows = live_mod.run_live(exe, args, work)
            if live_rows is not None:
                result["live"] = live_rows
                live_mod.print_live(live_rows)
                failed |= any(r.get("gate") == "FAIL" for r in live_rows)
    result["targets"] = targets(result["offline"], result["live"])
    print("\nTargets (issue 12):")
    for line in result["targets"]:
        print(f"  {line}")
    result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["failed"] = failed
    path = args.json or RESULTS_DIR / (
        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + ".json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {path}")
    if failed:
        print("FAILED: a hep2pcap run did not pass the correctness gate (see GATE FAIL above)")
    return 1 if failed else 0


def _git_head() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.decode().strip() or None


if __name__ == "__main__":
    sys.exit(main())
