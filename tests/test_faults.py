"""Fault injection: the storage connection of real workers broken at random
moments, in a loop under load, and the guarantees that must hold after it.

Two runs, each against real processes: two ``zasync worker --import
tests.fault_jobs`` processes (two threads each) and this test process as
producer and observer.

- ``postgres`` (RelStorage): every backend of the test database is killed,
  ``pg_terminate_backend``, workers' and producer's alike;
- ``zeo``: the ZEO server is stopped and started again on the same address
  and file, by turns with SIGTERM and SIGKILL.

Each run injects :data:`FAULTS` faults, each at a moment chosen at random
among three kinds (:data:`MOMENTS`): just after jobs are queued (the
workers claim them), at the expected commit of a running job (right after
it returns), and in a quiet moment (heartbeats, lease renewals,
maintenance; the workers beat every 0.5 s). Jobs keep coming, a quarter
of them with ``zasync.NeverRetry``, from a producer thread of the test
(about 25 a second here), and between two faults the load runs for a
random 0.2-0.8 s.

Every job records its start in a file of its worker process
(tests/fault_jobs.py), whether or not its transaction commits. A run
ends 30 s after its last fault at most, and four tests check what it
left, each property on its own:

- no job lost: every job queued is COMPLETED, at the latest 60 s after
  the last fault;
- none stuck: all are COMPLETED within 30 s of the last fault;
- NeverRetry at most once: no NeverRetry job started twice (it may fail,
  with AbortedError or its commit's error);
- extra runs counted: for every other job, the starts recorded in the
  files are at most ``job.attempts``, and ``attempts >= 1``.

The random moments come from a seed printed with each run (``-s``) and
set with ``ZASYNC_FAULT_SEED``; a failure quotes it, the jobs concerned and
the workers' logs around them. The runs' figures (faults per kind, what
the workers logged) are printed too. Run them alone with ``pytest -m
faults -s``; both runs take about a minute and a half here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import psycopg2
import pytest
import transaction
from tests import fault_jobs
from tests.processes import WorkerProcess
from transaction.interfaces import NoTransaction, TransientError
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import POSKeyError, StorageError

from zasync.admin import find_job
from zasync.failure import Failure
from zasync.interfaces import COMPLETED, KEY
from zasync.interfaces import TimeoutError as WaitTimeout
from zasync.job import Job
from zasync.queue import install
from zasync.retry import NeverRetry
from zasync.storage import open_db, parse_uri
from zasync.testing import wait_until
from zasync.testservers import (
    DEFAULT_TEST_PG,
    ZEOServer,
    drop_postgres_database,
    fresh_postgres_database,
    postgres_available,
)

pytestmark = [pytest.mark.faults, pytest.mark.multiprocess]

#: faults injected per run
FAULTS = 30
#: seconds after the last fault by which every job must be COMPLETED
SETTLE = 30.0
#: seconds after the last fault after which an unfinished job counts as lost
LOST_AFTER = 60.0
#: what the workers run with: heartbeats often (so faults fall on them),
#: a lease long enough that a worker cut off for a moment is not declared
#: dead, maintenance often
WORKER_ARGS = [
    "--heartbeat",
    "0.5",
    "--lease",
    "10",
    "--maintenance-interval",
    "1",
    "--poll-interval",
    "0.5",
]
#: what the jobs sleep, seconds
JOB_SECONDS = (0.0, 0.005, 0.02, 0.05, 0.1)
#: seconds between the producer's jobs, on average
PRODUCE_EVERY = 0.01
#: seconds of load between a fault and the wait for the next one's moment
BETWEEN_FAULTS = (0.2, 0.8)
#: the kinds of moment a fault is injected at
MOMENTS = ("claim", "commit", "quiet")
#: the errors the test's own connection meets while the storage is away
STORAGE_ERRORS = (TransientError, ClientDisconnected, StorageError, psycopg2.Error)
#: seconds a producer commit or an observer read may take through faults
CLIENT_PATIENCE = 30.0
#: the worker log lines counted in the report: what the faults hit
LOG_SIGNS = {
    "batch conflicted": "jobs conflicted (",
    "job conflicted, tried again": "; trying again",
    "batch could not commit": "could not be committed",
    "thread waits for the storage": "storage disconnected; worker thread",
    "loop round failed": "; going on",
    "job failed": " failed: ",
    "job put back, thread failed": "put back after its worker thread failed",
    "rescued": "rescued job",
    "recovered": "recovered job",
    "no longer ours": "is no longer ours",
    "oid handed out twice": "already has the same oid",
    "traceback": "Traceback",
}


# -- the test process's connection ------------------------------------------


class Client:
    """The test process as producer and observer, through a connection of
    its own (broken by the faults like the workers'; each operation is
    tried again until it goes through)."""

    def __init__(self, uri: str, starts: Path):
        self.db = open_db(uri)
        install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)
        self.starts = str(starts)
        #: job id -> "retry" or "never"
        self.kinds: dict[str, str] = {}
        #: commits that raised, of jobs that were queued all the same
        self.in_doubt = 0

    def close(self) -> None:
        with contextlib.suppress(NoTransaction, *STORAGE_ERRORS):
            self.tm.abort()
        self.conn.close()
        self.db.close()

    def _retrying(self, operation: Callable[[], object], what: str) -> object:
        """``operation()`` (a whole transaction), tried again after a
        storage error until CLIENT_PATIENCE seconds have passed."""
        errors: list[str] = []

        def attempt() -> tuple[object]:
            try:
                return (operation(),)
            except (*STORAGE_ERRORS, ValueError) as e:
                if isinstance(e, ValueError) and not _oid_reused(e):
                    raise
                with contextlib.suppress(NoTransaction, *STORAGE_ERRORS):
                    self.tm.abort()
                errors.append(f"{type(e).__name__}: {e}"[:200])
                return ()

        found = wait_until(
            attempt,
            timeout=CLIENT_PATIENCE,
            interval=0.05,
            message=lambda: f"{what} through the faults; last errors: {errors[-3:]}",
        )
        return found[0]

    def put(self, seconds: float, *, never: bool) -> str:
        """Queue one job that sleeps ``seconds`` (NeverRetry if ``never``)
        in a transaction of its own; return its id once committed."""
        kind = "never" if never else "retry"

        def commit() -> str:
            self.tm.begin()
            queue = self.conn.root()[KEY][""]
            token = uuid.uuid4().hex
            job = queue.put(
                Job(fault_jobs.work, self.starts, seconds, kind, token),
                retry_policy_factory=NeverRetry if never else None,
            )
            # Known before the commit: an aborted one forgets the oid.
            oid, job_id = job._p_oid, job.id
            try:
                self.tm.commit()
            except STORAGE_ERRORS:
                # Lost in the commit, or only its answer: look.
                if self._exists(oid, token):
                    self.in_doubt += 1
                    return job_id
                raise
            return job_id

        job_id = self._retrying(commit, "queueing a job")
        self.kinds[job_id] = kind
        return job_id

    def _exists(self, oid: bytes, token: str) -> bool:
        """Whether the job queued with ``token`` was committed as ``oid``
        (another object may have that oid: see _oid_reused)."""
        self.tm.abort()

        def look() -> bool:
            self.tm.begin()
            try:
                found = self.conn.get(oid)
                found._p_activate()
                return isinstance(found, Job) and found.args[3:4] == (token,)
            except POSKeyError:
                return False
            finally:
                self.tm.abort()

        return bool(self._retrying(look, "looking for a job after a failed commit"))

    def states(self) -> dict[str, JobState]:
        """Every queued job's state, as committed now."""

        def read() -> dict[str, JobState]:
            self.tm.begin()
            try:
                return {
                    job_id: JobState.of(find_job(self.conn, job_id))
                    for job_id in self.kinds
                }
            finally:
                self.tm.abort()

        return self._retrying(read, "reading the jobs")

    def all_completed(self) -> bool:
        try:
            return all(s.status == COMPLETED for s in self.states().values())
        except WaitTimeout:
            return False


