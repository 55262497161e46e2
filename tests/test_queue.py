"""zasync.queue: install(), Queues, Queue.put/pull/remove/len/iteration,
quotas, and producers in several threads at once."""

from __future__ import annotations

import contextlib
import datetime

import pytest
import transaction
from ZODB.POSException import ConflictError

import jobfuncs
import zasync
from dbviews import other_connection
from producers import produce_concurrently
from zasync.interfaces import (
    KEY,
    NEW,
    PENDING,
    BadStatusError,
    ConfigurationError,
)
from zasync.job import Job
from zasync.queue import Queue, Queues

UTC = datetime.UTC


def now():
    return datetime.datetime.now(UTC)


# -- install ------------------------------------------------------------------


def test_install_on_a_db_is_idempotent(zasync_db):
    first = zasync.install(zasync_db)
    again = zasync.install(zasync_db, queues=("", "mail"))
    assert first._p_oid == again._p_oid
    with other_connection(zasync_db) as (conn, _tm):
        queues = conn.root()[KEY]
        assert isinstance(queues, Queues)
        assert sorted(queues) == ["", "mail"]
        assert isinstance(queues[""], Queue) and queues["mail"].name == "mail"


def test_install_on_a_connection_joins_its_transaction(tmp_path):
    import ZODB
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
    try:
        conn = db.open()
        queues = zasync.install(conn, queues=("a",))
        assert "a" in queues and "" not in queues
        transaction.abort()
        assert KEY not in conn.root()
        queues = zasync.install(conn)
        job = queues[""].put(jobfuncs.noop)  # before the install commits
        transaction.commit()
        assert job.status == PENDING
        zasync.install(conn)  # nothing to do, nothing written
        assert not conn._registered_objects
        transaction.abort()
        with other_connection(db) as (other, _tm):
            assert list(other.root()[KEY]) == [""]
            assert len(other.root()[KEY][""]) == 1
        conn.close()
    finally:
        db.close()


def test_install_refuses_a_string_for_queue_names(zasync_db):
    with pytest.raises(TypeError, match=r"a sequence of names, e.g. \('mail',\)"):
        zasync.install(zasync_db, queues="mail")


def test_queues_mapping(conn):
    queues = conn.root()[KEY]
    assert list(queues) == [""] and len(queues) == 1
    queues["other"] = Queue()
    assert queues["other"].name == "other"
    assert queues.get("missing") is None
    with pytest.raises(TypeError, match="must be a zasync.queue.Queue"):
        queues["bad"] = object()
    queues["other"].put(jobfuncs.noop)
    with pytest.raises(ValueError, match="still has 1 pending jobs"):
        del queues["other"]


# -- put ----------------------------------------------------------------------


def test_put_returns_the_pending_job_with_begin_after_now(queue):
    before = now()
    job = queue.put(Job(jobfuncs.add, 1, 2))
    assert isinstance(job, Job)
    assert job.status == PENDING
    assert before <= job.begin_after <= now()
    assert job.begin_by is None
    assert len(queue) == 1


def test_put_wraps_a_callable_in_a_job(queue):
    job = queue.put(jobfuncs.noop)
    assert isinstance(job, Job) and job.callable is jobfuncs.noop


def test_put_refuses_a_lambda(queue):
    with pytest.raises(TypeError, match="lambda"):
        queue.put(lambda: 1)
    assert len(queue) == 0


def test_put_joins_the_callers_transaction_abort_means_no_job(conn, queue):
    queue.put(jobfuncs.noop)
    assert len(queue) == 1
    transaction.abort()
    assert len(queue) == 0
    with other_connection(conn.db()) as (other, _tm):
        assert len(other.root()[KEY][""]) == 0


def test_put_does_not_commit_and_commit_makes_it_visible(conn, queue):
    job = queue.put(jobfuncs.noop)
    with other_connection(conn.db()) as (other, _tm):
        assert len(other.root()[KEY][""]) == 0
    transaction.commit()
    with other_connection(conn.db()) as (other, _tm):
        pending = list(other.root()[KEY][""])
        assert [j._p_oid for j in pending] == [job._p_oid]


def test_put_refuses_a_job_that_is_not_new(queue):
    job = queue.put(jobfuncs.noop)
    with pytest.raises(BadStatusError, match="only a new job can be put in queue ''"):
        queue.put(job)


def test_put_refuses_a_naive_begin_after_saying_what_to_use(queue):
    with pytest.raises(ValueError, match=r"is naive: give it a timezone, for example"):
        queue.put(jobfuncs.noop, begin_after=datetime.datetime.now())
    with pytest.raises(TypeError, match="timezone-aware datetime"):
        queue.put(jobfuncs.noop, begin_after="tomorrow")
    assert len(queue) == 0


