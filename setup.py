"""Build the optional native frame engine (hep2pcap/engine/_native.c).

Everything else is in pyproject.toml. Without a working C compiler (or Python headers) the
build says so in one line and installs the pure-Python engine, which writes the same bytes.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: the native engine is an optimisation."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        print(
            f"hep2pcap: native frame engine not built ({type(exc).__name__}); "
            "installing the pure-Python engine (same output, slower)",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "hep2pcap.engine._native",
            ["hep2pcap/engine/_native.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
