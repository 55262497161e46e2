"""How fast the jobs control panel lists jobs with many finished jobs kept.

Fills a FileStorage with ``--jobs`` finished Plone job records (10% failed,
their end times spread over ``--hours``), put in the worker slots' ``done``
trees as the executor leaves them, then times the backend calls of the
control panel and the REST API (``zasync.plone.browser.jobs``) on a fresh
connection (cold: objects loaded from the storage) and again (warm: from
the connection's cache)::

    .venv/bin/python -m benchmarks.probes.ui_listing            # 100,000 jobs
    .venv/bin/python -m benchmarks.probes.ui_listing --jobs 10000 --hours 1

Needs Plone installed (``zasync[plone]``); outside the default test run.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import tempfile
import time
from pathlib import Path

import transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage

from zasync.failure import Failure
from zasync.interfaces import COMPLETED
from zasync.job import Job
from zasync.plone.browser import jobs as plone_jobs
from zasync.plone.runner import JobOrigin, run_as_user
from zasync.plone.tests import funcs
from zasync.queue import install

SITE = ("", "plone")
USERS = ("editor", "reviewer", "admin", None)
BATCH = 5_000
THREADS = 4


def fill(db: DB, *, jobs: int, hours: float, seed: int = 1) -> None:
    """Add ``jobs`` finished jobs to the done trees of one worker record."""
    rng = random.Random(seed)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    with tm:
        queues = install(conn)
        record = queues.workers.register("bench-worker")
        record._begin(THREADS, ("",), time.time())
    now = time.time()
    made = 0
    while made < jobs:
        with tm:
            queues = conn.root()["zasync"]
            queue = queues[""]
            slots = queues.workers["bench-worker"].slots
            for _ in range(min(BATCH, jobs - made)):
                origin = JobOrigin(
                    database="main",
                    site_path=SITE,
                    context_path=(*SITE, f"folder-{made % 50}"),
                    user_folder_path=(*SITE, "acl_users"),
                    user_id=rng.choice(USERS),
                    site_url="http://localhost:8080/plone",
                )
                job = Job(run_as_user, origin, funcs.addNumbers, made, 1)
                conn.add(job)
                end = now - rng.random() * hours * 3600
                job.active_start = datetime.datetime.fromtimestamp(
                    end - 0.01, datetime.UTC
                )
                job.active_end = datetime.datetime.fromtimestamp(end, datetime.UTC)
                job._queue = queue
                job._attempts = 1
                job._worker = "bench-worker"
                job._slot = made % THREADS
                job.quota_names = ("default",)
                if made % 10 == 9:
                    try:
                        raise RuntimeError(f"job {made} failed")
                    except RuntimeError:
                        job._result = Failure()
                else:
                    job._result = made + 1
                job._status = COMPLETED
                slots[made % THREADS]._add_done(job, int(end * 1_000_000))
                made += 1
        conn.cacheMinimize()
    conn.close()


def timed(db: DB, work, *, repeat: int = 5) -> tuple[float, float, object]:
    """(cold ms, median warm ms, result) of ``work(queues)`` in a fresh
    connection with an empty cache."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    conn.cacheMinimize()
    try:
        tm.begin()
        queues = conn.root()["zasync"]
        clock = time.perf_counter()
        result = work(queues)
        cold = (time.perf_counter() - clock) * 1000
        warm = []
        for _ in range(repeat):
            clock = time.perf_counter()
            work(queues)
            warm.append((time.perf_counter() - clock) * 1000)
        tm.abort()
    finally:
        conn.close()
    return cold, statistics.median(warm), result


def cases(scope):
    page = plone_jobs.PAGE_SIZES[0]

    def listing(job_filter, start=0):
        return lambda q: len(
            plone_jobs.list_page(
                q, scope=scope, job_filter=job_filter, start=start, size=page
            )[0]
        )

    return [
        ("completed, page 1", listing(plone_jobs.JobFilter(status=("completed",)))),
        ("failed, page 1", listing(plone_jobs.JobFilter(status=("failed",)))),
        (
            "completed, page 51 (start 1000)",
            listing(plone_jobs.JobFilter(status=("completed",)), start=1000),
        ),
        (
            "completed, user=editor, page 1",
            listing(plone_jobs.JobFilter(status=("completed",), user="editor")),
        ),
        (
            "completed, path=/folder-7, page 1",
            listing(plone_jobs.JobFilter(status=("completed",), path="/folder-7")),
        ),
        (
            "no match (full scan)",
            listing(plone_jobs.JobFilter(status=("completed",), user="nobody")),
        ),
        ("overview (5 and 60 min)", lambda q: plone_jobs.overview(q, scope=scope)),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0, help="spread of end times")
    parser.add_argument("--db", type=Path, help="FileStorage path (default: temporary)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "Data.fs"
        db = DB(FileStorage(str(path)), cache_size=30_000)
        try:
            clock = time.perf_counter()
            fill(db, jobs=args.jobs, hours=args.hours)
            seconds = time.perf_counter() - clock
            size = path.stat().st_size / 1e6
            print(
                f"filled {args.jobs:,} finished jobs over {args.hours:g} h in "
                f"{seconds:.1f} s ({size:.0f} MB)"
            )
            scope = plone_jobs.Scope(site_path=SITE)
            print(f"{'backend call':<36} {'cold ms':>9} {'warm ms':>9}  result")
            for name, work in cases(scope):
                cold, warm, result = timed(db, work)
                if isinstance(result, dict):
                    result = {k: v for k, v in result["throughput"].items()}
                print(f"{name:<36} {cold:>9.1f} {warm:>9.1f}  {result}")
        finally:
            db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