def test_put_checks_begin_by(queue):
    with pytest.raises(TypeError, match=r"datetime.timedelta"):
        queue.put(jobfuncs.noop, begin_by=5)
    with pytest.raises(ValueError, match="must be positive"):
        queue.put(jobfuncs.noop, begin_by=datetime.timedelta(0))
    job = queue.put(jobfuncs.noop, begin_by=datetime.timedelta(minutes=1))
    assert job.begin_by == datetime.timedelta(minutes=1)


def test_begin_after_in_another_timezone(queue):
    tz = datetime.timezone(datetime.timedelta(hours=5))
    when = datetime.datetime.now(tz) + datetime.timedelta(hours=1)
    job = queue.put(jobfuncs.noop, begin_after=when)
    assert job.begin_after == when


def test_a_queue_outside_a_database_says_where_to_get_one():
    with pytest.raises(ConfigurationError, match=r"zasync.install\(db\)"):
        Queue("loose").put(jobfuncs.noop)


# -- order, pull, remove ------------------------------------------------------


def test_iteration_is_run_order(queue):
    later = queue.put(jobfuncs.noop, begin_after=now() + datetime.timedelta(hours=1))
    first = queue.put(jobfuncs.noop)
    second = queue.put(jobfuncs.noop)
    # A due time in the past counts as "queued now": no jumping the line.
    backdated = queue.put(
        jobfuncs.noop, begin_after=now() - datetime.timedelta(hours=1)
    )
    urgent = Job(jobfuncs.noop)
    urgent.priority = 5
    urgent = queue.put(urgent, begin_after=now() + datetime.timedelta(minutes=5))
    assert list(queue) == [urgent, first, second, backdated, later]
    assert len(queue) == 5


def test_same_due_time_keeps_put_order(queue):
    when = now()
    jobs = [queue.put(jobfuncs.noop, begin_after=when) for _ in range(20)]
    assert list(queue) == jobs


def test_pull_takes_the_first_or_the_given_index(queue):
    jobs = [queue.put(Job(jobfuncs.identity, i)) for i in range(4)]
    assert queue.pull() is jobs[0]
    assert jobs[0].status == NEW
    assert queue.pull(-1) is jobs[3]
    assert queue.pull(1) is jobs[2]
    assert list(queue) == [jobs[1]]
    assert len(queue) == 1
    with pytest.raises(IndexError, match="no job at index 5"):
        queue.pull(5)


def test_pull_from_an_empty_queue(queue):
    with pytest.raises(IndexError):
        queue.pull()


def test_remove_makes_the_job_new_again_and_it_can_be_put_again(queue):
    job = queue.put(jobfuncs.noop)
    queue.remove(job)
    assert job.status == NEW and job.queue is None
    assert len(queue) == 0 and list(queue) == []
    assert queue.put(job) is job
    assert list(queue) == [job]


def test_remove_refuses_a_job_that_is_not_pending_here(conn, queue):
    with pytest.raises(BadStatusError, match="is not pending in queue ''"):
        queue.remove(Job(jobfuncs.noop))
    other = conn.root()[KEY]["other"] = Queue()
    job = other.put(jobfuncs.noop)
    with pytest.raises(BadStatusError):
        queue.remove(job)


def test_len_counts_pending_only_and_survives_commit(conn, queue):
    for _ in range(3):
        queue.put(jobfuncs.noop)
    transaction.commit()
    queue.pull()
    transaction.commit()
    with other_connection(conn.db()) as (other, _tm):
        assert len(other.root()[KEY][""]) == 2


def test_producers_write_their_shards_counter_and_workers_the_queues(conn, queue):
    """A put counts in its shard's counter, which only producers write; a
    job taken out counts in the queue's counter: a producer's commit loads
    nothing the workers change."""
    from zasync.shards import producer_shard

    index = producer_shard(len(queue.shards))
    before = queue.counter()
    queue.put(jobfuncs.noop)
    queue.put(jobfuncs.noop)
    assert queue._added[index]() == 2 and queue.counter() == before
    queue.pull()
    assert queue._added[index]() == 2 and queue.counter() == before - 1
    assert len(queue) == 1
    assert {c._p_oid for c in queue._added} <= conn.root()[KEY].watched_oids()


def test_a_queue_stored_before_shard_counters_counts_in_its_counter(conn, queue):
    queue._added = ()  # as an earlier version stored it
    job = queue.put(jobfuncs.noop)
    queue.put(jobfuncs.noop)
    assert queue.counter() == 2 and len(queue) == 2
    assert queue._withdraw(job) and job._key is None
    assert queue.counter() == 1 and list(queue) != [job]
    transaction.commit()
    assert len(queue) == 1
    # install() gives it its shards' counters; what it counted stays.
    zasync.install(conn.db())
    with other_connection(conn.db()) as (other, _tm):
        upgraded = other.root()[KEY][""]
        assert len(upgraded._added) == len(upgraded.shards)
        assert len(upgraded) == 1
        upgraded.put(jobfuncs.noop)
        assert upgraded.counter() == 1 and len(upgraded) == 2


