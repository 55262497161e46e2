"""The dispatcher's own loop, in this process on a FileStorage: start-up,
lease renewal while busy."""

from __future__ import annotations

import collections
import logging
import threading
import time

import pytest
import transaction
from tests import mp_jobs

import zasync
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY, PENDING
from zasync.testing import wait_for_result, wait_until


def _put(db, job):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conn.root()[KEY][""].put(job)
    tm.commit()
    return job, tm, conn


def test_a_new_dispatcher_takes_waiting_jobs_at_once(zasync_db, tmp_path):
    job, tm, conn = _put(zasync_db, zasync.Job(mp_jobs.work, str(tmp_path / "s")))
    started = time.time()
    dispatcher = Dispatcher(zasync_db, threads=1, poll_interval=5).start()
    try:
        wait_for_result(job, 10)
        # Not at the first poll, 5 s later.
        assert job.active_start.timestamp() - started < 1
    finally:
        dispatcher.stop(10)
        tm.abort()
        conn.close()


def test_the_lease_is_renewed_quietly_while_every_thread_is_busy(
    zasync_db, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="zasync")
    job, tm, conn = _put(
        zasync_db, zasync.Job(mp_jobs.work, str(tmp_path / "s"), 1.0, "done")
    )
    dispatcher = Dispatcher(
        zasync_db, threads=1, lease_seconds=0.3, poll_interval=0.05
    ).start()
    try:
        assert wait_for_result(job, 10) == "done"
        record = conn.root()[KEY].workers[dispatcher.uuid]
        # Renewed while the job ran, not only when it was claimed.
        assert record.heartbeat.lease_until > job.active_start.timestamp() + 0.6
    finally:
        dispatcher.stop(10)
        tm.abort()
        conn.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.fixture
def loop_only(zasync_db):
    """A dispatcher with its loop's transaction manager and connection,
    not started: its loop's methods called from the test."""
    dispatcher = Dispatcher(zasync_db, threads=1)
    dispatcher.tm = transaction.TransactionManager(explicit=True)
    dispatcher.conn = zasync_db.open(transaction_manager=dispatcher.tm)
    yield dispatcher
    try:
        dispatcher.tm.abort()
    except transaction.interfaces.NoTransaction:
        pass
    dispatcher.conn.close()


def test_a_compaction_that_conflicts_leaves_the_loop_ready_to_claim(
    zasync_db, loop_only, monkeypatch, caplog
):
    # A real conflict: while the loop's compaction runs, another connection
    # commits a change to an object the compaction also changes.
    import zasync.compaction as compaction_module

    real_compact = compaction_module.compact

    def compact_meanwhile_changed(queue, index, *, known_stale):
        removed = real_compact(queue, index, known_stale=known_stale)
        queue._p_jar.root()["touched"] = "by the compaction"
        other = transaction.TransactionManager(explicit=True)
        conn = zasync_db.open(transaction_manager=other)
        with other:
            conn.root()["touched"] = "meanwhile"
        conn.close()
        return removed

    monkeypatch.setattr(compaction_module, "compact", compact_meanwhile_changed)
    caplog.set_level(logging.DEBUG, logger="zasync")
    dispatcher = loop_only
    dispatcher.tm.begin()
    queue = dispatcher.conn.root()[KEY][""]
    dispatcher.tm.abort()
    dispatcher.compactor.compact(dispatcher.conn, dispatcher.tm, [(queue, 0)])
    assert "conflicted; later" in caplog.text
    # The failed commit was aborted: the next claim can begin.
    assert dispatcher.step() is None


def _job_loads_by_thread(monkeypatch) -> collections.Counter:
    """{thread name: jobs loaded from the storage in it}, from now on."""
    from ZODB.Connection import Connection

    loads: collections.Counter = collections.Counter()
    setstate = Connection.setstate

    def counting(conn, obj):
        if isinstance(obj, zasync.Job):
            loads[threading.current_thread().name] += 1
        return setstate(conn, obj)

    monkeypatch.setattr(Connection, "setstate", counting)
    return loads