def _oid_reused(error: ValueError) -> bool:
    """A ZEO server started again hands out again the oids it had handed
    out before (they are not stored); a client that still holds some of
    them (ClientStorage keeps its batch across reconnections) may give one
    to a new object while its cache holds another client's object of that
    oid: the connection refuses it, and the next try takes the next oid."""
    return "already has the same oid" in str(error)


@dataclasses.dataclass(frozen=True)
class JobState:
    status: str
    attempts: int
    worker: str | None
    failed: bool
    result: str

    @classmethod
    def of(cls, job: Job) -> JobState:
        result = job.result
        text = (
            f"{result.type_name}: {result.getErrorMessage()}"
            if isinstance(result, Failure)
            else repr(result)
        )
        return cls(job.status, job.attempts, job.worker, job.failed, text[:160])


# -- faults ----------------------------------------------------------------------


class Injector(Protocol):
    def inject(self, index: int) -> tuple[str, bool]:
        """Inject fault number ``index``; return what was done, and
        whether it broke any connection."""


class PostgresFaults:
    """Kills every backend of the test database but the killer's."""

    def __init__(self, uri: str):
        spec = parse_uri(uri)
        self.dbname = psycopg2.extensions.parse_dsn(spec.dsn)["dbname"]
        self.server = os.environ.get("ZASYNC_TEST_PG") or DEFAULT_TEST_PG

    def inject(self, index: int) -> tuple[str, bool]:
        """Kill; return what was done, and whether any backend was."""
        conn = psycopg2.connect(self.server, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.dbname,),
                )
                killed = sum(1 for (done,) in cursor.fetchall() if done)
        finally:
            conn.close()
        return f"{killed} backends terminated", killed > 0


