"""A schedule every second with three ``zasync worker`` processes on one
ZEO server, one of them killed (SIGKILL) in the middle: each slot starts
exactly one job, none is left out.

The schedule's job (tests/schedule_jobs.py) stamps each run with its job
id and its slot in a file, so the test counts the jobs of every slot. The
schedule takes missed="each", under which every slot starts a job even
when the workers fall behind; how late the slots' jobs started is printed
(run with ``-s`` to see it).
"""

from __future__ import annotations

import datetime
import statistics
from collections import defaultdict

import pytest
import transaction
from tests import schedule_jobs

from zasync.interfaces import KEY
from zasync.keys import to_us
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = pytest.mark.zeo

#: slots the schedule runs over (one a second)
SLOTS = 52
#: short leases, so that the killed worker's jobs are rescued within seconds
FAST_RESCUE = ["--lease", "2", "--maintenance-interval", "0.5"]
SECOND_US = 1_000_000


class Observer:
    """The test's own connection to the database."""

    def __init__(self, uri: str):
        self.db = open_db(uri)
        install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)

    def schedules(self):
        return self.conn.root()[KEY][""].schedules

    def last_run(self) -> datetime.datetime | None:
        self.tm.begin()
        try:
            return self.schedules()["beat"].last_run
        finally:
            self.tm.abort()

    def close(self) -> None:
        self.conn.close()
        self.db.close()


def test_three_workers_start_one_job_per_slot_one_killed_midway(
    zeo_server, workers, tmp_path
):
    stamps = tmp_path / "stamps"
    observer = Observer(zeo_server.uri)
    try:
        started = [
            workers(
                zeo_server.uri,
                f"w{n}",
                threads=2,
                args=FAST_RESCUE,
                imports=["tests.schedule_jobs"],
            ).start()
            for n in range(3)
        ]
        for attempt in observer.tm.attempts(5):
            with attempt:
                schedule = observer.schedules().add(
                    "beat",
                    schedule_jobs.stamp_slot,
                    str(stamps),
                    every=1,
                    missed="each",
                )
        observer.tm.begin()
        first = schedule.next_run
        observer.tm.abort()
        halfway = first + datetime.timedelta(seconds=SLOTS // 2)
        wait_until(
            lambda: (observer.last_run() or first) >= halfway,
            timeout=SLOTS,
            message=lambda: f"slot {halfway} fired; last run {observer.last_run()}",
        )
        victim = started[1]
        victim.kill()
        end = first + datetime.timedelta(seconds=SLOTS - 1)
        wait_until(
            lambda: (observer.last_run() or first) >= end,
            timeout=SLOTS,
            message=lambda: f"slot {end} fired; last run {observer.last_run()}",
        )
        for attempt in observer.tm.attempts(5):
            with attempt:
                observer.schedules()["beat"].pause()
                last = observer.schedules()["beat"].last_run
        wanted = range(to_us(first), to_us(last) + 1, SECOND_US)

        def jobs_by_slot() -> dict[int, set[str]]:
            found: dict[int, set[str]] = defaultdict(set)
            for run in schedule_jobs.runs(stamps):
                found[run.slot_us].add(run.job_id)
            return found

        # The killed worker's jobs run again elsewhere once its lease ran out.
        wait_until(
            lambda: all(slot in jobs_by_slot() for slot in wanted),
            timeout=30,
            message=lambda: (
                f"a run of every slot; none for "
                f"{[s for s in wanted if s not in jobs_by_slot()]}"
            ),
        )
    finally:
        observer.close()
    found = jobs_by_slot()
    duplicates = {slot: ids for slot, ids in found.items() if len(ids) > 1}
    missed = [slot for slot in wanted if slot not in found]
    extra = sorted(set(found) - set(wanted))
    assert len(wanted) >= 50
    assert (duplicates, missed, extra) == ({}, [], [])
    runs = schedule_jobs.runs(stamps)
    first_runs: dict[str, float] = {}
    for run in runs:
        late = run.start - run.slot_us / 1e6
        first_runs[run.job_id] = min(first_runs.get(run.job_id, late), late)
    by_pid = defaultdict(int)
    for run in runs:
        by_pid[run.pid] += 1
    lateness = sorted(first_runs.values())
    print(
        f"\n{len(wanted)} slots, 3 workers, one killed at "
        f"{halfway.time()}: 0 duplicates, 0 missed; jobs started "
        f"{statistics.median(lateness) * 1000:.0f} ms after their slot "
        f"(median), {lateness[-1] * 1000:.0f} ms at most; runs by pid "
        f"{dict(by_pid)} (the killed worker {victim.pid})"
    )
