"""Output files of ``convert`` and ``split``: a run never destroys a file.

Owns: refusing an output that is the same file as an input (device and inode, through
symlinks and hard links) before anything is opened for writing; writing under a temporary
name in the destination folder and renaming into place only when the run succeeded; what a
failed or interrupted run leaves (what it had written, as ``NAME.partial``; nothing when it
had written no message) and the one line that says so; SIGINT/SIGTERM as an exception the
commands clean up after. ``listen`` writes in place (its file must open at any moment) and
does not use this module. This is an I/O edge like ``sources/``: it stats, creates, renames
and removes files, and nothing else; it never converts anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import BinaryIO

from .errors import Hep2PcapError

#: Suffix of what a failed run leaves (``calls.pcapng.partial``, ``calls.pcapng.partial.2``).
PARTIAL = ".partial"
#: Numbered partial names tried before the temporary name is kept as it is.
MAX_PARTIAL_NAMES = 100


class Interrupted(Hep2PcapError):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted ({signal.Signals(signum).name})")


class Stop:
    """The signal :func:`signals_raise` saw (``signum``), for :meth:`check`."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal came but its exception was swallowed
        (raised inside a callback Python only reports, such as a fork hook): call it
        before making a result final (renaming it into place)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[Stop]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only).

    The previous handlers come back at the end. A second signal while the first is being
    handled is ignored, so the clean-up (renaming a partial file) is not cut short.
    """
    stop = Stop()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.signum is None:
            stop.signum = signum
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _file_id(path: str) -> tuple[int, int] | None:
    # (st_dev, st_ino) of what the path names, symlinks followed; None if it names nothing.
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refuse_same_file(inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """Raise if an output is the same file as an input (symlinks and hard links included).

    ``-`` (stdin/stdout) is never compared. Call it before opening anything for writing.

    Raises:
        Hep2PcapError: one line naming both paths.
    """
    ids: dict[tuple[int, int], str] = {}
    for path in inputs:
        if path != "-":
            fid = _file_id(path)
            if fid is not None:
                ids.setdefault(fid, path)
    for out in outputs:
        if out == "-":
            continue
        fid = _file_id(out)
        if fid is not None and fid in ids:
            name = ids[fid]
            same = "" if os.path.abspath(name) == os.path.abspath(out) else f" (input {name})"
            raise Hep2PcapError(
                f"{out}: is the same file as an input{same}; refusing to write over it"
            )


def _free_partial_name(base: str) -> str | None:
    for n in range(MAX_PARTIAL_NAMES):
        candidate = base + PARTIAL + (f".{n + 1}" if n else "")
        if not os.path.lexists(candidate):
            return candidate
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class SafeOutput:
    """A file written under a temporary name beside its destination.

    :meth:`commit` renames it over the destination; :meth:`abandon` leaves the
    destination as it was. A destination that exists and is not a regular file (a
    device such as ``/dev/null``, a FIFO) is written in place: there is nothing to
    replace. A symlink is followed, so the file it points to is what gets replaced.

    Args:
        path: the destination (not ``-``).

    Raises:
        Hep2PcapError: the temporary file cannot be created (one line).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.existed = os.path.lexists(path)
        self.file: BinaryIO
        try:
            st: os.stat_result | None = os.stat(path)
        except OSError:
            st = None
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):
                self.target, self.tmp = path, None
                self.file = open(path, "wb", buffering=0)  # noqa: SIM115
                return
            self.target = os.path.realpath(path)
            folder, name = os.path.split(self.target)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise Hep2PcapError(f"{path}: cannot write: {exc.strerror or exc}") from exc
        # The mode the file would have had: the old file's, or the usual one for a new file.
        mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)
        self.file = os.fdopen(fd, "wb", buffering=0)

    def commit(self) -> None:
        """Close and rename into place (the destination is replaced only now)."""
        self.file.close()
        if self.tmp is not None:
            try:
                os.replace(self.tmp, self.target)
            except OSError as exc:
                raise Hep2PcapError(
                    f"{self.path}: cannot rename into place: {exc.strerror or exc}"
                ) from exc
            self.tmp = None

    def abandon(self, written: int) -> str | None:
        """Close without touching the destination; say in one sentence what was left
        (None for a device or FIFO, which was written in place).

        What was written is kept as ``PATH.partial`` when it holds a message
        (``written > 0``), else removed.
        """
        with contextlib.suppress(OSError):
            self.file.close()
        tmp = self.tmp
        state = "left unchanged" if self.existed else "not created"
        if tmp is None:  # a device or FIFO, written in place
            return None
        self.tmp = None
        if written <= 0:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return f"{self.path} {state}"
        kept = _free_partial_name(self.target)
        if kept is not None:
            try:
                os.rename(tmp, kept)
            except OSError:
                kept = tmp
        else:
            kept = tmp
        if not os.path.islink(self.path):  # name it the way the user named the output
            kept = os.path.join(os.path.dirname(self.path), os.path.basename(kept))
        return f"{self.path} {state}; the {written} messages written before are in {kept}"


class SafeFolder:
    """Files for one folder, written in a temporary folder inside it (``split``).

    :meth:`commit` moves the named files into place; :meth:`abandon` leaves every file of
    the folder as it was and keeps what was written as ``FOLDER/split.partial/``.

    Args:
        directory: an existing directory.

    Raises:
        Hep2PcapError: the temporary folder cannot be created.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        try:
            self.path = tempfile.mkdtemp(prefix=".hep2pcap-split-", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise Hep2PcapError(f"{directory}: cannot write: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o777 & ~_umask())

    def commit(self, names: Iterable[str]) -> None:
        """Move each named file into the directory, replacing what had that name."""
        for name in names:
            try:
                os.replace(os.path.join(self.path, name), os.path.join(self.directory, name))
            except OSError as exc:
                raise Hep2PcapError(
                    f"{self.directory}/{name}: cannot write: {exc.strerror or exc}"
                ) from exc
        shutil.rmtree(self.path, ignore_errors=True)

    def abandon(self, written: int) -> str:
        """Leave the directory's files as they were; say in one sentence what was left."""
        if written <= 0 or not os.listdir(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
            return f"nothing in {self.directory} was written"
        kept = _free_partial_name(os.path.join(self.directory, "split"))
        if kept is not None:
            try:
                os.rename(self.path, kept)
            except OSError:
                kept = self.path
        else:
            kept = self.path
        return (
            f"no file in {self.directory} was replaced; "
            f"the {written} messages written before are in {kept}/"
        )