class ZEOFaults:
    """Stops the ZEO server (SIGTERM, then SIGKILL by turns) and starts it
    again on the same address and file."""

    def __init__(self, server: ZEOServer):
        self.server = server

    def inject(self, index: int) -> tuple[str, bool]:
        """Stop and start again; return what was done, and True."""
        if index % 2:
            self.server.kill()
            how = "SIGKILL"
        else:
            self.server.stop()
            how = "SIGTERM"
        self.server.start()
        return f"server {how} and restarted (pid {self.server.pid})", True


# -- one run -----------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    moment: str
    at: float  # time.time() when it was injected
    done: float  # when the storage was back (ZEO) or the kill returned
    what: str
    hit: bool  # whether it broke any connection


@dataclasses.dataclass
class FaultRun:
    """What a run left, for the tests to check."""

    storage: str
    seed: int
    faults: list[Fault]
    kinds: dict[str, str]
    #: job id -> state, when all were COMPLETED or SETTLE s after the last fault
    settled: dict[str, JobState]
    settled_in: float  # seconds from the last fault to ``settled``
    #: job id -> state, LOST_AFTER s after the last fault (or when settled)
    final: dict[str, JobState]
    starts: dict[str, list[fault_jobs.Start]]
    workers: list[WorkerProcess]
    exits: dict[str, int | None]  # worker name -> exit code if it exited
    #: producer commits that raised although the job was queued
    in_doubt: int = 0

    @property
    def last_fault(self) -> float:
        return self.faults[-1].done

    @property
    def seconds(self) -> float:
        return self.last_fault - self.faults[0].at

    def describe(self) -> str:
        return f"{self.storage} run, seed {self.seed}"

    def logs_about(self, job_ids: list[str], *, jobs: int = 4) -> str:
        """For the first ``jobs`` of ``job_ids``: the log lines of the
        worker that started it, from just before its first start to a
        second after its last one (tracebacks' inner lines left out), and
        the lines of any worker naming it."""
        by_pid = {w.pid: w for w in self.workers}
        parts = []
        for job_id in job_ids[:jobs]:
            runs = self.starts.get(job_id, [])
            named = re.compile(rf"\b(job {re.escape(job_id)}|0x{re.escape(job_id)})\b")
            lines = []
            for worker in self.workers:
                ran_here = [r.time for r in runs if by_pid.get(r.pid) is worker]
                low = min(ran_here, default=float("inf")) - 0.3
                high = max(ran_here, default=float("-inf")) + 1.0
                for line in worker.log().splitlines():
                    when = _log_time(line)
                    if when is None:
                        continue
                    if named.search(line) or (low <= when <= high and _telling(line)):
                        lines.append(f"  [{worker.name}] {line[:300]}")
            parts.append(
                f"log of job {job_id}:\n" + "\n".join(lines[:25] or ["  (nothing)"])
            )
        return "\n".join(parts)

    def job_report(self, job_ids: list[str]) -> str:
        rows = []
        for job_id in job_ids[:20]:
            state = self.final.get(job_id)
            runs = self.starts.get(job_id, [])
            rows.append(
                f"  job {job_id} ({self.kinds[job_id]}): {state}; "
                f"{len(runs)} starts "
                + ", ".join(
                    f"pid {r.pid} at {r.time - self.last_fault:+.2f}s" for r in runs
                )
            )
        return "\n".join(rows)


