"""Unique keys and per-key locks across processes on one ZEO server:
producer processes putting the same keys at once, worker processes
running jobs that share locks, a worker killed while it holds a lock.

Jobs (tests/lock_jobs.py) stamp the start and the end of each run in a
file, outside the database, with their key and the worker's pid: the
test reads from it which runs overlapped.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transaction
from tests import lock_jobs
from tests.processes import ROOT, json_results, subprocess_env
from transaction.interfaces import NoTransaction, TransientError
from ZEO.Exceptions import ClientDisconnected

from zasync.admin import find_job, iter_active, iter_done, iter_pending, kind
from zasync.interfaces import COMPLETED, KEY, NEW
from zasync.job import Job
from zasync.queue import install
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = [pytest.mark.zeo, pytest.mark.multiprocess]

IMPORTS = ("tests.lock_jobs",)
# Short leases and maintenance rounds, so a dead worker's jobs are rescued
# within seconds.
FAST_RESCUE = ["--lease", "2", "--maintenance-interval", "0.5"]


class Client:
    """The test process as a producer and observer, through a connection
    of its own."""

    def __init__(self, uri: str):
        self.db = open_db(uri)
        install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)

    @property
    def queue(self):
        return self.conn.root()[KEY][""]

    def put(self, job: Job, **options) -> Job:
        """Put ``job`` in a transaction of its own; the job put returned.
        A commit that conflicts is tried again with a new Job calling the
        same (a job put in a transaction that aborted is not new any more,
        as an application making its job in the retried code does)."""
        call = (job.callable, list(job.args), dict(job.kwargs))
        for retry, attempt in enumerate(self.tm.attempts(10)):
            with attempt:
                if retry:
                    job = Job(call[0], *call[1], **call[2])
                got = self.queue.put(job, **options)
        return got

    def read(self, function):
        """``function(conn)`` in a fresh read-only transaction."""
        self.tm.begin()
        try:
            return function(self.conn)
        finally:
            self.tm.abort()

    def statuses(self, ids) -> dict[str, str]:
        return self.read(lambda conn: {i: find_job(conn, i).status for i in ids})

    def wait_completed(self, ids, timeout: float = 60.0) -> None:
        def left() -> dict[str, str] | str:
            try:
                states = self.statuses(ids)
            except (TransientError, ClientDisconnected) as e:
                return repr(e)
            return {i: s for i, s in states.items() if s != COMPLETED}

        def done() -> bool:
            unfinished = left()
            return not unfinished and not isinstance(unfinished, str)

        wait_until(
            done,
            timeout=timeout,
            message=lambda: f"jobs unfinished: {left()}",
        )

    def close(self) -> None:
        try:
            self.tm.abort()
        except NoTransaction:
            pass
        self.conn.close()
        self.db.close()


@pytest.fixture
def client(zeo_server):
    c = Client(zeo_server.uri)
    yield c
    c.close()


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return tmp_path / "stamps"


def jobs_by_unique_key(conn) -> dict[str, list[Job]]:
    """Every job of the database that has a unique key, pending, running
    or finished, by key."""
    queues = conn.root()[KEY]
    found: dict[str, list[Job]] = collections.defaultdict(list)
    seen: set[bytes] = set()
    everything = [
        *iter_pending(queues),
        *iter_active(queues),
        *(job for _end, job in iter_done(queues)),
    ]
    for job in everything:
        if job.unique_key is not None and job._p_oid not in seen:
            seen.add(job._p_oid)
            found[job.unique_key].append(job)
    return found


def run_producers(
    uri: str,
    stamps: Path,
    *,
    processes: int,
    keys: int,
    until: str = "started",
    replace: bool = False,
) -> list[dict]:
    """Start ``processes`` producer processes (tests/lock_jobs.py) that
    each put a job for the same ``keys`` unique keys, half of them in the
    reverse order, all beginning at the same moment; their summaries."""
    start_at = time.time() + 2.0  # time for all of them to import and connect
    procs = []
    for n in range(processes):
        command = [
            sys.executable,
            "-m",
            "tests.lock_jobs",
            "produce",
            "--db",
            uri,
            "--keys",
            str(keys),
            "--stamps",
            str(stamps),
            "--until",
            until,
            "--start-at",
            str(start_at),
        ]
        if n % 2:
            command.append("--reverse")
        if replace:
            command.append("--replace")
        procs.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=subprocess_env(),
                cwd=ROOT,
            )
        )
    return json_results(procs)


def assert_clean(worker) -> None:
    log = worker.log()
    assert "Traceback" not in log and " ERROR " not in log, log


# -- unique keys --------------------------------------------------------------


def test_producer_processes_putting_the_same_keys_queue_one_job_per_key(
    zeo_server, client, stamps
):
    """Four producer processes put a job for each of the same 100 unique
    keys at once, retrying their conflicts: exactly one job per key is
    queued, and every put of a key returned that job."""
    summaries = run_producers(zeo_server.uri, stamps, processes=4, keys=100)
    keys = {f"key-{n}" for n in range(100)}
    created = collections.Counter(k for s in summaries for k in s["created"])
    assert created == dict.fromkeys(keys, 1), "a key was queued twice or never"
    first = summaries[0]["jobs"]
    assert set(first) == keys
    for summary in summaries[1:]:
        assert summary["jobs"] == first, "producers were given different jobs"
    found = client.read(jobs_by_unique_key)
    assert {key: [j.id for j in jobs] for key, jobs in found.items()} == {
        key: [first[key]] for key in keys
    }
    holders = client.read(lambda conn: {k: client.queue.unique_job(k).id for k in keys})
    assert holders == first
    assert client.read(lambda conn: len(client.queue)) == 100
    print(f"\nconflicts retried: {[s['conflicts'] for s in summaries]}")


def test_producer_processes_replacing_the_same_keys_leave_one_job_per_key(
    zeo_server, client, stamps
):
    """Four producer processes put a job for each of the same 100 unique
    keys at once with ``replace=True``: every put queues its job, taking
    out the one pending; in the end one job per key is pending, the
    replaced ones are new again and in no queue."""
    summaries = run_producers(
        zeo_server.uri, stamps, processes=4, keys=100, replace=True
    )
    keys = {f"key-{n}" for n in range(100)}
    for summary in summaries:
        assert sorted(summary["created"]) == sorted(keys), "a put was not queued"
    put = {key: {s["jobs"][key] for s in summaries} for key in keys}
    assert all(len(ids) == 4 for ids in put.values())

    def state(conn):
        queue = conn.root()[KEY][""]
        return (
            {
                key: [j.id for j in jobs]
                for key, jobs in jobs_by_unique_key(conn).items()
            },
            {key: queue.unique_job(key).id for key in keys},
            {i: find_job(conn, i).status for ids in put.values() for i in ids},
            len(queue),
        )

    found, holders, statuses, pending = client.read(state)
    assert pending == 100
    assert set(found) == keys
    for key in keys:
        assert found[key] == [holders[key]] and holders[key] in put[key]
        replaced = put[key] - {holders[key]}
        assert {statuses[i] for i in replaced} == {NEW}, key
    print(f"\nconflicts retried: {[s['conflicts'] for s in summaries]}")


def test_with_a_worker_beside_them_a_key_is_never_held_twice(
    zeo_server, client, workers, stamps
):
    """``unique_until="finished"``, a worker running beside four producer
    processes: a key may be queued again once its job completed, never
    before. In the order of commits, each job of a key was queued (its
    first revision) after the previous one completed (its last: nothing
    writes a completed job)."""
    worker = workers(zeo_server.uri, threads=2, imports=IMPORTS).start()
    summaries = run_producers(
        zeo_server.uri, stamps, processes=4, keys=100, until="finished"
    )
    ids = {summary["jobs"][key] for summary in summaries for key in summary["jobs"]}
    client.wait_completed(ids, 60)

    def commits(job) -> tuple[bytes, bytes, str]:
        """(first, last) transaction ids of the job's revisions, its id."""
        tids = [r["tid"] for r in client.db.history(job._p_oid, size=1000)]
        return min(tids), max(tids), job.id

    found = client.read(
        lambda conn: {
            key: sorted(commits(job) for job in jobs)
            for key, jobs in jobs_by_unique_key(conn).items()
        }
    )
    assert set(found) == {f"key-{n}" for n in range(100)}
    created = collections.Counter(k for s in summaries for k in s["created"])
    assert {key: len(jobs) for key, jobs in found.items()} == dict(created)
    for key, jobs in found.items():
        for (_, completed, before), (queued, _, after) in zip(
            jobs, jobs[1:], strict=False
        ):
            assert queued > completed, f"{key}: {after} queued before {before} ended"
    runs = collections.Counter(run.job_id for run in lock_jobs.intervals(stamps))
    assert set(runs) == {job_id for jobs in found.values() for *_, job_id in jobs}
    # Freeing a key is not written in its job's transaction: a producer
    # that found the key held does not make the job run again.
    assert set(runs.values()) == {1}, collections.Counter(runs.values())
    assert_clean(worker)
    print(
        f"\njobs queued per key: {collections.Counter(created.values())}; "
        f"runs per job (a conflict at a job's commit runs it again): "
        f"{collections.Counter(runs.values())}"
    )


