"""A job's priority, unique key and lock as the lists show them: in
``zasync.admin.describe``, as filters of ``zasync.admin.list_jobs``, and
through ``zasync jobs`` and ``zasync show`` (subprocesses, on a real
FileStorage)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import transaction
from tests import mp_jobs
from tests.processes import run_zasync

import jobfuncs
from zasync import admin
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_until

EXIT_OK, EXIT_USAGE = 0, 2
LATER = datetime.timedelta(days=1)


@dataclass
class Jobs:
    """The ids of the jobs of ``database``."""

    uri: str
    urgent: str  # priority 5, lock "report:1"
    nightly: str  # unique key "nightly", held until it finishes
    behind: str  # priority -3, lock "report:1"
    tomorrow: str  # priority 10, scheduled
    cancelled: str  # priority 5, lock "done", unique key "once"; failed


def _queue_jobs(queue, stamps: str) -> dict[str, Job]:
    tomorrow = datetime.datetime.now(datetime.UTC) + LATER
    jobs = {
        "urgent": queue.put(
            Job(mp_jobs.work, stamps, 0, "urgent"), priority=5, lock="report:1"
        ),
        "nightly": queue.put(
            Job(mp_jobs.work, stamps, 0, "nightly"),
            unique_key="nightly",
            unique_until="finished",
        ),
        "behind": queue.put(
            Job(mp_jobs.work, stamps, 0, "behind"), priority=-3, lock="report:1"
        ),
        "tomorrow": queue.put(
            Job(mp_jobs.work, stamps, 0, "tomorrow"),
            begin_after=tomorrow,
            priority=10,
        ),
        "cancelled": queue.put(
            Job(mp_jobs.work, stamps, 0, "cancelled"),
            priority=5,
            lock="done",
            unique_key="once",
        ),
    }
    admin.cancel(jobs["cancelled"])
    return jobs


@pytest.fixture
def database(tmp_path: Path) -> Jobs:
    """A FileStorage holding the jobs of ``Jobs``, closed for the command
    to open."""
    uri = str(tmp_path / "Data.fs")
    db = open_db(uri)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        jobs = _queue_jobs(conn.root()[KEY][""], str(tmp_path / "stamps"))
        tm.commit()
        return Jobs(uri, **{name: job.id for name, job in jobs.items()})
    finally:
        tm.abort()
        conn.close()
        db.close()


@pytest.fixture
def queued(conn, queue, tmp_path) -> dict[str, Job]:
    """The jobs of ``Jobs`` in ``zasync_db``, committed."""
    jobs = _queue_jobs(queue, str(tmp_path / "stamps"))
    transaction.commit()
    return jobs


def ids(jobs) -> list[str]:
    return [job.id for job in jobs]


# -- the library ------------------------------------------------------------------


def test_describe_gives_priority_unique_key_and_lock(queued):
    urgent = admin.describe(queued["urgent"])
    assert (urgent["priority"], urgent["lock"]) == (5, "report:1")
    assert urgent["unique_key"] is None and urgent["unique_until"] is None
    nightly = admin.describe(queued["nightly"])
    assert (nightly["priority"], nightly["lock"]) == (0, None)
    assert (nightly["unique_key"], nightly["unique_until"]) == ("nightly", "finished")
    cancelled = admin.describe(queued["cancelled"])
    assert cancelled["kind"] == "failed"
    assert (cancelled["unique_key"], cancelled["unique_until"]) == ("once", "started")
    json.dumps([urgent, nightly, cancelled])  # JSON-ready


def test_list_jobs_filters_on_priority_lock_and_unique_key(conn, queued):
    queues = conn.root()[KEY]

    def listed(**filters) -> list[str]:
        return ids(admin.list_jobs(queues, **filters))

    def named(*names: str) -> list[str]:
        return [queued[name].id for name in names]

    assert listed(priority=5) == named("urgent", "cancelled")
    assert listed(priority=5, status=("pending",)) == named("urgent")
    assert listed(priority=-3) == named("behind")
    assert listed(priority=7) == []
    # run order within the pending jobs: priority first
    assert listed(min_priority=0, status=("pending",)) == named("urgent", "nightly")
    # (the queue lists scheduled jobs among the pending ones, by priority)
    assert listed(min_priority=5) == named("tomorrow", "urgent", "cancelled")
    assert listed(lock="report:1") == named("urgent", "behind")
    assert listed(lock="report:1", min_priority=0) == named("urgent")
    assert listed(lock="report") == []  # exact, not a part
    assert listed(unique_key="nightly") == named("nightly")
    assert listed(unique_key="once", status=("failed",)) == named("cancelled")
    assert listed(unique_key="once", status=("pending",)) == []
    assert len(listed()) == 5


@pytest.mark.parametrize(
    "filters, error, message",
    [
        ({"priority": "5"}, TypeError, "priority='5' must be a whole number"),
        ({"priority": True}, TypeError, "priority=True must be a whole number"),
        ({"priority": 1.5}, TypeError, "priority=1.5 must be a whole number"),
        ({"min_priority": 10**7}, ValueError, "min_priority=10000000 is out of range"),
        ({"lock": ""}, ValueError, "lock='' is empty"),
        ({"lock": 42}, TypeError, "lock=42 must be a string"),
        ({"unique_key": "k" * 201}, ValueError, "unique_key is 201 characters"),
    ],
)
def test_list_jobs_refuses_a_value_no_job_can_have(conn, filters, error, message):
    with pytest.raises(error, match=message):
        admin.list_jobs(conn.root()[KEY], **filters)


def test_a_running_job_is_listed_by_its_lock_before_the_one_it_holds_back(
    conn, queue, start_dispatcher
):
    running = queue.put(
        Job(jobfuncs.signal_and_wait, "started", "release"), lock="report:2"
    )
    transaction.commit()
    start_dispatcher(threads=2)
    assert jobfuncs.gate("started").wait(20)
    transaction.begin()
    waiting = queue.put(Job(jobfuncs.add, 1, 2), lock="report:2", priority=9)
    transaction.commit()
    queues = conn.root()[KEY]

    def by_lock(*status: str) -> list[tuple[str, str]]:
        transaction.begin()
        jobs = admin.list_jobs(queues, lock="report:2", status=status)
        return [(job.id, admin.kind(job)) for job in jobs]

    # The second job waits for the lock, though a thread is free.
    assert by_lock() == [(running.id, "active"), (waiting.id, "pending")]
    assert by_lock("active") == [(running.id, "active")]
    assert queue.lock_holder("report:2") is running
    assert admin.describe(waiting)["lock"] == "report:2"
    jobfuncs.gate("release").set()
    wait_until(
        lambda: (
            sorted(by_lock())
            == sorted([(running.id, "completed"), (waiting.id, "completed")])
        ),
        message="both jobs done",
    )


# -- the command line ---------------------------------------------------------------


def as_json(result) -> object:
    assert result.returncode == EXIT_OK, result.stderr
    return json.loads(result.stdout)


def test_jobs_filters_on_priority_lock_and_unique_key(database):
    def listed(*flags: str) -> list[str]:
        rows = as_json(run_zasync("jobs", *flags, "--json", "--db", database.uri))
        return [row["id"] for row in rows]

    assert listed("--priority", "5") == [database.urgent, database.cancelled]
    assert listed("--priority", "-3") == [database.behind]
    assert listed("--min-priority", "5", "--status", "pending") == [database.urgent]
    assert listed("--lock", "report:1") == [database.urgent, database.behind]
    assert listed("--unique-key", "nightly") == [database.nightly]
    assert listed("--unique-key", "once", "--status", "pending") == []


def test_jobs_json_and_table_show_the_options(database):
    rows = as_json(run_zasync("jobs", "--json", "--db", database.uri))
    by_id = {row["id"]: row for row in rows}
    assert by_id[database.urgent]["priority"] == 5
    assert by_id[database.urgent]["lock"] == "report:1"
    assert by_id[database.nightly]["unique_key"] == "nightly"
    assert by_id[database.nightly]["unique_until"] == "finished"

    table = run_zasync("jobs", "--status", "pending", "--db", database.uri)
    assert table.returncode == EXIT_OK, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == [
        *("id", "kind", "queue", "callable", "prio", "when"),
        *("lock", "unique", "key"),
    ]
    rows = {line.split()[0]: line.split() for line in lines}
    assert list(rows) == [database.urgent, database.nightly, database.behind]
    assert rows[database.urgent][4] == "5" and rows[database.urgent][-2:] == [
        "report:1",
        "-",
    ]
    assert rows[database.nightly][4] == "0" and rows[database.nightly][-2:] == [
        "-",
        "nightly",
    ]
    # Without a lock or unique key among the jobs listed, no such columns.
    table = run_zasync("jobs", "--status", "scheduled", "--db", database.uri)
    header, line = table.stdout.splitlines()
    assert header.split() == ["id", "kind", "queue", "callable", "prio", "when"]
    assert line.split()[:5] == [
        database.tomorrow,
        "scheduled",
        "(default)",
        "tests.mp_jobs.work",
        "10",
    ]


def test_show_gives_priority_unique_key_and_lock(database):
    text = run_zasync("show", database.nightly, "--db", database.uri)
    assert text.returncode == EXIT_OK, text.stderr
    fields = {
        name.strip(): value.strip()
        for name, _, value in (line.partition(":") for line in text.stdout.splitlines())
    }
    assert fields["priority"] == "0"
    assert fields["unique_key"] == "nightly"
    assert fields["unique_until"] == "finished"
    assert fields["lock"] == "None"
    text = run_zasync("show", database.urgent, "--db", database.uri).stdout
    assert "lock: report:1" in text and "priority: 5" in text
    assert "unique_until" not in text  # no unique key
    data = as_json(
        run_zasync("show", database.cancelled, "--json", "--db", database.uri)
    )
    assert (data["priority"], data["lock"], data["unique_key"]) == (5, "done", "once")


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--priority", "abc", "'abc' is not a priority: give a whole number"),
        ("--priority", "1.5", "'1.5' is not a priority"),
        ("--min-priority", "2000000", "2000000 is out of range"),
        ("--lock", "", "'' is not a key: give a name of 1 to 200 characters"),
        ("--unique-key", " ", "' ' is not a key"),
        ("--unique-key", "k" * 201, "is not a key: give a name of 1 to 200"),
    ],
)
def test_jobs_refuses_a_bad_filter_in_one_line(tmp_path, flag, value, message):
    result = run_zasync("jobs", "--db", str(tmp_path / "Data.fs"), flag, value)
    assert result.returncode == EXIT_USAGE, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert f"argument {flag}: " in error and message in error
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "Data.fs").exists()
