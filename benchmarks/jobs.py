"""The jobs under test.

Each job first records its start stamp (``time.time()``) and its identity,
the arguments ``a b``, in an append-only file of its process:
``$ZASYNC_BENCH_STAMPS/<pid>.stamps``, one line ``<time> <a> <b>``. The
file is written with one ``os.write`` on an ``O_APPEND`` descriptor, so
lines from several threads never interleave, and the database is not
touched. Without the variable, nothing is recorded.
"""

from __future__ import annotations

import os
import threading
import time

ENV = "ZASYNC_BENCH_STAMPS"

_fd: int | None = None
_fd_pid: int | None = None
_lock = threading.Lock()


def _stamp_fd() -> int | None:
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd_pid != pid:
        with _lock:
            if _fd_pid != pid:
                directory = os.environ.get(ENV)
                _fd = None
                if directory:
                    _fd = os.open(
                        os.path.join(directory, f"{pid}.stamps"),
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                        0o644,
                    )
                _fd_pid = pid
    return _fd


def stamp(started: float, a: int, b: int) -> None:
    fd = _stamp_fd()
    if fd is not None:
        os.write(fd, f"{started!r} {a} {b}\n".encode())


def add(a: int, b: int) -> int:
    """The job of W1, W2, W3 and W5."""
    started = time.time()
    stamp(started, a, b)
    return a + b


def nap(a: int, b: int, seconds: float = 0.2) -> int:
    """The job of W4: ``add`` that takes ``seconds``."""
    started = time.time()
    stamp(started, a, b)
    time.sleep(seconds)
    return a + b