def test_a_key_is_free_once_its_job_started_or_once_it_finished(
    zeo_server, client, workers, stamps, tmp_path
):
    """With a worker running: a put after the job of its key started queues
    a new job (``unique_until="started"``); with ``"finished"`` it returns
    the running job, until that one completed."""
    workers(zeo_server.uri, threads=2, imports=IMPORTS).start()
    gate = tmp_path / "gate"

    def hold(key: str) -> Job:
        return Job(lock_jobs.held, str(stamps), key, 0, str(gate))

    started = client.put(hold("s"), unique_key="s").id
    finished = client.put(hold("f"), unique_key="f", unique_until="finished").id
    wait_until(
        lambda: {r.job_id for r in lock_jobs.intervals(stamps)} == {started, finished},
        timeout=20,
        message="both jobs to start",
    )
    # The stamp comes from inside the job: it has started (ACTIVE).
    again = client.put(Job(lock_jobs.locked, str(stamps), "s", 1), unique_key="s")
    assert again.id != started
    held = client.put(
        Job(lock_jobs.locked, str(stamps), "f", 1),
        unique_key="f",
        unique_until="finished",
    )
    assert held.id == finished
    assert client.read(lambda conn: client.queue.unique_job("f").id) == finished
    gate.touch()
    client.wait_completed([started, finished, again.id], 30)
    assert client.read(lambda conn: client.queue.unique_job("f")) is None
    after = client.put(
        Job(lock_jobs.locked, str(stamps), "f", 2),
        unique_key="f",
        unique_until="finished",
    )
    assert after.id != finished
    client.wait_completed([after.id], 30)
    found = client.read(
        lambda conn: {
            k: sorted(j.id for j in v) for k, v in jobs_by_unique_key(conn).items()
        }
    )
    assert found == {
        "s": sorted([started, again.id]),
        "f": sorted([finished, after.id]),
    }


