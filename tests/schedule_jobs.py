"""The job of the schedules in tests/test_schedules_multiprocess.py, run
by ``zasync worker --import tests.schedule_jobs`` processes.

Each run appends one line to a file, ``<start stamp> <pid> <job id> <slot
in microseconds>``: one ``write()`` of a short line to a file opened for
appending is atomic across processes, so a test counts the jobs of each
slot and the runs of each job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from zasync import local
from zasync.keys import to_us
from zasync.schedules import schedule_slot


def stamp_slot(path: str) -> None:
    """Stamp this run with the slot of its job."""
    job = local.getJob()
    mark = schedule_slot(job)
    slot = mark[1] if mark is not None else None
    slot_us = -1 if slot is None else to_us(slot)
    line = f"{time.time():.6f} {os.getpid()} {job.id} {slot_us}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Run:
    start: float
    pid: int
    job_id: str
    slot_us: int


def runs(path: Path) -> list[Run]:
    """The runs stamped in ``path`` so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        start, pid, job_id, slot_us = line.split()
        found.append(Run(float(start), int(pid), job_id, int(slot_us)))
    return found
