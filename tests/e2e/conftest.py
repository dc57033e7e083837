"""Fixtures of the end-to-end tests: the real tools, or a skip (a failure under CI)."""

from __future__ import annotations

import os
import shutil

import pytest

# --- tools --------------------------------------------------------------------------------


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ('make tools' installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


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