# -- per-key locks --------------------------------------------------------------


def put_locked_jobs(client: Client, stamps: Path, *, count: int, keys: int) -> list:
    """Queue ``count`` jobs over ``keys`` locks (job n has lock
    ``lock-{n % keys}``), each sleeping 5 to 20 ms, 100 per transaction;
    their ids in the order queued."""
    ids = []
    client.attempts = []
    for first in range(0, count, 100):
        client.attempts.append(0)
        for attempt in client.tm.attempts(100):
            client.attempts[-1] += 1
            with attempt:
                jobs = []
                for n in range(first, min(first + 100, count)):
                    key = f"lock-{n % keys}"
                    seconds = 0.005 + (n * 7 % 16) / 1000
                    jobs.append(
                        client.queue.put(
                            Job(lock_jobs.locked, str(stamps), key, n, seconds),
                            lock=key,
                        )
                    )
        ids += [job.id for job in jobs]
    return ids


def test_jobs_sharing_a_lock_never_overlap_across_four_workers(
    zeo_server, client, workers, stamps
):
    """1,000 short jobs over 50 locks, four worker processes of two
    threads: no two jobs of a lock ran at the same time, jobs of one lock
    started in the order they were queued, jobs of different locks ran
    at the same time."""
    pool = [
        workers(zeo_server.uri, threads=2, imports=IMPORTS).start() for _ in range(4)
    ]
    began = time.time()
    ids = put_locked_jobs(client, stamps, count=1000, keys=50)
    client.wait_completed(ids, 120)
    elapsed = time.time() - began
    runs = lock_jobs.intervals(stamps)
    assert {run.job_id for run in runs} == set(ids)
    assert all(run.end is not None for run in runs)
    assert lock_jobs.overlapping(runs, until=time.time()) == []
    first_starts: dict[str, lock_jobs.Interval] = {}
    for run in runs:  # in the order they started
        first_starts.setdefault(run.job_id, run)
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for run in sorted(first_starts.values(), key=lambda run: run.start):
        by_key[run.key].append(run.seq)
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"{key}: started out of order: {seqs}"
    assert lock_jobs.concurrent_keys(runs) is not None, "no two locks ran at once"
    pids = collections.Counter(run.pid for run in runs)
    assert len(pids) >= 2, f"one worker ran everything: {pids}"
    holders = client.read(
        lambda conn: [client.queue.lock_holder(f"lock-{n}") for n in range(50)]
    )
    assert holders == [None] * 50
    for worker in pool:
        assert_clean(worker)
    print(
        f"\n1,000 jobs over 50 locks in {elapsed:.1f} s; runs per worker: "
        f"{sorted(pids.values())}; retried runs: {len(runs) - len(ids)}; "
        f"attempts of the producer's commits: {client.attempts}"
    )


