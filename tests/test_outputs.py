"""outputs.py: an output that is an input is refused; a failed run replaces nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path

import pytest

from hep2pcap.errors import Hep2PcapError
from hep2pcap.outputs import Interrupted, SafeFolder, SafeOutput, refuse_same_file, signals_raise


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    path = tmp_path / "in.hep"
    path.write_bytes(b"HEP3 input bytes")
    return path


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "dot path"])
def test_an_output_that_is_an_input_is_refused(inp: Path, how: str) -> None:
    out = inp
    if how == "symlink":
        out = inp.with_name("link.pcapng")
        out.symlink_to(inp.name)
    elif how == "hard link":
        out = inp.with_name("hard.pcapng")
        os.link(inp, out)
    elif how == "dot path":
        out = inp.parent / "." / inp.name
    with pytest.raises(Hep2PcapError, match="is the same file as an input"):
        refuse_same_file([str(inp)], [str(out)])
    with pytest.raises(Hep2PcapError, match="is the same file as an input"):
        refuse_same_file([str(out)], [str(inp)])  # the input given through the link
    assert inp.read_bytes() == b"HEP3 input bytes"


def test_other_files_stdin_and_new_files_pass(inp: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pcapng"
    other.write_bytes(b"x")
    refuse_same_file([str(inp), "-"], [str(other), str(tmp_path / "new.pcapng"), "-"])
    (tmp_path / "dangling").symlink_to("nowhere")
    refuse_same_file([str(inp)], [str(tmp_path / "dangling")])


def test_commit_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"old")
    out.chmod(0o640)
    safe = SafeOutput(str(out))
    safe.file.write(b"new")
    assert out.read_bytes() == b"old", "nothing is replaced before the end"
    safe.commit()
    assert out.read_bytes() == b"new"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.pcapng"]


def test_a_symlinked_output_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.pcapng"
    target.write_bytes(b"old")
    link = tmp_path / "link.pcapng"
    link.symlink_to(target.name)
    safe = SafeOutput(str(link))
    safe.file.write(b"new")
    safe.commit()
    assert link.is_symlink()
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("existed", [True, False])
def test_abandon_keeps_what_was_written_as_partial(tmp_path: Path, existed: bool) -> None:
    out = tmp_path / "out.pcapng"
    if existed:
        out.write_bytes(b"old")
    (tmp_path / "out.pcapng.partial").write_bytes(b"an earlier partial")  # not overwritten
    safe = SafeOutput(str(out))
    safe.file.write(b"some blocks")
    note = safe.abandon(written=3)
    state = "left unchanged" if existed else "not created"
    assert note == f"{out} {state}; the 3 messages written before are in {out}.partial.2"
    assert (tmp_path / "out.pcapng.partial.2").read_bytes() == b"some blocks"
    assert (tmp_path / "out.pcapng.partial").read_bytes() == b"an earlier partial"
    assert out.exists() == existed
    if existed:
        assert out.read_bytes() == b"old"


def test_abandon_with_nothing_written_removes_the_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"old")
    safe = SafeOutput(str(out))
    safe.file.write(b"header only")
    assert safe.abandon(written=0) == f"{out} left unchanged"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pcapng"]
    assert out.read_bytes() == b"old"


def test_a_device_is_written_in_place() -> None:
    safe = SafeOutput("/dev/null")
    safe.file.write(b"x")
    assert safe.abandon(written=1) is None
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is still a device"


def test_a_folder_that_cannot_take_a_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(Hep2PcapError, match=r"nowhere/out\.pcapng: cannot write: No such file"):
        SafeOutput(str(tmp_path / "nowhere" / "out.pcapng"))


def test_folder_commit_and_abandon(tmp_path: Path) -> None:
    (tmp_path / "index.tsv").write_text("old index")
    folder = SafeFolder(str(tmp_path))
    Path(folder.path, "index.tsv").write_text("new index")
    Path(folder.path, "00001_a.pcapng").write_bytes(b"call")
    folder.commit(["00001_a.pcapng", "index.tsv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00001_a.pcapng", "index.tsv"]
    assert (tmp_path / "index.tsv").read_text() == "new index"

    failed = SafeFolder(str(tmp_path))
    Path(failed.path, "index.tsv").write_text("half")
    note = failed.abandon(written=5)
    assert note == (
        f"no file in {tmp_path} was replaced; "
        f"the 5 messages written before are in {tmp_path}/split.partial/"
    )
    assert (tmp_path / "index.tsv").read_text() == "new index"
    assert (tmp_path / "split.partial" / "index.tsv").read_text() == "half"
    assert SafeFolder(str(tmp_path)).abandon(written=0) == f"nothing in {tmp_path} was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00001_a.pcapng",
        "index.tsv",
        "split.partial",
    ]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_raise_interrupted_and_restore_the_handlers(signum: int, code: int) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as caught, signals_raise():
        os.kill(os.getpid(), signum)  # the handler runs before the next bytecode
    assert caught.value.exit_code == code
    assert str(caught.value) == f"interrupted ({signal.Signals(signum).name})"
    assert signal.getsignal(signum) is before


def test_a_signal_whose_exception_was_swallowed_is_raised_by_check() -> None:
    # Python only reports an exception raised inside some callbacks (a fork hook, __del__):
    # check() before renaming into place still sees that the signal came.
    with signals_raise() as stop:
        with contextlib.suppress(Interrupted):  # what such a callback does with it
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted, match="SIGINT"):
            stop.check()
    with signals_raise() as calm:
        calm.check()  # no signal: nothing raised
