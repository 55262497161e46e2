"""``zasync cancel ID`` on a running job (issue #21), through the real
command in a subprocess, on a ZEO server a worker in this process uses."""

from __future__ import annotations

import time

import pytest
import transaction
from tests import coop_jobs
from tests.processes import run_zasync

from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY, JobCancelled
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_for_result, wait_until


@pytest.mark.zeo
def test_zasync_cancel_requests_the_cancel_of_a_running_job(zeo_server):
    coop_jobs.reset()
    db = open_db(zeo_server.uri)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    dispatcher = Dispatcher(db, threads=1, poll_interval=0.2).start()
    try:
        job = conn.root()[KEY][""].put(Job(coop_jobs.cooperative, "cli", "check"))
        tm.commit()
        wait_until(lambda: "cli" in coop_jobs.running, message="the job did not start")
        done = run_zasync("cancel", job.id, "--db", zeo_server.uri)
        requested = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"job {job.id}: cancel requested; the job stops at its next check "
            f"(zasync.local.check() or progress())"
        )
        assert wait_for_result(job, 10).check(JobCancelled)
        assert time.monotonic() - requested < 2.0
        refused = run_zasync("cancel", job.id, "--db", zeo_server.uri)
        assert refused.returncode == 1
        assert "only pending, scheduled or running jobs" in refused.stderr
    finally:
        dispatcher.stop(10)
        tm.abort()
        conn.close()
        db.close()
        coop_jobs.reset()
