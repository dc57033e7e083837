#!/usr/bin/env python3
"""Coverage-guided fuzzing of hep2pcap's input handling with atheris (libFuzzer), issue 6.

The rule every target checks: bad input only ever escapes as the error type the API
declares. ``hep.decode`` raises nothing but ``DecodeError``; ``HepDeframer`` nothing but
``DecodeError`` (and frames the same messages however the stream is cut); a pcap/pcapng
source raises ``InputError`` from its constructor at most and never while iterating; the
whole pipeline (``pipeline.convert`` over a raw or pcap source into a ``PcapngWriter``)
raises nothing but ``Hep2PcapError`` subclasses (``StrictError`` only with ``strict``).
Anything else propagates, and libFuzzer saves the input as a crash artifact.

Targets (the first byte of each input selects options, the rest is the data):

    hep      hep.decode with one of several DecodeOptions and reference times
    stream   HepDeframer fed the data in random chunk sizes, lenient/resync on or off
    pcap     PcapSource over the bytes, default and tiny memory bounds
    convert  sources detection (raw / pcap / pcapng, gzip) + pipeline.convert + PcapngWriter

Usage:
    .venv/bin/python tests/fuzz.py TARGET [libFuzzer args...]   # one target, seeds added
    .venv/bin/python tests/fuzz.py all --seconds 120 [--timeout 10] [--work DIR]
                                                                # every target, one by one
``all`` (what ``make fuzz`` runs) builds the seed corpus from fixtures/hep, fixtures/pcap and
fixtures/malformed into a work directory, runs each target in its own process for
``--seconds`` (libFuzzer ``-max_total_time``; ``-timeout`` catches hangs) and prints the
executed-case count per target. Crashes land in ``WORK/artifacts/``; each one found becomes a
regression test in tests/test_fuzz_regressions.py.

Throughput measured on 2 shared cores (CPython 3.11, atheris 3.0): hep ~41k cases/s, pcap
~10k/s, stream ~3-7k/s, convert ~2k/s. The default ``make fuzz`` (120 s per target) runs
about 6M cases in total; ``make fuzz FUZZ_SECONDS=600`` runs at least 1M cases in every
target (convert, the slowest, ~1.2M).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DIRS = [ROOT / "fixtures" / d for d in ("hep", "pcap", "malformed")]
TARGETS = ("hep", "stream", "pcap", "convert")
#: The stream target feeds inputs in pieces as small as 1 byte: long inputs only slow it down
#: (a 45 kB input is ~700 cases/s) without reaching more of the deframer.
MAX_LEN = {"stream": 16384}

# --- seed corpus ---------------------------------------------------------------------------


def _fixture_files() -> list[Path]:
    return sorted(
        p
        for d in FIXTURE_DIRS
        if d.is_dir()
        for p in d.iterdir()
        if p.is_file() and p.suffix not in (".tsv", ".md", ".json", ".py")
    )


def _split_messages(data: bytes) -> list[bytes]:
    from hep2pcap.stream import HepDeframer

    d = HepDeframer(lenient=True, resync=True)
    with contextlib.suppress(Exception):
        return d.feed(data)
    return []


def write_seeds(target: str, out: Path) -> int:
    """Write the seed corpus of one target into ``out``; return how many files."""
    out.mkdir(parents=True, exist_ok=True)
    seeds: list[bytes] = []
    for path in _fixture_files():
        data = path.read_bytes()
        if target == "hep":
            seeds.extend(_split_messages(data)[:40])
            if not data.startswith((b"HEP3", b"\xa1\xb2", b"\xd4\xc3", b"\x0a\x0d")):
                seeds.append(data[:4096])  # malformed single messages
        elif target == "pcap":
            if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x0a\x0d\x0d\x0a"):
                seeds.append(data)
        else:
            seeds.append(data)
    n = 0
    for i, seed in enumerate(dict.fromkeys(seeds)):
        for flags in (0, 1):  # the first byte picks the options
            (out / f"seed-{i:04d}-{flags}").write_bytes(bytes([flags]) + seed)
            n += 1
    return n


# --- targets -------------------------------------------------------------------------------


def _setup() -> dict[str, object]:
    """Import the package under atheris instrumentation and return the target functions."""
    import atheris

    with atheris.instrument_imports(include=["hep2pcap"]):
        from hep2pcap import hep
        from hep2pcap.errors import DecodeError, Hep2PcapError, InputError, Reason
        from hep2pcap.items import Problem, Record
        from hep2pcap.pcapng import LINKTYPE_RAW, PcapngWriter
        from hep2pcap.pipeline import Options, convert
        from hep2pcap.sources import GZIP_MAGIC, Gunzip, Prepended, _detect, read_up_to
        from hep2pcap.sources.pcapfile import PcapSource
        from hep2pcap.stream import HepDeframer

    import logging
    import random

    logging.getLogger("hep2pcap").disabled = True  # warnings are expected, not output

    decode_options = [
        hep.DecodeOptions(),
        hep.DecodeOptions(strict=True),
        hep.DecodeOptions(lenient=True, use_receive_time=True),
        hep.DecodeOptions(unknown_proto_udp=True, max_inflated=1024),
        hep.DecodeOptions(strict=True, lenient=True, use_receive_time=True, unknown_proto_udp=True),
    ]
    ref_times = [None, 0, 1_700_000_000_000_000, 2**40]

    def fuzz_hep(data: bytes) -> None:
        if not data:
            return
        opts = decode_options[data[0] % len(decode_options)]
        ref = ref_times[(data[0] >> 4) % len(ref_times)]
        try:
            msg = hep.decode(data[1:], ref, opts)
        except DecodeError:
            return
        # What decode returns must be what the rest of the pipeline relies on.
        assert len(msg.src_ip) in (4, 16), msg
        assert len(msg.src_ip) == len(msg.dst_ip), msg
        assert 0 <= msg.src_port <= 65535, msg
        assert 0 <= msg.dst_port <= 65535, msg
        assert msg.payload, "decode returned an empty payload"

    def feed_all(
        data: bytes, lenient: bool, resync: bool, sizes: list[int]
    ) -> tuple[list[bytes], object, object]:
        d = HepDeframer(lenient=lenient, resync=resync)
        out: list[bytes] = []
        error = None
        pos = 0
        i = 0
        try:
            while pos < len(data):
                size = sizes[i % len(sizes)]
                i += 1
                out.extend(d.feed(data[pos : pos + size]))
                pos += size
            d.eof()
        except DecodeError as exc:
            error = (exc.reason, exc.offset)
        problems = [(p.reason, p.offset) for p in d.problems]
        return out, error, problems

    def fuzz_stream(data: bytes) -> None:
        if not data:
            return
        flags, body = data[0], data[1:]
        lenient, resync = bool(flags & 1), bool(flags & 2)
        rng = random.Random(flags >> 2)
        sizes = [rng.choice((1, 2, 3, 5, 6, 7, 64, 1000, 70000)) for _ in range(16)]
        whole = feed_all(body, lenient, resync, [max(len(body), 1)])
        cut = feed_all(body, lenient, resync, sizes)
        for m in cut[0]:
            assert m[:4] in (b"HEP3", b"EEP3")
            assert int.from_bytes(m[4:6], "big") == len(m)
        # Framing must not depend on where the stream is cut.
        assert whole[0] == cut[0], ("messages differ", len(whole[0]), len(cut[0]))
        assert whole[1] == cut[1], ("errors differ", whole[1], cut[1])

    def _pcap_source(data: bytes, small: bool) -> PcapSource:
        if small:
            return PcapSource(
                "fuzz",
                io.BytesIO(data),
                hep_ports=(9060, 5060),
                max_flows=3,
                max_out_of_order_bytes=4096,
                max_fragment_datagrams=3,
                max_fragment_bytes=8192,
            )
        return PcapSource("fuzz", io.BytesIO(data))

    def fuzz_pcap(data: bytes) -> None:
        if not data:
            return
        try:
            source = _pcap_source(data[1:], bool(data[0] & 1))
        except InputError:
            return
        for item in source:
            assert type(item) in (Record, Problem), item

    pipeline_options = [
        Options(),
        Options(strict=True),
        Options(
            decode=hep.DecodeOptions(lenient=True, use_receive_time=True),
            payload_types=None,
            window_us=0,
            max_pending=2,
            linktype=LINKTYPE_RAW,
        ),
        Options(password=b"secret", comments=False),
    ]

    def fuzz_convert(data: bytes) -> None:
        if not data:
            return
        flags, body = data[0], data[1:]
        options = pipeline_options[flags % len(pipeline_options)]
        lenient = bool(flags & 4)
        try:
            stream: object = io.BytesIO(body)
            head = read_up_to(stream, 4)  # type: ignore[arg-type]
            stream = Prepended(head, stream)  # type: ignore[arg-type]
            if head[:2] == GZIP_MAGIC:
                stream = Gunzip("fuzz", stream)
                head = read_up_to(stream, 4)
                stream = Prepended(head, stream)
            source = _detect("fuzz", head, stream, lenient, None)
            out = io.BytesIO()
            writer = PcapngWriter(out, options.linktype, comments=options.comments)
            stats = convert([source], writer, options)
        except Hep2PcapError:
            return
        # More written than read only when a packet held several SIP messages (re-cut).
        assert stats.written <= stats.read or stats.warnings[Reason.SIP_SPLIT] > 0

    return {"hep": fuzz_hep, "stream": fuzz_stream, "pcap": fuzz_pcap, "convert": fuzz_convert}


def run_one(target: str, libfuzzer_args: list[str]) -> None:
    """Run one target in this process (atheris takes over; never returns normally)."""
    import atheris

    fn = _setup()[target]
    dirs = [a for a in libfuzzer_args if not a.startswith("-")]
    if not dirs:  # no corpus given: seeds into a fresh temp dir
        corpus = Path(tempfile.mkdtemp(prefix=f"hep2pcap-fuzz-{target}-"))
        write_seeds(target, corpus)
        libfuzzer_args = [*libfuzzer_args, str(corpus)]
    atheris.Setup([sys.argv[0], *libfuzzer_args], fn)
    atheris.Fuzz()


def run_all(seconds: int, timeout_s: int, work: Path, targets: list[str]) -> int:
    """Fuzz each target for ``seconds`` in its own process; print cases per target."""
    work.mkdir(parents=True, exist_ok=True)
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    rows = []
    failed = False
    for target in targets:
        corpus = work / "corpus" / target
        seeds = write_seeds(target, corpus)
        log_path = work / f"{target}.log"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            target,
            f"-max_total_time={seconds}",
            f"-timeout={timeout_s}",
            "-rss_limit_mb=1024",
            f"-max_len={MAX_LEN.get(target, 70000)}",
            f"-artifact_prefix={artifacts}/{target}-",
            "-print_final_stats=1",
            str(corpus),
        ]
        print(f"fuzz {target}: {seeds} seeds, {seconds} s ...", flush=True)
        start = time.monotonic()
        with open(log_path, "wb") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        elapsed = time.monotonic() - start
        text = log_path.read_text(errors="replace")
        runs = re.findall(r"stat::number_of_executed_units: (\d+)", text) or re.findall(
            r"Done (\d+) runs", text
        )
        cases = int(runs[-1]) if runs else 0
        crashes = sorted(p.name for p in artifacts.glob(f"{target}-*"))
        rows.append((target, cases, elapsed, rc, crashes))
        if rc != 0:
            failed = True
            print(f"  exit {rc}; see {log_path}", flush=True)
    print(f"{'target':<8} {'cases':>10} {'seconds':>8} {'cases/s':>8}  crashes")
    for target, cases, elapsed, rc, crashes in rows:
        note = ", ".join(crashes) if crashes else ("none" if rc == 0 else f"exit {rc}")
        print(f"{target:<8} {cases:>10} {elapsed:>8.0f} {cases / elapsed:>8.0f}  {note}")
    total = sum(r[1] for r in rows)
    print(f"{'total':<8} {total:>10} {sum(r[2] for r in rows):>8.0f}   artifacts: {artifacts}")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in TARGETS:
        run_one(sys.argv[1], sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("mode", choices=["all", "seeds"])
    parser.add_argument("--seconds", type=int, default=120, help="per target")
    parser.add_argument("--timeout", type=int, default=10, help="seconds for one input (hang)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hep2pcap-fuzz")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if args.mode == "seeds":
        for t in targets:
            print(t, write_seeds(t, args.work / "corpus" / t))
        return 0
    return run_all(args.seconds, args.timeout, args.work, targets)


if __name__ == "__main__":
    sys.exit(main())
