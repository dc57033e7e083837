"""The click layer: exit codes, stdout vs stderr, one clear line on user errors."""

from __future__ import annotations

import gzip
import ipaddress
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hep2pcap import __version__, engine, hep
from hep2pcap.cli import cli

A = ipaddress.ip_address("192.0.2.1").packed
B = ipaddress.ip_address("192.0.2.2").packed
T0 = 1_700_000_000_000_000
INVITE = b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: c1\r\nContent-Length: 0\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nCall-ID: c1\r\nContent-Length: 0\r\n\r\n"


def _msg(payload: bytes, ts_us: int, **kw: object) -> bytes:
    fields: dict[str, object] = {
        "version": 3,
        "ip_proto": 17,
        "src_ip": A,
        "dst_ip": B,
        "src_port": 5060,
        "dst_port": 5060,
        "ts_us": ts_us,
        "payload": payload,
        "capture_id": 2001,
    }
    fields.update(kw)
    return hep.encode(hep.HepMessage(**fields))  # type: ignore[arg-type]


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    path = tmp_path / "call.hep"
    path.write_bytes(_msg(INVITE, T0) + _msg(OK, T0 + 1000, src_ip=B, dst_ip=A))
    return path


def _run(args: list[str], stdin: bytes | None = None) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout_bytes, result.stderr


def _epb_count(data: bytes) -> int:
    count, pos = 0, 0
    while pos + 8 <= len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        count += btype == 6
        pos += blen
    assert pos == len(data), "blocks must tile the file exactly"
    return count