def _log_time(line: str) -> float | None:
    """The time of a worker's log record (``%(asctime)s`` first), or None
    for the lines inside a record (tracebacks)."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def _telling(line: str) -> bool:
    """A log record worth quoting: zasync's, or a warning or worse (the
    storage clients' INFO lines about reconnecting are left out)."""
    level, logger = (line[24:].split(" ", 2) + ["", ""])[:2]
    return logger.startswith("zasync") or level in ("WARNING", "ERROR", "CRITICAL")


class Producer(threading.Thread):
    """Queues jobs of random lengths, a quarter NeverRetry, one per
    transaction every :data:`PRODUCE_EVERY` seconds on average, through a
    connection of its own, until stopped; ``paused`` holds it."""

    def __init__(self, uri: str, starts: Path, seed: int):
        super().__init__(name="fault-producer", daemon=True)
        self.client = Client(uri, starts)
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.committed = threading.Event()
        self.lock = threading.Lock()
        #: job id -> seconds it sleeps
        self.seconds: dict[str, float] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.paused.is_set():
                    self.stopping.wait(0.01)
                    continue
                seconds = self.rng.choice(JOB_SECONDS)
                never = self.rng.random() < 0.25
                job_id = self.client.put(seconds, never=never)
                with self.lock:
                    self.seconds[job_id] = seconds
                self.committed.set()
                self.stopping.wait(self.rng.uniform(0, 2 * PRODUCE_EVERY))
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> None:
        """Stop and join; raise what stopped it early, if anything did."""
        self.stopping.set()
        self.join(CLIENT_PATIENCE + 10)
        self.client.close()
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error

    def jobs(self) -> dict[str, float]:
        with self.lock:
            return dict(self.seconds)


def _last_start(starts_dir: Path) -> float:
    return max(
        (r[-1].time for r in fault_jobs.starts(starts_dir).values()), default=0.0
    )


def _wait_for_moment(
    moment: str, producer: Producer, starts_dir: Path, rng: random.Random
) -> None:
    """Return at a moment of the kind ``moment`` (see MOMENTS)."""
    if moment == "claim":
        # The workers claim what a commit queued within milliseconds.
        producer.committed.clear()
        producer.committed.wait(5.0)
        time.sleep(rng.uniform(0.0, 0.005))
    elif moment == "commit":
        # The end of a job that sleeps at least 20 ms: its commit (or its
        # batch's) follows at once.
        since = time.time()

        def a_job_started() -> float:
            jobs = producer.jobs()
            ends = [
                run[-1].time + jobs[job_id]
                for job_id, run in fault_jobs.starts(starts_dir).items()
                if run[-1].time > since and jobs.get(job_id, 0.0) >= 0.02
            ]
            return min(ends, default=0.0)

        with contextlib.suppress(WaitTimeout):
            end = wait_until(a_job_started, timeout=5.0, interval=0.002)
            time.sleep(max(0.0, end + rng.uniform(0.0, 0.005) - time.time()))
    else:
        # Nothing queued and nothing running: heartbeats (every 0.5 s),
        # lease renewals, maintenance, the loops' polls.
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: time.time() - _last_start(starts_dir) > 0.2,
                timeout=5.0,
                interval=0.05,
            )
        time.sleep(rng.uniform(0.0, 0.6))


