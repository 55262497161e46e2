"""A job that never ends shows: how long each running job has run, and
those running longer than a limit flagged (zasync.running, the overview,
``zasync status``)."""

from __future__ import annotations

import datetime
import time

import pytest
import transaction

import jobfuncs
from processes import run_zasync
from zasync.job import Job
from zasync.keys import oid_int
from zasync.overview import summary
from zasync.running import describe_running, human_duration, running_seconds

UTC = datetime.UTC


def _running_for(conn, seconds: float, uuid: str = "busy-worker") -> Job:
    """A job that a registered worker holds, started ``seconds`` ago."""
    root = conn.root()["zasync"]
    record = root.workers.register(uuid)
    record._begin(1, (), time.time())
    record.heartbeat.lease_until = time.time() + 3600
    queue = root[""]
    job = queue.put(Job(jobfuncs.noop))
    queue.take(job)
    started = datetime.datetime.now(UTC) - datetime.timedelta(seconds=seconds)
    job._assign(uuid, 0, started, first=True)
    record.slots[0].active[oid_int(job)] = job
    transaction.commit()
    return job


def test_a_running_job_says_how_long_it_has_run(conn):
    job = _running_for(conn, 90)
    seconds = running_seconds(job, time.time())
    assert 89 <= seconds <= 120
    assert describe_running(job, time.time(), long_after=60)["long"]
    assert not describe_running(job, time.time(), long_after=600)["long"]
    assert not describe_running(job, time.time(), long_after=None)["long"]
    pending = conn.root()["zasync"][""].put(Job(jobfuncs.noop))
    assert running_seconds(pending, time.time()) is None


def test_the_overview_flags_jobs_running_longer_than_the_limit(conn):
    job = _running_for(conn, 2 * 3600)
    worker = summary(conn.root()["zasync"], long_after=3600)["workers"][0]
    (row,) = worker["jobs"]
    assert row["id"] == job.id and row["callable"] == "jobfuncs.noop"
    assert row["running_seconds"] >= 7200 and row["long"]
    assert worker["running"] == [job.id]


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (45.7, "45 s"), (725, "12 min 5 s"), (7380, "2 h 3 min"),
     (273600, "3 d 4 h"), (None, "")],
)  # fmt: skip
def test_durations_read_as_people_read_them(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0.0 s"), (2.44, "2.4 s"), (9.96, "9.9 s"), (10.5, "10 s"), (45.7, "45 s"),
     (725, "12 min 5 s"), (None, "")],
)  # fmt: skip
def test_short_durations_to_the_tenth(seconds, text):
    assert human_duration(seconds, tenths=True) == text


def test_status_lists_running_jobs_and_flags_long_ones(zasync_db, conn, tmp_path):
    long_job = _running_for(conn, 2 * 3600, "worker-a")
    short_job = _running_for(conn, 30, "worker-b")
    path = zasync_db.storage.getName()
    zasync_db.close()
    result = run_zasync("status", "--db", path, "--long-after", "600")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line}
    assert (
        "2 h 0 min" in lines[long_job.id] and "longer than 10 min" in lines[long_job.id]
    )
    assert "longer than" not in lines[short_job.id]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_status_refuses_a_limit_that_is_no_duration(zasync_db, value):
    path = zasync_db.storage.getName()
    zasync_db.close()
    result = run_zasync("status", "--db", path, "--long-after", value)
    assert result.returncode == 2
    assert "--long-after" in result.stderr
    assert "Traceback" not in result.stderr