def test_version_names_the_frame_engine() -> None:
    result = CliRunner().invoke(cli, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0
    assert f" {__version__}; frame engine: " in result.stdout
    name = "native (C)" if engine.DEFAULT is engine.NATIVE else "pure Python"
    assert name in result.stdout


def test_convert_writes_file_and_summary_on_stderr(dump: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    code, stdout, stderr = _run(["convert", str(dump), "-w", str(out)])
    assert code == 0
    assert stdout == b""
    assert stderr.startswith("read 2, wrote 2, skipped 0, dropped 0")
    assert _epb_count(out.read_bytes()) == 2


def test_convert_to_stdout_keeps_stdout_pure_pcapng(dump: Path) -> None:
    code, stdout, stderr = _run(["convert", str(dump), "-w", "-"])
    assert code == 0
    assert stdout[:4] == bytes.fromhex("0a0d0d0a")
    assert _epb_count(stdout) == 2
    assert "wrote 2" in stderr


def test_stdin_and_gzip_inputs(dump: Path, tmp_path: Path) -> None:
    gz = tmp_path / "call.hep.gz"
    gz.write_bytes(gzip.compress(dump.read_bytes()))
    code, stdout, _ = _run(["convert", "-", str(gz), "-w", "-"], stdin=dump.read_bytes())
    assert code == 0
    assert _epb_count(stdout) == 4


def test_classic_pcap_format(dump: Path) -> None:
    code, stdout, _ = _run(["convert", str(dump), "-w", "-", "--format", "pcap"])
    assert code == 0
    magic, _, _, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", stdout)
    assert (magic, linktype) == (0xA1B2C3D4, 1)
    assert snaplen >= 65535


def test_missing_input_is_one_line_exit_1(tmp_path: Path) -> None:
    code, _, stderr = _run(["convert", str(tmp_path / "nope.hep"), "-w", str(tmp_path / "o")])
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope.hep'}: cannot open: No such file or directory"
    ]
    assert not (tmp_path / "o").exists(), "no output is created when an input cannot be opened"


def test_unknown_format_is_one_line_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    code, _, stderr = _run(["convert", str(junk), "-w", "-"])
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1
    assert "unknown format" in stderr
    assert "Traceback" not in stderr


def test_hepv2_raw_file_is_framed_by_its_sip(tmp_path: Path) -> None:
    # issue 11: v1/v2 back to back (Kamailio over HEP/TCP, saved with nc) is read like a
    # stream; a v2 whose payload is not SIP cannot be framed and is counted.
    v2 = tmp_path / "v2.bin"
    one = hep.encode(hep.HepMessage(2, 17, A, B, 5060, 5060, T0, INVITE))
    v2.write_bytes(one * 2)
    code, stdout, stderr = _run(["convert", str(v2), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 2)
    v2.write_bytes(hep.encode(hep.HepMessage(2, 17, A, B, 5060, 5060, T0, b"\0\1junk\n")))
    code, stdout, stderr = _run(["convert", str(v2), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 0)
    assert "v12_on_stream=1" in stderr


def test_unwritable_output_is_exit_1(dump: Path, tmp_path: Path) -> None:
    code, _, stderr = _run(["convert", str(dump), "-w", str(tmp_path / "no" / "dir.pcapng")])
    assert code == 1
    assert "cannot write" in stderr


def test_usage_error_is_exit_2(dump: Path) -> None:
    code, _, stderr = _run(["convert", str(dump)])
    assert code == 2
    assert "Missing option '-w'" in stderr


def test_strict_fails_on_malformed_after_writing_what_came_before(tmp_path: Path) -> None:
    bad = bytearray(_msg(OK, T0 + 1))
    bad[4:6] = (5).to_bytes(2, "big")  # total length < 6: a framing error in a stream
    path = tmp_path / "bad.hep"
    path.write_bytes(_msg(INVITE, T0) + bytes(bad))
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"an earlier capture")
    code, _, stderr = _run(["convert", str(path), "-w", str(out), "--strict"])
    assert code == 1
    assert "length_too_small" in stderr
    assert "--strict" in stderr
    assert len(stderr.splitlines()) == 1
    assert out.read_bytes() == b"an earlier capture", "a failed run replaces nothing"
    partial = tmp_path / "out.pcapng.partial"
    assert f"the 1 messages written before are in {partial}" in stderr
    assert _epb_count(partial.read_bytes()) == 1, "the message before the bad one is kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hep", "out.pcapng", partial.name]
    code, _, stderr = _run(["convert", str(path), "-w", str(out)])
    assert code == 0
    assert "input: length_too_small=1" in stderr


def test_password_exact_match(tmp_path: Path) -> None:
    path = tmp_path / "auth.hep"
    path.write_bytes(
        _msg(INVITE, T0, auth_key=b"secret")
        + _msg(INVITE, T0 + 1, auth_key=b"secret-but-longer")
        + _msg(INVITE, T0 + 2, auth_key=b"secre")
        + _msg(INVITE, T0 + 3)
    )
    code, stdout, stderr = _run(["convert", str(path), "-w", "-", "--password", "secret"])
    assert code == 0
    assert _epb_count(stdout) == 1
    assert "dropped 3 (auth_mismatch=2, auth_missing=1)" in stderr
    assert b"secret" not in stdout, "the auth key never reaches the output"


def test_payload_types_default_include_exclude(tmp_path: Path) -> None:
    path = tmp_path / "types.hep"
    path.write_bytes(
        _msg(INVITE, T0)
        + _msg(b"SYSLOG: hello", T0 + 1, payload_type=100)
        + _msg(b'{"mos": 4.2}', T0 + 2, payload_type=0x20)
    )
    code, stdout, stderr = _run(["convert", str(path), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 2)  # SIP and LOG by default
    assert "skipped 1 (unsupported_payload_type=1)" in stderr
    assert "payload types not written: QoS-JSON(32)=1" in stderr
    for name in ("32", "0x20", "qos-json", "all"):
        code, stdout, _ = _run(["convert", str(path), "-w", "-", "--include-type", name])
        assert (code, _epb_count(stdout)) == (0, 3), name
    for name in ("100", "log", "LOG"):
        code, stdout, _ = _run(["convert", str(path), "-w", "-", "--exclude-type", name])
        assert (code, _epb_count(stdout)) == (0, 1), name
    args = ["--include-type", "all", "--exclude-type", "sip"]
    code, stdout, _ = _run(["convert", str(path), "-w", "-", *args])
    assert (code, _epb_count(stdout)) == (0, 2)
    code, _, stderr = _run(["convert", str(path), "-w", "-", "--include-type", "syslog"])
    assert code == 2
    assert "not a payload type" in stderr
    code, _, stderr = _run(["convert", str(path), "-w", "-", "--exclude-type", "300"])
    assert code == 2
    assert "outside 0-255" in stderr


def test_no_comments(dump: Path) -> None:
    _, with_comments, _ = _run(["convert", str(dump), "-w", "-"])
    _, without, _ = _run(["convert", str(dump), "-w", "-", "--no-comments"])
    assert b"proto 17 (UDP)" in with_comments
    assert b"proto 17 (UDP)" not in without


def test_empty_input_writes_an_empty_capture(tmp_path: Path) -> None:
    empty = tmp_path / "empty.hep"
    empty.write_bytes(b"")
    code, stdout, stderr = _run(["convert", str(empty), "-w", "-"])
    assert code == 0
    assert _epb_count(stdout) == 0
    assert stderr.startswith("read 0, wrote 0")


def test_quiet_prints_nothing(dump: Path, tmp_path: Path) -> None:
    code, _, stderr = _run(["convert", str(dump), "-w", str(tmp_path / "o.pcapng"), "-q"])
    assert (code, stderr) == (0, "")


def test_short_help_and_python_m() -> None:
    code, stdout, _ = _run(["convert", "-h"])
    assert code == 0
    assert b"Example: hep2pcap convert" in stdout
    proc = subprocess.run(
        [sys.executable, "-m", "hep2pcap", "--help"], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert b"convert" in proc.stdout


def test_full_disk_is_one_line_exit_1(dump: Path) -> None:
    code, _, stderr = _run(["convert", str(dump), "-w", "/dev/full"])
    assert code == 1
    assert stderr.strip().splitlines() == [
        "Error: /dev/full: cannot write: No space left on device"
    ]


def test_gzip_cut_short_keeps_every_whole_message(tmp_path: Path) -> None:
    # A dump still being written: the gzip stream stops mid-way.
    data = b"".join(_msg(INVITE, T0 + i) for i in range(200))
    packed = gzip.compress(data)
    cut = tmp_path / "cut.hep.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    code, stdout, stderr = _run(["convert", str(cut), "-w", "-"])
    assert code == 0
    assert "compressed data ends early" in stderr
    whole = len(zlib.decompressobj(31).decompress(packed[: len(packed) * 2 // 3])) // len(
        _msg(INVITE, T0)
    )
    assert whole > 50
    assert _epb_count(stdout) == whole


def test_corrupt_gzip_is_one_line_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hep.gz"
    bad.write_bytes(gzip.compress(b"x")[:10] + bytes(range(256)) * 4)
    code, _, stderr = _run(["convert", str(bad), "-w", "-"])
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1
    assert "corrupt gzip data" in stderr


def test_concatenated_gzip_members(dump: Path, tmp_path: Path) -> None:
    two = tmp_path / "two.hep.gz"
    two.write_bytes(gzip.compress(dump.read_bytes()) * 2)
    code, stdout, _ = _run(["convert", str(two), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 4)


def test_eep3_dump_needs_lenient(tmp_path: Path) -> None:
    eep = tmp_path / "eep.hep"
    eep.write_bytes(b"EEP3" + _msg(INVITE, T0)[4:])
    code, _, stderr = _run(["convert", str(eep), "-w", "-"])
    assert code == 1
    assert "--lenient" in stderr
    code, stdout, stderr = _run(["convert", str(eep), "-w", "-", "--lenient"])
    assert (code, _epb_count(stdout)) == (0, 1)
    assert "eep_alias=1" in stderr


def _v1_pcap(tmp_path: Path, payload: bytes, count: int = 1) -> Path:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    v1 = hep.encode(hep.HepMessage(1, 17, A, B, 5060, 5060, None, payload))
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=5555) / v1
    pkt.time = T0 / 1e6
    src = tmp_path / "v1.pcap"
    wrpcap(str(src), [pkt] * count)
    return src


def test_hepv1_on_another_port_found_by_its_signature(tmp_path: Path) -> None:
    # issue 11: v1/v2 whose payload starts with a SIP start line is HEP on any UDP port.
    src = _v1_pcap(tmp_path, INVITE)
    code, stdout, stderr = _run(["convert", str(src), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 1)
    assert "ts_receive_time=1" in stderr  # HEPv1 carries no time: the capture time is used
    assert b"notes: ts_receive_time" in stdout


def test_hep_port_for_hepv1_that_is_not_certain(tmp_path: Path) -> None:
    src = _v1_pcap(tmp_path, b"\x00\x01 not a SIP start line\r\n", count=3)
    code, stdout, stderr = _run(["convert", str(src), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 0)
    assert "not_hep=3" in stderr
    assert (
        f"no HEP in {src}: 3 UDP datagrams on port 5555 look like HEPv1: pass --hep-port 5555"
        in stderr
    )
    code, stdout, stderr = _run(["convert", str(src), "-w", "-", "--hep-port", "5555"])
    assert (code, _epb_count(stdout)) == (0, 3)
    assert "no HEP in" not in stderr


def test_strict_error_is_printed_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.hep"
    bad = bytearray(_msg(OK, T0))
    bad[6:12] = b"\x00\x00\x00\x00\x00\x00"  # chunk type 0: a malformed message
    path.write_bytes(bytes(bad))
    code, _, stderr = _run(["convert", str(path), "-w", "-", "--strict"])
    assert code == 1
    assert stderr.count("chunk_") == 1, stderr


def test_reader_closing_stdout_ends_quietly(tmp_path: Path) -> None:
    # `hep2pcap convert big.hep -w - | head -c 1000`: exit 0, nothing on stderr.
    big = tmp_path / "big.hep"
    big.write_bytes(b"".join(_msg(INVITE + b"x" * 1000, T0 + i) for i in range(3000)))
    conv = subprocess.Popen(
        [sys.executable, "-m", "hep2pcap", "convert", str(big), "-w", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert conv.stdout is not None
    head = conv.stdout.read(1000)
    conv.stdout.close()
    _, err = conv.communicate(timeout=60)
    assert len(head) == 1000
    assert conv.returncode == 0
    assert err == b""


# --- issue 4: filters, split, info ---------------------------------------------------------

TICKET = Path(__file__).resolve().parent.parent / "fixtures" / "hep" / "ticket.hep"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "example.com"], "not an IP address"),
        (["--since", "yesterday"], "is not ISO 8601"),
        (["--until", "2026-13-01"], "is not ISO 8601"),
        (["--match", "(unclosed"], "--match"),
        (["-v"], "-i/--ignore-case and -v/--invert-match go with --match"),
        (["-i"], "go with --match"),
        (["--port", "70000"], "70000"),
    ],
)
def test_filter_errors_are_one_line(
    dump: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = _run(["convert", str(dump), "-w", str(tmp_path / "o.pcapng"), *args])
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_call_id_filter_counts_what_it_left_out(dump: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.pcapng"
    code, _, err = _run(["convert", str(dump), "-w", str(out), "--call-id", "nope"])
    assert code == 0
    assert _epb_count(out.read_bytes()) == 0
    assert "left out by filters: 2" in err
    code, _, err = _run(["convert", str(dump), "-w", str(out), "--call-id", "c1"])
    assert _epb_count(out.read_bytes()) == 2


def test_dialog_filter_reads_stdin_twice(dump: Path) -> None:
    code, out, err = _run(
        ["convert", "-", "-w", "-", "--method", "INVITE"], stdin=dump.read_bytes()
    )
    assert code == 0, err
    assert _epb_count(out) == 2


def test_info_text_and_json(tmp_path: Path) -> None:
    import json

    code, out, err = _run(["info", str(TICKET)])
    assert code == 0, err
    assert b"were mirrored from one side only" in out  # the FS-9657 signature (agent 301)
    code, out, _ = _run(["info", "--json", str(TICKET)])
    data = json.loads(out)
    assert data["sip"]["calls"] == 7


def test_info_counts_payload_types_as_the_dump_holds_them(tmp_path: Path) -> None:
    # info reports the dump, not how convert writes it: an RTCP-JSON report outside the
    # mapping (convert skips it as rtcp_json_unmapped) is still counted as RTCP-JSON
    import json

    path = tmp_path / "types.hep"
    path.write_bytes(
        _msg(INVITE, T0)
        + _msg(b"SYSLOG: hello", T0 + 1, payload_type=100)
        + _msg(b'{"ssrc": "1", "type": 201}', T0 + 2, payload_type=5)
    )
    code, out, err = _run(["info", "--json", str(path)])
    assert code == 0, err
    assert json.loads(out)["payload_types"] == {"SIP": 1, "LOG": 1, "RTCP-JSON": 1}
    code, _, err = _run(["convert", str(path), "-w", "-"])
    assert "skipped 1 (rtcp_json_unmapped=1)" in err


def test_info_on_a_missing_file_is_one_line(tmp_path: Path) -> None:
    code, _, err = _run(["info", str(tmp_path / "missing.hep")])
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_split_writes_files_and_index(tmp_path: Path) -> None:
    outdir = tmp_path / "calls"
    code, _, err = _run(["split", str(TICKET), "-d", str(outdir), "--agent", "301"])
    assert code == 0, err
    names = sorted(p.name for p in outdir.iterdir())
    assert names == [
        "00001_t-fs0@10.2.0.5.pcapng",
        "00002_t-fs1@10.2.0.5.pcapng",
        "00003_t-fs2@10.2.0.5.pcapng",
        "index.tsv",
    ]
    assert "3 calls written" in err


def test_split_into_a_file_path_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["split", str(TICKET), "-d", str(blocker)])
    assert code == 1
    assert err.splitlines() == [f"Error: {blocker}: not a directory"]
    assert blocker.read_text() == "x"


def test_split_with_a_dialog_filter_numbers_only_kept_calls(tmp_path: Path) -> None:
    outdir = tmp_path / "calls"
    code, _, err = _run(
        [
            "split",
            str(TICKET),
            "-d",
            str(outdir),
            "--call-id",
            "t-call1-b@10.1.0.1",
            "--other",
            "drop",
        ]
    )
    assert code == 0, err
    assert sorted(p.name for p in outdir.iterdir()) == [
        "00001_t-call1-a@203.0.113.10.pcapng",
        "index.tsv",
    ]
    index = (outdir / "index.tsv").read_text().splitlines()
    assert index[1].split("\t")[-1].split() == ["t-call1-a@203.0.113.10", "t-call1-b@10.1.0.1"]


# --- issue 10: nothing is destroyed, one error style, the README's exit codes ---------------

SAMPLE_PCAP = TICKET.parent.parent / "pcap" / "hep-v3-tcp.pcapng"


@pytest.mark.parametrize("source", [TICKET, SAMPLE_PCAP], ids=["raw", "pcapng"])
@pytest.mark.parametrize("how", ["itself", "symlink", "hard link"])
def test_converting_a_file_onto_itself_is_refused(tmp_path: Path, source: Path, how: str) -> None:
    inp = tmp_path / source.name
    inp.write_bytes(source.read_bytes())
    out = inp
    if how == "symlink":
        out = tmp_path / "link"
        out.symlink_to(inp)
    elif how == "hard link":
        out = tmp_path / "hard"
        os.link(inp, out)
    code, _, err = _run(["convert", str(inp), "-w", str(out)])
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith(f"Error: {out}: is the same file as an input")
    assert inp.read_bytes() == source.read_bytes(), "the input is untouched"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "nothing was opened"


def test_split_refuses_to_replace_an_input_in_its_directory(tmp_path: Path) -> None:
    # A HEP pcapng saved as other.pcapng, split into its own folder: other.pcapng would
    # be replaced by split's non-dialog file.
    inp = tmp_path / "other.pcapng"
    inp.write_bytes(SAMPLE_PCAP.read_bytes())
    code, _, err = _run(["split", str(inp), "-d", str(tmp_path)])
    assert code == 1
    assert err.splitlines() == [
        f"Error: {inp}: is the same file as an input; refusing to write over it"
    ]
    assert inp.read_bytes() == SAMPLE_PCAP.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["other.pcapng"]
    # in another folder of the same name, nothing collides
    code, _, err = _run(["split", str(inp), "-d", str(tmp_path / "calls")])
    assert code == 0, err


def test_split_replaces_earlier_files_only_on_success(tmp_path: Path) -> None:
    outdir = tmp_path / "calls"
    outdir.mkdir()
    (outdir / "index.tsv").write_text("an earlier index")
    (outdir / "notes.txt").write_text("mine")
    code, _, err = _run(["split", str(TICKET), "-d", str(outdir)])
    assert code == 0, err
    assert (outdir / "index.tsv").read_text().startswith("file\tstart")
    assert (outdir / "notes.txt").read_text() == "mine"
    assert not [p for p in outdir.iterdir() if p.name.startswith(".")], "no temporary left"


def _unreadable(tmp_path: Path) -> tuple[Path, str]:
    if os.geteuid() != 0:
        path = tmp_path / "secret.hep"
        path.write_bytes(b"HEP3")
        path.chmod(0)
        return path, "cannot open: Permission denied"
    return Path("/proc/self/mem"), "cannot read: Input/output error"  # root reads any mode


@pytest.mark.parametrize("command", ["convert", "info", "split"])
@pytest.mark.parametrize("kind", ["directory", "missing", "unreadable"])
def test_a_bad_input_is_one_line_exit_1(tmp_path: Path, command: str, kind: str) -> None:
    if kind == "directory":
        path, why = tmp_path, "cannot open: Is a directory"
    elif kind == "missing":
        path, why = tmp_path / "nope.hep", "cannot open: No such file or directory"
    else:
        path, why = _unreadable(tmp_path)
    outdir = tmp_path / "out"
    args = {"convert": ["-w", str(tmp_path / "o.pcapng")], "info": [], "split": ["-d", str(outdir)]}
    code, _, err = _run([command, str(path), *args[command]])
    assert code == 1
    assert err.splitlines() == [f"Error: {path}: {why}"]
    assert not (tmp_path / "o.pcapng").exists()
    assert not outdir.exists(), "a bad input fails before -d is created"


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed ('make tools' installs it)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem"), "-days", "1",
         "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return d / "c.pem", d / "k.pem"


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("key is text", "cannot load TLS key {key}: not a PEM private key"),
        ("key is the certificate", "cannot load TLS key {key}: not a PEM private key"),
        ("certificate is text", "cannot load TLS certificate {cert}: not a PEM certificate"),
        ("key is missing", "cannot load TLS key {key}: No such file or directory"),
        ("key is a directory", "cannot load TLS key {key}: Is a directory"),
        ("key of another certificate", "cannot load TLS key {key}: does not match the certificate"),
    ],
)
def test_an_unloadable_tls_certificate_or_key_is_one_line(
    tmp_path: Path, tls_pair: tuple[Path, Path], case: str, line: str
) -> None:
    cert, key = tls_pair
    if case == "key is text":
        key = tmp_path / "k.pem"
        key.write_text("not a key\n")
    elif case == "key is the certificate":
        key = cert
    elif case == "certificate is text":
        cert = tmp_path / "c.pem"
        cert.write_text("hello\n")
    elif case == "key is missing":
        key = tmp_path / "none.pem"
    elif case == "key is a directory":
        key = tmp_path
    else:  # a valid key that belongs to another certificate
        other = tmp_path / "other.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-out", str(other)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        key = other
    out = tmp_path / "out.pcapng"
    code, _, err = _run(
        ["listen", "-l", "tls:127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
         "-w", str(out)]
    )  # fmt: skip
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith("Error: " + line.format(key=key, cert=cert))
    assert not out.exists()


def _stopped_by(signum: int, tmp_path: Path) -> tuple[int, str, Path]:
    # convert reading stdin that never ends, stopped by a signal once it is converting.
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"an earlier capture")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hep2pcap", "convert", "-", "-w", str(out), "--window", "0"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"".join(_msg(INVITE, T0 + i) for i in range(50)))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]:
        assert time.monotonic() < deadline, "convert never opened its output"
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, err.decode(), out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_convert_is_one_line_and_replaces_nothing(
    tmp_path: Path, signum: int, code: int
) -> None:
    returncode, err, out = _stopped_by(signum, tmp_path)
    assert returncode == code
    name = signal.Signals(signum).name
    assert err.splitlines() == [f"hep2pcap: interrupted ({name}); {out} left unchanged"] or (
        len(err.splitlines()) == 1
        and err.startswith(f"hep2pcap: interrupted ({name}); {out} left unchanged; the ")
        and f"are in {out}.partial" in err
    ), err
    assert out.read_bytes() == b"an earlier capture"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    partial = tmp_path / "out.pcapng.partial"
    if partial.exists():  # what was written before the signal: whole blocks
        assert _epb_count(partial.read_bytes()) == int(err.split(" the ")[1].split()[0])


README_TEXT = (TICKET.parents[2] / "README.md").read_text()
EXIT_TABLE = re.search(r"<!-- exit codes -->\n(.*?)<!-- end exit codes -->", README_TEXT, re.S)


def _readme_exit_codes() -> list[int]:
    assert EXIT_TABLE is not None, "README lost its exit-code table"
    rows = [r for r in EXIT_TABLE.group(1).splitlines() if re.match(r"\| \d+ \|", r)]
    return [int(r.split("|")[1]) for r in rows]


@pytest.mark.parametrize("code", _readme_exit_codes())
def test_readme_exit_code_table_row(tmp_path: Path, code: int) -> None:
    """Every row of the README's exit-code table happens, printing what the row says."""
    if code == 0:
        got, _, err = _run(["convert", str(TICKET), "-w", str(tmp_path / "o.pcapng")])
        assert err.startswith("read ")
    elif code == 1:
        got, _, err = _run(["convert", str(tmp_path), "-w", str(tmp_path / "o.pcapng")])
        assert len(err.splitlines()) == 1
        assert "Traceback" not in err
    elif code == 2:
        got, _, err = _run(["convert", str(TICKET), "--no-such-option"])
        assert "Usage:" in err
    else:
        got, err, _ = _stopped_by(code - 128, tmp_path)
        assert len(err.splitlines()) == 1
    assert got == code


def _udp_pcap(tmp_path: Path, payloads: list[bytes], dport: int) -> Path:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = []
    for p in payloads:
        pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=dport) / p
        pkt.time = T0 / 1e6
        pkts.append(pkt)
    path = tmp_path / "in.pcap"
    wrpcap(str(path), pkts)
    return path


def test_gzip_wrapped_datagrams_are_counted_and_noted(tmp_path: Path) -> None:
    # heplify v2 payload_zip: the whole frame gzip-compressed, on any port (issue 11).
    frame = hep.encode(hep.HepMessage(3, 17, A, B, 5060, 5060, T0, INVITE, capture_id=7))
    src = _udp_pcap(tmp_path, [gzip.compress(frame), gzip.compress(frame), frame], 9999)
    code, stdout, stderr = _run(["convert", str(src), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 3)
    assert "read 3, wrote 3" in stderr
    assert "  gzip-wrapped: 2\n" in stderr
    assert "repaired/warned" not in stderr
    assert stdout.count(b"notes: gzip_wrapped") == 2


def test_no_hep_diagnosis_in_convert_and_info(tmp_path: Path) -> None:
    src = _udp_pcap(tmp_path, [INVITE] * 4, 5060)
    code, stdout, stderr = _run(["convert", str(src), "-w", "-"])
    assert (code, _epb_count(stdout)) == (0, 0)
    line = f"no HEP in {src}: 4 UDP datagrams on port 5060 look like plain SIP, not HEP"
    assert line in stderr
    assert stderr.count("no HEP in") == 1
    code, stdout, _ = _run(["info", str(src)])
    assert code == 0
    assert f"  ! {line}" in stdout.decode()
