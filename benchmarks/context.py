"""What every workload gets: the parameters of the run (quick or full), a
scratch directory, the results, and the helpers shared by several
workloads (queueing, waiting for completion, counting finished jobs)."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import transaction

import zasync
from benchmarks.jobs import add
from benchmarks.results import Results
from benchmarks.setups import SetupMissingError
from benchmarks.spawn import ProcessFailedError
from benchmarks.stamps import StampReader
from zasync.failure import Failure
from zasync.storage import open_db


@dataclass(frozen=True)
class Params:
    """Sizes of one run of the harness. Full mode follows BENCH.md exactly;
    quick mode shrinks the workloads (and says so in the table)."""

    quick: bool
    runs: int = 3
    w1_jobs: int = 5000
    w1_batch: int = 100
    w2_jobs: int = 500
    w2_interval: float = 0.02
    w3_seconds: float = 120.0
    w4_jobs: int = 200
    w4_seconds: float = 0.2
    w4_cases: tuple[str, ...] = ("lease", "restart")
    w5_producers: int = 4
    w5_jobs: int = 1000
    w6_jobs: int = 500
    w6_batch: int = 100
    storage_seconds: float = 3.0
    #: commits the storages alone make at W2's pace (one every w2_interval)
    paced_commits: int = 200
    enqueue_jobs: int = 5000
    #: jobs queued after them by a producer that counts its round trips
    enqueue_counted: int = 1000
    enqueue_bulk: int = 10_000

    @classmethod
    def for_mode(cls, quick: bool, runs: int | None = None) -> Params:
        if not quick:
            return cls(quick=False, runs=runs or 3)
        # One run of each, smaller: an indication for day-to-day use, in
        # under three minutes on a 2-CPU machine whose FileStorage commits
        # ~2,300 times a second.
        return cls(
            quick=True,
            runs=runs or 1,
            w1_jobs=1000,
            w2_jobs=100,
            w3_seconds=20.0,
            w4_cases=("restart",),
            w5_jobs=200,
            w6_jobs=40,
            storage_seconds=1.0,
            paced_commits=50,
            enqueue_jobs=500,
            enqueue_counted=200,
        )


class Context:
    def __init__(self, params: Params, *, setups: set[str] | None, keep: bool):
        self.params = params
        self.setups = setups
        self.keep = keep
        self.results = Results()
        self.root = Path(tempfile.mkdtemp(prefix="zasync-bench-"))
        self._counter = itertools.count(1)
        self.failed = False

    def close(self) -> None:
        if self.keep or self.failed:
            why = "" if self.keep else " (something failed: see the logs there)"
            print(f"scratch files kept in {self.root}{why}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def wants(self, letter: str) -> bool:
        return self.setups is None or letter in self.setups

    def scratch(self, name: str) -> Path:
        """A new directory for one run, with ``stamps/`` and ``logs/``."""
        path = self.root / f"{next(self._counter):03d}-{name}"
        (path / "stamps").mkdir(parents=True)
        (path / "logs").mkdir()
        return path

    def progress(self, text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def setup(self, workload: str, setup: str) -> Iterator[None]:
        """Run one workload on one setup: a missing setup or a failure
        becomes the row's note, and the other setups go on."""
        try:
            yield
        except SetupMissingError as e:
            self.results.note(workload, setup, f"setup missing: {e}")
            self.progress(f"{workload} {setup}: setup missing: {e}")
        except Exception as e:
            self.failed = True
            message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            self.results.note(workload, setup, f"failed: {message}")
            print(f"{workload} {setup} failed:", file=sys.stderr)
            traceback.print_exc()


# -- the database, from the harness's side ------------------------------------


def open_installed(uri: str):
    """Open ``uri`` with zasync's default queue installed."""
    db = open_db(uri)
    try:
        zasync.install(db)
    except BaseException:
        db.close()
        raise
    return db


def enqueue(db, count: int, *, batch: int, func=None, tag: int = 0) -> None:
    """Queue ``func(tag, i)`` (default ``add``) for i < count, ``batch``
    jobs per transaction."""
    func = func or add
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for start in range(0, count, batch):
            with tm:
                queue = conn.root()[zasync.KEY][""]
                for i in range(start, min(count, start + batch)):
                    queue.put(zasync.Job(func, tag, i))
    finally:
        conn.close()


class Watcher:
    """A connection of the harness's own that reads the queue's state."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = db.open(transaction_manager=self.tm)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.tm.abort()
        self.conn.close()

    def counts(self) -> tuple[int, int, int]:
        """(pending, claimed or running, finished) jobs now."""
        self.tm.begin()
        try:
            return counts(self.conn)
        finally:
            self.tm.abort()

    def completed_ids(self) -> set[tuple[int, int]]:
        """The (a, b) arguments of every COMPLETED job that did not fail."""
        self.tm.begin()
        try:
            ids = set()
            for record in self.conn.root()[zasync.KEY].workers.values():
                for slot in record.slots:
                    for job in slot.done.values():
                        if job.status == zasync.COMPLETED and not isinstance(
                            job._result, Failure
                        ):
                            ids.add(tuple(job.args[:2]))
            return ids
        finally:
            self.tm.abort()

    def wait_completed(
        self, stamps: StampReader, count: int, timeout: float, workers=()
    ) -> float:
        """Wait until ``count`` jobs are finished (nothing pending or
        running); return the time it was seen. Reads the stamp files until
        ``count`` jobs started, then the database every 10 ms. Raises
        TimeoutError, or ProcessFailedError when one of ``workers`` exits."""
        deadline = time.monotonic() + timeout
        while stamps.count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stamps.count()} of {count} jobs started")
            for worker in workers:
                if worker.popen.poll() is not None:
                    raise ProcessFailedError(f"{worker.name} exited{worker.tail()}")
            time.sleep(0.01)
        while True:
            pending, active, done = self.counts()
            if not pending and not active and done >= count:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"after {timeout:g} s: {pending} pending, {active} running, "
                    f"{done} of {count} finished"
                )
            time.sleep(0.01)


def counts(conn) -> tuple[int, int, int]:
    """(pending, claimed or running, finished) jobs as ``conn`` sees them."""
    queues = conn.root()[zasync.KEY]
    pending = sum(len(queue) for queue in queues.values())
    active = done = 0
    for record in queues.workers.values():
        for slot in record.slots:
            active += len(slot.active)
            done += len(slot.done)
    return pending, active, done


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), interpolating between ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
