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
one of :data:`LOCKS` keys, taking turns. Prints for each kind the
seconds, the CPU seconds of the putting thread and the bytes the
FileStorage grew (``null`` where the engine has no such option, with its
error under ``unsupported``), and ``puts``, how many of each were timed.

``python -m benchmarks.procs.fairness throughput --db URI --blocked N
--jobs M``: with no worker running, the job holding quota ``w8``, ``N``
jobs in that quota behind it and ``M`` free jobs ``add(0, i)`` (100 a
transaction, as W1); then the worker starts. Prints ``seconds``, from its
start until the M free jobs have started, and ``started``.

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
VARIANTS = ("plain", "unique_key", "lock")
#: turns each kind of put takes (each commit's fsync varies with what
#: else the disk does: many short turns spread that over all kinds)
ROUNDS = 10
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


def _hold_quota(tm: Any, conn: Any) -> None:
    """The quota of size 1, and the job that holds it until the end."""
    with tm:
        queue = conn.root()[zasync.KEY][""]
        queue.quotas.create(QUOTA, 1)
        queue.put(zasync.Job(hold), quota_names=(QUOTA,))


def _queue_blocked(tm: Any, conn: Any, blocked: int) -> None:
    """``blocked`` jobs in the quota, BATCH a transaction."""
    for start in range(0, blocked, BATCH):
        with tm:
            conn.root()[zasync.KEY][""].put_many(
                [
                    zasync.Job(add, BLOCKED_TAG, i)
                    for i in range(start, min(blocked, start + BATCH))
                ],
                quota_names=(QUOTA,),
            )


@contextlib.contextmanager
def _database(uri: str) -> Iterator[tuple[Any, Any, Any]]:
    """(db, its transaction manager, a connection), zasync installed and
    the quota held (:func:`_hold_quota`); closed at the end."""
    db = open_db(uri)
    try:
        zasync.install(db)
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            _hold_quota(tm, conn)
            yield db, tm, conn
        finally:
            conn.close()
    finally:
        db.close()


def run_latency(uri: str, blocked: int, jobs: int, interval: float) -> dict:
    reader = StampReader(Path(os.environ[ENV]))
    with _database(uri) as (db, tm, conn):
        dispatcher = Dispatcher(db, threads=THREADS).start()
        try:
            if _wait_stamps(reader, 1, 30) < 1:
                raise RuntimeError("the job holding the quota did not start")
            began = time.monotonic()
            _queue_blocked(tm, conn, blocked)
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
    return {
        "load_seconds": load_seconds,
        "calls": result["calls"],
        "commits": result["commits"],
        "started": started,
        "released": released,
    }


def run_throughput(uri: str, blocked: int, jobs: int) -> dict:
    reader = StampReader(Path(os.environ[ENV]))
    with _database(uri) as (db, tm, conn):
        _queue_blocked(tm, conn, blocked)
        for start in range(0, jobs, 100):
            with tm:
                conn.root()[zasync.KEY][""].put_many(
                    [
                        zasync.Job(add, 0, i)
                        for i in range(start, min(jobs, start + 100))
                    ]
                )
        # The producer is done: its connection lets go of the jobs it made
        # (in W1 the producer is another process, or gone).
        conn.cacheMinimize()
        gc.collect()
        began = time.monotonic()
        dispatcher = Dispatcher(db, threads=THREADS).start()
        try:
            # the holder's stamp and the free jobs'
            started = _wait_stamps(reader, 1 + jobs, 600) - 1
            seconds = time.monotonic() - began
        finally:
            release()
            dispatcher.stop(30)
    return {"seconds": seconds, "started": started}


def _options(variant: str, i: int) -> dict:
    if variant == "unique_key":
        return {"unique_key": f"w8-{i}"}
    if variant == "lock":
        return {"lock": f"w8-{i % LOCKS}"}
    return {}


class _Putter:
    """One kind of put on a FileStorage of its own, with no worker."""

    def __init__(self, directory: Path, variant: str):
        directory.mkdir(parents=True)
        self.variant = variant
        self.db = open_db(f"file://{directory / 'Data.fs'}")
        zasync.install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)
        self.path = directory / "Data.fs"
        self.done = 0
        self.reset()

    def reset(self) -> None:
        self.seconds = self.cpu = 0.0
        self.bytes = 0

    def puts(self, count: int) -> None:
        """``count`` more puts, one per transaction, timed."""
        tm, variant = self.tm, self.variant
        size = os.path.getsize(self.path)
        began, cpu = time.perf_counter(), time.thread_time()
        for i in range(self.done, self.done + count):
            with tm:
                queue = self.conn.root()[zasync.KEY][""]
                queue.put(zasync.Job(add, 3, i), **_options(variant, i))
        self.seconds += time.perf_counter() - began
        self.cpu += time.thread_time() - cpu
        self.bytes += os.path.getsize(self.path) - size
        self.done += count

    def check(self) -> None:
        """RuntimeError unless every put queued a job."""
        with self.tm:
            pending = len(self.conn.root()[zasync.KEY][""])
        if pending != self.done:
            raise RuntimeError(f"put({self.variant}): {pending} of {self.done} queued")

    def close(self) -> None:
        self.conn.close()
        self.db.close()


def run_enqueue(directory: Path, jobs: int) -> dict:
    """The kinds take turns, :data:`ROUNDS` times ``jobs / ROUNDS`` puts
    each (the first kind changing each round), so that a change in the
    machine's speed falls on all of them."""
    putters = [_Putter(directory / "warm-up", "plain")]
    try:
        putters[0].puts(min(jobs, 200))
        unsupported: dict[str, str] = {}
        kinds = []
        for variant in VARIANTS:
            putter = _Putter(directory / variant, variant)
            putters.append(putter)
            try:
                putter.puts(1)  # an engine without the option fails here
            except TypeError as e:
                if variant == "plain":
                    raise
                unsupported[variant] = str(e)
                continue
            putter.reset()  # its keys go on from 1: all distinct
            kinds.append(putter)
        per_round = jobs // ROUNDS
        for index in range(ROUNDS):
            for putter in kinds[index % len(kinds) :] + kinds[: index % len(kinds)]:
                putter.puts(per_round)
        seconds: dict[str, float | None] = dict.fromkeys(VARIANTS)
        cpu: dict[str, float | None] = dict.fromkeys(VARIANTS)
        written: dict[str, int | None] = dict.fromkeys(VARIANTS)
        for putter in kinds:
            putter.check()
            seconds[putter.variant] = putter.seconds
            cpu[putter.variant] = putter.cpu
            written[putter.variant] = putter.bytes
        return {
            "seconds": seconds,
            "cpu": cpu,
            "bytes": written,
            "puts": per_round * ROUNDS,
            "unsupported": unsupported,
        }
    finally:
        for putter in putters:
            putter.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.fairness")
    parser.add_argument("part", choices=("latency", "enqueue", "throughput"))
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
    elif args.part == "throughput":
        if not args.db:
            parser.error("throughput: --db is required")
        result = run_throughput(args.db, args.blocked, args.jobs)
    else:
        if not args.dir:
            parser.error("enqueue: --dir is required")
        result = run_enqueue(args.dir, args.jobs)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