def test_a_lock_held_by_a_killed_worker_is_released_after_recovery(
    zeo_server, client, workers, stamps, tmp_path
):
    """A worker is killed (SIGKILL) while its job holds a lock: the next job
    of that lock waits meanwhile, jobs of other locks run; after the
    rescue the lock is taken again, and no two jobs of the lock ran at the
    same time."""
    victim = workers(
        zeo_server.uri, "victim", threads=2, imports=IMPORTS, args=FAST_RESCUE
    ).start()
    gate = tmp_path / "gate"
    holder = client.put(
        Job(lock_jobs.held, str(stamps), "lock-a", 0, str(gate)), lock="lock-a"
    ).id
    wait_until(lambda: lock_jobs.intervals(stamps), timeout=20, message="a start")
    waiting = client.put(
        Job(lock_jobs.locked, str(stamps), "lock-a", 1, 0.01), lock="lock-a"
    ).id
    other = client.put(
        Job(lock_jobs.locked, str(stamps), "lock-b", 2, 0.01), lock="lock-b"
    ).id
    client.wait_completed([other], 20)
    assert client.statuses([waiting])[waiting] not in (COMPLETED,)
    assert [r.job_id for r in lock_jobs.intervals(stamps) if r.key == "lock-a"] == [
        holder
    ]
    assert client.read(lambda conn: client.queue.lock_holder("lock-a").id) == holder
    victim.kill()
    killed_at = time.time()
    gate.touch()  # the rescued run goes through
    survivor = workers(
        zeo_server.uri, "survivor", threads=2, imports=IMPORTS, args=FAST_RESCUE
    ).start()
    client.wait_completed([holder, waiting], 60)
    runs = lock_jobs.intervals(stamps)
    assert lock_jobs.overlapping(runs, until=killed_at) == []
    waited = [r for r in runs if r.job_id == waiting]
    # (more than one run: its commit conflicted, and it ran again)
    assert waited and all(r.start > killed_at for r in waited)
    assert {r.pid for r in waited} == {survivor.pid}
    rescued = [r for r in runs if r.job_id == holder and r.start > killed_at]
    if rescued:  # run again (or failed by recovery, and never rerun)
        assert rescued[0].end is not None and rescued[0].end <= waited[0].start
    assert client.read(lambda conn: client.queue.lock_holder("lock-a")) is None
    assert "Traceback" not in survivor.log()
    outcome = client.read(lambda conn: kind(find_job(conn, holder)))
    print(
        f"\nthe killed worker's job: {outcome}, run again: {bool(rescued)}; the "
        f"next job of its lock started {waited[0].start - killed_at:.2f} s after "
        f"the kill (lease 2 s)"
    )


