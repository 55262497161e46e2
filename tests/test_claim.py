"""zasync.claim.claim driven directly, in a transaction on a FileStorage
database: run order, quotas, slots; property-based with hypothesis."""

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
import zasync.queue
from zasync.claim import claim
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, KEY, PENDING
from zasync.job import Job
from zasync.queue import Queue
from zasync.recovery import release_quotas
from zasync.workers import Slot

UTC = datetime.UTC
BASE = datetime.datetime(2030, 1, 1, tzinfo=UTC)
QUOTA_NAMES = ("a", "b", "c")


def us(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database = ZODB.DB(FileStorage(str(tmp_path_factory.mktemp("claim") / "Data.fs")))
    zasync.install(database)
    yield database
    database.close()


_names = itertools.count()


class Scratch:
    """A fresh queue in a transaction that is aborted at the end."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = Queue()
        self.conn.root()[KEY][f"q{next(_names)}"] = self.queue

    def put(self, *, priority=0, offset=0.0, quotas=(), shard=None) -> Job:
        """Put a job; ``shard`` picks the shard, as if another producer
        thread (which keeps to a shard of its own) put it."""
        job = Job(jobfuncs.noop)
        job.priority = priority
        job.quota_names = tuple(quotas)
        if shard is not None:
            zasync.shards._shard_local.index = shard
        try:
            return self.queue.put(
                job, begin_after=BASE + datetime.timedelta(seconds=offset)
            )
        finally:
            if shard is not None:
                del zasync.shards._shard_local.index

    def close(self):
        self.tm.abort()
        self.conn.close()


@pytest.fixture
def scratch(db):
    s = Scratch(db)
    yield s
    s.close()


def run_claim(queues, *capacities, at=0.0, worker="w", **kw):
    slots = [(Slot(i), capacity) for i, capacity in enumerate(capacities)]
    when = BASE + datetime.timedelta(seconds=at)
    taken = claim(
        queues, slots=slots, worker=worker, now_us=us(when), start_time=when, **kw
    )
    return taken, [slot for slot, _ in slots]


def flat(taken):
    return [job for index in sorted(taken) for job in taken[index]]


# -- examples -----------------------------------------------------------------


def test_takes_due_jobs_in_run_order_up_to_capacity(scratch):
    later = scratch.put(offset=5, shard=1)
    first = scratch.put(offset=-2, shard=2)
    second = scratch.put(offset=-1, shard=1)
    third = scratch.put(offset=0, shard=0)
    urgent = scratch.put(offset=-1, priority=3, shard=2)
    taken, _ = run_claim([scratch.queue], 3)
    assert taken[0] == [urgent, first, second]
    assert list(scratch.queue) == [third, later]
    assert len(scratch.queue) == 2


def test_a_spread_claim_takes_a_run_of_its_window(db):
    """With ``spread`` (after a claim conflict), jobs without quotas are
    taken from a random run of the first due ones, in run order; a job
    under a quota keeps its turn. A second queue is claimed from in the
    same claim (it once failed with 'too many values to unpack')."""
    starts = set()
    for _ in range(12):
        scratch = Scratch(db)
        try:
            scratch.queue.quotas.create("a", size=1)
            quota_job = scratch.put(offset=-30, quotas=("a",))
            free = [scratch.put(offset=-20 + i) for i in range(19)]
            other = Queue()
            scratch.conn.root()[KEY][f"q{next(_names)}"] = other
            other_job = other.put(Job(jobfuncs.noop), begin_after=BASE)
            taken, _slots = run_claim([scratch.queue, other], 4, spread=True)
            jobs = flat(taken)
            assert jobs[0] is quota_job and len(jobs) == 4
            run = [free.index(job) for job in jobs[1:]]
            assert run == list(range(run[0], run[0] + 3))  # one run, in order
            starts.add(run[0])
            taken, _slots = run_claim([other, scratch.queue], 8, spread=True)
            assert flat(taken)[0] is other_job and len(flat(taken)) == 8
        finally:
            scratch.close()
    assert len(starts) > 1  # runs chosen at random


def test_a_job_not_due_yet_waits(scratch):
    job = scratch.put(offset=10)
    assert run_claim([scratch.queue], 5)[0] == {}
    assert run_claim([scratch.queue], 5, at=10)[0] == {0: [job]}


def test_first_job_of_a_slot_is_active_the_rest_assigned(scratch):
    jobs = [scratch.put(offset=-i) for i in range(5, 0, -1)]
    taken, slots = run_claim([scratch.queue], 2, 3, worker="me")
    assert sorted(len(v) for v in taken.values()) == [2, 3]
    for index, claimed in taken.items():
        assert claimed[0].status == ACTIVE
        assert claimed[0].active_start == BASE
        assert all(job.status == ASSIGNED for job in claimed[1:])
        for job in claimed:
            assert job._worker == "me" and job._slot == index
            assert slots[index].active[int.from_bytes(job._p_oid, "big")] is job
    assert sorted(flat(taken), key=jobs.index) == jobs


def test_fill_first_takes_the_first_slots_jobs_when_all_would_get_some(scratch):
    """Enough due jobs to fill the first slot and give the others one
    each: only the first slot's are taken (the dispatcher claims for each
    other thread in that thread's own connection); the rest stay queued,
    in order."""
    jobs = [scratch.put(offset=-i) for i in range(8, 0, -1)]
    taken, _ = run_claim([scratch.queue], 4, 4, 4, fill_first=True)
    assert taken == {0: jobs[:4]} and taken.more
    assert list(scratch.queue) == jobs[4:]
    # One job short of that: shared, in turn.
    taken, _ = run_claim([scratch.queue], 4, 4, fill_first=True)
    assert taken == {0: jobs[4:8:2], 1: jobs[5:8:2]} and not taken.more
    assert list(scratch.queue) == []


def test_fill_first_shares_fewer_jobs_among_the_slots(scratch):
    """Fewer due jobs than that are shared among the slots, in turn, as
    without fill_first: the members of a parallel() run side by side."""
    jobs = [scratch.put(offset=-i) for i in range(3, 0, -1)]
    taken, _ = run_claim([scratch.queue], 4, 4, 4, fill_first=True)
    assert not taken.more
    assert taken == {0: jobs[:1], 1: jobs[1:2], 2: jobs[2:]}
    assert len(scratch.queue) == 0


def test_fill_first_leaves_quota_room_to_the_jobs_it_did_not_take(scratch):
    scratch.queue.quotas.create("a", size=3)
    jobs = [scratch.put(offset=-i, quotas=("a",)) for i in range(6, 0, -1)]
    taken, _ = run_claim([scratch.queue], 1, 1, 1, fill_first=True)
    assert taken == {0: jobs[:1]} and taken.more
    assert len(scratch.queue.quotas["a"]) == 1
    taken, _ = run_claim([scratch.queue], 1, 1, fill_first=True)
    assert taken == {0: jobs[1:2]} and taken.more
    taken, _ = run_claim([scratch.queue], 1, fill_first=True)
    assert taken == {0: jobs[2:3]}
    # The quota is full: the others wait until one is released.
    assert run_claim([scratch.queue], 1, 1, fill_first=True)[0] == {}


def test_several_queues_served_in_the_order_given(scratch, db):
    other = Queue()
    scratch.conn.root()[KEY]["other-" + str(next(_names))] = other
    mine = scratch.put(offset=-1)
    theirs = other.put(Job(jobfuncs.noop), begin_after=BASE)
    taken, _ = run_claim([other, scratch.queue], 1, 1)
    assert flat(taken) == [theirs, mine]


def test_quota_full_blocks_later_jobs_of_that_quota_only(scratch):
    scratch.queue.quotas.create("a", size=1)
    a1 = scratch.put(offset=-3, quotas=["a"])
    a2 = scratch.put(offset=-2, quotas=["a"])
    free = scratch.put(offset=-1)
    taken, _ = run_claim([scratch.queue], 5)
    assert flat(taken) == [a1, free]
    assert len(scratch.queue.quotas["a"]) == 1
    assert run_claim([scratch.queue], 5)[0] == {}
    release_quotas(a1)
    assert flat(run_claim([scratch.queue], 5)[0]) == [a2]


def test_a_job_blocked_on_one_quota_blocks_its_other_quotas(scratch):
    scratch.queue.quotas.create("a", size=1)
    scratch.queue.quotas.create("b", size=5)
    holder = scratch.put(offset=-4, quotas=["a"])
    both = scratch.put(offset=-3, quotas=["a", "b"])
    only_b = scratch.put(offset=-2, quotas=["b"])
    assert flat(run_claim([scratch.queue], 5)[0]) == [holder]
    release_quotas(holder)
    assert flat(run_claim([scratch.queue], 5)[0]) == [both, only_b]
    assert len(scratch.queue.quotas["b"]) == 2


def test_a_quota_removed_from_the_queue_no_longer_limits(scratch):
    scratch.queue.quotas.create("gone")
    jobs = [scratch.put(offset=-i, quotas=["gone"]) for i in (3, 2, 1)]
    scratch.queue.quotas.remove("gone")
    assert flat(run_claim([scratch.queue], 5)[0]) == jobs


def test_jobs_not_pending_are_skipped(scratch):
    job = scratch.put(offset=-1)
    job._status = COMPLETED  # e.g. put right by recovery meanwhile
    ok = scratch.put(offset=0)
    assert flat(run_claim([scratch.queue], 5)[0]) == [ok]


# -- properties ---------------------------------------------------------------

job_specs = st.lists(
    st.tuples(
        st.integers(-2, 2),  # priority
        st.integers(-5, 5),  # begin_after offset, seconds
        st.lists(st.sampled_from(QUOTA_NAMES), max_size=2, unique=True),
        st.integers(0, 7),  # shard (the producer thread)
    ),
    min_size=1,
    max_size=25,
)
rounds = st.lists(
    st.tuples(
        st.lists(st.integers(1, 4), min_size=1, max_size=3),  # slot capacities
        st.integers(0, 3),  # seconds the clock moves before the claim
        st.floats(0, 1),  # share of running jobs that finish after it
        st.integers(0, 3),  # jobs put before the claim (from the spares)
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.fixed_dictionaries({name: st.integers(1, 3) for name in QUOTA_NAMES}),
    initial=job_specs,
    spares=job_specs,
    plan=rounds,
)
def test_claims_keep_run_order_and_never_exceed_a_quota(
    db, sizes, initial, spares, plan
):
    s = Scratch(db)
    try:
        _check_claims(s, sizes, initial, list(spares), plan)
    finally:
        s.close()


def _assert_slots(taken, capacities):
    """Slots: within capacity, first ACTIVE, rest ASSIGNED."""
    for index, claimed in taken.items():
        assert len(claimed) <= capacities[index]
        assert claimed[0].status == ACTIVE
        assert all(j.status == ASSIGNED for j in claimed[1:])
    assert len(flat(taken)) <= sum(capacities)


def _assert_run_order(got, due, got_oids):
    """Run order: a due job is passed over only when it waits for a quota,
    and then no later job that shares one of its quotas overtakes it."""
    for later in got:
        for earlier in due:
            if earlier is later:
                break
            if earlier._p_oid in got_oids:
                continue
            assert earlier.quota_names, (earlier, later)
            assert not set(earlier.quota_names) & set(later.quota_names)


def _check_claims(s, sizes, initial, spares, plan):
    queue = s.queue
    for name, size in sizes.items():
        queue.quotas.create(name, size=size)
    jobs = [s.put(priority=p, offset=o, quotas=q, shard=n) for p, o, q, n in initial]
    claimed_at: dict[bytes, int] = {}  # oid -> claim round
    running: list[Job] = []
    clock = -5
    for round_no, (capacities, step, finish_share, new) in enumerate(plan):
        for _ in range(new):
            if spares:
                p, o, q, n = spares.pop()
                jobs.append(s.put(priority=p, offset=clock + o, quotas=q, shard=n))
        clock += step
        now_us = us(BASE + datetime.timedelta(seconds=clock))
        pending_before = [j for j in jobs if j.status == PENDING]
        room = {name: sizes[name] - len(queue.quotas[name]) for name in sizes}
        taken, slots = run_claim([queue], *capacities, at=clock)
        got = flat(taken)
        in_order = sorted(got, key=lambda j: (-j.priority, us(j.begin_after), j._p_oid))

        _assert_slots(taken, capacities)
        # Each job once, only when due, out of the queue.
        for job in got:
            assert job._p_oid not in claimed_at
            claimed_at[job._p_oid] = round_no
            assert us(job.begin_after) <= now_us
            assert job._key is None
        assert len(queue) == len([j for j in jobs if j.status == PENDING])
        # Quotas: never past their size; they count exactly the running jobs.
        running.extend(got)
        for name, size in sizes.items():
            holders = [j for j in running if name in j.quota_names]
            assert len(queue.quotas[name]) == len(holders) <= size
        got_oids = {j._p_oid for j in got}
        due = [j for j in pending_before if us(j.begin_after) <= now_us]
        due.sort(key=lambda j: (-j.priority, us(j.begin_after), j._p_oid))
        _assert_run_order(got, due, got_oids)
        # Enough capacity: every due job without quotas is taken; the first
        # due job is taken when its quotas have room.
        if len(due) <= sum(capacities):
            assert all(j._p_oid in got_oids for j in due if not j.quota_names)
        if due and all(room[name] > 0 for name in due[0].quota_names):
            assert due[0]._p_oid in got_oids
        # Within a claim, each slot's jobs come in run order.
        for claimed in taken.values():
            assert claimed == [j for j in in_order if j in claimed]
        # Some running jobs finish, freeing their quotas.
        finished = running[: int(len(running) * finish_share)]
        for job in finished:
            release_quotas(job)
            job._status = COMPLETED
        running = running[len(finished) :]


def _claim_preferring(queue, capacity, now_us, prefer, rank=None):
    """A claim with a grace of 25 ms, where ``prefer(queue, job, backlog)``
    says which jobs are this worker's (rank 0; the others' rank is
    ``rank(job)``, default 1)."""

    def ranking(queue, job, backlog):
        if prefer(queue, job, backlog):
            return 0
        return 1 if rank is None else rank(job)

    return claim(
        [queue],
        slots=[(Slot(0), capacity)],
        worker="w",
        now_us=now_us,
        start_time=BASE,
        rank=ranking,
        fresh_us=25_000,
    )


def test_a_job_just_due_is_left_to_the_worker_it_is_meant_for(scratch):
    """``prefer`` says the job is another worker's: while it is fresh (due
    less than ``fresh_us`` ago) it is left, the claim goes on to the next
    job, and the result says when the first may be taken; a job due for
    longer is taken whoever it is meant for."""
    older = scratch.put(offset=-1)
    fresh = scratch.put(offset=0)
    after = scratch.put(offset=0.001)
    due_us = fresh._key[1]

    def mine(queue, job, backlog):
        return job is after

    left = _claim_preferring(scratch.queue, 2, due_us + 10_000, mine)
    assert flat(left) == [older, after]  # older: due 1 s ago, anyone's
    assert fresh.status == PENDING
    assert left.wait_until_us == due_us + 25_000


def test_a_job_left_to_another_worker_is_taken_once_the_grace_has_passed(scratch):
    job = scratch.put(offset=0)
    taken = _claim_preferring(
        scratch.queue, 1, job._key[1] + 25_000, lambda queue, candidate, backlog: False
    )
    assert flat(taken) == [job] and taken.wait_until_us is None


def test_a_job_left_to_another_worker_still_holds_its_quotas_order(scratch):
    """The first job of a quota of 1 is meant for another worker: the next
    job of that quota, though meant for this one, waits behind it; a job
    without the quota does not."""
    scratch.queue.quotas.create("serial", size=1)
    first = scratch.put(offset=0, quotas=("serial",))
    second = scratch.put(offset=0.001, quotas=("serial",))
    free = scratch.put(offset=0.002)
    taken = _claim_preferring(
        scratch.queue,
        3,
        first._key[1] + 10_000,
        lambda queue, job, backlog: job is not first,
    )
    assert flat(taken) == [free]
    assert first.status == PENDING and second.status == PENDING


def test_in_a_backlog_a_worker_takes_its_own_jobs_first(scratch):
    """Jobs due for long, several workers: a claim takes the jobs meant for
    it, passing over the others' (which their workers take), in run order."""
    jobs = [scratch.put(offset=-10 + n * 0.001) for n in range(12)]
    mine = set(jobs[1::3])

    taken = _claim_preferring(
        scratch.queue, 4, us(BASE), lambda queue, job, backlog: job in mine
    )
    assert flat(taken) == jobs[1::3]
    assert all(job.status == PENDING for job in jobs if job not in mine)
    assert taken.wait_until_us is None  # nothing to wait for: a backlog


