"""What the queues did over the last hour, minute by minute: how many jobs
finished (completed and failed), and how long the jobs that started waited
to start (from the time they were due to the time a worker started them),
as the median and the 95th percentile.

Computed from the finished jobs the database keeps (the queues' records of
finished jobs, newest first): the reading stops at the first job that ended
before the window, so its cost grows with the jobs of the window, not with
all the jobs kept, and at most ``scan_limit`` jobs are read. Jobs cleared
from the records (``zasync prune``, the control panel's *Clear*) are not
counted; jobs still running have not waited yet as far as this knows (they
count once they end). Read in the caller's transaction; writes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zasync.admin import iter_done
from zasync.failure import Failure
from zasync.job import Job

#: the minutes of the window by default (the last hour)
MINUTES = 60
#: the longest window, in minutes (a day)
MAX_MINUTES = 24 * 60
#: finished jobs read at most by default (as the control panel's lists)
SCAN_LIMIT = 20_000


@dataclass(frozen=True)
class Minute:
    """One minute of the window: from ``start`` (epoch seconds) to a minute
    later. ``completed`` and ``failed``: jobs that ended in it; ``started``:
    jobs that started in it (and have ended since), ``wait_p50`` and
    ``wait_p95`` their waits in seconds (None when none started)."""

    start: float
    completed: int = 0
    failed: int = 0
    started: int = 0
    wait_p50: float | None = None
    wait_p95: float | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class Activity:
    """The minutes of a window, oldest first; ``scanned``: finished jobs
    read; ``truncated``: the reading stopped at its ``scan_limit`` before
    the window's start (the oldest minutes miss jobs)."""

    minutes: tuple[Minute, ...]
    scanned: int
    truncated: bool

    @property
    def finished(self) -> int:
        return sum(m.finished for m in self.minutes)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0 to 1) percentile of ``values`` by the nearest
    rank: a value of the list, the smallest one that at least ``fraction``
    of the values do not exceed. ValueError for no values or a fraction
    outside 0 to 1."""
    if not values:
        raise ValueError("no values: a percentile needs at least one")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction={fraction!r}: give a number from 0 to 1")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def activity(
    queues: Any,
    *,
    clock: float | None = None,
    minutes: int = MINUTES,
    match: Callable[[Job], bool] | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> Activity:
    """The activity of ``queues`` over the ``minutes`` whole minutes up to
    ``clock`` (epoch seconds, now by default; its own minute is the last,
    partly elapsed). With ``match``, only the jobs it returns true for
    count. ValueError for a window of no minutes or more than
    MAX_MINUTES, or a ``scan_limit`` below 1."""
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise ValueError(f"minutes={minutes!r}: give a whole number of minutes")
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes={minutes}: give 1 to {MAX_MINUTES} minutes")
    if scan_limit < 1:
        raise ValueError(f"scan_limit={scan_limit}: read at least one job")
    clock = time.time() if clock is None else clock
    first = (math.floor(clock / 60) - minutes + 1) * 60
    ended = [[0, 0] for _ in range(minutes)]
    waits: list[list[float]] = [[] for _ in range(minutes)]
    scanned = 0
    truncated = False
    for key, job in iter_done(queues, since_us=int(first * 1_000_000)):
        if scanned >= scan_limit:
            truncated = True
            break
        scanned += 1
        if match is not None and not match(job):
            continue
        index = int((key / 1_000_000 - first) // 60)  # the key: when it ended
        if 0 <= index < minutes:
            ended[index][isinstance(job.result, Failure)] += 1
        wait = _wait(job)
        if wait is not None:
            index = int((wait[0] - first) // 60)
            if 0 <= index < minutes:
                waits[index].append(wait[1])
    return Activity(
        minutes=tuple(
            Minute(
                start=first + 60 * i,
                completed=ended[i][0],
                failed=ended[i][1],
                started=len(waits[i]),
                wait_p50=percentile(waits[i], 0.5) if waits[i] else None,
                wait_p95=percentile(waits[i], 0.95) if waits[i] else None,
            )
            for i in range(minutes)
        ),
        scanned=scanned,
        truncated=truncated,
    )


def _wait(job: Job) -> tuple[float, float] | None:
    """(when it started, seconds it waited from its due time) for a job
    that started; None for one that never did (cancelled before)."""
    started, due = job.active_start, job.begin_after
    if started is None or due is None:
        return None
    return started.timestamp(), max(0.0, started.timestamp() - due.timestamp())