def _run_backlog(db, dispatcher, count: int) -> None:
    """Queue ``count`` jobs in one commit once every thread of the
    dispatcher has opened its connection, and wait until all have run."""
    import jobfuncs

    wait_until(
        lambda: all(runner.conn is not None for runner in dispatcher.pool.runners),
        message="every thread to open its connection",
    )
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queue = conn.root()[KEY][""]
        jobs = [queue.put(zasync.Job(jobfuncs.add, n, 1)) for n in range(count)]
        tm.commit()
        assert [wait_for_result(job, 30) for job in jobs] == [
            n + 1 for n in range(count)
        ]
    finally:
        tm.abort()
        conn.close()


def _in_threads(loads, dispatcher) -> int:
    """Job loads in the dispatcher's worker threads (not its loop)."""
    names = {thread.name for thread in dispatcher.pool.threads}
    return sum(n for name, n in loads.items() if name in names)


def test_a_thread_runs_the_jobs_claimed_for_it_without_loading_them(
    zasync_db, start_dispatcher, monkeypatch
):
    """The claim runs in the connection of the thread that will run the
    jobs: it finds them current in its cache (one unpickling per job, not
    two; for ZEO and RelStorage a round trip less per batch)."""
    loads = _job_loads_by_thread(monkeypatch)
    dispatcher = start_dispatcher(threads=1)
    _run_backlog(zasync_db, dispatcher, 300)
    assert _in_threads(loads, dispatcher) == 0
    # Counted just after the batch's commit, which the results show first.
    wait_until(lambda: dispatcher.jobs_run == 300, message="300 jobs counted")


def test_idle_threads_sharing_a_backlog_each_claim_in_their_own_connection(
    zasync_db, start_dispatcher, monkeypatch
):
    """With more due jobs than the first idle thread takes, each idle
    thread's are claimed in its own connection: only the jobs of a claim
    shared among threads (the backlog's last ones) are loaded again."""
    loads = _job_loads_by_thread(monkeypatch)
    dispatcher = start_dispatcher(threads=3)
    _run_backlog(zasync_db, dispatcher, 600)
    assert _in_threads(loads, dispatcher) < 100  # each of the 600, before
    assert all(runner.batch_limit > 1 for runner in dispatcher.pool.runners)


def test_the_loop_prefetches_what_a_commit_that_woke_it_changed(zasync_db):
    from zasync.waking import PREFETCH_LIMIT

    dispatcher = Dispatcher(zasync_db, threads=1)
    conn = zasync_db.open()
    try:
        dispatcher.waker.watch(conn.root()[KEY])
        counter = conn.root()[KEY][""].counter._p_oid
        job_oid = (12345).to_bytes(8, "big")
        # Another worker's commit that changed no queue: not a reason to wake.
        dispatcher.waker.on_invalidation({job_oid})
        assert not dispatcher.waker.event.is_set()
        assert dispatcher.waker.fresh_oids == set()
        # A commit that queued a job: wake, and fetch what it changed.
        dispatcher.waker.on_invalidation({counter, job_oid})
        assert dispatcher.waker.event.is_set()
        assert dispatcher.waker.fresh_oids == {counter, job_oid}
        # Many jobs at once: wake, but leave them to the claim's windows.
        dispatcher.waker.event.clear()
        many = {counter} | {n.to_bytes(8, "big") for n in range(PREFETCH_LIMIT)}
        dispatcher.waker.on_invalidation(many)
        assert dispatcher.waker.event.is_set()
        assert dispatcher.waker.fresh_oids == {counter, job_oid}
    finally:
        conn.close()


@pytest.mark.zeo
def test_on_zeo_what_a_commit_that_queued_jobs_changed_is_asked_for_at_once(
    zeo_server,
):
    """ZEO's network thread asks the server for it as it tells of the
    commit, before the loop wakes: nothing in the worker's process loads
    it here, yet its client cache gets it."""
    from zasync.storage import open_db
    from zasync.waking import Waker

    worker_db = open_db(zeo_server.uri)
    zasync.install(worker_db)
    # Opened after the install's commit, which its first view then sees.
    producer_db = open_db(zeo_server.uri)
    waker = Waker(lambda oids: False)
    conn = worker_db.open()
    try:
        waker.listen(worker_db, conn.root()[KEY], frozenset(), "test", 30.0)
        tm = transaction.TransactionManager()
        producer = producer_db.open(transaction_manager=tm)
        with tm:
            job = producer.root()[KEY][""].put(zasync.Job(len, ()))
        cache = worker_db.storage.base._cache
        wait_until(lambda: cache.load(job._p_oid) is not None, timeout=10)
        assert waker.event.is_set()
        assert waker.fresh_oids == set()  # the loop has nothing left to ask
        producer.close()
    finally:
        waker.close()
        conn.close()
        producer_db.close()
        worker_db.close()


