"""How long a job that never checks takes to end once cancelled or past
its timeout, and a job stuck in C code to be abandoned.

``python -m benchmarks.probes.interrupt_latency [--runs 5] [--grace 0.5]
[--stuck-delay 1]`` runs one worker thread on a FileStorage in a
temporary directory and, ``--runs`` times each: a pure-Python loop
cancelled while it runs (from the cancel's commit to the job's end), the
same loop with a 0.5 s timeout (from its expiry to the job's end), and a
``time.sleep(3600)`` job with a 0.5 s timeout (from its expiry to its
abandonment). Prints the median and the maximum of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import transaction

from zasync import admin
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_for_result, wait_until

TIMEOUT = 0.5
_running: set[str] = set()
_lock = threading.Lock()


def spin(key: str) -> None:
    """A pure-Python loop that never calls zasync.local (for a minute)."""
    with _lock:
        _running.add(key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass


def sleep(key: str) -> None:
    """Blocked in C code for an hour."""
    time.sleep(3600)


def _cancel(db: object, job: Job) -> float:
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)  # type: ignore[attr-defined]
    try:
        with tm:
            admin.cancel(conn.get(job._p_oid))
        return time.monotonic()
    finally:
        conn.close()


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.probes.interrupt_latency"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--grace", type=float, default=0.5)
    parser.add_argument("--stuck-delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        db = open_db(str(Path(directory) / "Data.fs"))
        install(db)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        queue = conn.root()[KEY][""]
        dispatcher = Dispatcher(
            db,
            threads=1,
            poll_interval=0.2,
            interrupt_grace=args.grace,
            stuck_delay=args.stuck_delay,
        ).start()
        cancelled, timed_out, abandoned = [], [], []
        try:
            for run in range(args.runs):
                job = queue.put(Job(spin, f"cancel {run}"))
                tm.commit()
                wait_until(lambda run=run: f"cancel {run}" in _running)
                requested = _cancel(db, job)
                wait_for_result(job, 30)
                cancelled.append(time.monotonic() - requested)
                for func, found in ((spin, timed_out), (sleep, abandoned)):
                    job = queue.put(Job(func, f"timeout {run}"), timeout=TIMEOUT)
                    tm.commit()
                    wait_for_result(job, 30)
                    ran = job.active_end.timestamp() - job.active_start.timestamp()
                    found.append(ran - TIMEOUT)
        finally:
            dispatcher.stop(10)
            tm.abort()
            conn.close()
            db.close()
    print(
        f"interrupt_grace {args.grace:g} s, stuck_delay {args.stuck_delay:g} s, "
        f"{args.runs} runs each, 1 thread, FileStorage"
    )
    print(f"cancel committed -> loop ended (JobCancelled): {_summary(cancelled)}")
    print(f"timeout expired -> loop ended (JobTimeout): {_summary(timed_out)}")
    print(f"timeout expired -> time.sleep job abandoned: {_summary(abandoned)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
