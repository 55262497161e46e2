"""Workers across processes: ``zasync worker`` subprocesses on one ZEO
server (and on PostgreSQL for wake-ups), producers in several processes,
crashes (SIGKILL), restarts, a ZEO server restart, graceful stops.

Job functions (tests/mp_jobs.py) stamp each run in a file with the
worker's pid and the job id, so a test counts the runs of every job. The
numbers measured (wake-up latency, conflict rate, recovery time, idle
writes) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transaction
from tests import mp_jobs
from tests.processes import ROOT, json_results, subprocess_env
from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected

from zasync.admin import find_job
from zasync.interfaces import ACTIVE, COMPLETED, KEY
from zasync.job import Job
from zasync.queue import Queue, install
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = pytest.mark.zeo

# Short leases and maintenance rounds, so a dead worker's jobs are rescued
# within seconds.
FAST_RESCUE = ["--lease", "2", "--maintenance-interval", "0.5"]


class Client:
    """The test process as a producer and observer, through its own
    connection to the database."""

    def __init__(self, uri: str, stamps: Path):
        self.db = open_db(uri)
        install(self.db)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)
        self.stamps = str(stamps)

    def put(
        self,
        count: int,
        seconds: float = 0.0,
        *,
        per_commit: int = 1,
        policy=None,
        queue: str = "",
    ):
        """Queue ``count`` jobs that sleep ``seconds``; return their ids and
        the time each commit returned."""
        ids, committed = [], []
        while len(ids) < count:
            batch = min(per_commit, count - len(ids))
            for attempt in self.tm.attempts(10):
                with attempt:
                    into = self.conn.root()[KEY][queue]
                    jobs = [
                        into.put(
                            Job(mp_jobs.work, self.stamps, seconds, i),
                            retry_policy_factory=policy,
                        )
                        for i in range(len(ids), len(ids) + batch)
                    ]
            now = time.time()
            ids += [job.id for job in jobs]
            committed += [now] * batch
        return ids, committed

    def jobs(self, ids):
        """{id: (status, result, active_start)} as committed now."""
        self.tm.begin()
        try:
            found = {}
            for job_id in ids:
                job = find_job(self.conn, job_id)
                found[job_id] = (job.status, job.result, job.active_start)
            return found
        finally:
            self.tm.abort()

    def completed(self, ids) -> bool:
        try:
            return all(s == COMPLETED for s, _, _ in self.jobs(ids).values())
        except (TransientError, ClientDisconnected):
            return False

    def wait_completed(self, ids, timeout: float = 60.0) -> None:
        def unfinished() -> str:
            try:
                states = self.jobs(ids)
            except (TransientError, ClientDisconnected) as e:
                return repr(e)
            left = {i: s for i, (s, _, _) in states.items() if s != COMPLETED}
            return f"{len(left)} of {len(ids)} jobs unfinished: {left}"

        wait_until(lambda: self.completed(ids), timeout=timeout, message=unfinished)

    def close(self) -> None:
        if self.conn is None:
            return
        try:
            self.tm.abort()
        except Exception:
            pass
        self.conn.close()
        self.db.close()
        self.conn = None


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return tmp_path / "stamps"


@pytest.fixture
def client(zeo_server, stamps):
    c = Client(zeo_server.uri, stamps)
    yield c
    c.close()


def assert_clean(worker, *, outage: bool = False) -> None:
    """The worker logged no error and no traceback (through an ``outage``
    of the server, none from zasync: ZODB logs the loads it could not do)."""
    log = worker.log()
    if outage:
        assert " ERROR zasync" not in log, log
    else:
        assert "Traceback" not in log and " ERROR " not in log, log


def runs_of(stamps: Path) -> dict[str, list[mp_jobs.Run]]:
    return mp_jobs.runs_per_job(str(stamps))


def started_by(worker, stamps: Path) -> list[mp_jobs.Run]:
    return [r for r in mp_jobs.runs(str(stamps)) if r.pid == worker.pid]


def run_producers(uri: str, stamps: Path, *, processes: int, count: int) -> list:
    """Start ``processes`` producer processes that queue ``count`` jobs each,
    all beginning at the same moment; return their summaries."""
    start_at = time.time() + 1.5  # time for all of them to import and connect
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.mp_jobs",
                "produce",
                "--db",
                uri,
                "--count",
                str(count),
                "--stamps",
                str(stamps),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    return json_results(procs)


# -- many workers, many producers ------------------------------------------


def test_every_job_runs_exactly_once_across_three_workers(
    zeo_server, client, workers, stamps
):
    pool = [workers(zeo_server.uri, threads=2).start() for _ in range(3)]
    mine, _ = client.put(60, 0.01, per_commit=5)
    (other,) = run_producers(zeo_server.uri, stamps, processes=1, count=40)
    ids = mine + other["ids"]
    client.wait_completed(ids, 60)
    runs = runs_of(stamps)
    assert set(runs) == set(ids), "a job was lost, or one nobody queued ran"
    assert {i: len(r) for i, r in runs.items() if len(r) != 1} == {}
    pids = {r[0].pid for r in runs.values()}
    assert pids <= {w.pid for w in pool}
    assert len(pids) >= 2, "one worker ran everything"
    for worker in pool:
        assert worker.stop() == 0, worker.log()
        assert_clean(worker)


@pytest.mark.slow
def test_producer_processes_rarely_conflict(zeo_server, client, workers, stamps):
    for _ in range(2):
        workers(zeo_server.uri, threads=2).start()
    summaries = run_producers(zeo_server.uri, stamps, processes=3, count=100)
    ids = [job_id for s in summaries for job_id in s["ids"]]
    commits = sum(s["commits"] for s in summaries)
    conflicts = sum(s["conflicts"] for s in summaries)
    rate = conflicts / (commits + conflicts)
    print(
        f"\nproducer conflicts: {conflicts} in {commits} commits "
        f"({rate:.1%}; {1000 * conflicts / commits:.0f} per 1,000)"
    )
    assert len(set(ids)) == 300
    client.wait_completed(ids, 60)
    runs = runs_of(stamps)
    assert set(runs) == set(ids)
    assert all(len(r) == 1 for r in runs.values())
    assert rate < 0.05


PRODUCER_WITH_A_LOCAL_FUNCTION = """
import sys
from zasync.interfaces import KEY
from zasync.job import Job
from zasync.storage import open_db

