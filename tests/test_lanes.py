"""Quota lanes, per-key locks, unique keys and priorities in one process
(zasync.lanes, zasync.admission): claims on a real FileStorage, stepped
by hand. The guarantees under several processes are attacked in
test_unique_locks_multiprocess.py and test_fairness.py."""

from __future__ import annotations

import datetime

import pytest
import transaction

import jobfuncs
from zasync import serial
from zasync.claim import claim
from zasync.interfaces import COMPLETED, KEY, NEW, PENDING, BadStatusError
from zasync.job import Job
from zasync.keyed import release_key
from zasync.keys import to_us
from zasync.lanes import GATE_HEAD, GATE_SENTINEL, NAME_HEAD, NAME_SENTINEL
from zasync.recovery import release_quotas
from zasync.workers import Slot

UTC = datetime.UTC


def now():
    return datetime.datetime.now(UTC)


def take(queue, capacity=1):
    """One claim for one slot of ``capacity``, due jobs as of now."""
    taken = claim(
        [queue],
        slots=[(Slot(0), capacity)],
        worker="w",
        now_us=to_us(now()) + 1_000_000,
        start_time=now(),
    )
    return taken.get(0, [])


def finish(job):
    """What a worker does when a job ends: free what it holds (its lock is
    free once it no longer runs; its unique key is freed after its
    commit, zasync.callbacks)."""
    job._finish(None, now())
    release_quotas(job)
    if job.unique_key and job.unique_until == "finished":
        release_key(job.queue, job)


def only_sentinels(queue):
    gates = queue._gates
    return (
        all(job is None for job in gates.waiting.values())  # and tombstones
        and list(gates.front.keys()) == [GATE_HEAD, GATE_SENTINEL]
        and list(gates.lanes.keys()) == [GATE_HEAD, GATE_SENTINEL]
        and all(queue.lock_holder(lock) is None for lock in gates.held.keys())
        and list(gates.unique.keys()) == [NAME_HEAD, NAME_SENTINEL]
    )


