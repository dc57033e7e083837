#!/usr/bin/env python3
"""Rewrite fixtures/expected/<case>.tsv: normalised tshark dumps of hep2pcap's output.

One file per case of ``GOLDEN_CASES`` (tests/e2e/e2e_support.py): hep2pcap converts the
fixture, tshark dumps the fields of ``GOLDEN_COLUMNS`` (frame number, time in µs, interface,
frame length, addresses, transport, ports, raw and relative TCP sequence numbers, TCP
payload length, SIP method / status / Call-ID, packet comment). tests/e2e/test_golden_e2e.py
compares the current output with these files; review their diff like code.

Usage: make golden   (or .venv/bin/python tests/make_golden.py [CASE ...])
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

from e2e_support import EXPECTED, GOLDEN_CASES, golden_output


def main(argv: list[str]) -> int:
    tshark = shutil.which("tshark")
    if tshark is None:
        print("make_golden: tshark is not installed ('make tools' installs it)", file=sys.stderr)
        return 1
    names = argv or list(GOLDEN_CASES)
    unknown = [n for n in names if n not in GOLDEN_CASES]
    if unknown:
        print(f"make_golden: unknown case(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    EXPECTED.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WIRESHARK_CONFIG_DIR": tmp}
        for name in names:
            text = golden_output(tshark, env, name, Path(tmp))
            path = EXPECTED / f"{name}.tsv"
            old = path.read_text() if path.exists() else None
            path.write_text(text)
            state = "unchanged" if old == text else "new" if old is None else "UPDATED"
            frames = text.count("\n") - 1
            print(f"{path.relative_to(EXPECTED.parents[1])}: {frames} frames, {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
