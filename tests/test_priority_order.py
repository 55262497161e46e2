"""Run order with priorities: jobs start by priority (higher first), then
due time, then the order they were queued; a due time in the past counts
as "queued now". Claims of several workers driven directly (property-based,
with hypothesis), and a real dispatcher's thread starting the jobs queued
while it was busy.
"""

from __future__ import annotations

import datetime
import itertools

import pytest
import transaction
import ZODB
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ZODB.FileStorage import FileStorage

import jobfuncs
import zasync
from zasync.claim import claim
from zasync.interfaces import COMPLETED, KEY, PENDING
from zasync.job import Job
from zasync.queue import Queue
from zasync.recovery import release_quotas
from zasync.testing import wait_until
from zasync.workers import Slot

UTC = datetime.UTC
BASE = datetime.datetime(2030, 1, 1, tzinfo=UTC)
PRIORITIES = st.one_of(
    st.integers(-3, 3), st.sampled_from([-1_000_000, 1_000_000, 999_999])
)


def us(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database = ZODB.DB(FileStorage(str(tmp_path_factory.mktemp("prio") / "Data.fs")))
    zasync.install(database)
    yield database
    database.close()


_names = itertools.count()


class Backlog:
    """A fresh queue in a transaction that is aborted at the end; jobs put
    with the ``priority`` option, due at BASE + offset (in the future of
    any real clock: the due time given counts), remembered in the order
    queued."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = Queue()
        self.conn.root()[KEY][f"q{next(_names)}"] = self.queue
        self.jobs: list[Job] = []
        self.seq: dict[bytes, int] = {}
        self.queued_us: dict[bytes, int] = {}

    def put(self, priority: int, offset: int, shard: int) -> Job:
        zasync.shards._shard_local.index = shard  # as another producer thread
        try:
            return self.put_job(
                begin_after=BASE + datetime.timedelta(seconds=offset),
                priority=priority,
            )
        finally:
            del zasync.shards._shard_local.index

    def put_job(self, **options) -> Job:
        queued_us = us(datetime.datetime.now(UTC))
        job = self.queue.put(Job(jobfuncs.noop), **options)
        assert job.priority == options["priority"]
        self.seq[job._p_oid] = len(self.jobs)
        self.queued_us[job._p_oid] = queued_us
        self.jobs.append(job)
        return job

    def run_order(self, job: Job) -> tuple:
        """(priority, due time, order queued), a due time in the past
        counting as the time it was queued."""
        oid = job._p_oid
        due_us = max(us(job.begin_after), self.queued_us[oid])
        return (-job.priority, due_us, self.seq[oid])

    def due(self, now_us: int) -> list[Job]:
        """The pending jobs due at ``now_us``, in run order."""
        due = [
            j for j in self.jobs if j.status == PENDING and us(j.begin_after) <= now_us
        ]
        return sorted(due, key=self.run_order)

    def close(self):
        self.tm.abort()
        self.conn.close()


job_specs = st.lists(
    st.tuples(PRIORITIES, st.integers(-5, 5), st.integers(0, 3)), max_size=25
)
rounds = st.lists(
    st.tuples(
        st.integers(0, 3),  # the worker that claims
        st.lists(st.integers(1, 4), min_size=1, max_size=3),  # its slots
        st.integers(0, 3),  # seconds the clock moves before the claim
        st.integers(0, 3),  # jobs put before the claim (from the spares)
        st.booleans(),  # the running jobs finish after it
    ),
    min_size=1,
    max_size=12,
)


def _claim(backlog, worker, capacities, now_us, **kw):
    slots = [(Slot(i), capacity) for i, capacity in enumerate(capacities)]
    when = datetime.datetime.fromtimestamp(now_us / 1_000_000, UTC)
    return claim(
        [backlog.queue],
        slots=slots,
        worker=worker,
        now_us=now_us,
        start_time=when,
        **kw,
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(initial=job_specs, spares=job_specs, plan=rounds)
def test_workers_claim_the_first_due_jobs_in_run_order(db, initial, spares, plan):
    """Workers claim in turn from one queue, jobs being put between their
    claims: each claim takes exactly the first due jobs in (priority,
    due time, order queued), each of its threads' jobs in that order."""
    backlog = Backlog(db)
    try:
        for priority, offset, shard in initial:
            backlog.put(priority, offset, shard)
        spares = list(spares)
        clock = -5
        for worker, capacities, step, new, finish in plan:
            for _ in range(new):
                if spares:
                    priority, offset, shard = spares.pop()
                    backlog.put(priority, clock + offset, shard)
            clock += step
            now_us = us(BASE + datetime.timedelta(seconds=clock))
            due = backlog.due(now_us)
            taken = _claim(backlog, f"worker-{worker}", capacities, now_us)
            got = [job for jobs in taken.values() for job in jobs]
            assert sorted(got, key=backlog.run_order) == due[: sum(capacities)]
            for jobs in taken.values():
                assert jobs == sorted(jobs, key=backlog.run_order)
            if finish:
                for job in got:
                    release_quotas(job)
                    job._status = COMPLETED
    finally:
        backlog.close()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    workers=st.integers(2, 4),
    specs=job_specs,
    turns=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 6), st.sampled_from([0, 10**9])),
        min_size=1,
        max_size=20,
    ),
)
def test_workers_sharing_a_queue_pass_over_only_jobs_meant_for_others(
    db, workers, specs, turns
):
    """Dispatchers' claims, each with the placement ranking a Dispatcher
    computes: a claim's jobs are in run order within each thread, and a
    due job it leaves ahead (in run order) of one it takes is meant for
    another worker."""
    from zasync.dispatcher import Dispatcher

    backlog = Backlog(db)
    try:
        for priority, offset, shard in specs:
            backlog.put(priority, offset - 100, shard)
        uuids = [f"worker-{n}" for n in range(workers)]
        peers = tuple((uuid, ()) for uuid in uuids)
        ranks = []
        for uuid in uuids:
            dispatcher = Dispatcher(db, uuid=uuid, threads=1)
            dispatcher.placement.peers = peers
            ranks.append(dispatcher.placement.ranking([backlog.queue]))
        now_us = us(BASE)
        for worker, capacity, fresh_us in turns:
            worker %= workers
            rank = ranks[worker]
            due = backlog.due(now_us)
            taken = _claim(
                backlog,
                uuids[worker],
                [capacity],
                now_us,
                rank=rank,
                fresh_us=fresh_us,
            )
            got = taken.get(0, [])
            assert got == sorted(got, key=backlog.run_order)
            if not got:
                continue
            last = due.index(got[-1])
            for job in due[:last]:
                if job in got:
                    continue
                backlog_ = now_us - us(job.begin_after) >= fresh_us
                assert rank(backlog.queue, job, backlog_) != 0, (
                    f"{uuids[worker]} passed over its own {job} for a later job"
                )
    finally:
        backlog.close()