def test_withdraw_takes_out_a_job_as_if_never_put(conn, queue):
    kept = queue.put(jobfuncs.noop)
    transaction.commit()
    job = queue.put(jobfuncs.noop)
    assert queue._withdraw(job)
    assert list(queue) == [kept] and len(queue) == 1
    assert not queue._withdraw(job)  # not there any more
    other = conn.root()[KEY]["other"] = Queue()
    assert not other._withdraw(kept)  # not its queue


# -- quotas -------------------------------------------------------------------


def test_quota_create_with_default_size_one(queue):
    quota = queue.quotas.create("db")
    assert quota.size == 1 and quota.name == "db"
    assert "db" in queue.quotas and queue.quotas["db"] is quota
    assert list(queue.quotas) == ["db"]
    assert queue.quotas.create("net", size=3).size == 3
    assert repr(quota) == "<zasync.Quota 'db' 0/1>"


def test_quota_create_refuses_bad_input(queue):
    queue.quotas.create("db")
    with pytest.raises(ValueError, match="exists already"):
        queue.quotas.create("db")
    for size in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="must be a whole number >= 1"):
            queue.quotas.create(f"bad{size}", size=size)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        queue.quotas.create("")


def test_put_refuses_a_quota_the_queue_lacks_saying_how_to_make_it(queue):
    job = Job(jobfuncs.noop)
    job.quota_names = ("nope",)
    with pytest.raises(ValueError, match=r"queue.quotas.create\('nope', size=1\)"):
        queue.put(job)
    queue.quotas.create("yes")
    assert queue.put(Job(jobfuncs.noop), quota_names=("yes",)).quota_names == ("yes",)


def _quota_commits(db, *changes):
    """Apply each change to the quota 'q' in a connection of its own, all
    from the same starting state, committing in order; return the errors."""
    errors = []
    with contextlib.ExitStack() as stack:
        views = [stack.enter_context(other_connection(db)) for _ in changes]
        quotas = [conn.root()[KEY][""].quotas["q"] for conn, _tm in views]
        for quota in quotas:
            len(quota)  # load every view before any commit
        for (_conn, tm), quota, change in zip(views, quotas, changes, strict=True):
            change(quota)
            try:
                tm.commit()
            except ConflictError as e:
                tm.abort()
                errors.append(e)
    return errors


@pytest.fixture
def quota_q(zasync_db):
    with other_connection(zasync_db) as (conn, tm):
        quota = conn.root()[KEY][""].quotas.create("q", size=2)
        quota.hold(b"held")
        tm.commit()
    return lambda: read_quota(zasync_db)


def read_quota(db):
    with other_connection(db) as (conn, _tm):
        quota = conn.root()[KEY][""].quotas["q"]
        return sorted(quota._active), quota.size


def test_a_release_merges_with_a_claim(zasync_db, quota_q):
    errors = _quota_commits(
        zasync_db, lambda q: q.hold(b"new"), lambda q: q.release(b"held")
    )
    assert errors == []
    assert quota_q() == ([b"new"], 2)


def test_two_claims_merge_only_within_the_size(zasync_db, quota_q):
    errors = _quota_commits(
        zasync_db, lambda q: q.hold(b"one"), lambda q: q.hold(b"two")
    )
    assert len(errors) == 1  # three holders would exceed size 2
    assert quota_q() == ([b"held", b"one"], 2)
    _quota_commits(zasync_db, lambda q: q.release(b"one"))
    _quota_commits(zasync_db, lambda q: q.release(b"held"))
    errors = _quota_commits(zasync_db, lambda q: q.hold(b"a"), lambda q: q.hold(b"b"))
    assert errors == []
    assert quota_q() == ([b"a", b"b"], 2)


def test_a_size_change_merges_with_a_release_not_with_another_size(zasync_db, quota_q):
    def resize(size):
        def change(quota):
            quota.size = size

        return change

    assert _quota_commits(zasync_db, resize(5), lambda q: q.release(b"held")) == []
    assert quota_q() == ([], 5)
    assert len(_quota_commits(zasync_db, resize(3), resize(4))) == 1
    assert quota_q() == ([], 3)


# -- producers in several threads ---------------------------------------------