def test_when_its_own_jobs_run_short_a_worker_takes_the_last_of_the_others(scratch):
    """Its own jobs first, then the others' from the end of what it looked
    at, while their workers take theirs from the front."""
    jobs = [scratch.put(offset=-10 + n * 0.001) for n in range(6)]
    taken = _claim_preferring(
        scratch.queue, 3, us(BASE), lambda queue, job, backlog: job is jobs[2]
    )
    assert flat(taken) == [jobs[2], jobs[4], jobs[5]]
    assert [job.status for job in jobs[:2]] == [PENDING, PENDING]


def _committed_queue(tm, conn, count: int) -> tuple[str, list]:
    """A new queue of ``count`` jobs due a millisecond apart, committed
    through ``conn``; its name and its jobs."""
    name = f"q{next(_names)}"
    with tm:
        queue = conn.root()[KEY][name] = Queue()
        jobs = [
            queue.put(
                Job(jobfuncs.noop),
                begin_after=BASE + datetime.timedelta(seconds=n / 1000),
            )
            for n in range(count)
        ]
    return name, jobs


def test_others_jobs_are_passed_over_without_loading_them(db):
    """A queue without quotas: the claim reads the others' jobs' oids from
    the shard, not the jobs (under ZEO each load is a round trip)."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        name, _jobs = _committed_queue(tm, conn, 8)
        conn.cacheMinimize()  # every job a ghost
        tm.begin()
        queue = conn.root()[KEY][name]
        jobs = list(queue)
        conn.cacheMinimize()
        mine = {job._p_oid for job in jobs[::4]}
        taken = _claim_preferring(
            queue, 2, us(BASE) + 10**7, lambda q, job, backlog: job._p_oid in mine
        )
        assert {job._p_oid for job in flat(taken)} == mine
        others = [job for job in jobs if job._p_oid not in mine]
        assert all(job._p_changed is None for job in others)  # still ghosts
    finally:
        tm.abort()
        conn.close()


@pytest.mark.parametrize("split", [False, True])
def test_entries_found_stale_are_remembered_and_not_loaded_again(db, split):
    """An entry whose job another worker claimed (the job no longer names
    it) is found stale by loading the job once; the claim adds it to
    ``known_stale``, whatever becomes of the claim, and later claims pass
    it over without loading it. ``split``: the entry is another worker's,
    found stale when this one's own jobs ran short."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        name, jobs = _committed_queue(tm, conn, 3)
        with tm:  # as a claim of another worker near the shard's end does
            shard_oid = conn.root()[KEY][name]._shard_of(jobs[0])._p_oid
            stale_key, jobs[0]._key = jobs[0]._key, None
        known: set = set()

        def claim_once():
            conn.cacheMinimize()  # every job a ghost
            tm.begin()
            queue = conn.root()[KEY][name]

            def ranking(q, job, backlog):
                # With ``split`` the stale entry's job is another worker's.
                return 1 if split and job._p_oid == jobs[0]._p_oid else 0

            taken = claim(
                [queue],
                slots=[(Slot(0), 3)],
                worker="w",
                now_us=us(BASE) + 10**7,
                start_time=BASE,
                known_stale=known,
                rank=ranking,
            )
            try:
                loaded = conn.get(jobs[0]._p_oid)._p_changed is not None
                return [job._p_oid for job in flat(taken)], loaded
            finally:
                tm.abort()

        others = [job._p_oid for job in jobs[1:]]
        assert claim_once() == (others, True)
        assert (shard_oid, stale_key) in known
        assert claim_once() == (others, False)  # the first claim was aborted
    finally:
        conn.close()


