"""``zasync cancel ID`` on a running job (issue #21), through the real
command in a subprocess, on a ZEO server a worker in this process uses."""

from __future__ import annotations

import json
import time

import pytest
import transaction
from tests import coop_jobs, watchdog_jobs
from tests.processes import run_zasync

from zasync.cli import build_parser
from zasync.cli.processes import child_command
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY, JobCancelled, JobTimeout
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.stuck import stuck_since
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
            f"(zasync.local.check() or progress()), or is interrupted after its "
            f"worker's grace period"
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


def test_zasync_show_says_since_when_a_job_was_stuck(tmp_path):
    """A job whose thread the watchdog abandoned: ``zasync show`` gives its
    ``stuck_since``; a job that was never stuck has none."""
    watchdog_jobs.reset()
    path = str(tmp_path / "Data.fs")
    db = open_db(path)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    dispatcher = Dispatcher(
        db, threads=1, poll_interval=0.2, interrupt_grace=0.2, stuck_delay=0.5
    ).start()
    try:
        queue = conn.root()[KEY][""]
        job = queue.put(Job(watchdog_jobs.blocked, "shown"), timeout=0.3)
        plain = queue.put(Job(watchdog_jobs.quick, "plain"))
        tm.commit()
        assert wait_for_result(job, 10).check(JobTimeout)
        assert wait_for_result(plain, 10) == "quick"
        since = stuck_since(job)
        assert since is not None
    finally:
        watchdog_jobs.reset()  # the abandoned thread's job returns
        dispatcher.stop(10)
        for thread in dispatcher.pool.abandoned:
            thread.join(10)
        tm.abort()
        conn.close()
        db.close()
    shown = run_zasync("show", job.id, "--json", "--db", path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["stuck_since"] == since.isoformat()
    text = run_zasync("show", job.id, "--db", path).stdout
    assert f"stuck_since: {since.isoformat()}" in text
    assert "its worker thread was abandoned and replaced" in text
    never = json.loads(run_zasync("show", plain.id, "--json", "--db", path).stdout)
    assert "stuck_since" not in never


@pytest.mark.zeo
def test_zasync_worker_interrupts_after_its_interrupt_grace(zeo_server, workers):
    watchdog_jobs.reset()
    workers(
        zeo_server.uri,
        threads=1,
        args=[
            "--interrupt-grace",
            "0.3",
            "--stuck-delay",
            "2",
            "--poll-interval",
            "0.2",
        ],
        imports=["tests.watchdog_jobs"],
    ).start()
    db = open_db(zeo_server.uri)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        job = conn.root()[KEY][""].put(
            Job(watchdog_jobs.busy_loop, "in a worker"), timeout=0.5
        )
        tm.commit()
        failure = wait_for_result(job, 20)
        assert failure.check(JobTimeout)
        assert "did not stop within 0.3 s: interrupted" in failure.getErrorMessage()
    finally:
        tm.abort()
        conn.close()
        db.close()


def test_zasync_worker_refuses_a_grace_that_cannot_work():
    for flag in ("--interrupt-grace", "--stuck-delay"):
        done = run_zasync("worker", "--db", "unused.fs", flag, "0")
        assert done.returncode == 2
        assert f"argument {flag}: 0 is not a finite number more than 0" in done.stderr


def test_the_children_of_a_supervisor_get_the_same_grace():
    args = build_parser().parse_args(
        [
            "worker",
            "--db",
            "x.fs",
            "--processes",
            "2",
            "--interrupt-grace",
            "1.5",
            "--stuck-delay",
            "12",
        ]
    )
    command = child_command(args, 1, "w1.uuid")
    grace = command.index("--interrupt-grace")
    assert command[grace + 1] == "1.5"
    assert command[command.index("--stuck-delay") + 1] == "12.0"


@pytest.mark.zeo
def test_zasync_status_names_the_stuck_threads_while_they_run(zeo_server):
    watchdog_jobs.reset()
    db = open_db(zeo_server.uri)
    install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    dispatcher = Dispatcher(
        db,
        threads=1,
        poll_interval=0.2,
        interrupt_grace=0.2,
        stuck_delay=0.5,
        name="watched",
    ).start()
    try:
        job = conn.root()[KEY][""].put(
            Job(watchdog_jobs.blocked, "status"), timeout=0.3
        )
        tm.commit()
        assert wait_for_result(job, 10).check(JobTimeout)
        wait_until(lambda: dispatcher.pool.abandoned, message="the abandonment")
        since = stuck_since(job).isoformat()
        status = run_zasync("status", "--json", "--db", zeo_server.uri)
        assert status.returncode == 0, status.stderr
        (worker,) = json.loads(status.stdout)["workers"]
        assert worker["stuck"] == [{"job": job.id, "stuck_since": since}]
        text = run_zasync("status", "--db", zeo_server.uri).stdout
        assert (
            f"watched: a thread stuck since {since} in job {job.id} "
            f"(abandoned and replaced)"
        ) in text
        watchdog_jobs.release.set()  # the stuck thread returns and ends

        def cleared() -> bool:
            done = run_zasync("status", "--json", "--db", zeo_server.uri)
            return not json.loads(done.stdout)["workers"][0]["stuck"]

        wait_until(cleared, timeout=20, message="the stuck thread to be cleared")
    finally:
        watchdog_jobs.reset()
        dispatcher.stop(10)
        tm.abort()
        conn.close()
        db.close()
