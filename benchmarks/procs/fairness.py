"""W8 fairness, setup (a): FileStorage, the worker in this process.

``python -m benchmarks.procs.fairness latency --db URI --blocked N --jobs M
--interval S``: a quota ``w8`` of size 1 whose slot a job holds (it runs
until this process releases it), ``N`` jobs queued behind it in that quota
(``put_many``, 1,000 a transaction, the worker running), then ``M`` free
jobs ``add(0, i)``, one per transaction every ``S`` seconds (as W2's
producer). Prints ``load_seconds``, the producer's ``calls`` and
``commits`` (by i), ``started``, the free jobs that started within
:data:`START_TIMEOUT` seconds of the last commit, and ``released``, the
time the holder was let go (jobs that start after it, while the worker
stops, do not count).

``python -m benchmarks.procs.fairness enqueue --dir DIR --jobs M``: on a
fresh FileStorage each, with no worker, ``M`` puts one per transaction as
fast as they go: plain, with a distinct ``unique_key`` each, with ``lock``
one of :data:`LOCKS` keys. Prints the seconds of each (``null`` where the
engine has no such option, with its error under ``unsupported``).

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import transaction

import zasync
from benchmarks.jobs import ENV, add
from benchmarks.procs.producer import produce
from benchmarks.stamps import StampReader
from benchmarks.workloads.w8_fairness import QUOTA, hold, release
from zasync.dispatcher import Dispatcher
from zasync.storage import open_db

THREADS = 4  # the default of zasync worker
BATCH = 1000  # blocked jobs per put_many transaction
LOCKS = 50
#: seconds the free jobs have to start after the producer's last commit
START_TIMEOUT = 30.0
#: the blocked jobs' first argument (free jobs: 0; the holder: 2)
BLOCKED_TAG = 1


def _wait_stamps(reader: StampReader, count: int, timeout: float) -> int:
    """Wait until ``count`` jobs stamped their start, or ``timeout``
    seconds; return how many did."""
    deadline = time.monotonic() + timeout
    while reader.count() < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return reader.count()


def run_latency(uri: str, blocked: int, jobs: int, interval: float) -> dict:
    reader = StampReader(Path(os.environ[ENV]))
    db = open_db(uri)
    try:
        zasync.install(db)
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                queue = conn.root()[zasync.KEY][""]
                queue.quotas.create(QUOTA, 1)
                queue.put(zasync.Job(hold), quota_names=(QUOTA,))
            dispatcher = Dispatcher(db, threads=THREADS).start()
            try:
                if _wait_stamps(reader, 1, 30) < 1:
                    raise RuntimeError("the job holding the quota did not start")
                began = time.monotonic()
                for start in range(0, blocked, BATCH):
                    with tm:
                        queue = conn.root()[zasync.KEY][""]
                        queue.put_many(
                            [
                                zasync.Job(add, BLOCKED_TAG, i)
                                for i in range(start, min(blocked, start + BATCH))
                            ],
                            quota_names=(QUOTA,),
                        )
                load_seconds = time.monotonic() - began
                time.sleep(1.0)  # idle and running, as W2
                result = produce(db, count=jobs, tag=0, interval=interval)
                # nothing else starts while the holder runs: the holder's
                # stamp and the free jobs'
                started = _wait_stamps(reader, 1 + jobs, START_TIMEOUT) - 1
            finally:
                released = time.time()
                release()
                dispatcher.stop(30)
        finally:
            conn.close()
    finally:
        db.close()
    return {
        "load_seconds": load_seconds,
        "calls": result["calls"],
        "commits": result["commits"],
        "started": started,
        "released": released,
    }


def _options(variant: str, i: int) -> dict:
    if variant == "unique_key":
        return {"unique_key": f"w8-{i}"}
    if variant == "lock":
        return {"lock": f"w8-{i % LOCKS}"}
    return {}


def _puts(directory: Path, jobs: int, variant: str) -> float:
    """Seconds from the first put to the last commit."""
    directory.mkdir(parents=True)
    db = open_db(f"file://{directory / 'Data.fs'}")
    try:
        zasync.install(db)
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            began = time.perf_counter()
            for i in range(jobs):
                with tm:
                    queue = conn.root()[zasync.KEY][""]
                    queue.put(zasync.Job(add, 3, i), **_options(variant, i))
            return time.perf_counter() - began
        finally:
            conn.close()
    finally:
        db.close()


def run_enqueue(directory: Path, jobs: int) -> dict:
    _puts(directory / "warm-up", min(jobs, 200), "plain")
    seconds: dict[str, float | None] = {}
    unsupported: dict[str, str] = {}
    for variant in ("plain", "unique_key", "lock"):
        try:
            seconds[variant] = _puts(directory / variant, jobs, variant)
        except TypeError as e:  # an engine without the option
            if variant == "plain":
                raise
            seconds[variant] = None
            unsupported[variant] = str(e)
    return {"seconds": seconds, "unsupported": unsupported}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.fairness")
    parser.add_argument("part", choices=("latency", "enqueue"))
    parser.add_argument("--db")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--blocked", type=int, default=0)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    if args.part == "latency":
        if not args.db:
            parser.error("latency: --db is required")
        result = run_latency(args.db, args.blocked, args.jobs, args.interval)
    else:
        if not args.dir:
            parser.error("enqueue: --dir is required")
        result = run_enqueue(args.dir, args.jobs)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