def run_faults(
    uri: str, faults_of: Callable[[], Injector], directory: Path, storage: str
) -> Iterator[FaultRun]:
    """Start the workers, inject FAULTS faults under load, wait for the
    jobs to settle; yield what the run left, then clean up."""
    seed = int(os.environ.get("ZASYNC_FAULT_SEED") or random.randrange(1 << 30))
    print(f"\nfaults on {storage}: seed {seed} (ZASYNC_FAULT_SEED)")
    rng = random.Random(seed)
    starts_dir = directory / "starts"
    starts_dir.mkdir(parents=True)
    workers = [
        WorkerProcess(
            uri,
            directory / "workers",
            f"w{n}",
            threads=2,
            args=WORKER_ARGS,
            imports=("tests.fault_jobs",),
        )
        for n in (1, 2)
    ]
    observer = producer = None
    try:
        observer = Client(uri, starts_dir)
        for worker in workers:
            worker.start(timeout=60)
        injector = faults_of()
        producer = Producer(uri, starts_dir, rng.randrange(1 << 30))
        producer.start()
        faults = []
        for index in range(FAULTS):
            moment = rng.choice(MOMENTS)
            if moment == "quiet":
                producer.paused.set()
            _wait_for_moment(moment, producer, starts_dir, rng)
            at = time.time()
            what, hit = injector.inject(index)
            faults.append(Fault(moment, at, time.time(), what, hit))
            producer.paused.clear()
            time.sleep(rng.uniform(*BETWEEN_FAULTS))  # under load
        producer.stop()
        observer.kinds = {
            job_id: producer.client.kinds[job_id] for job_id in producer.jobs()
        }
        run = _settle(observer, workers, faults, starts_dir, storage=storage, seed=seed)
        run.in_doubt = producer.client.in_doubt
        _print_report(run)
        yield run
    finally:
        if producer is not None and producer.is_alive():
            producer.stopping.set()
            producer.join(CLIENT_PATIENCE + 10)
        for worker in workers:
            worker.kill()
        if observer is not None:
            observer.close()


def _settle(
    client: Client,
    workers: list[WorkerProcess],
    faults: list[Fault],
    starts_dir: Path,
    *,
    storage: str,
    seed: int,
) -> FaultRun:
    """Wait until every job is COMPLETED, SETTLE s after the last fault at
    most (LOST_AFTER s if some are not by then), and read what is left."""
    last = faults[-1].done

    def left() -> float:
        return max(0.0, last + SETTLE - time.time())

    with contextlib.suppress(WaitTimeout):
        wait_until(client.all_completed, timeout=left(), interval=0.2)
    settled = client.states()
    settled_in = time.time() - last
    final = settled
    if any(s.status != COMPLETED for s in settled.values()):
        with contextlib.suppress(WaitTimeout):
            wait_until(
                client.all_completed,
                timeout=max(0.0, last + LOST_AFTER - time.time()),
                interval=0.5,
            )
        final = client.states()
    return FaultRun(
        storage=storage,
        seed=seed,
        faults=faults,
        kinds=dict(client.kinds),
        settled=settled,
        settled_in=settled_in,
        final=final,
        starts=fault_jobs.starts(starts_dir),
        workers=workers,
        exits={w.name: w.process.poll() for w in workers},
    )


