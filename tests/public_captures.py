"""The optional public HEP captures (hep-wireshark samples), found in one place.

They live beside the checkout, in ``../shared/fixtures-public`` (never copied into this
repository; see fixtures/README.md). ``HEP2PCAP_PUBLIC_CAPTURES`` names another folder;
``make unit`` points it at a folder that does not exist, so every run proves that a clone
with nothing beside it passes. Call :func:`public_capture` inside a test, never at import
or collection time: a missing capture skips the test and says where it looked. What these
captures cover is also covered by fixtures of our own (fixtures/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The environment variable that overrides where the public captures are.
ENV = "HEP2PCAP_PUBLIC_CAPTURES"
_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures-public"


def public_dir() -> Path:
    """The folder the public captures are looked for in (it may not exist)."""
    override = os.environ.get(ENV)
    return Path(override) if override else _DEFAULT


def public_capture(name: str) -> Path:
    """The path of one public capture; skips the calling test when it is absent."""
    path = public_dir() / name
    if not path.is_file():
        pytest.skip(f"public capture {name} not found in {public_dir()} (optional; ${ENV})")
    return path
