"""A database written by zasync 0.1 (tests/fixtures/v0_1.fs, made by
tests/fixtures/make_v0_1.py) opens with the current code: its jobs, quota,
composite and worker record read as they were, and its pending jobs run."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

import zasync
from zasync.dispatcher import Dispatcher
from zasync.interfaces import COMPLETED, KEY, PENDING, AbortedError
from zasync.queue import Quota
from zasync.testing import wait_for_result
from zasync.workers import WorkerRecord

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1.fs"
UUID = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def old_db(tmp_path):
    """A copy of the 0.1 database (the fixture itself is never written)."""
    copy = tmp_path / "Data.fs"
    shutil.copyfile(FIXTURE, copy)
    db = ZODB.DB(FileStorage(str(copy)))
    yield db
    db.close()


@pytest.fixture
def old(old_db):
    conn = old_db.open()
    yield conn.root()
    transaction.abort()
    conn.close()


def test_finished_jobs_read_as_they_were(old):
    jobs = old["v0_1"]
    assert jobs["version"] == "0.1.0.dev0"
    completed = jobs["completed"]
    assert (completed.status, completed.result, completed.failed) == (
        COMPLETED,
        3,
        False,
    )
    assert completed.active_start <= completed.active_end
    failed = jobs["failed"]
    assert failed.status == COMPLETED and failed.failed
    assert repr(failed.result) == "<zasync.Failure builtins.RuntimeError: FooBared>"
    assert failed.result.check(RuntimeError) is RuntimeError
    assert "Traceback" in failed.result.getTraceback()
    assert jobs["callback"].result == ("value", 4)
    assert jobs["with_callback"].status == COMPLETED
    assert jobs["failed_before_start"].result.check(AbortedError)


def test_pending_jobs_quota_and_queues_read_as_they_were(old):
    jobs = old["v0_1"]
    queues = old[KEY]
    assert isinstance(queues, zasync.Queues)
    assert sorted(queues) == ["", "other"]
    queue = queues[""]
    quota = queue.quotas["q"]
    assert isinstance(quota, Quota) and quota.size == 2 and len(quota) == 0
    pending = [jobs[name] for name in ("pending", "scheduled", "quota")]
    assert all(job.status == PENDING for job in pending)
    assert jobs["quota"].quota_names == ("q",)
    assert jobs["scheduled"].begin_after == datetime.datetime(
        2100, 1, 1, tzinfo=datetime.UTC
    )
    assert len(queue) == 5
    assert list(queue)[-1] is jobs["scheduled"]
    assert len(queues["other"]) == 1
    serial = jobs["serial"]
    assert serial.status == PENDING and len(serial.jobs) == 2


def test_the_worker_record_reads_as_it_was(old):
    jobs = old["v0_1"]
    record = old[KEY].workers[UUID]
    assert isinstance(record, WorkerRecord)
    assert record.threads == 2 and record.stopped is not None
    assert record.active_count() == 0
    done = [job for slot in record.slots for job in slot.done.values()]
    for name in ("completed", "failed", "with_callback"):
        assert any(job is jobs[name] for job in done)


def test_the_current_code_runs_the_pending_jobs(old_db, old):
    jobs = old["v0_1"]
    dispatcher = Dispatcher(old_db, uuid=UUID, threads=2, poll_interval=0.1).start()
    try:
        assert wait_for_result(jobs["pending"]) == 30
        assert wait_for_result(jobs["quota"]) == "quota"
        assert wait_for_result(jobs["pending_with_callback"]) == 10
        assert jobs["pending_callback"].result == ("value", 10)
        first, middle = wait_for_result(jobs["serial"], 20)
        assert first.result == 2 and middle.failed
        assert wait_for_result(jobs["other_queue"]) == "other"
        assert jobs["scheduled"].status == PENDING
        # New work in old queues.
        job = old[KEY][""].put(zasync.Job(abs, -7))
        transaction.commit()
        assert wait_for_result(job) == 7
    finally:
        dispatcher.stop(10)