def _owner(dispatchers, job_oid):
    import zlib

    return max(
        (d.uuid for d in dispatchers),
        key=lambda uuid: zlib.crc32(job_oid + uuid.encode()),
    )


def _wait_for_peers(dispatchers, count):
    """Wait until each of ``dispatchers`` knows ``count`` live workers."""
    wait_until(
        lambda: all(len(d.placement.peers) >= count for d in dispatchers),
        message=lambda: (
            f"{count} peers each: {[d.placement.peers for d in dispatchers]}"
        ),
    )


def test_two_workers_leave_each_job_just_queued_to_one_of_them(
    zasync_db, start_dispatcher
):
    """Jobs queued one at a time, two idle workers: each job runs on the
    worker it is meant for, and no claim conflicts (each worker leaves the
    other's jobs alone for fresh_grace)."""
    import jobfuncs

    workers = [
        start_dispatcher(fresh_grace=5.0, maintenance_interval=0.05) for _ in range(2)
    ]
    _wait_for_peers(workers, 2)
    tm = transaction.TransactionManager()
    conn = zasync_db.open(transaction_manager=tm)
    try:
        for n in range(20):  # all 20 on one worker: one chance in 500,000
            job = conn.root()[KEY][""].put(zasync.Job(jobfuncs.add, n, 1))
            tm.commit()
            assert wait_for_result(job, 10) == n + 1
            assert job._worker == _owner(workers, job._p_oid)
    finally:
        tm.abort()
        conn.close()
    assert all(w.jobs_run for w in workers)  # each had its share
    # A claim that conflicts sets _contended_until: none did.
    assert [w.claimer.contended_until for w in workers] == [0.0, 0.0]


def test_a_job_meant_for_a_busy_worker_is_taken_by_another_after_the_grace(
    zasync_db, start_dispatcher
):
    import jobfuncs

    grace = 0.3
    workers = [
        start_dispatcher(threads=1, fresh_grace=grace, maintenance_interval=0.05)
        for _ in range(2)
    ]
    _wait_for_peers(workers, 2)
    tm = transaction.TransactionManager()
    conn = zasync_db.open(transaction_manager=tm)
    try:
        queue = conn.root()[KEY][""]
        blocker = queue.put(
            zasync.Job(jobfuncs.signal_and_wait, "blocker-started", "blocker-release")
        )
        tm.commit()
        assert jobfuncs.gate("blocker-started").wait(10)
        tm.abort()
        busy = blocker._worker
        other = next(w.uuid for w in workers if w.uuid != busy)
        for n in range(40):
            queued = time.time()
            job = queue.put(zasync.Job(jobfuncs.add, n, 1))
            tm.commit()
            assert wait_for_result(job, 10) == n + 1
            assert job._worker == other
            waited = job.active_start.timestamp() - queued
            if _owner(workers, job._p_oid) == busy:
                # Left to the busy worker for the grace, then taken.
                assert waited >= grace * 0.9
                break
        else:
            raise AssertionError("no job meant for the busy worker in 40")
        jobfuncs.gate("blocker-release").set()
        assert wait_for_result(blocker, 10) == "released"
    finally:
        jobfuncs.gate("blocker-release").set()
        tm.abort()
        conn.close()


def test_a_compaction_that_removed_nothing_waits_before_trying_again(
    loop_only, monkeypatch
):
    import zasync.compaction as compaction_module

    calls = []
    real_compact = compaction_module.compact

    def counted(queue, index, *, known_stale):
        calls.append(index)
        return real_compact(queue, index, known_stale=known_stale)

    monkeypatch.setattr(compaction_module, "compact", counted)
    dispatcher = loop_only
    dispatcher.tm.begin()
    queue = dispatcher.conn.root()[KEY][""]
    queue.put(zasync.Job(mp_jobs.add, "unused", 1, 2))  # a live entry
    dispatcher.tm.commit()
    index = queue.shards.index(queue._shard_of(next(iter(queue))))
    dispatcher.compactor.compact(dispatcher.conn, dispatcher.tm, [(queue, index)])
    dispatcher.compactor.compact(dispatcher.conn, dispatcher.tm, [(queue, index)])
    assert calls == [index]  # the second waited
    dispatcher.compactor._pause_until.clear()
    dispatcher.compactor.compact(dispatcher.conn, dispatcher.tm, [(queue, index)])
    assert calls == [index, index]


