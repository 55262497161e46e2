"""zasync.activity: jobs finished per minute and how long the jobs that
started waited, over the last hour, read from the finished jobs of a real
FileStorage database that a real worker ran."""

from __future__ import annotations

import datetime
import time

import pytest
import transaction

import jobfuncs
from zasync import admin
from zasync.activity import MAX_MINUTES, activity, percentile
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.testing import wait_for_result, wait_until


def test_percentile_is_the_nearest_rank():
    values = list(range(100, 0, -1))  # 100 .. 1, unordered on purpose
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 1) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.5], 0.95) == 7.5
    assert percentile([1, 2, 3, 10], 0.5) == 2
    assert percentile([1, 2, 3, 10], 0.95) == 10


@pytest.mark.parametrize(
    ("values", "fraction", "message"),
    [
        ([], 0.5, "no values"),
        ([1], 1.5, "fraction=1.5: give a number from 0 to 1"),
        ([1], -0.1, "fraction=-0.1"),
    ],
)
def test_percentile_refuses_what_has_none(values, fraction, message):
    with pytest.raises(ValueError, match=message):
        percentile(values, fraction)


def _queues(conn):
    transaction.begin()
    return conn.root()[KEY]


def _ago(seconds):
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)


@pytest.fixture
def finished(conn, start_dispatcher):
    """Jobs a worker ran, due 10, 20, 30 and 120 seconds before they were
    queued (one of them failing), and one cancelled before it started; all
    of them within one minute of the clock."""
    # Start well inside a minute so that the jobs start in the same one.
    wait_until(lambda: time.time() % 60 < 40, timeout=25, interval=0.2)
    queues = _queues(conn)
    queue = queues[""]
    ran = [
        queue.put(Job(jobfuncs.add, 1, 2), begin_after=_ago(10)),
        queue.put(Job(jobfuncs.add, 2, 2), begin_after=_ago(20)),
        queue.put(Job(jobfuncs.boom, "planned"), begin_after=_ago(30)),
        queue.put(Job(jobfuncs.add, 3, 2), begin_after=_ago(120)),
    ]
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    cancelled = queue.put(Job(jobfuncs.add, 0, 0), begin_after=later)
    transaction.commit()
    admin.cancel(cancelled)
    transaction.commit()
    start_dispatcher()
    for job in ran:
        wait_for_result(job)
    transaction.begin()
    return queues, ran, cancelled


def test_jobs_finished_and_waits_in_their_minute(finished):
    queues, ran, _cancelled = finished
    found = activity(queues)
    assert len(found.minutes) == 60
    starts = [m.start for m in found.minutes]
    assert starts == sorted(starts) and starts[-1] == (time.time() // 60) * 60
    assert all(b - a == 60 for a, b in zip(starts, starts[1:], strict=False))
    assert sum(m.completed for m in found.minutes) == 3
    assert sum(m.failed for m in found.minutes) == 2  # the failure, the cancel
    assert found.finished == 5 and found.scanned == 5 and not found.truncated
    (busy,) = [m for m in found.minutes if m.started]
    assert busy.started == 4  # the cancelled job never started
    first_start = min(job.active_start for job in ran).timestamp()
    assert busy.start <= first_start < busy.start + 60
    # The nearest rank of waits of about 10, 20, 30 and 120 seconds.
    assert 20 <= busy.wait_p50 < 25
    assert 120 <= busy.wait_p95 < 125
    quiet = [m for m in found.minutes if not m.started]
    assert all(m.wait_p50 is None and m.wait_p95 is None for m in quiet)


def test_only_the_jobs_of_the_window_are_read(finished):
    queues, _ran, _cancelled = finished
    later = time.time() + 2 * 3600  # the jobs ended two hours before it
    found = activity(queues, clock=later)
    assert found.finished == 0 and found.scanned == 0
    assert all(m.started == 0 for m in found.minutes)
    # A window of two minutes, five minutes on, misses them too; one of
    # ten minutes holds them.
    assert activity(queues, clock=time.time() + 300, minutes=2).scanned == 0
    assert activity(queues, clock=time.time() + 300, minutes=10).finished == 5


def test_the_reading_stops_at_its_scan_limit(finished):
    queues, _ran, _cancelled = finished
    found = activity(queues, scan_limit=2)
    assert found.scanned == 2 and found.truncated
    assert found.finished == 2


def test_match_selects_the_jobs_that_count(finished):
    queues, ran, cancelled = finished
    found = activity(queues, match=lambda job: job.callable_name.endswith("boom"))
    assert found.finished == 1
    assert sum(m.failed for m in found.minutes) == 1
    assert sum(m.started for m in found.minutes) == 1
    assert found.scanned == 5  # read, then left out


def test_no_finished_jobs_is_an_empty_window(conn):
    found = activity(_queues(conn), minutes=5)
    assert [m.finished for m in found.minutes] == [0] * 5
    assert found.scanned == 0 and not found.truncated


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minutes": 0}, "minutes=0: give 1 to 1440 minutes"),
        ({"minutes": MAX_MINUTES + 1}, "minutes=1441"),
        ({"minutes": 1.5}, "minutes=1.5: give a whole number"),
        ({"minutes": True}, "minutes=True: give a whole number"),
        ({"scan_limit": 0}, "scan_limit=0: read at least one job"),
    ],
)
def test_bad_windows_are_refused(conn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        activity(_queues(conn), **kwargs)