QUOTA_SETS = [(), ("a",), ("b",), ("a", "b")]
gated_specs = st.lists(
    st.tuples(
        st.integers(-2, 2),  # priority
        st.sampled_from(QUOTA_SETS),
        st.sampled_from([None, "x", "y"]),  # lock
        st.sampled_from([-3600, 0, 0, 1, 2]),  # seconds from now it is due
    ),
    max_size=25,
)


class GatedBacklog(Backlog):
    """A Backlog with quotas "a" and "b", locks "x" and "y", and the jobs
    claimed and still running."""

    def __init__(self, db, sizes: tuple[int, int]):
        super().__init__(db)
        self.sizes = dict(zip(("a", "b"), sizes, strict=True))
        for name, size in self.sizes.items():
            self.queue.quotas.create(name, size=size)
        self.running: list[Job] = []

    def put_spec(self, spec: tuple) -> Job:
        priority, quotas, lock, delay = spec
        when = datetime.datetime.now(UTC) + datetime.timedelta(seconds=delay)
        return self.put_job(
            begin_after=when if delay else None,
            quota_names=quotas,
            priority=priority,
            lock=lock,
        )

    def check_claim(self, due: list[Job], got: list[Job]) -> None:
        """What a claim took of the ``due`` jobs (in run order): each job
        had room in its quotas and its lock free; no due job was passed
        over for a later one of its lane (same quotas and lock), of a
        quota of size 1 or of its lock, nor a due job without quotas or
        lock for any later one; the first due job was taken if it could
        run."""
        quotas = self.queue.quotas
        room = {name: size - len(quotas[name]) for name, size in self.sizes.items()}
        room = {
            name: left + sum(name in j.quota_names for j in got)
            for name, left in room.items()
        }
        locks = {job.lock for job in self.running if job.lock}
        taken = set(got)
        for later in got:
            assert all(room[name] > 0 for name in later.quota_names)
            assert later.lock not in locks
            for name in later.quota_names:
                room[name] -= 1
            if later.lock:
                locks.add(later.lock)
            for earlier in due[: due.index(later)]:
                if earlier in taken:
                    continue
                lane = (earlier.quota_names, earlier.lock)
                assert lane != (later.quota_names, later.lock), (earlier, later)
                assert lane != ((), None), (earlier, later)
                shared = set(earlier.quota_names) & set(later.quota_names)
                assert all(self.sizes[name] > 1 for name in shared), (earlier, later)
                assert not earlier.lock or earlier.lock != later.lock
        if due and not got:
            first = due[0]
            held = {job.lock for job in self.running if job.lock}
            room = {n: size - len(quotas[n]) for n, size in self.sizes.items()}
            can_run = all(room[n] > 0 for n in first.quota_names)
            assert not (can_run and first.lock not in held), first

    def check_holders(self) -> None:
        """Quotas count exactly the running jobs, never past their size; a
        lock is held by its one running job."""
        queue = self.queue
        for name, size in self.sizes.items():
            holders = [j for j in self.running if name in j.quota_names]
            assert len(queue.quotas[name]) == len(holders) <= size
        for lock in ("x", "y"):
            holders = [j for j in self.running if j.lock == lock]
            assert len(holders) <= 1
            assert queue.lock_holder(lock) is (holders[0] if holders else None)

    def finish_all(self) -> None:
        for job in self.running:
            release_quotas(job)
            job._status = COMPLETED
        self.running.clear()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.tuples(st.integers(1, 2), st.integers(1, 3)),
    initial=gated_specs,
    spares=gated_specs,
    plan=rounds,
)
def test_claims_take_jobs_under_quotas_and_locks_in_their_turn(
    db, sizes, initial, spares, plan
):
    """Jobs due now (waiting in their lanes) or later, under quotas and
    locks, with priorities; workers claim in turn, jobs being put and
    finishing between their claims: quotas and locks are never exceeded,
    and each claim keeps run order where it is promised (see
    GatedBacklog.check_claim)."""
    backlog = GatedBacklog(db, sizes)
    try:
        for spec in initial:
            backlog.put_spec(spec)
        spares = list(spares)
        offset = 0
        for worker, capacities, step, new, finish in plan:
            for _ in range(new):
                if spares:
                    backlog.put_spec(spares.pop())
            offset += step * 1_000_000
            now_us = us(datetime.datetime.now(UTC)) + offset
            due = backlog.due(now_us)
            taken = _claim(backlog, f"worker-{worker}", capacities, now_us)
            got = sorted(
                (job for jobs in taken.values() for job in jobs),
                key=backlog.run_order,
            )
            assert len(got) <= sum(capacities)
            backlog.check_claim(due, got)
            for jobs in taken.values():
                assert jobs == sorted(jobs, key=backlog.run_order)
            backlog.running.extend(got)
            backlog.check_holders()
            if finish:
                backlog.finish_all()
    finally:
        backlog.close()