def test_each_shard_is_compacted_by_one_of_the_workers_serving_its_queue(zasync_db):
    """Compactions by two workers of one shard conflict (each deletes the
    first keys of buckets): of the live workers serving a queue, the same
    one, by all of their reckonings, compacts each shard."""
    uuids = [f"worker-{n}" for n in range(4)]
    peers = tuple((uuid, ()) for uuid in uuids) + (("elsewhere", ("other",)),)
    workers = [Dispatcher(zasync_db, uuid=uuid, threads=1) for uuid in uuids]
    for worker in workers:
        worker.placement.peers = peers
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        tm.begin()
        queue = conn.root()[KEY][""]
        compactors = [
            [w.uuid for w in workers if w.placement.compacts(queue.name, index)]
            for index in range(32)
        ]
        assert all(len(chosen) == 1 for chosen in compactors)
        assert len({chosen[0] for chosen in compactors}) > 1  # shared out
        # A worker alone on the queue compacts every shard.
        alone = Dispatcher(zasync_db, uuid="alone", threads=1)
        alone.placement.peers = (("alone", ()), ("elsewhere", ("other",)))
        assert all(alone.placement.compacts(queue.name, index) for index in range(32))
    finally:
        tm.abort()
        conn.close()


def test_with_every_thread_busy_a_wake_claims_nothing(loop_only):
    """A commit wakes the loop while all its threads are busy: it claims
    nothing (the first thread to be idle wakes it again) and drops the
    oids it was to prefetch."""
    dispatcher = loop_only
    dispatcher.tm.begin()
    queue = dispatcher.conn.root()[KEY][""]
    job = queue.put(zasync.Job(mp_jobs.add, "unused", 1, 2))
    dispatcher.tm.commit()
    dispatcher.waker.fresh_oids = {job._p_oid}
    dispatcher.conn.cacheMinimize()
    assert dispatcher.pool.idle == set()  # not started: no idle thread
    assert dispatcher.step() is None
    assert dispatcher.waker.fresh_oids == set()
    assert queue._p_changed is None  # not even loaded
    assert job.status == PENDING and dispatcher.claims_committed == 0


def test_a_worker_learns_at_once_that_another_started_or_stopped(
    zeo_server, start_dispatcher
):
    """Which worker each job is meant for is reckoned from the list of
    live workers, which each must then have alike: a worker reads it again
    as soon as a commit registers, starts or stops another (ZEO tells it
    which objects changed), not at its next maintenance."""
    from zasync.storage import open_db

    dbs = [open_db(zeo_server.uri) for _ in range(2)]
    started = []
    try:
        zasync.install(dbs[0])
        first = start_dispatcher(dbs[0], maintenance_interval=3600)
        started.append(first)
        second = start_dispatcher(dbs[1], maintenance_interval=3600)
        started.append(second)
        _wait_for_peers([first, second], 2)
        # Maintenance (which reads the list too) comes once an hour here:
        # only the invalidation can tell the first of this.
        assert second.stop(10)
        wait_until(
            lambda: len(first.placement.peers) == 1,
            message=lambda: f"the first alone in its peers: {first.placement.peers}",
        )
        assert first.placement.peers[0][0] == first.uuid
    finally:
        for dispatcher in started:
            dispatcher.stop(10)
        for db in dbs:
            db.close()


def test_a_failed_read_of_the_live_workers_is_tried_again(loop_only, monkeypatch):
    """The list of live workers could not be read (say the storage went
    away): the loop reads it again before its next claim."""
    from ZODB.POSException import ConflictError

    from zasync.workers import WorkerRegistry

    def unreadable(registry):
        raise ConflictError("the registry, read while it changed")

    monkeypatch.setattr(WorkerRegistry, "watched_oids", unreadable)
    dispatcher = loop_only
    with pytest.raises(ConflictError):
        dispatcher.refresh_peers()
    assert dispatcher.placement.stale
    monkeypatch.undo()
    dispatcher.step()  # reads it first
    assert not dispatcher.placement.stale
