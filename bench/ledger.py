"""The cost ledger (issue 12): microseconds of CPU per message for each stage of a conversion,
for both frame engines, so the next bottleneck is named by a number.

Stages, in the order a message meets them (``hep2pcap convert``, two processes by default):

* read      — the input file cut into records (raw HEP deframing or pcap parsing);
* decode    — ``hep.decode`` of each record;
* accept    — auth / payload type / time checks and counters (``pipeline.iter_messages``);
* repair    — SIP re-cut over TCP/TLS and truncation marks (``repair.repair_sip``);
* hand-over — what crossing between the two processes costs: the child pickles each batch of
              512 items, the parent unpickles it and rebuilds each message (the pipe's system
              calls are not in it: measured as part of the whole-process CPU, see run.py);
* window    — the reorder window (deque + heap) releasing messages in time order;
* frames    — the per-message Python before the engine: TCP/IP-id state
              (``FrameBuilder.plan``), the comment, counters, the packet tuple;
* blocks    — the engine call: frames, checksums and pcapng EPBs of each batch;
* write     — handing the blocks to the output file (1 MiB BlockFile, a real file).

Front stages (read … hand-over) are measured streaming, each as the difference between a
pipeline with and without it (best of ``--repeat``); back stages on the messages held in memory
(so page faults of the first allocation are not counted). CPU time (``process_time``) of this
one process; the machine's load does not change it much, but a loaded machine still adds a
few percent. Used by run.py (``make bench``); runs alone too:

    python bench/ledger.py [-n 100000] [--input raw|pcap] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen

from hep2pcap import engine
from hep2pcap.hep import HepMessage, decode
from hep2pcap.items import Tick
from hep2pcap.offload import _FIELDS_OF, BATCH
from hep2pcap.pcapng import LINKTYPE_ETHERNET, PcapngWriter
from hep2pcap.pipeline import Converter, Options, _Reporter, iter_messages, messages
from hep2pcap.repair import ARRIVAL_STEP
from hep2pcap.rotate import BlockFile
from hep2pcap.sources import open_inputs
from hep2pcap.stats import Stats

STAGES = ("read", "decode", "accept", "repair", "hand-over", "window", "frames", "blocks", "write")


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _records(path: Path, stack: ExitStack) -> Iterator[Any]:
    for source in open_inputs((str(path),), stack, []):
        yield from source


def front(path: Path, repeat: int) -> tuple[int, dict[str, float]]:
    """CPU seconds of the front stages (cumulative pipelines, then differences)."""
    options = Options()
    n = 0

    def read() -> None:
        nonlocal n
        with ExitStack() as stack:
            n = sum(1 for _ in _records(path, stack))

    def read_decode() -> None:
        with ExitStack() as stack:
            dopts = options.decode
            for rec in _records(path, stack):
                decode(rec.data, rec.ts_us, dopts)

    def accept() -> None:
        import itertools

        with ExitStack() as stack:
            reporter = _Reporter(Stats(), False, 5)
            for source in open_inputs((str(path),), stack, []):
                for _ in iter_messages(source, options, reporter, itertools.count(0, ARRIVAL_STEP)):
                    pass

    def repair() -> None:
        with ExitStack() as stack:
            for _ in messages(open_inputs((str(path),), stack, []), options, Stats()):
                pass

    def hand_over() -> None:
        fields_of, loads, dumps, message = _FIELDS_OF, pickle.loads, pickle.dumps, HepMessage
        with ExitStack() as stack:
            batch: list[Any] = []

            def ship() -> None:
                for item in loads(dumps((0, batch), pickle.HIGHEST_PROTOCOL))[1]:
                    (item[0], item[1], message(*item[2]))

            for item in messages(open_inputs((str(path),), stack, []), options, Stats()):
                if not isinstance(item, Tick):
                    batch.append((item[0], item[1], fields_of(item[2])))
                if len(batch) >= BATCH:
                    ship()
                    batch = []
            ship()

    read_decode()  # the decoder's templates are learned on a first pass: every run starts warm
    t = [_best(f, repeat) for f in (read, read_decode, accept, repair, hand_over)]
    names = STAGES[:5]
    return n, {names[0]: t[0], **{names[i]: t[i] - t[i - 1] for i in range(1, 5)}}


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def back(path: Path, eng: engine.Engine, repeat: int) -> dict[str, float]:
    """CPU seconds of the back stages, on the messages held in memory."""
    options = Options()
    with ExitStack() as stack:
        items = [i for i in messages(open_inputs((str(path),), stack, []), options, Stats())]

    class WindowOnly(Converter):
        def _write(self, item: Any) -> None:
            pass

    class NoBlocks(Converter):
        def _emit(self) -> None:
            self._pending = []

    def run(conv_type: type[Converter], out: Any) -> None:
        writer = PcapngWriter(out, LINKTYPE_ETHERNET, engine=eng)
        conv = conv_type(writer, options, Stats(), engine=eng)
        for item in items:
            conv.push(item)
        conv.finish()
        writer.flush()

    def to_file() -> None:
        with (
            tempfile.TemporaryDirectory(prefix="hep2pcap-ledger-") as tmp,
            open(os.path.join(tmp, "out.pcapng"), "wb", buffering=0) as raw,
        ):
            run(Converter, BlockFile(raw, limit=1 << 20))

    t_window = _best(lambda: run(WindowOnly, _Sink()), repeat)
    t_frames = _best(lambda: run(NoBlocks, _Sink()), repeat)
    t_blocks = _best(lambda: run(Converter, _Sink()), repeat)
    t_write = _best(to_file, repeat)
    return {
        "window": t_window,
        "frames": t_frames - t_window,
        "blocks": t_blocks - t_frames,
        "write": t_write - t_blocks,
    }


def ledger(path: Path, repeat: int = 3) -> dict[str, Any]:
    """Per-stage µs per message for each engine built here."""
    n, f = front(path, repeat)
    engines = {"python": engine.PYTHON}
    if engine.NATIVE is not None:
        engines["native"] = engine.NATIVE
    result: dict[str, Any] = {"messages": n, "us_per_message": {}}
    for name, eng in engines.items():
        b = back(path, eng, repeat)
        stages = {**f, **b}
        us = {k: round(v / n * 1e6, 2) for k, v in stages.items()}
        us["total"] = round(sum(stages.values()) / n * 1e6, 2)
        us["front (child)"] = round(sum(f.values()) / n * 1e6, 2)
        us["back (parent)"] = round((sum(b.values()) + f["hand-over"] / 2) / n * 1e6, 2)
        result["us_per_message"][name] = us
    return result


def print_ledger(result: dict[str, Any]) -> None:
    """The ledger as a table (one column per engine)."""
    engines = list(result["us_per_message"])
    print(f"\nCost ledger, µs of CPU per message ({result['messages']:,} messages, one process):")
    print("| stage | " + " | ".join(engines) + " |")
    print("|---|" + "---:|" * len(engines))
    for stage in (*STAGES, "total", "front (child)", "back (parent)"):
        cells = " | ".join(f"{result['us_per_message'][e][stage]:.2f}" for e in engines)
        print(f"| {stage} | {cells} |")
    print(
        "(hand-over is split half and half in 'front (child)' / 'back (parent)' only in the "
        "last line; 'front (child)' counts all of it)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--input", choices=("raw", "pcap"), default="raw")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    raw, pcap, _ = gen.ensure(args.messages, args.seed)
    print_ledger(ledger(raw if args.input == "raw" else pcap, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