def test_concurrent_producers_rarely_conflict_and_lose_nothing(zasync_db):
    """Eight threads commit jobs one by one into the same queue; the sharded
    layout must keep them (nearly) free of conflicts."""
    producers, per_producer = 8, 25
    oids, conflicts = produce_concurrently(
        zasync_db,
        producers=producers,
        per_producer=per_producer,
        make_job=lambda n, i: Job(jobfuncs.identity, (n, i)),
    )
    total = producers * per_producer
    assert len(oids) == len(set(oids)) == total
    with other_connection(zasync_db) as (conn, _tm):
        queue = conn.root()[KEY][""]
        assert len(queue) == total
        assert sorted(job._p_oid for job in queue) == sorted(oids)
        assert sorted(job.args[0] for job in queue) == sorted(
            (n, i) for n in range(producers) for i in range(per_producer)
        )
    # Each thread of a process has a shard of its own: none should conflict
    # (a hash of the thread ids used to pair neighbours: ~8 % conflicted).
    assert len(conflicts) <= total * 0.02, conflicts


def test_next_due_is_the_first_scheduled_entry_after_now(queue):
    queue.put(Job(jobfuncs.add, 1, 2))  # due now: the claim's, not next_due's
    start = now()
    now_us = int(start.timestamp() * 1_000_000)
    assert queue.next_due(now_us + 1) is None
    later = queue.put(
        Job(jobfuncs.add, 1, 2), begin_after=start + datetime.timedelta(seconds=30)
    )
    sooner = queue.put(
        Job(jobfuncs.add, 1, 2), begin_after=start + datetime.timedelta(seconds=10)
    )
    assert queue.next_due(now_us + 1) == pytest.approx(sooner.begin_after.timestamp())
    # Entries this worker knows are stale are skipped; the next one counts.
    shard = queue._shard_of(sooner)
    known = {(shard._p_oid, sooner._key)}
    assert queue.next_due(now_us + 1, known) == pytest.approx(
        later.begin_after.timestamp()
    )
    # A tombstone (a claimed entry) is skipped too.
    queue._shard_of(later)[later._key] = None
    assert queue.next_due(now_us + 1, known) is None


def test_compact_removes_the_stale_front_and_stops_in_a_run_of_live_entries(queue):
    """Stale entries (jobs claimed since) in front of a long queue are
    removed; compaction stops after COMPACT_LIVE_RUN live entries in a row
    instead of reading every job behind them."""
    from zasync.shards import COMPACT_LIVE_RUN, compact, live

    jobs = [queue.put(Job(jobfuncs.add, n, 1)) for n in range(3 * COMPACT_LIVE_RUN)]
    shard = queue._shard_of(jobs[0])
    index = queue.shards.index(shard)
    assert all(queue._shard_of(job) is shard for job in jobs)
    front, back = jobs[:10], jobs[-10:]
    for job in front + back:
        job._key = None  # what a claim near a shard's end does
    assert compact(queue, index) == 10
    entries = [(key, job) for key, job in shard.items() if job is not None]
    assert [job for _key, job in entries][:1] == [jobs[10]]
    stale_left = [job for key, job in entries if not live(key, job)]
    assert stale_left == back  # behind the live run: for a later compaction


@pytest.mark.zeo
@pytest.mark.parametrize("size", [0, 5, 200, 10_000])
def test_walk_gives_the_items_of_a_range_in_order(zeo_server, size):
    """queue.walk reads a BTree's range as ``items(min, max)`` does, from a
    connection that has none of its buckets yet (they are fetched ahead,
    window by window), and on trees of one, two and three levels."""
    import random

    from BTrees.OOBTree import OOBTree
    from ZODB import DB

    from zasync.shards import walk
    from zasync.storage import open_db

    db: DB = open_db(zeo_server.uri)
    try:
        with db.transaction() as conn:
            tree = conn.root()["tree"] = OOBTree()
            for n in range(size):
                tree[(n % 3, n, n)] = n
        with db.transaction() as conn:
            tree = conn.root()["tree"]
            state = tree.__getstate__()
            if size == 10_000:  # an inner node under the root: three levels
                assert isinstance(state[0][0], OOBTree)
        rng = random.Random(size)
        bounds = [(-1,), (0,), (1, size // 2), (2, size), (3,)]
        ranges = [(lo, hi) for lo in bounds for hi in bounds]
        ranges += [
            ((0, rng.randrange(size + 1)), (2, rng.randrange(size + 1)))
            for _ in range(10)
        ]
        for lo, hi in ranges:
            conn = db.open()
            try:
                conn.cacheMinimize()  # every bucket a ghost
                tree = conn.root()["tree"]
                expected = list(tree.items(min=lo, max=hi))
                conn.cacheMinimize()
                assert list(walk(conn.root()["tree"], lo, hi)) == expected, (lo, hi)
            finally:
                conn.close()
    finally:
        db.close()


def test_walk_reads_a_tree_outside_a_database():
    from BTrees.OOBTree import OOBTree

    from zasync.shards import walk

    tree = OOBTree({(n,): n for n in range(100)})
    assert list(walk(tree, (10,), (20,))) == list(tree.items(min=(10,), max=(20,)))
