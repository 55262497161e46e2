"""Setup (a): FileStorage, which one process holds, so the worker runs in
the measuring process (a :class:`zasync.dispatcher.Dispatcher` with the
default threads) and W2's producer is a thread beside it.

``python -m benchmarks.procs.inproc w1 --db URI --jobs N`` and
``python -m benchmarks.procs.inproc w2 --db URI --jobs N --interval S --out FILE``
print one JSON object on their last line.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import zasync
from benchmarks.context import Watcher, enqueue
from benchmarks.procs.producer import produce
from zasync import inprocess
from zasync.dispatcher import Dispatcher
from zasync.storage import open_db, parse_uri

THREADS = 4  # the default of zasync worker


def drained(db) -> tuple[int, int, int]:
    """(pending, claimed or running, finished) jobs, from a fresh read."""
    watcher = Watcher(db)
    try:
        return watcher.counts()
    finally:
        watcher.close()


def wait_for(dispatcher: Dispatcher, db, count: int, timeout: float) -> float:
    """Wait until ``count`` jobs are committed as finished; return when.
    Woken by the dispatcher's commits of finished jobs, it reads the
    database (to confirm ``jobs_run``, a plain counter) once that counter
    says all are done, or every 2 s: this thread shares the GIL with the
    worker's, and counting the finished jobs (len() of the slots' trees
    reads them all) four times a second took a tenth of the samples of a
    profile of this process."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 2.0
    while True:
        with inprocess.completed:
            inprocess.completed.wait(0.1 if dispatcher.jobs_run < count else 0.01)
        clock = time.monotonic()
        if dispatcher.jobs_run >= count or clock > next_check:
            pending, active, done = drained(db)
            if not pending and not active and done >= count:
                return time.time()
            next_check = clock + 2.0
        if clock > deadline:
            raise TimeoutError(f"{dispatcher.jobs_run} of {count} jobs in {timeout} s")


def run_w1(uri: str, jobs: int) -> dict:
    path = parse_uri(uri).path
    db = open_db(uri)
    try:
        zasync.install(db)
        size0 = os.path.getsize(path)
        enqueue(db, jobs, batch=100)
        size1 = os.path.getsize(path)
        started = time.time()
        dispatcher = Dispatcher(db, threads=THREADS).start()
        try:
            ended = wait_for(dispatcher, db, jobs, timeout=600)
            size2 = os.path.getsize(path)
        finally:
            dispatcher.stop(30)
        pending, active, done = drained(db)
    finally:
        db.close()
    return {
        "started": started,
        "seconds": ended - started,
        "enqueue_end": size1,
        "enqueue_bytes": size1 - size0,
        "run_bytes": size2 - size1,
        "run_end": size2,
        "done": done,
        "pending": pending,
    }


def run_w2(uri: str, jobs: int, interval: float) -> dict:
    db = open_db(uri)
    try:
        zasync.install(db)
        dispatcher = Dispatcher(db, threads=THREADS).start()
        try:
            time.sleep(1.0)  # idle and running
            result: dict = {}

            def producer():
                result.update(produce(db, count=jobs, tag=0, interval=interval))

            thread = threading.Thread(target=producer, name="producer")
            thread.start()
            thread.join()
            wait_for(dispatcher, db, jobs, timeout=120)
        finally:
            dispatcher.stop(30)
    finally:
        db.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.inproc")
    parser.add_argument("workload", choices=("w1", "w2"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    if args.workload == "w1":
        result = run_w1(args.db, args.jobs)
    else:
        result = run_w2(args.db, args.jobs, args.interval)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