def defined_here():
    return 1

db = open_db(sys.argv[1])
with db.transaction() as conn:
    job = conn.root()[KEY][""].put(Job(defined_here))
print(job.id)
"""


def test_a_job_the_workers_cannot_import_fails_and_blocks_nothing(
    zeo_server, client, workers
):
    worker = workers(zeo_server.uri).start()
    produced = subprocess.run(
        [sys.executable, "-c", PRODUCER_WITH_A_LOCAL_FUNCTION, zeo_server.uri],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    bad = produced.stdout.strip()
    good, _ = client.put(3)
    client.wait_completed([bad, *good], 20)
    states = client.jobs([bad, *good])
    failure = states[bad][1]
    assert failure.check(ImportError)
    assert "__main__.defined_here cannot be imported in the worker" in str(
        failure.getErrorMessage()
    )
    assert [states[i][1] for i in good] == [0, 1, 2]
    client.tm.begin()
    assert find_job(client.conn, bad).callable_name == "__main__.defined_here"
    client.tm.abort()
    assert "loop error" not in worker.log()


# -- crashes -----------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_workers_jobs_finish_on_another_worker(
    zeo_server, client, workers, stamps
):
    victim = workers(zeo_server.uri, "victim", threads=2, args=FAST_RESCUE)
    survivor = workers(zeo_server.uri, "survivor", threads=2, args=FAST_RESCUE)
    victim.start()
    survivor.start()
    ids, _ = client.put(16, 0.5)
    wait_until(lambda: started_by(victim, stamps), timeout=20)
    victim.kill()
    killed_at = time.time()
    client.wait_completed(ids, 60)
    runs = runs_of(stamps)
    assert set(runs) == set(ids), "a job was lost"
    # At-least-once: only the jobs running at the kill ran twice.
    interrupted = {
        r.job_id for r in started_by(victim, stamps) if r.start > killed_at - 0.6
    }
    assert interrupted
    twice = {job_id for job_id, r in runs.items() if len(r) > 1}
    assert twice == interrupted
    assert all(len(r) <= 2 for r in runs.values())
    for job_id in twice:
        again = runs[job_id][-1]
        assert again.pid == survivor.pid and again.start > killed_at
    # Every start counts, the one the kill interrupted too.
    assert _attempts(client, ids) == {i: len(runs[i]) for i in ids}
    recovery = max(runs[j][-1].start for j in twice) - killed_at
    print(
        f"\nkilled a worker running {len(twice)} jobs: the last ran again on "
        f"the other worker {recovery:.2f} s after the kill (lease 2 s)"
    )
    assert recovery < 10
    assert "rescued job" in survivor.log()
    assert_clean(survivor)


@pytest.mark.slow
def test_a_job_handed_to_a_worker_killed_before_starting_it_runs_elsewhere(
    zeo_server, client, workers, stamps
):
    """zasync.handoff: a producer hands a job to an idle thread of the
    worker it is meant for, in the job's transaction. That worker is
    frozen (SIGSTOP: it still looks live), then killed: the job, never
    started, runs once, on the other worker, once the lease has run out."""
    victim = workers(zeo_server.uri, "victim", threads=1, args=FAST_RESCUE)
    survivor = workers(zeo_server.uri, "survivor", threads=1, args=FAST_RESCUE)
    victim.start()
    survivor.start()
    wait_until(lambda: _registered(client) == 2, timeout=20)
    victim.signal(signal.SIGSTOP)
    handed = None
    ids = []
    for _ in range(40):  # each job is the victim's with one chance in two
        (job_id,), _ = client.put(1)
        ids.append(job_id)
        client.tm.begin()
        job = find_job(client.conn, job_id)
        mine = job._worker == victim.uuid and job.status == ACTIVE
        client.tm.abort()
        if mine:
            handed = job_id
            break
        client.wait_completed([job_id], 20)
    assert handed is not None, "no job was handed to the victim"
    victim.kill()
    killed_at = time.time()
    client.wait_completed(ids, 30)
    runs = runs_of(stamps)
    assert [r.pid for r in runs[handed]] == [survivor.pid]
    assert runs[handed][0].start > killed_at
    assert all(len(runs[i]) == 1 for i in ids)
    assert "rescued job" in survivor.log()


def _attempts(client: Client, ids: list[str]) -> dict[str, int]:
    """{job id: its attempts}, read now."""
    client.tm.begin()
    try:
        return {i: find_job(client.conn, i).attempts for i in ids}
    finally:
        client.tm.abort()


def _registered(client: Client) -> int:
    client.tm.begin()
    try:
        return len(client.conn.root()[KEY].workers)
    finally:
        client.tm.abort()


def test_a_restarted_worker_recovers_its_jobs_at_once(
    zeo_server, client, workers, stamps
):
    worker = workers(zeo_server.uri, threads=1, args=["--lease", "60"]).start()
    ids, _ = client.put(3, 0.5)
    first = wait_until(lambda: started_by(worker, stamps), timeout=20)[0]
    worker.kill()
    restarted_at = time.time()
    worker.start()
    client.wait_completed(ids, 30)
    again = [r for r in runs_of(stamps)[first.job_id] if r.start > restarted_at]
    assert len(again) == 1, "the interrupted job did not run again"
    delay = again[0].start - restarted_at
    print(f"\nrestarted worker ran its interrupted job {delay:.2f} s after start")
    assert delay < 10  # well within the 60 s lease
    assert "recovered job" in worker.log(since_start=True)
    assert all(len(r) == 1 for i, r in runs_of(stamps).items() if i != first.job_id)
    runs = runs_of(stamps)
    assert _attempts(client, ids) == {i: len(runs[i]) for i in ids}


def test_a_second_process_with_the_same_uuid_refuses_to_start(zeo_server, workers):
    first = workers(zeo_server.uri, "first").start()
    second = workers(zeo_server.uri, "second", uuid_file=first.uuid_file).spawn()
    code = second.wait(30)
    assert code == 1
    log = second.log()
    assert f"is in use by process {first.pid}" in log
    assert first.uuid in log
    assert "Traceback" not in log
    assert first.running()


# -- the ZEO server goes away ----------------------------------------------


@pytest.mark.slow
def test_workers_carry_on_across_a_zeo_server_restart(
    zeo_server, client, workers, stamps
):
    pool = [workers(zeo_server.uri, threads=2).start() for _ in range(2)]
    before, _ = client.put(20, 0.2)
    wait_until(lambda: len(runs_of(stamps)) >= 4, timeout=20)
    zeo_server.restart()
    after = wait_until(lambda: _put_when_connected(client, 20), timeout=30)
    ids = before + after
    client.wait_completed(ids, 60)
    runs = runs_of(stamps)
    assert set(ids) <= set(runs)
    repeated = sum(len(r) - 1 for r in runs.values())
    print(f"\njobs run again because of the ZEO server restart: {repeated}")
    assert repeated <= 4  # at most the jobs whose commit the restart cut
    for worker in pool:
        assert "Reconnected to storage" in worker.log()
        assert_clean(worker, outage=True)


@pytest.mark.slow
def test_a_job_whose_commit_meets_an_outage_waits_and_runs_again(
    zeo_server, client, workers, stamps
):
    # The worker waits 0.5 s for the server, and the job's policy gives up
    # at the first conflict: a lost connection must not count as one. The
    # thread waits for the server and runs the job again; its result is
    # its value, not a Failure of the disconnection.
    worker = workers(zeo_server.uri + "?wait_timeout=0.5").start()
    (job_id,), _ = client.put(1, 0.5, policy=mp_jobs.NoConflictRetries)
    wait_until(lambda: started_by(worker, stamps), timeout=20)
    zeo_server.stop()
    wait_until(lambda: "waits" in worker.log(), timeout=30)
    zeo_server.start()
    client.wait_completed([job_id], 30)
    ((_, result, _),) = client.jobs([job_id]).values()
    assert result == 0
    assert "storage disconnected; worker thread" in worker.log()


def _put_when_connected(client: Client, count: int):
    try:
        return client.put(count, 0.05)[0]
    except (TransientError, ClientDisconnected):
        return None


# -- graceful stop -------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish(zeo_server, client, workers, stamps):
    worker = workers(zeo_server.uri, args=["--stop-timeout", "20"]).start()
    (job_id,), _ = client.put(1, 1.5)
    wait_until(lambda: started_by(worker, stamps), timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log()
    assert client.completed([job_id])
    log = worker.log()
    assert "SIGTERM received: stopping; waiting up to 20 s for running jobs" in log
    assert f"stopping: waiting for job {job_id} (tests.mp_jobs." in log
    assert "stopped" in log.splitlines()[-1]
    assert_clean(worker)


@pytest.mark.slow
def test_a_job_outliving_the_stop_timeout_is_recovered_after_restart(
    zeo_server, client, workers, stamps
):
    worker = workers(zeo_server.uri, args=["--stop-timeout", "0.5"]).start()
    (job_id,), _ = client.put(1, 3)
    wait_until(lambda: started_by(worker, stamps), timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 1
    log = worker.log()
    assert "waiting up to 0.5 s" in log
    assert "exiting with code 1: jobs still running after --stop-timeout 0.5 s" in log
    assert f"job {job_id} (tests.mp_jobs." in log
    assert "still runs in thread 0: left to recovery" in log
    ((status, _, _),) = client.jobs([job_id]).values()
    assert status == ACTIVE
    worker.start()
    client.wait_completed([job_id], 30)
    assert len(runs_of(stamps)[job_id]) == 2


# -- wake-ups and idle cost --------------------------------------------------


def _latencies(client: Client, count: int = 20, queue: str = "") -> list[float]:
    latencies = []
    for _ in range(count):
        (job_id,), (committed,) = client.put(1, queue=queue)
        client.wait_completed([job_id], 10)
        ((_, _, started),) = client.jobs([job_id]).values()
        latencies.append(started.timestamp() - committed)
    return latencies


def _check_wakeups(client: Client, label: str, queue: str = "") -> None:
    _latencies(client, 2, queue)  # warm up
    latencies = _latencies(client, 20, queue)
    median = statistics.median(latencies)
    print(
        f"\n{label} wake-up latency over {len(latencies)} jobs: median "
        f"{median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
        f"(poll interval 1 s)"
    )
    assert median < 0.25


def test_a_worker_on_zeo_wakes_on_the_commit(zeo_server, client, workers):
    worker = workers(zeo_server.uri, args=["--poll-interval", "1"]).start()
    _check_wakeups(client, "ZEO")
    # A queue added after the worker started is watched too.
    with client.tm:
        client.conn.root()[KEY]["later"] = Queue()
    _check_wakeups(client, "ZEO, a queue added later,", queue="later")
    assert_clean(worker)


@pytest.mark.postgres
def test_a_worker_on_postgresql_wakes_on_the_commit(pg_uri, workers, stamps):
    client = Client(pg_uri, stamps)
    try:
        worker = workers(pg_uri, args=["--poll-interval", "1"]).start()
        _check_wakeups(client, "RelStorage")
        assert_clean(worker)
    finally:
        client.close()


@pytest.mark.postgres
def test_a_worker_on_postgresql_from_a_zconfig_file_wakes_on_the_commit(
    pg_uri, workers, stamps, tmp_path
):
    # As zope.conf opens RelStorage: a <relstorage> section, not a URI.
    from zasync.storage import parse_uri

    conf = tmp_path / "zodb.conf"
    conf.write_text(
        "%import relstorage\n<zodb>\n  <relstorage>\n    keep-history false\n"
        f"    <postgresql>\n      dsn {parse_uri(pg_uri).dsn}\n"
        "    </postgresql>\n  </relstorage>\n</zodb>\n"
    )
    client = Client(str(conf), stamps)
    try:
        worker = workers(str(conf), args=["--poll-interval", "1"]).start()
        _check_wakeups(client, "RelStorage from ZConfig")
        assert_clean(worker)
    finally:
        client.close()


@pytest.mark.slow
def test_an_idle_worker_writes_almost_nothing(zeo_server, client, workers):
    from ZODB.FileStorage import FileIterator
    from ZODB.TimeStamp import TimeStamp

    worker = workers(zeo_server.uri).start()
    (job_id,), _ = client.put(1)
    client.wait_completed([job_id])
    # Idle from here on: only the worker's own writes count.
    client.close()
    started = time.time()
    time.sleep(10.0)  # the period measured, not a wait for work
    ended = time.time()
    worker.kill()
    zeo_server.stop()
    iterator = FileIterator(str(zeo_server.data_path))
    try:
        stamps = [TimeStamp(t.tid).timeTime() for t in iterator]
    finally:
        iterator.close()
    idle_writes = [t for t in stamps if started <= t <= ended]
    print(
        f"\nidle worker: {len(idle_writes)} transactions in {ended - started:.1f} s "
        f"({len(stamps)} in all)"
    )
    assert len(idle_writes) <= 2