def test_in_a_backlog_quota_jobs_keep_their_order_whoever_they_are_meant_for(
    scratch,
):
    """A queue with quotas: its jobs under a quota are taken in their turn
    by whoever claims first (their order is the quota's); its other jobs
    go to the workers they are meant for."""
    scratch.queue.quotas.create("serial", size=1)
    first = scratch.put(offset=-5, quotas=("serial",))
    second = scratch.put(offset=-4, quotas=("serial",))
    free_other = scratch.put(offset=-3)
    free_mine = scratch.put(offset=-2)
    taken = _claim_preferring(
        scratch.queue, 2, us(BASE), lambda queue, job, backlog: job is free_mine
    )
    # first: the quota's turn (not meant for this worker, taken anyway);
    # second waits behind it; free_other is left to its worker.
    assert flat(taken) == [first, free_mine]
    assert second.status == PENDING and free_other.status == PENDING


def test_workers_whose_own_jobs_ran_short_take_different_ones_of_the_others(scratch):
    """Two workers have none of their own left: each takes the others'
    jobs it ranks best, the last first, so that they do not both claim
    the same ones (and conflict)."""
    jobs = [scratch.put(offset=-10 + n * 0.001) for n in range(8)]
    second_choice = {0: set(jobs[0::2]), 1: set(jobs[1::2])}  # by worker

    def claim_for(worker):
        return _claim_preferring(
            scratch.queue,
            2,
            us(BASE),
            lambda queue, job, backlog: False,
            rank=lambda job: 1 if job in second_choice[worker] else 2,
        )

    assert flat(claim_for(0)) == [jobs[4], jobs[6]]
    assert flat(claim_for(1)) == [jobs[5], jobs[7]]


