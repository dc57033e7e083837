"""hep2pcap's output for each fixture, as a normalised tshark dump, equals the golden file.

A difference is either a regression or an intended change: in the latter case run
``make golden`` and review the diff of fixtures/expected/*.tsv like code.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from e2e_support import EXPECTED, GOLDEN_CASES, golden_output

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_output_matches_golden(
    name: str, tmp_path: Path, tshark: str, wireshark_env: dict[str, str]
) -> None:
    golden = EXPECTED / f"{name}.tsv"
    assert golden.is_file(), f"{golden} missing: run 'make golden'"
    got = golden_output(tshark, wireshark_env, name, tmp_path)
    want = golden.read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                f"{golden.name} (golden)",
                f"{golden.name} (now)",
            )
        )
        pytest.fail(f"output differs from the golden (run 'make golden' if intended):\n{diff}")


def test_every_golden_has_a_case() -> None:
    """No stale golden files: each expected/*.tsv belongs to a case."""
    files = {p.name.removesuffix(".tsv") for p in EXPECTED.glob("*.tsv")}
    assert files == set(GOLDEN_CASES)