def test_no_two_jobs_of_a_lock_overlap_when_a_worker_is_killed_under_load(
    zeo_server, client, workers, stamps
):
    """400 jobs of 20 to 50 ms over 20 locks, three workers; one is killed
    (SIGKILL) while it runs some: its jobs run again elsewhere once its
    lease ran out, and still no two jobs of a lock overlapped (a run cut
    short counts as running until the kill), and the jobs of each lock
    started, for the last time, in the order queued."""
    pool = [
        workers(zeo_server.uri, threads=2, imports=IMPORTS, args=FAST_RESCUE).start()
        for _ in range(3)
    ]
    victim = pool[0]
    ids = []
    for first in range(0, 400, 50):
        for attempt in client.tm.attempts(100):
            with attempt:
                jobs = [
                    client.queue.put(
                        Job(
                            lock_jobs.locked,
                            str(stamps),
                            f"lock-{n % 20}",
                            n,
                            0.02 + (n * 7 % 31) / 1000,
                        ),
                        lock=f"lock-{n % 20}",
                    )
                    for n in range(first, first + 50)
                ]
        ids += [job.id for job in jobs]

    def victim_runs() -> list:
        return [r for r in lock_jobs.intervals(stamps) if r.pid == victim.pid]

    def victim_busy() -> bool:
        # Killed in the middle of a job (on a busy machine a worker can be
        # between jobs for a while, and then no run would be cut short).
        runs = victim_runs()
        return len(runs) >= 20 and any(run.end is None for run in runs)

    wait_until(victim_busy, timeout=30, message="the victim to run a job")
    victim.kill()
    killed_at = time.time()
    client.wait_completed(ids, 90)
    runs = lock_jobs.intervals(stamps)
    cut = [r for r in runs if r.end is None]
    assert cut and all(r.pid == victim.pid for r in cut)
    assert lock_jobs.overlapping(runs, until=killed_at) == []
    last_starts: dict[str, lock_jobs.Interval] = {}
    for run in runs:  # in the order they started
        last_starts[run.job_id] = run
    assert set(last_starts) == set(ids)
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for run in sorted(last_starts.values(), key=lambda run: run.start):
        by_key[run.key].append(run.seq)
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"{key}: started out of order: {seqs}"
    for run in cut:
        again = last_starts[run.job_id]
        assert again.pid != victim.pid and again.start > killed_at
    holders = client.read(
        lambda conn: [client.queue.lock_holder(f"lock-{n}") for n in range(20)]
    )
    assert holders == [None] * 20
    for worker in pool[1:]:
        assert_clean(worker)
    print(
        f"\nkilled a worker running {len(cut)} jobs; they ran again "
        f"{max(last_starts[r.job_id].start for r in cut) - killed_at:.2f} s "
        f"after the kill at the latest"
    )


def test_a_unique_key_of_a_killed_workers_job_stays_held_until_it_completes(
    zeo_server, client, workers, stamps, tmp_path
):
    """``unique_until="finished"``: the worker running the job is killed
    (SIGKILL); the key stays with the job while it is rescued and runs
    again elsewhere, and is free once it completed."""
    victim = workers(
        zeo_server.uri, "victim", threads=1, imports=IMPORTS, args=FAST_RESCUE
    ).start()
    gate = tmp_path / "gate"
    options = {"unique_key": "u", "unique_until": "finished"}
    job = client.put(Job(lock_jobs.held, str(stamps), "u", 0, str(gate)), **options)
    job_id = job.id
    wait_until(lambda: lock_jobs.intervals(stamps), timeout=20, message="a start")
    victim.kill()
    assert client.put(Job(lock_jobs.locked, str(stamps), "u", 1), **options).id == (
        job_id
    )
    survivor = workers(
        zeo_server.uri, "survivor", threads=1, imports=IMPORTS, args=FAST_RESCUE
    ).start()
    wait_until(
        lambda: (
            [r.pid for r in lock_jobs.intervals(stamps)] == [victim.pid, survivor.pid]
        ),
        timeout=30,
        message="the job to run again on the survivor",
    )
    assert client.put(Job(lock_jobs.locked, str(stamps), "u", 2), **options).id == (
        job_id
    )
    gate.touch()
    client.wait_completed([job_id], 30)
    again = client.put(Job(lock_jobs.locked, str(stamps), "u", 3), **options)
    assert again.id != job_id
    client.wait_completed([again.id], 30)
    found = client.read(
        lambda conn: sorted(j.id for j in jobs_by_unique_key(conn)["u"])
    )
    assert found == sorted([job_id, again.id])


def test_jobs_queued_one_by_one_while_workers_take_their_lock_keep_their_order(
    zeo_server, client, workers, stamps
):
    """A producer queues short jobs of four locks one per transaction while
    three workers run them, so that a lane is often emptied by a claim at
    the moment a job is queued to wait in it: every job runs (none waits
    behind an empty front), no two of a lock overlap, and the jobs of each
    lock start in the order queued."""
    pool = [
        workers(zeo_server.uri, threads=2, imports=IMPORTS).start() for _ in range(3)
    ]
    ids = []
    for n in range(600):
        job = Job(lock_jobs.locked, str(stamps), f"lock-{n % 4}", n, 0.001)
        ids.append(client.put(job, lock=f"lock-{n % 4}").id)
    client.wait_completed(ids, 60)
    runs = lock_jobs.intervals(stamps)
    assert lock_jobs.overlapping(runs, until=time.time()) == []
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for run in sorted(runs, key=lambda run: run.start):
        by_key[run.key].append(run.seq)
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"{key}: started out of order: {seqs}"
    assert sum(len(seqs) for seqs in by_key.values()) == len(ids)  # once each
    for worker in pool:
        assert_clean(worker)
