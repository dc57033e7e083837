"""Shared pytest configuration: hypothesis profiles.

The byte builders the unit tests share live in ``hepbuild.py`` (importable by name, which a
``conftest`` module is not reliably once a subdirectory has its own conftest).
"""

from __future__ import annotations

import os

from hypothesis import settings

# STYLE §8: CI runs are reproducible (derandomize) and never flaky on slow machines.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