def test_a_due_time_in_the_past_counts_as_queued_now(queue):
    """A job due an hour ago, queued after another of its priority, runs
    after it: its place is that of a job queued now."""
    first = queue.put(Job(jobfuncs.noop))
    late = queue.put(
        Job(jobfuncs.noop),
        begin_after=datetime.datetime.now(UTC) - datetime.timedelta(hours=1),
    )
    urgent = queue.put(
        Job(jobfuncs.noop),
        begin_after=datetime.datetime.now(UTC) - datetime.timedelta(hours=2),
        priority=1,
    )
    transaction.commit()
    assert list(queue) == [urgent, first, late]


# -- a real worker --------------------------------------------------------------

#: (priority, due an hour ago) of the jobs queued while the thread is busy
MIXED = [
    (0, False),
    (5, False),
    (-3, False),
    (5, True),
    (10, False),
    (0, True),
    (-3, False),
    (10, False),
    (1, False),
    (0, False),
    (-1_000_000, False),
    (1_000_000, True),
]


def test_a_busy_thread_starts_the_jobs_queued_meanwhile_by_priority(
    conn, queue, start_dispatcher
):
    """One worker thread, busy with a job that waits on an event: jobs
    queued meanwhile with mixed priorities, one transaction each, start
    by priority, then in the order queued (a due time in the past counts
    as queued now)."""
    start_dispatcher(threads=1)
    busy = queue.put(Job(jobfuncs.wait_for, "busy"))
    transaction.commit()
    wait_until(lambda: jobfuncs.calls["busy"] == 1, message="the busy job to start")
    past = datetime.datetime.now(UTC) - datetime.timedelta(hours=1)
    jobs = []
    for n, (priority, late) in enumerate(MIXED):
        jobs.append(
            queue.put(
                Job(jobfuncs.count, f"job-{n}"),
                priority=priority,
                begin_after=past if late else None,
            )
        )
        transaction.commit()
    assert all(job.status == PENDING for job in jobs)
    jobfuncs.gate("busy").set()
    wait_until(
        lambda: (
            sum(jobfuncs.calls[f"job-{n}"] for n in range(len(MIXED))) == len(MIXED)
        ),
        timeout=20,
        message=lambda: f"the jobs to run: {dict(jobfuncs.calls)}",
    )
    started = [key for key, _thread in jobfuncs.trace if key.startswith("job-")]
    expected = [f"job-{n}" for n, _ in sorted(enumerate(MIXED), key=lambda t: -t[1][0])]
    assert started == expected
    transaction.begin()
    assert busy.status == COMPLETED
