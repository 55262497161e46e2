"""What an enqueue asks of a ZEO server, counted (not timed): a producer
that queues one job per transaction, with a worker of another client
running, makes at most one round trip besides its commit's own, whether
the job is handed to an idle thread or left to a claim; back to back, a
counter read a moment ago stands in for a load.

The counting is benchmarks.roundtrips' (the enqueue rows of the
benchmarks): the ZEO client's calls that wait for the server, wrapped on
the producer's storage."""

from __future__ import annotations

import contextlib
import time

import pytest
import transaction
from benchmarks import roundtrips
from transaction.interfaces import NoTransaction

import jobfuncs
import zasync
from dbviews import other_connection
from zasync.interfaces import KEY
from zasync.testing import wait_until

JOBS = 30


def _enqueue(conn, tm, counts, key: str) -> dict[str, int]:
    """Queue one job in a transaction of its own; the calls it made."""
    counts.reset()
    tm.begin()
    conn.root()[KEY][""].put(zasync.Job(jobfuncs.count, key))
    tm.commit()
    return dict(counts.calls)


def _besides_commit(calls: dict[str, int]) -> int:
    # new_oids: a hundred oids at a time, one enqueue in a hundred
    return sum(
        n
        for name, n in calls.items()
        if name not in roundtrips.COMMIT_CALLS
        and name not in roundtrips.BACKGROUND_CALLS
        and name != "new_oids"
    )


@pytest.mark.zeo
def test_an_enqueue_handed_to_an_idle_worker_makes_one_round_trip(
    worker_and_producer,
):
    dispatcher, producer_db = worker_and_producer
    counts = roundtrips.install(producer_db)
    tm = transaction.TransactionManager(explicit=True)
    conn = producer_db.open(transaction_manager=tm)
    try:
        wait_until(lambda: _peers_seen(conn, tm), timeout=30)
        _warm_up(conn, tm, counts)
        trips = []
        for i in range(JOBS):
            calls = _enqueue(conn, tm, counts, "handed")
            trips.append(_besides_commit(calls))
            assert calls["vote"] == calls["tpc_finish"] == 1
            wait_until(lambda i=i: jobfuncs.calls["handed"] > i, timeout=30)
            wait_until(lambda: dispatcher.pool.idle == {0, 1}, timeout=30)
        assert dispatcher.jobs_received >= JOBS // 2  # most went to an inbox
        assert max(trips) <= 1, trips
    finally:
        conn.close()


@pytest.mark.zeo
def test_enqueues_in_a_row_while_a_worker_claims_make_one_round_trip(
    worker_and_producer,
):
    """Back to back: the worker claims the jobs queued meanwhile (writing
    the queue's counter), and the producer reads that counter and the
    worker's slots in one round trip."""
    dispatcher, producer_db = worker_and_producer
    counts = roundtrips.install(producer_db)
    tm = transaction.TransactionManager(explicit=True)
    conn = producer_db.open(transaction_manager=tm)
    try:
        wait_until(lambda: _peers_seen(conn, tm), timeout=30)
        _warm_up(conn, tm, counts)
        trips = [
            _besides_commit(_enqueue(conn, tm, counts, "row")) for _ in range(JOBS * 3)
        ]
        wait_until(lambda: jobfuncs.calls["row"] >= JOBS * 3, timeout=60)
        assert max(trips) <= 1, trips
        assert dispatcher.claims_committed > 0  # not all were handed over
    finally:
        conn.close()


def _warm_up(conn, tm, counts) -> None:
    """The first enqueues of a connection load the queue's objects."""
    for _ in range(3):
        _enqueue(conn, tm, counts, "warm-up")
    wait_until(lambda: jobfuncs.calls["warm-up"] >= 3, timeout=30)


def _peers_seen(conn, tm) -> bool:
    """Whether the producer sees the worker's record (so it may hand it
    jobs)."""
    tm.begin()
    try:
        return len(conn.root()[KEY].workers) == 1
    finally:
        tm.abort()


def test_back_to_back_a_counter_read_a_moment_ago_stands_in_for_a_load(
    zasync_db, monkeypatch
):
    """The queue's counter of jobs taken only goes down: read a moment ago,
    it bounds the queue's length from above, and while it says another job
    waits the hand-off is given up without loading the counter again."""
    from zasync import handoff

    monkeypatch.setattr(handoff, "SEEN_SECONDS", 60.0)
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        with tm:
            queue = conn.root()[KEY][""]
            queue.put_many([zasync.Job(jobfuncs.noop) for _ in range(3)])
        tm.begin()
        queue = conn.root()[KEY][""]
        assert not handoff._ghost(queue.counter)
        handoff._seen[queue.counter] = (queue.counter(), time.monotonic())
        tm.abort()
        with other_connection(zasync_db) as (other, other_tm):
            # as a claim elsewhere: the counter of jobs taken changes
            elsewhere = other.root()[KEY][""]
            elsewhere.take(next(iter(elsewhere)))
            other_tm.commit()
        tm.begin()
        queue = conn.root()[KEY][""]
        assert handoff._ghost(queue.counter)
        assert handoff._waits_surely(queue, [queue.counter])  # 3 - 0 > 1
        assert handoff._ghost(queue.counter)  # not loaded for it
        assert len(queue) == 2
        handoff._seen[queue.counter] = (queue.counter(), time.monotonic() - 61)
        assert not handoff._waits_surely(queue, [queue.counter])  # too old
    finally:
        with contextlib.suppress(NoTransaction):
            tm.abort()
        conn.close()
