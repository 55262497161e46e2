"""The queue and dispatcher contract, run over every storage: FileStorage,
ZEO (a real server in a subprocess) and RelStorage on a fresh PostgreSQL
database (``storage_db`` in conftest.py).

Each test queues through a connection of its own and waits for a
dispatcher running in this process; job functions stamp their runs in a
file (tests/mp_jobs.py), so a test can count runs and order them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
import transaction
from tests import mp_jobs
from tests.producers import produce_concurrently

import zasync
from zasync.dispatcher import Dispatcher
from zasync.failure import Failure
from zasync.interfaces import KEY
from zasync.storage import storage_kind
from zasync.testing import wait_for_result, wait_until

UTC = datetime.UTC


@dataclass
class Harness:
    db: object
    tm: transaction.TransactionManager
    conn: object
    stamps: str

    @property
    def queue(self) -> zasync.Queue:
        return self.conn.root()[KEY][""]

    def put(self, job, **kw) -> zasync.Job:
        """Queue ``job`` and commit."""
        self.tm.begin()
        job = self.queue.put(job, **kw)
        self.tm.commit()
        return job

    def result(self, job, seconds: float = 30):
        return wait_for_result(job, seconds)

    def runs(self) -> dict[str, list[mp_jobs.Run]]:
        return mp_jobs.runs_per_job(self.stamps)


@pytest.fixture
def harness(storage_db, tmp_path: Path):
    dispatcher = Dispatcher(storage_db, threads=3).start()
    tm = transaction.TransactionManager()
    conn = storage_db.open(transaction_manager=tm)
    try:
        yield Harness(storage_db, tm, conn, str(tmp_path / "stamps"))
    finally:
        assert dispatcher.stop(10), "a job was still running at the end"
        tm.abort()
        conn.close()


def test_put_commit_run_result(harness):
    job = harness.put(zasync.Job(mp_jobs.add, harness.stamps, 2, 3))
    assert harness.result(job) == 5
    assert job.status == zasync.COMPLETED
    assert job.active_start <= job.active_end
    assert job.attempts == 1
    assert [r.job_id for r in mp_jobs.runs(harness.stamps)] == [job.id]


def test_an_aborted_put_leaves_no_job(harness):
    harness.tm.begin()
    harness.queue.put(zasync.Job(mp_jobs.work, harness.stamps, tag="aborted"))
    harness.tm.abort()
    harness.tm.begin()
    assert len(harness.queue) == 0
    harness.tm.abort()
    later = harness.put(zasync.Job(mp_jobs.work, harness.stamps, tag="committed"))
    harness.result(later)
    assert [r.tag for r in mp_jobs.runs(harness.stamps)] == ["committed"]


def test_failures_are_stored_and_the_work_commits_with_the_result(harness):
    failing = harness.put(zasync.Job(mp_jobs.fail, harness.stamps, "no luck"))
    writes = harness.put(
        zasync.Job(mp_jobs.write_root, harness.stamps, "kept", 1, fail=False)
    )
    rolled_back = harness.put(
        zasync.Job(mp_jobs.write_root, harness.stamps, "lost", 2, fail=True)
    )
    failure = harness.result(failing)
    assert isinstance(failure, Failure) and failing.failed
    assert failure.check(ValueError)
    assert failure.getErrorMessage() == "no luck"
    assert "mp_jobs.py" in failure.getTraceback()
    assert harness.result(writes) == 1
    assert isinstance(harness.result(rolled_back), Failure)
    harness.tm.begin()
    root = harness.conn.root()
    assert root["kept"] == 1
    assert "lost" not in root
    harness.tm.abort()


def test_callbacks_get_the_result_or_the_failure(harness):
    harness.tm.begin()
    job = harness.queue.put(zasync.Job(mp_jobs.add, harness.stamps, 2, 3))
    callback = job.addCallback(zasync.Job(mp_jobs.collect, harness.stamps))
    failing = harness.queue.put(zasync.Job(mp_jobs.fail, harness.stamps))
    on_failure = failing.addCallbacks(failure=mp_jobs.error_type)
    harness.tm.commit()
    assert harness.result(job) == 5
    assert callback.status == zasync.COMPLETED
    assert callback.result == "saw 5"
    assert isinstance(harness.result(failing), Failure)
    assert on_failure.result == "builtins.ValueError"
    runs = harness.runs()
    assert runs[callback.id][0].start >= runs[job.id][0].start


def test_a_quota_of_one_keeps_strict_order(harness):
    harness.tm.begin()
    harness.queue.quotas.create("one", size=1)
    harness.tm.commit()
    harness.tm.begin()
    limited = [
        harness.queue.put(
            zasync.Job(mp_jobs.work, harness.stamps, 0.05, i), quota_names=("one",)
        )
        for i in range(6)
    ]
    free = harness.queue.put(zasync.Job(mp_jobs.work, harness.stamps, 0, "free"))
    harness.tm.commit()
    assert [harness.result(job) for job in limited] == list(range(6))
    harness.result(free)
    for before, after in zip(limited, limited[1:], strict=False):
        assert after.active_start >= before.active_end, "two ran at once"
    runs = harness.runs()
    assert sorted(limited, key=lambda job: runs[job.id][0].start) == limited
    # The full quota held back only its own jobs.
    assert runs[free.id][0].start < runs[limited[-1].id][0].start
    harness.tm.begin()
    assert len(harness.queue.quotas["one"]) == 0
    harness.tm.abort()


def test_begin_after_delays_the_start(harness):
    begin_after = datetime.datetime.now(UTC) + datetime.timedelta(seconds=0.6)
    delayed = harness.put(
        zasync.Job(mp_jobs.work, harness.stamps, 0, "late"), begin_after=begin_after
    )
    now = harness.put(zasync.Job(mp_jobs.work, harness.stamps, 0, "now"))
    assert harness.result(now) == "now"
    harness.tm.begin()
    assert delayed.status == zasync.PENDING
    harness.tm.abort()
    assert harness.result(delayed) == "late"
    started = harness.runs()[delayed.id][0].start
    assert started >= begin_after.timestamp()
    # Woken for the due time, not found by a later poll.
    assert started - begin_after.timestamp() < 0.5


def test_serial_runs_one_after_another_and_goes_on_after_a_failure(harness):
    members = [
        zasync.Job(mp_jobs.work, harness.stamps, 0.05, "a"),
        zasync.Job(mp_jobs.fail, harness.stamps),
        zasync.Job(mp_jobs.work, harness.stamps, 0.05, "c"),
    ]
    composite = harness.put(zasync.serial(*members))
    result = harness.result(composite)
    assert result == members
    assert members[0].result == "a" and members[2].result == "c"
    assert members[1].failed
    for before, after in zip(members, members[1:], strict=False):
        assert after.active_start >= before.active_end


def test_parallel_runs_every_member_and_postprocesses(harness):
    members = [zasync.Job(mp_jobs.add, harness.stamps, i, i) for i in range(4)]
    composite = harness.put(zasync.parallel(*members, postprocess=mp_jobs.total))
    assert harness.result(composite) == 12
    assert all(member.status == zasync.COMPLETED for member in members)
    assert {m.id for m in members} <= set(harness.runs())


@pytest.mark.parametrize("delay", [0.05, 0], ids=["later", "at-once"])
def test_retry_policy_retries_an_application_error_max_errors_times(harness, delay):
    policy = zasync.RetryWithDelay.configure(max_errors=2, error_delay=delay)
    flaky = harness.put(
        zasync.Job(mp_jobs.flaky, harness.stamps, 3), retry_policy_factory=policy
    )
    failing = harness.put(
        zasync.Job(mp_jobs.fail, harness.stamps), retry_policy_factory=policy
    )
    assert harness.result(flaky) == "succeeded on attempt 3"
    assert isinstance(harness.result(failing), Failure)
    assert failing.attempts == 3
    runs = harness.runs()
    assert len(runs[flaky.id]) == 3
    assert len(runs[failing.id]) == 3  # two retries, then it gives up


def test_concurrent_producers_lose_no_job_and_run_none_twice(harness):
    threads, per_thread = 4, 20
    oids, conflicts = produce_concurrently(
        harness.db,
        producers=threads,
        per_producer=per_thread,
        make_job=lambda n, i: zasync.Job(mp_jobs.work, harness.stamps, 0, (n, i)),
    )
    ids = [format(int.from_bytes(oid, "big"), "x") for oid in oids]
    assert len(set(ids)) == threads * per_thread

    def all_ran():
        runs = harness.runs()
        return len(runs) >= len(ids) and runs

    runs = wait_until(all_ran, timeout=30, message=lambda: f"{len(harness.runs())} ran")
    assert set(runs) == set(ids), "a job was lost"
    assert [job_id for job_id, r in runs.items() if len(r) > 1] == []
    harness.tm.begin()
    assert len(harness.queue) == 0
    harness.tm.abort()
    rate = len(conflicts) / (len(ids) + len(conflicts))
    kind = storage_kind(harness.db)
    print(f"\n{kind}: {len(conflicts)} producer conflicts in {len(ids)} commits")
    assert rate < 0.1
