"""The job of W6: ``createDocument`` of zasync.plone's test functions,
behind a module-level wrapper that records when it started and returned.

``create_document(context, tag, index, title, description, body)`` appends
its start stamp ``<time> <tag> <index>`` to ``$ZASYNC_BENCH_STAMPS/<pid>.stamps``
(as benchmarks.jobs does, so that StampReader counts it), calls
``createDocument(context, "doc-<index>", title, description, body)``, then
appends ``<return time> <tag> <index> <job oid> <start time>`` to
``<pid>.ends``. The job's oid (the ``run_as_user`` job the worker runs)
lets the harness find the job's transactions in the storage afterwards.
Neither file touches the database.

Imported by the worker when it loads the first job: it needs Plone.
"""

from __future__ import annotations

import os
import threading
import time

from ZODB.utils import u64

from benchmarks.jobs import ENV, stamp
from zasync import local
from zasync.plone.tests.funcs import createDocument

_ends: dict[int, int | None] = {}
_lock = threading.Lock()


def _ends_fd() -> int | None:
    pid = os.getpid()
    if pid not in _ends:
        with _lock:
            if pid not in _ends:
                directory = os.environ.get(ENV)
                _ends[pid] = (
                    os.open(
                        os.path.join(directory, f"{pid}.ends"),
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                        0o644,
                    )
                    if directory
                    else None
                )
    return _ends[pid]


def _job_oid() -> int:
    try:
        oid = local.getJob()._p_oid
    except Exception:  # called outside a worker
        return 0
    return u64(oid) if oid else 0


def create_document(context, tag: int, index: int, title, description, body):
    """``createDocument`` with the start and return stamps of W6."""
    started = time.time()
    stamp(started, tag, index)
    result = createDocument(context, f"doc-{index}", title, description, body)
    returned = time.time()
    fd = _ends_fd()
    if fd is not None:
        line = f"{returned!r} {tag} {index} {_job_oid()} {started!r}\n"
        os.write(fd, line.encode())
    return result
