"""Run the front half of the loop in a second process, so a conversion uses two cores.

Owns: the fork, the pipe between the two processes and its framing, and handing the child's
counters back. The child runs the front half exactly as one process would (read, decode,
accept, repair, filter: everything :func:`hep2pcap.pipeline.convert` does before the
reorder window) and sends the resulting items in batches; the parent runs the reorder
window, builds frames and writes, as before. The items are the same, in the same order, so
the output is byte-identical to a one-process run (tests/test_offload.py).

This module is an I/O edge like ``sources/``: it forks, owns file descriptors and signals.
The child never writes anything but the pipe and stderr (log lines), and leaves with
``os._exit`` so nothing it inherited (an output buffer, a temporary file) is flushed or
removed twice.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import operator
import os
import pickle
import signal
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import Hep2PcapError
from .hep import HepMessage
from .items import Front, Item, Tick
from .sources import ByteCounter
from .stats import Stats

log = logging.getLogger("hep2pcap")

#: Items per batch on the pipe: large enough that pickling and the pipe's system calls are
#: a small part of the cost, small enough that the parent starts writing at once.
BATCH = 512
_LENGTH = struct.Struct("<I")
_ITEMS, _END, _ERROR = 0, 1, 2
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

#: A message's fields as a tuple, in the order HepMessage(*fields) takes them.
_FIELDS_OF = operator.attrgetter(*(f.name for f in dataclasses.fields(HepMessage)))


def available() -> bool:
    """Whether this platform can fork (Linux, macOS and other POSIX systems)."""
    return hasattr(os, "fork")


def offloaded(
    front: Front, stats: Stats, counters: Sequence[ByteCounter] = ()
) -> Iterator[Item | Tick]:
    """Yield what ``front(stats)`` yields, computed in a forked child process.

    Counters the front half updates (read, rejections, warnings, filtered…) are added to
    ``stats`` at the end; ``stats.read`` and the ``counters``' byte counts follow the child
    batch by batch, for the progress display. An exception raised in the child (StrictError,
    an unreadable input) is raised here after every item before it.
    """
    before = copy.deepcopy(stats)  # the child starts from a copy of these counts
    read_fd, write_fd = os.pipe()
    # Objects made before the fork are left out of garbage collection in the child, so its
    # collections do not write to (and copy) the pages it shares with the parent (split's
    # call index can be hundreds of MB).
    gc.freeze()
    # No signal handler may run inside fork's hooks (an exception raised there is only
    # reported, and the signal lost): SIGINT/SIGTERM wait until both sides are set up.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(front, stats, counters, write_fd, blocked)
    gc.unfreeze()
    os.close(write_fd)
    pipe = os.fdopen(read_fd, "rb", buffering=1 << 20)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal waiting raises here
        yield from _receive(pipe, stats, before, counters)
    finally:
        pipe.close()  # a child still sending gets EPIPE and ends
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _receive(
    pipe: Any, stats: Stats, before: Stats, counters: Sequence[ByteCounter]
) -> Iterator[Item | Tick]:
    message = HepMessage
    while True:
        head = pipe.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            raise Hep2PcapError("the input reader process ended without finishing (killed?)")
        (size,) = _LENGTH.unpack(head)
        kind, body = pickle.loads(pipe.read(size))
        if kind == _ITEMS:
            read, done, batch, logged = body
            for level, text in logged:
                log.log(level, "%s", text)
            stats.read = read
            for counter, n in zip(counters, done, strict=False):
                counter.done = n
            for item in batch:
                if len(item) == 1:
                    yield Tick(item[0])
                else:
                    yield (item[0], item[1], message(*item[2]))
        else:
            child, error = body
            stats.read = before.read  # it followed the child's count batch by batch
            stats.add_difference(child, before)
            if kind == _END:
                return
            exc, text = error
            raise exc if exc is not None else Hep2PcapError(text)


def _child(
    front: Front, stats: Stats, counters: Sequence[ByteCounter], fd: int, mask: set[int]
) -> None:
    code = 0
    try:
        # Ctrl-C and SIGTERM are the parent's to handle: it writes what it has and ends
        # this process. A parent gone for good closes the pipe: the next send fails.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # Log lines go to the parent with the items, and are written there in order with
        # everything else it prints (its stderr may not even be a file: click's CliRunner).
        logged: list[tuple[int, str]] = []
        log.handlers[:] = [_Collect(logged)]
        batch: list[tuple[Any, ...]] = []
        fields_of = _FIELDS_OF

        def progress() -> tuple[object, ...]:
            lines = logged[:]
            logged.clear()
            return (stats.read, [c.done for c in counters], batch, lines)

        try:
            for item in front(stats):
                if isinstance(item, Tick):
                    batch.append((item.now_us,))
                else:
                    ts, arrival, msg = item
                    batch.append((ts, arrival, fields_of(msg)))
                if len(batch) >= BATCH:
                    _send(fd, _ITEMS, progress())
                    batch = []
        except Exception as exc:  # handed to the parent, raised there
            _send(fd, _ITEMS, progress())
            _send(fd, _ERROR, (stats, _portable(exc)))
        else:
            _send(fd, _ITEMS, progress())
            _send(fd, _END, (stats, None))
    except BrokenPipeError:
        code = 0  # the parent stopped reading (an error of its own, or Ctrl-C)
    except BaseException:  # a child must never return into the parent's code
        code = 1
    finally:
        os._exit(code)


class _Collect(logging.Handler):
    """Keeps ``(level, message)`` of each record for the parent to log."""

    def __init__(self, into: list[tuple[int, str]]) -> None:
        super().__init__()
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append((record.levelno, record.getMessage()))


def _send(fd: int, kind: int, body: object) -> None:
    data = pickle.dumps((kind, body), pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _portable(exc: Exception) -> tuple[Exception | None, str]:
    # The exception itself when it survives pickling (StrictError, InputError…), else its text.
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure means "send the text"
        return None, f"input reader failed: {exc!r}"
    return exc, str(exc)
