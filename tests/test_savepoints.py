"""zasync.savepoints: the batching of jobs behind savepoints, and the
internals of transaction and ZODB it reads (pinned here: these tests fail
if a new release changes them)."""

from __future__ import annotations

import persistent
import pytest
import transaction
from persistent.mapping import PersistentMapping

from zasync.savepoints import CommitFirstError, Savepoints, plain, supported


class Thing(persistent.Persistent):
    value = 0


@pytest.fixture
def conn(zasync_db):
    tm = transaction.TransactionManager(explicit=True)
    connection = zasync_db.open(transaction_manager=tm)
    tm.begin()
    root = connection.root()
    root["a"] = Thing()
    root["b"] = Thing()
    tm.commit()
    tm.begin()
    yield connection
    tm.abort()
    connection.close()


class NoSavepoints:
    """A resource that cannot take savepoints (a mail or SQL data manager)."""

    def sortKey(self):  # noqa: N802 - transaction's API
        return "no-savepoints"

    def abort(self, txn):
        pass


# -- the internals read -----------------------------------------------------


def test_a_transaction_lists_its_joined_resources_in_resources(conn):
    txn = conn.transaction_manager.get()
    conn.root()["a"].value = 1  # joins the connection
    assert conn in txn._resources


def test_a_connection_lists_the_objects_changed_since_the_last_savepoint(conn):
    a, b = conn.root()["a"], conn.root()["b"]
    a.value = 1
    assert list(conn._registered_objects) == [a]
    conn.transaction_manager.savepoint(optimistic=False)
    assert list(conn._registered_objects) == []
    b.value = 1
    assert list(conn._registered_objects) == [b]


def test_a_connection_lists_the_objects_added_since_the_last_savepoint(conn):
    new = Thing()
    conn.add(new)
    assert new._p_oid in conn._added


# -- what the batching decides -------------------------------------------------


def test_plain_results_are_values_that_certainly_pickle():
    assert plain(None) and plain(3) and plain("x") and plain((1, [2, {"k": b"v"}]))
    assert not plain(Thing())
    assert not plain(object())
    assert not plain(list(range(65)))  # too long to check cheaply
    assert not plain([[[[1]]]])  # too deep


def test_a_resource_without_savepoints_is_found_before_trying(conn):
    txn = conn.transaction_manager.get()
    conn.root()["a"].value = 1
    assert supported(txn)

    txn.join(NoSavepoints())
    assert not supported(txn)


@pytest.fixture
def points(conn):
    """Savepoints of ``conn``'s transaction, nothing in hand."""
    savepoints = Savepoints()
    savepoints.attach(conn.transaction_manager, conn)
    savepoints.reset()
    return savepoints


def _job_like(conn):
    job = PersistentMapping()
    conn.root()[f"job-{len(conn.root())}"] = job
    conn.transaction_manager.savepoint(optimistic=False)
    return job


def test_a_job_that_changed_only_itself_shares_the_savepoint(conn, points):
    first, second = _job_like(conn), _job_like(conn)
    start = points.before_job(first=True)
    first["result"] = 1
    points.after_job(first, 1, start)
    assert points.reusable is start  # no savepoint of its own
    again = points.before_job(first=False)
    assert again is start
    second["result"] = 2
    conn.root()["a"].value = 5  # something else changed too
    points.after_job(second, 2, again)
    assert points.reusable is not start  # a savepoint of its own


def test_a_rollback_writes_back_the_jobs_that_ran_without_a_savepoint(conn, points):
    first, second = _job_like(conn), _job_like(conn)
    start = points.before_job(first=True)
    first["result"] = 1
    points.after_job(first, 1, start)
    point = points.before_job(first=False)
    second["result"] = "boom"
    conn.root()["a"].value = 9
    points.rollback(point)
    assert first["result"] == 1  # kept: written again
    assert "result" not in second
    assert conn.root()["a"].value == 0


def test_without_savepoints_only_the_first_job_runs_in_the_transaction(conn, points):
    conn.transaction_manager.get().join(NoSavepoints())
    assert points.before_job(first=True) is None
    with pytest.raises(CommitFirstError):
        points.before_job(first=False)
