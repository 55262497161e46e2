"""Job functions for the fault-injection tests (tests/test_faults.py), run
by ``zasync worker --import tests.fault_jobs`` processes.

A job's first act is to append one line, ``<time> <pid> <job id> <kind>``,
to ``<directory>/<pid>.starts``: one ``os.write`` on a file of its own
process opened for appending, so the lines of the process's threads never
interleave and no line is lost when the process is killed. The database is
not touched: a start is recorded even when the job's transaction never
commits, which is what the tests count.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from zasync import local

SUFFIX = ".starts"


def _record_start(directory: str, kind: str) -> None:
    job = local.getJob()
    line = f"{time.time():.6f} {os.getpid()} {job.id} {kind}\n"
    fd = os.open(
        os.path.join(directory, f"{os.getpid()}{SUFFIX}"),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)


def work(directory: str, seconds: float, kind: str = "retry", token: str = "") -> float:
    """Record the start, sleep ``seconds``, return them. ``kind`` (the
    job's retry policy, for the reader of the files) goes into the line;
    ``token`` tells the job apart from any other (its producer looks for
    it after a commit that failed)."""
    _record_start(directory, kind)
    if seconds:
        time.sleep(seconds)
    return seconds


@dataclass(frozen=True)
class Start:
    time: float
    pid: int
    job_id: str
    kind: str


def starts(directory: str | os.PathLike[str]) -> dict[str, list[Start]]:
    """{job id: its starts, in time order} from every process's file in
    ``directory``."""
    found: dict[str, list[Start]] = {}
    for path in sorted(Path(directory).glob(f"*{SUFFIX}")):
        for line in path.read_text(encoding="ascii").splitlines():
            when, pid, job_id, kind = line.split(" ", 3)
            found.setdefault(job_id, []).append(
                Start(float(when), int(pid), job_id, kind)
            )
    for runs in found.values():
        runs.sort(key=lambda start: start.time)
    return found