def _print_report(run: FaultRun) -> None:
    moments = Counter(f.moment for f in run.faults)
    statuses = Counter(s.status for s in run.final.values())
    failed = Counter(
        (run.kinds[i], s.result.split(":")[0]) for i, s in run.final.items() if s.failed
    )
    twice = sum(1 for runs in run.starts.values() if len(runs) > 1)
    print(
        f"{run.describe()}: {len(run.faults)} faults in {run.seconds:.0f} s "
        f"({dict(moments)}), "
        f"{len(run.kinds)} jobs ({Counter(run.kinds.values())}); "
        f"settled {run.settled_in:.1f} s after the last fault; final "
        f"statuses {dict(statuses)}; failures {dict(failed)}; "
        f"{twice} jobs started more than once; {run.in_doubt} producer commits "
        f"raised but queued the job; worker exits {run.exits}"
    )
    for worker in run.workers:
        log = worker.log()
        signs = {name: log.count(text) for name, text in LOG_SIGNS.items()}
        print(f"  {worker.name} log: {signs}")


# -- the runs, one per storage ----------------------------------------------------


@pytest.fixture(scope="module", params=["postgres", "zeo"])
def fault_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultRun]:
    directory = tmp_path_factory.mktemp(f"faults-{request.param}")
    if request.param == "postgres":
        problem = postgres_available()
        if problem is not None:
            if os.environ.get("CI"):  # as conftest's missing_service
                pytest.fail(problem, pytrace=False)
            pytest.skip(problem)
        uri = fresh_postgres_database("zasync_faults")
        try:
            yield from run_faults(
                uri, lambda: PostgresFaults(uri), directory, "postgres"
            )
        finally:
            drop_postgres_database(uri)
    else:
        with ZEOServer(directory / "zeo") as server:
            yield from run_faults(
                server.uri, lambda: ZEOFaults(server), directory, "zeo"
            )


def test_faults_were_injected(fault_run: FaultRun) -> None:
    hits = [f for f in fault_run.faults if f.hit]
    assert len(hits) >= 20, f"{fault_run.describe()}: {fault_run.faults}"
    assert all(w is None for w in fault_run.exits.values()), (
        f"{fault_run.describe()}: a worker exited: {fault_run.exits}"
    )


def test_no_job_lost(fault_run: FaultRun) -> None:
    lost = sorted(i for i, s in fault_run.final.items() if s.status != COMPLETED)
    assert not lost, (
        f"{fault_run.describe()}: {len(lost)} of {len(fault_run.kinds)} jobs not "
        f"COMPLETED {LOST_AFTER:g} s after the last fault:\n"
        f"{fault_run.job_report(lost)}\n{fault_run.logs_about(lost)}"
    )


def test_none_stuck(fault_run: FaultRun) -> None:
    stuck = sorted(i for i, s in fault_run.settled.items() if s.status != COMPLETED)
    assert not stuck, (
        f"{fault_run.describe()}: {len(stuck)} jobs not COMPLETED "
        f"{SETTLE:g} s after the last fault:\n"
        f"{fault_run.job_report(stuck)}\n{fault_run.logs_about(stuck)}"
    )


def test_never_retry_started_at_most_once(fault_run: FaultRun) -> None:
    twice = sorted(
        job_id
        for job_id, kind in fault_run.kinds.items()
        if kind == "never" and len(fault_run.starts.get(job_id, [])) > 1
    )
    assert not twice, (
        f"{fault_run.describe()}: {len(twice)} NeverRetry jobs started more "
        f"than once:\n{fault_run.job_report(twice)}\n{fault_run.logs_about(twice)}"
    )


def test_extra_runs_counted_in_attempts(fault_run: FaultRun) -> None:
    uncounted = sorted(
        job_id
        for job_id, kind in fault_run.kinds.items()
        if kind == "retry"
        and fault_run.final[job_id].status == COMPLETED
        and not (
            len(fault_run.starts.get(job_id, [])) <= fault_run.final[job_id].attempts
            and fault_run.final[job_id].attempts >= 1
        )
    )
    assert not uncounted, (
        f"{fault_run.describe()}: {len(uncounted)} jobs whose starts are not "
        f"counted in job.attempts (or whose attempts are 0):\n"
        f"{fault_run.job_report(uncounted)}\n{fault_run.logs_about(uncounted)}"
    )