def open_queue(db, conns):
    """(transaction manager, default queue) in a new connection of ``db``
    with a transaction begun; the connection is added to ``conns``."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    conns.append(conn)
    tm.begin()
    return tm, conn.root()[KEY][""]


def a_held_lock(db, conns):
    """A job of lock "l" queued and committed: (tm, queue, the job), and
    two more (tm, queue) in connections of their own, as open_queue()."""
    tm, queue = open_queue(db, conns)
    job = queue.put(jobfuncs.noop, lock="l")
    tm.commit()
    return tm, queue, job, open_queue(db, conns), open_queue(db, conns)


# -- priorities ---------------------------------------------------------------


def test_higher_priority_runs_first_then_order_queued(queue):
    low = queue.put(jobfuncs.noop)
    high = queue.put(jobfuncs.noop, priority=10)
    negative = queue.put(jobfuncs.noop, priority=-1)
    also_high = queue.put(jobfuncs.noop, priority=10)
    assert list(queue) == [high, also_high, low, negative]
    assert [j.priority for j in take(queue, 4)] == [10, 10, 0, -1]


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("5", TypeError, "must be a whole number"),
        (True, TypeError, "must be a whole number"),
        (2.5, TypeError, "must be a whole number"),
        (10**7, ValueError, "out of range"),
    ],
)
def test_a_bad_priority_is_refused_naming_the_fix(queue, value, error, words):
    with pytest.raises(error, match=words):
        queue.put(jobfuncs.noop, priority=value)
    assert len(queue) == 0


def test_priority_is_set_while_new_only(queue):
    job = queue.put(jobfuncs.noop)
    with pytest.raises(BadStatusError, match="while a job is new"):
        job.priority = 3


def test_a_backdated_job_does_not_jump_the_line(queue):
    first = queue.put(jobfuncs.noop)
    backdated = queue.put(jobfuncs.noop, begin_after=now() - datetime.timedelta(days=1))
    assert list(queue) == [first, backdated]


# -- quota lanes ----------------------------------------------------------------


def test_free_jobs_are_not_starved_behind_a_full_quota(queue):
    queue.quotas.create("slow", size=1)
    blocked = queue.put_many(
        [jobfuncs.noop for _ in range(2000)], quota_names=("slow",)
    )
    free = queue.put_many([jobfuncs.noop for _ in range(5)])
    assert take(queue) == [blocked[0]]  # holds the quota from now on
    # The other 1,999 wait in the lane; one of them is in the shards.
    assert len(queue._gates.front[(("slow",), "")]) == 1
    assert take(queue, 10) == free
    assert len(queue) == 1999
    assert list(queue)[:3] == blocked[1:4]


def test_a_lane_runs_in_order_as_its_quota_frees(queue):
    queue.quotas.create("one", size=1)
    jobs = queue.put_many([jobfuncs.noop for _ in range(5)], quota_names=("one",))
    order = []
    for _ in jobs:
        (job,) = take(queue, 3)
        assert take(queue, 3) == []  # the quota is full
        order.append(job)
        finish(job)
    assert order == jobs
    assert only_sentinels(queue)


def test_a_quota_of_two_lets_two_run(queue):
    queue.quotas.create("two", size=2)
    jobs = queue.put_many([jobfuncs.noop for _ in range(6)], quota_names=("two",))
    assert take(queue, 5) == jobs[:2]
    finish(jobs[0])
    assert take(queue, 5) == jobs[2:3]


def test_a_higher_priority_job_takes_the_front_of_its_lane(queue):
    queue.quotas.create("one", size=1)
    jobs = queue.put_many([jobfuncs.noop for _ in range(3)], quota_names=("one",))
    urgent = queue.put(jobfuncs.noop, quota_names=("one",), priority=5)
    assert list(queue) == [urgent, *jobs]
    assert take(queue) == [urgent]
    finish(urgent)
    assert take(queue) == [jobs[0]]


def test_a_scheduled_job_does_not_hold_back_its_lane(queue):
    queue.quotas.create("one", size=1)
    later = queue.put(
        jobfuncs.noop,
        quota_names=("one",),
        begin_after=now() + datetime.timedelta(hours=1),
    )
    due = queue.put(jobfuncs.noop, quota_names=("one",))
    assert take(queue) == [due]
    assert list(queue) == [later]


def test_removing_a_waiting_job_and_a_front_job(queue):
    queue.quotas.create("one", size=1)
    a, b, c = queue.put_many([jobfuncs.noop for _ in range(3)], quota_names=("one",))
    queue.remove(b)  # waits in the lane
    assert b.status == NEW
    queue.remove(a)  # in the shards: c takes its place
    assert list(queue) == [c]
    assert take(queue) == [c]
    finish(c)
    assert only_sentinels(queue)


def test_a_job_queued_after_a_serial_batch_waits_for_all_its_members(queue):
    queue.quotas.create("one", size=1)
    members = [Job(jobfuncs.noop) for _ in range(3)]
    for member in members:
        member.quota_names = ("one",)
    batch = queue.put(serial(*members), quota_names=("one",))
    after = queue.put(jobfuncs.noop, quota_names=("one",))
    assert take(queue) == [batch]
    batch._launch()  # queues the first member, where the batch was
    release_quotas(batch)
    started = []
    while True:
        (job,) = take(queue)
        started.append(job)
        if job is after:
            break
        finish(job)
        batch._advance(job)  # what the member's callback does
    assert started == [*members, after]


# -- per-key locks ----------------------------------------------------------------


def test_jobs_with_one_lock_never_run_together_and_keep_their_order(queue):
    first = queue.put(jobfuncs.noop, lock="order:42")
    other = queue.put(jobfuncs.noop, lock="order:7")
    second = queue.put(jobfuncs.noop, lock="order:42")
    free = queue.put(jobfuncs.noop)
    assert take(queue, 5) == [first, other, free]
    assert queue.lock_holder("order:42") is first
    assert take(queue, 5) == []
    finish(first)
    assert queue.lock_holder("order:42") is None
    assert take(queue, 5) == [second]
    finish(second)
    finish(other)
    assert only_sentinels(queue)


def test_thousands_of_lock_keys_leave_nothing_behind(queue):
    queue.put_many([jobfuncs.noop for _ in range(3000)])
    queue.put_many([jobfuncs.noop for _ in range(3)], lock="k")
    keyed = [queue.put(jobfuncs.noop, lock=f"key:{i % 1000}") for i in range(2000)]
    while len(queue):
        batch = take(queue, 500)
        assert batch
        locks = [job.lock for job in batch if job.lock]
        assert len(locks) == len(set(locks))  # no two under one lock
        for job in batch:
            finish(job)
    assert all(job.status == COMPLETED for job in keyed)
    assert only_sentinels(queue)


def test_a_lock_left_by_a_crashed_holder_is_taken_over(queue):
    first = queue.put(jobfuncs.noop, lock="x")
    second = queue.put(jobfuncs.noop, lock="x")
    assert take(queue) == [first]
    first._finish(None, now())  # its worker died before it freed the lock
    assert take(queue) == [second]


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("", ValueError, "is empty"),
        (42, TypeError, "must be a string"),
        ("x" * 201, ValueError, "at most 200"),
    ],
)
def test_a_bad_lock_or_unique_key_is_refused(queue, value, error, words):
    with pytest.raises(error, match=words):
        queue.put(jobfuncs.noop, lock=value)
    with pytest.raises(error, match=words):
        queue.put(jobfuncs.noop, unique_key=value)
    assert len(queue) == 0


# -- unique keys ----------------------------------------------------------------


def test_a_unique_key_returns_the_job_already_pending(queue):
    first = queue.put(jobfuncs.noop, unique_key="reindex:/Plone/doc")
    again = queue.put(Job(jobfuncs.noop), unique_key="reindex:/Plone/doc")
    assert again is first
    assert len(queue) == 1
    assert queue.unique_job("reindex:/Plone/doc") is first


def test_a_unique_key_is_free_once_its_job_started(queue):
    first = queue.put(jobfuncs.noop, unique_key="k")
    assert take(queue) == [first]
    assert queue.unique_job("k") is None
    second = queue.put(jobfuncs.noop, unique_key="k")
    assert second is not first
    assert second.status == PENDING


def test_unique_until_finished_holds_the_key_while_it_runs(queue):
    first = queue.put(jobfuncs.noop, unique_key="k", unique_until="finished")
    assert take(queue) == [first]
    assert queue.put(jobfuncs.noop, unique_key="k") is first
    finish(first)
    assert queue.put(jobfuncs.noop, unique_key="k") is not first
    assert queue.unique_job("k").status == PENDING


def test_replace_takes_the_pending_ones_place(queue):
    first = queue.put(jobfuncs.noop, unique_key="k")
    second = queue.put(jobfuncs.noop, unique_key="k", replace=True)
    assert second is not first
    assert first.status == NEW
    assert list(queue) == [second]
    assert queue.unique_job("k") is second


def test_a_removed_job_frees_its_key(queue):
    first = queue.put(jobfuncs.noop, unique_key="k")
    queue.remove(first)
    assert queue.unique_job("k") is None
    assert only_sentinels(queue)


def test_one_job_per_key_within_one_put_many(queue):
    jobs = [Job(jobfuncs.noop) for _ in range(3)]
    for job in jobs:
        job.unique_key = "same"
    assert queue.put_many(jobs) == [jobs[0]] * 3
    assert len(queue) == 1


def test_unique_options_without_a_key_are_refused(queue):
    with pytest.raises(ValueError, match="go with a unique_key"):
        queue.put(jobfuncs.noop, replace=True)
    with pytest.raises(ValueError, match="use 'started'"):
        queue.put(jobfuncs.noop, unique_key="k", unique_until="never")


def test_lanes_and_keys_survive_a_commit(conn, queue):
    queue.quotas.create("one", size=1)
    jobs = queue.put_many([jobfuncs.noop for _ in range(3)], quota_names=("one",))
    keyed = queue.put(jobfuncs.noop, unique_key="k", lock="l", priority=3)
    transaction.commit()
    conn.cacheMinimize()
    assert queue.unique_job("k") is keyed
    assert [j.priority for j in queue] == [3, 0, 0, 0]
    assert list(queue)[1:] == jobs


def test_a_lane_whose_front_was_lost_is_repaired(queue):
    from zasync.lanerepair import needs_repair, repair

    queue.quotas.create("one", size=1)
    first, second = queue.put_many([jobfuncs.noop] * 2, quota_names=("one",))
    # First leaves the shards by a way that does not tell its lane (as a
    # bug or a hand-edited database might): the lane would wait for good.
    del queue.shards[[s.get(first._key) for s in queue.shards].index(first)][first._key]
    first._key = None
    first._status = COMPLETED
    assert take(queue) == []
    assert needs_repair(queue)
    assert repair(queue) == (1, 1)  # and the mark its promotion left
    assert not needs_repair(queue)
    assert take(queue) == [second]


def test_two_claims_taking_one_lock_at_once_conflict(zasync_db):
    """The job that took a lock last was put back (an interruption): it
    may take it again, and its claim still writes the lock's entry, so
    that a claim of another job of that lock at the same moment (which
    sees the lock free: its holder no longer runs) conflicts."""
    from ZODB.POSException import ConflictError

    conns = []

    tm, queue = open_queue(zasync_db, conns)
    first = queue.put(jobfuncs.noop, lock="l")
    # Scheduled: in the shards, outside its lane's front (so the two claims
    # below write no front in common).
    second = queue.put(
        jobfuncs.noop, lock="l", begin_after=now() + datetime.timedelta(seconds=0.5)
    )
    tm.commit()
    tm.begin()
    assert take(queue) == [first]
    queue.requeue(first, front=True)  # its worker stopped it
    tm.commit()
    tm_a, queue_a = open_queue(zasync_db, conns)
    tm_b, queue_b = open_queue(zasync_db, conns)
    assert [j._p_oid for j in take(queue_a)] == [first._p_oid]
    # The other claim passes over the first job (as a claim that knows its
    # entry, or that is left to another worker, would) and takes the second.
    skip = {
        (s._p_oid, k)
        for s in queue_b.shards
        for k, j in s.items()
        if j is not None and j._p_oid == first._p_oid
    }
    taken = claim(
        [queue_b],
        slots=[(Slot(0), 1)],
        worker="w2",
        now_us=to_us(now()) + 1_000_000,
        start_time=now(),
        known_stale=skip,
    )
    assert [j._p_oid for j in taken[0]] == [second._p_oid]
    tm_a.commit()
    with pytest.raises(ConflictError):
        tm_b.commit()
    tm_b.abort()
    for conn in conns:
        conn.close()


def test_promotions_leave_tombstones_that_repair_removes(queue):
    """A claim marks the entry of a job it moves out of a lane (it changes
    no bucket's shape: producers adding to the same bucket merge with it);
    the maintenance worker's repair removes the marks."""
    from zasync.lanerepair import needs_repair, repair

    queue.quotas.create("one", size=1)
    jobs = queue.put_many([jobfuncs.noop] * 5, quota_names=("one",))
    for job in jobs:
        (taken,) = take(queue)
        assert taken is job
        finish(job)
    gates = queue._gates
    assert len(gates.waiting) == 2 + 4  # sentinels, and a mark per promotion
    assert needs_repair(queue)
    assert repair(queue) == (0, 4)
    assert list(gates.waiting.keys()) == [(GATE_HEAD,), (GATE_SENTINEL,)]
    assert not needs_repair(queue)


@pytest.mark.parametrize("first", ["producer", "claim"])
def test_a_job_queued_behind_a_lock_as_its_holder_is_claimed_keeps_its_place(
    zasync_db, first
):
    """A producer queues a job of a lock to wait behind the lane's front
    while a claim takes that front's job and, seeing nobody waiting,
    leaves the lane idle. Whichever commits first, the other's commit
    conflicts: else the waiting job would wait behind an empty front, and
    the next job of the lock would go straight into the shards ahead of
    it."""
    from ZODB.POSException import ConflictError

    conns = []
    tm, queue, holder, (tm_c, queue_c), (tm_p, queue_p) = a_held_lock(zasync_db, conns)
    assert [j._p_oid for j in take(queue_c)] == [holder._p_oid]
    behind = queue_p.put(jobfuncs.noop, lock="l")
    assert queue_p._gates.waiting.get(behind._key) is behind  # it waits
    ends = {"producer": tm_p, "claim": tm_c}
    ends[first].commit()
    later = ends["claim" if first == "producer" else "producer"]
    with pytest.raises(ConflictError):
        later.commit()
    later.abort()
    # The one that conflicted tries again, on what the other committed.
    later.begin()
    if first == "producer":
        assert [j._p_oid for j in take(queue_c)] == [holder._p_oid]
    else:
        behind = queue_p.put(jobfuncs.noop, lock="l")
    later.commit()
    tm.begin()
    last = queue.put(jobfuncs.noop, lock="l")
    tm.commit()
    tm.begin()
    assert take(queue) == []  # the lock is held
    finish(queue._p_jar.get(holder._p_oid))
    assert [j._p_oid for j in take(queue)] == [behind._p_oid]
    finish(queue._p_jar.get(behind._p_oid))
    assert take(queue) == [last]
    tm.commit()
    for conn in conns:
        conn.close()


def test_a_job_left_waiting_behind_an_empty_front_is_moved_on(queue):
    """What a claim emptying the front could leave, before it conflicted
    with a job queued at that moment to wait: the maintenance worker's
    repair moves the job on, ahead of the lock's later jobs."""
    from zasync.lanerepair import needs_repair, repair

    holder = queue.put(jobfuncs.noop, lock="l")
    behind = queue.put(jobfuncs.noop, lock="l")
    waiting_key = behind._key
    assert take(queue) == [holder]
    gates = queue._gates
    gate = ((), "l")
    # Undo the promotion the claim made: the job waits again, the front is empty.
    queue._unplace(behind)
    gates.waiting[waiting_key] = behind
    behind._key = waiting_key
    del gates.front[gate]
    finish(holder)
    assert needs_repair(queue)
    assert repair(queue)[0] == 1
    assert not needs_repair(queue)
    last = queue.put(jobfuncs.noop, lock="l")
    assert take(queue, 5) == [behind]
    finish(behind)
    assert take(queue, 5) == [last]
    finish(last)
    assert repair(queue) == (0, 2)  # the tombstones of the two promotions
    assert only_sentinels(queue)


def test_producers_queueing_jobs_to_wait_in_one_lane_do_not_conflict(zasync_db):
    """Each producer that queues a job to wait writes the lane's Lane (so
    that a claim emptying the front meanwhile conflicts with it); two
    such producers merge."""
    conns = []
    tm, queue, first, (tm_a, queue_a), (tm_b, queue_b) = a_held_lock(zasync_db, conns)
    a = queue_a.put(jobfuncs.noop, lock="l")
    b = queue_b.put(jobfuncs.noop, lock="l")
    tm_a.commit()
    tm_b.commit()
    tm.begin()
    assert queue._gates.lanes[((), "l")].waits == 2
    order = [first._p_oid, a._p_oid, b._p_oid]
    for oid in order:
        assert [j._p_oid for j in take(queue)] == [oid]
        finish(queue._p_jar.get(oid))
    tm.commit()
    for conn in conns:
        conn.close()
