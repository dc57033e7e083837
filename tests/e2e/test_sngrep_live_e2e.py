"""sngrep 1.6 watching a live capture: ``hep2pcap listen -w - | sngrep -I -``.

Found by experiment (issue 14) and kept true here: sngrep 1.6 reads a pcapng stream on stdin
as it grows ("Offline (Loading)" mode), showing each dialog about a second after its messages
arrive (listen flushes every second), TLS calls (written as TCP) included. Quitting sngrep
(q, then Yes) ends it; listen ends quietly at its next write. sngrep's screen is driven and
read through tmux on a private server socket; the processes are ended by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import FIXTURES, TIMEOUT_S, hep2pcap_cmd
from test_extcap import free_udp_port, udp_bound
from test_listen import hep

pytestmark = pytest.mark.e2e

DEADLINE_S = 20.0


def _tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        reason = "tmux is not installed ('make tools' installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Screen:
    """A detached tmux session on its own server socket, running one shell command."""

    def __init__(self, tmux: str, command: str, env: dict[str, str]) -> None:
        self.tmux = tmux
        self.socket = f"hep2pcap-test-{os.getpid()}-{time.monotonic_ns()}"
        self.env = env
        self._run("new-session", "-d", "-s", "t", "-x", "160", "-y", "40", command)
        self.pane_pid = int(self._run("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def _run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-L", self.socket, *args], capture_output=True, timeout=TIMEOUT_S,
            env=self.env, check=True,
        ).stdout.decode("utf-8", "replace")  # fmt: skip

    def text(self) -> str:
        return self._run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", "t", *keys)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            m = re.search(pattern, self.text())
            if m is not None:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} on sngrep's screen:\n{self.text()}")
            time.sleep(0.2)

    def processes(self) -> list[int]:
        """The pane's shell's children (the pipeline's processes), by PID."""
        with contextlib.suppress(OSError):
            path = f"/proc/{self.pane_pid}/task/{self.pane_pid}/children"
            return [int(p) for p in Path(path).read_text().split()]
        return []

    def close(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("kill-server")


@pytest.fixture
def screen(tmp_path: Path, sngrep: str) -> Iterator[tuple[Screen, int]]:
    tmux = _tmux()
    port = free_udp_port()
    listen = [*hep2pcap_cmd(), "listen", "-l", f"udp:127.0.0.1:{port}", "-w", "-", "-q"]
    command = f"{shlex.join([*listen, '--duration', '120'])} | {shlex.quote(sngrep)} -F -I -"
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}
    s = Screen(tmux, command, env)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not udp_bound(port):
            assert time.monotonic() < deadline, f"listen never bound: {s.text()}"
            time.sleep(0.05)
        yield s, port
    finally:
        s.close()


def _replay(sngrep: str, pcap: str, port: int) -> None:
    subprocess.run(
        [sngrep, "-F", "-N", "-q", "-I", str(FIXTURES / "sip" / pcap), "-H",
         f"udp:127.0.0.1:{port}"],
        capture_output=True, timeout=TIMEOUT_S, check=True,
    )  # fmt: skip


def test_sngrep_shows_dialogs_as_they_arrive(screen: tuple[Screen, int], sngrep: str) -> None:
    s, port = screen
    s.wait_for(r"Filename: stdin")
    _replay(sngrep, "call-register.pcap", port)
    s.wait_for(r"Dialogs: 2\b")
    _replay(sngrep, "call-ipv6.pcap", port)  # a later call shows up on the same screen
    s.wait_for(r"Dialogs: 3\b")
    s.wait_for(r"INVITE .*\[2001:db8:50::10\]:5060")
    s.keys("q")
    s.wait_for(r"Are you sure you want to quit")
    s.keys("Enter")
    # sngrep is gone; listen notices at its next write and ends quietly.
    deadline = time.monotonic() + DEADLINE_S
    while udp_bound(port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(hep(1), ("127.0.0.1", port))
        assert time.monotonic() < deadline, f"listen did not end: {s.text()}"
        time.sleep(0.3)
