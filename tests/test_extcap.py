"""hep2pcap as a Wireshark extcap interface: the protocol's answers, the launcher, and a
capture into a fifo stopped by SIGTERM (tests/e2e/test_extcap_e2e.py runs the real tshark).

Nothing here touches the real ~/.config/wireshark: every install goes to a temp folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_accounting import isbs
from test_listen import hep
from test_rotate import read_pcapng

from hep2pcap import extcap
from hep2pcap.cli import cli

TIMEOUT_S = 20.0
_FIELD = re.compile(r"\{([a-z]+)=([^}]*)\}")


def _run(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def _lines(text: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(_FIELD.findall(rest))
        assert _FIELD.sub("", rest) == "", f"stray text in {line!r}"
        out.append((kind, fields))
    return out


def test_interfaces_dlts_and_config_answers() -> None:
    code, out, err = _run(["extcap", "--extcap-interfaces", "--extcap-version=4.0"])
    assert (code, err) == (0, "")
    lines = _lines(out)
    assert lines[0][0] == "extcap"
    assert {"version", "help"} <= lines[0][1].keys()
    assert lines[1] == ("interface", lines[1][1])
    assert lines[1][1]["value"] == "hep"
    code, out, err = _run(["extcap", "--extcap-interface", "hep", "--extcap-dlts"])
    assert (code, err) == (0, "")
    [(kind, dlt)] = _lines(out)
    assert (kind, dlt["number"], dlt["name"]) == ("dlt", "1", "EN10MB")
    code, out, err = _run(["extcap", "--extcap-interface", "hep", "--extcap-config"])
    assert (code, err) == (0, "")
    args = [f for k, f in _lines(out) if k == "arg"]
    values = [f for k, f in _lines(out) if k == "value"]
    calls = [a["call"] for a in args]
    assert calls == [
        "--port", "--bind", "--transport", "--password", "--tls-port", "--tls-cert",
        "--tls-key", "--call-id", "--host", "--method",
    ]  # fmt: skip
    assert [a["number"] for a in args] == [str(i) for i in range(len(args))]
    # every option the dialog offers is one the capture call accepts
    help_text = _run(["extcap", "--help"])[1]
    assert all(c in help_text for c in calls)
    transport = calls.index("--transport")
    assert {v["arg"] for v in values} == {str(transport)}
    assert [v["value"] for v in values] == list(extcap.TRANSPORTS)
    assert [v["value"] for v in values if v["default"] == "true"] == ["udp+tcp"]


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (extcap.CaptureOptions(), ["-l", "udp:127.0.0.1:9060", "-l", "tcp:127.0.0.1:9060"]),
        (extcap.CaptureOptions(bind="::", transport="udp", port=5), ["-l", "udp:[::]:5"]),
        (
            extcap.CaptureOptions(transport="tls", tls_cert="c", tls_key="k", call_id="", host="h"),
            ["-l", "tls:127.0.0.1:9061", "--tls-cert", "c", "--tls-key", "k", "--host", "h"],
        ),
    ],
)
def test_listen_args(opts: extcap.CaptureOptions, expected: list[str]) -> None:
    assert extcap.listen_args(opts) == ["-q", "-w", "-", *expected]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--install or --uninstall"),
        (["--extcap-interface", "eth0", "--extcap-dlts"], "expected 'hep'"),
        (["--extcap-interface", "hep", "--capture"], "--capture needs --fifo"),
        (
            ["--extcap-interface", "hep", "--capture", "--fifo", "/nonexistent/f",
             "--extcap-capture-filter", "udp"],
            "capture filters are not supported",
        ),
        (["--install", "--uninstall", "--dir", "/nonexistent"], "not both"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    code, out, err = _run(["extcap", *args])
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_install_runs_uninstall_and_never_replaces_a_stranger(tmp_path: Path) -> None:
    folder = tmp_path / "extcap"
    code, out, err = _run(["extcap", "--install", "--dir", str(folder)])
    assert (code, err) == (0, "")
    launcher = folder / extcap.LAUNCHER
    assert str(launcher) in out
    assert os.access(launcher, os.X_OK)
    r = subprocess.run(
        [str(launcher), "--extcap-interfaces"], capture_output=True, timeout=TIMEOUT_S, check=True
    )
    assert r.stdout.decode() == extcap.interfaces_text()
    assert r.stderr == b""
    assert _run(["extcap", "--install", "--dir", str(folder)])[0] == 0  # ours: replaced
    assert _run(["extcap", "--uninstall", "--dir", str(folder)])[0] == 0
    assert not launcher.exists()
    code, out, _ = _run(["extcap", "--uninstall", "--dir", str(folder)])
    assert (code, "nothing to remove" in out) == (0, True)
    launcher.write_text("#!/bin/sh\necho someone else's\n")
    for action in ("--install", "--uninstall"):
        code, _, err = _run(["extcap", action, "--dir", str(folder)])
        assert code == 1
        assert "not written by hep2pcap" in err
        assert launcher.read_text() == "#!/bin/sh\necho someone else's\n"


def test_install_into_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run(["extcap", "--install", "--dir", str(blocker / "extcap")])
    assert code == 1
    assert err.startswith("Error: ")
    assert err.count("\n") == 1


def test_default_folder_follows_wireshark(tmp_path: Path) -> None:
    env = {"PATH": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")}
    assert extcap.default_folder(env) == tmp_path / "x" / "wireshark" / "extcap"
    env.pop("XDG_CONFIG_HOME")
    assert extcap.default_folder(env) == tmp_path / ".config" / "wireshark" / "extcap"


# --- a capture, as Wireshark starts it --------------------------------------------------------


def free_udp_port() -> int:
    """A loopback UDP port nobody holds now (the extcap is told its port, as by Wireshark)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def udp_bound(port: int) -> bool:
    """Whether some socket is bound to 127.0.0.1:port (Linux /proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp", encoding="ascii") as f:
        return any(line.split()[1] == want for line in list(f)[1:])


def wait_for(cond: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/net/udp").exists(), reason="needs Linux /proc/net/udp")
def test_capture_into_a_fifo_then_sigterm(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def read() -> None:
        with open(fifo, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hep2pcap", "extcap", "--capture", "--extcap-interface", "hep",
         "--fifo", str(fifo), "--port", str(port), "--transport", "udp", "--call-id",
         "call-2@test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: udp_bound(port) or proc.poll() is not None, "the listener")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(4):
                s.sendto(hep(i), ("127.0.0.1", port))
        wait_for(lambda: b"call-2@test" in got, "the kept call in the fifo")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT_S)
    reader.join(TIMEOUT_S)
    assert proc.returncode == 0
    assert err == b""  # Wireshark shows any stderr as an error
    assert out == b""
    packets, sections = read_pcapng(bytes(got))
    assert sections == 1
    assert [b"call-2@test" in p[2] for p in packets] == [True]
    stats = isbs(bytes(got))
    assert stats[0][1].received == 4
    assert sum(st.delivered or 0 for _, st in stats) == 1


def test_capture_error_is_one_line_on_stderr(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: fifo.read_bytes(), daemon=True)
    reader.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "hep2pcap", "extcap", "--capture", "--extcap-interface",
             "hep", "--fifo", str(fifo), "--port", str(port), "--transport", "udp"],
            capture_output=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    reader.join(TIMEOUT_S)
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "cannot bind" in err
    assert err.count("\n") == 1
