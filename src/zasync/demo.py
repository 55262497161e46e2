"""``make demo`` / ``zasync demo``: a worker and a small batch, to watch.

Queues a few kinds of work on an embedded FileStorage, runs a worker in
this process, and prints progress and results as they commit.
"""

from __future__ import annotations

import time
from typing import Any

import transaction

import zasync
from zasync import local
from zasync.dispatcher import Dispatcher
from zasync.storage import open_db
from zasync.testing import wait_for_result


def count_words(text: str) -> int:
    """A short job: its result is stored with its status."""
    return len(text.split())


def slow_sum(n: int) -> int:
    """A longer job that reports progress while it runs."""
    total = 0
    for i in range(1, n + 1):
        total += i
        time.sleep(0.01)
        local.progress(i, n, f"adding {i}")
    return total


def flaky(threshold: int) -> str:
    """Fails until it has been tried ``threshold`` times."""
    job = local.getJob()
    if job.attempts < threshold:
        raise RuntimeError(f"attempt {job.attempts} failed, as planned")
    return f"succeeded on attempt {job.attempts}"


def report(result: Any) -> str:
    """A callback: gets the job's result (or Failure)."""
    return f"callback saw {result!r}"


def _print_progress(tm: Any, job: Any) -> None:
    """Print the job's progress each time it changes, until it completes."""
    shown = None
    while job.status != zasync.COMPLETED:
        tm.begin()
        live = local.live_annotations(job).get("progress")
        if live and live["done"] != shown:
            shown = live["done"]
            print(f"  slow_sum: {live['done']}/{live['total']} {live['message']}")
        time.sleep(0.25)


def run_demo(uri: str, *, jobs: int = 20, uuid: str | None = None) -> int:
    """Run the demo on the database ``uri`` with a worker of ``jobs`` word
    counts and four more jobs; the worker is ``uuid`` (a new one when
    None), so that runs under one UUID show as one worker in ``zasync
    status``. Returns the exit code (0)."""
    db = open_db(uri)
    zasync.install(db)
    dispatcher = Dispatcher(db, uuid, threads=4).start()
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queue = conn.root()[zasync.KEY][""]
        started = time.time()
        words = [
            queue.put(zasync.Job(count_words, f"demo job number {i} " * (i + 1)))
            for i in range(jobs)
        ]
        long_job = queue.put(zasync.Job(slow_sum, 100))
        long_job.addCallback(report)
        batch = queue.put(
            zasync.serial(zasync.Job(count_words, "first step"), zasync.Job(flaky, 99))
        )
        retried = queue.put(
            zasync.Job(flaky, 2),
            retry_policy_factory=zasync.RetryWithDelay.configure(error_delay=0.2),
        )
        tm.commit()
        # As `zasync status` counts them: the serial batch and its 2 steps
        # are 3 jobs; the callback is part of its job.
        print(
            f"queued {jobs + 5} jobs in {uri} ({jobs} word counts, slow_sum "
            f"with a callback, a serial batch and its 2 steps, a job retried "
            f"once); a worker with 4 threads runs them"
        )
        _print_progress(tm, long_job)
        for job in words:
            wait_for_result(job, 30)
        print(f"word counts: {[job.result for job in words]}")
        print(
            f"slow_sum(100) = {wait_for_result(long_job)}; "
            f"{long_job.callbacks[0].result}"
        )
        steps = wait_for_result(batch)
        print(
            "serial batch: "
            + "; ".join(f"{j.callable_name} -> {j.result!r}" for j in steps)
        )
        print(f"retried job: {wait_for_result(retried)}")
        print(
            f"all done in {time.time() - started:.2f} s; try "
            f"`.venv/bin/zasync status --db {uri}`"
        )
    finally:
        tm.abort()
        conn.close()
        dispatcher.stop(10)
        db.close()
    return 0