class _Backlog:
    """Workers (by index) claiming from one backlog, checked at each claim:
    a job claimed once, quotas never exceeded nor overtaken within."""

    def __init__(self, queue, jobs, uuids, ranks, with_quotas):
        self.queue, self.jobs, self.uuids, self.ranks = queue, jobs, uuids, ranks
        self.quota_names = QUOTA_NAMES if with_quotas else ()
        self.claimed: dict[bytes, int] = {}
        self.running: list = []

    def claim_as(self, worker, capacity):
        taken = claim(
            [self.queue],
            slots=[(Slot(0), capacity)],
            worker=self.uuids[worker],
            now_us=us(BASE),
            start_time=BASE,
            rank=self.ranks[worker],
            fresh_us=100_000,
        )
        got = flat(taken)
        for job in got:
            assert job._p_oid not in self.claimed
            self.claimed[job._p_oid] = worker
        self.running.extend(got)
        for name in self.quota_names:
            holders = [j for j in self.running if name in j.quota_names]
            assert len(self.queue.quotas[name]) == len(holders) <= 2
            # Within a quota, jobs are claimed in their order.
            order = [j for j in self.jobs if name in j.quota_names]
            taken_so_far = [j for j in order if j._p_oid in self.claimed]
            assert taken_so_far == order[: len(taken_so_far)]
        return got

    def finish(self, share_all):
        running = self.running
        done = running[:] if share_all else running[: len(running) // 2]
        for job in done:
            release_quotas(job)
            job._status = COMPLETED
        del running[: len(done)]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    workers=st.integers(2, 4),
    with_quotas=st.booleans(),
    specs=st.lists(
        st.tuples(
            st.integers(0, 3),  # jobs queued together (consecutive oids)
            st.lists(st.sampled_from(QUOTA_NAMES), max_size=1),
        ),
        min_size=1,
        max_size=30,
    ),
    turns=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 6), st.booleans()),
        min_size=1,
        max_size=40,
    ),
)
def test_workers_sharing_a_backlog_take_each_job_once_and_leave_none(
    db, workers, with_quotas, specs, turns
):
    """Workers claim from one backlog in any order, each with the ranking
    a Dispatcher computes (``Placement.ranking``): each job is claimed
    once; a quota is never exceeded, nor overtaken within; a claim with
    room takes something while anything it may take is left; and once
    every worker has claimed with room enough, nothing is left."""
    from zasync.dispatcher import Dispatcher

    s = Scratch(db)
    try:
        queue = s.queue
        if with_quotas:
            for name in QUOTA_NAMES:
                queue.quotas.create(name, size=2)
        jobs = []
        for repeat, quotas in specs:
            for _ in range(repeat + 1):
                names = quotas if with_quotas else ()
                jobs.append(s.put(offset=-100 + len(jobs) * 0.001, quotas=names))
        uuids = [f"worker-{n}" for n in range(workers)]
        peers = tuple((uuid, ()) for uuid in uuids)
        ranks = []
        for uuid in uuids:
            dispatcher = Dispatcher(db, uuid=uuid, threads=1)
            dispatcher.placement.peers = peers
            ranks.append(dispatcher.placement.ranking([queue]))
        backlog = _Backlog(queue, jobs, uuids, ranks, with_quotas)
        claim_as, finish = backlog.claim_as, backlog.finish
        claimed = backlog.claimed
        for worker, capacity, finish_all in turns:
            worker %= workers
            takeable = [
                j
                for j in jobs
                if j.status == PENDING
                and all(len(queue.quotas[n]) < 2 for n in j.quota_names)
            ]
            got = claim_as(worker, capacity)
            if takeable and not with_quotas:
                assert got, "a claim with room took nothing"
            finish(finish_all)
        # Every worker claims until nothing is left: no job is stranded.
        for _ in range(len(jobs) + 1):
            finish(True)
            if not any(j.status == PENDING for j in jobs):
                break
            for worker in range(workers):
                claim_as(worker, len(jobs))
        assert all(j._p_oid in claimed for j in jobs)
    finally:
        s.close()
