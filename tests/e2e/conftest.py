"""Fixtures of the end-to-end tests: the real tools, or a skip (a failure under CI)."""

from __future__ import annotations

import os

import pytest
from realsenders import require as _require_tool

# --- tools --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of tshark; skip (fail under CI) when it is missing."""
    return _require_tool("tshark")


@pytest.fixture(scope="session")
def sngrep() -> str:
    """Path of sngrep; skip (fail under CI) when it is missing."""
    return _require_tool("sngrep")


@pytest.fixture(scope="session")
def wireshark_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for tshark: an empty personal configuration directory."""
    conf = tmp_path_factory.mktemp("wireshark-config")
    return {**os.environ, "WIRESHARK_CONFIG_DIR": str(conf)}
