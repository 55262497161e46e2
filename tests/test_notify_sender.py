"""The NOTIFY a producer's commit sends on RelStorage (zasync.wakeup):
sent by a thread of the process's own, so that the commit does not wait
for it, and sent before the interpreter exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

import zasync
from zasync import wakeup
from zasync.storage import open_db
from zasync.testing import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def listening(pg_uri):
    """A PostgresListener on the test database: (its wake-ups, the dsn)."""
    db = open_db(pg_uri)
    zasync.install(db)
    dsn = wakeup.dsn_of(db)
    assert dsn is not None
    woken = threading.Event()
    listener = wakeup.PostgresListener(dsn, woken.set).start()
    try:
        wait_until(woken.is_set, timeout=10)  # its first look, once listening
        woken.clear()
        yield woken, db
    finally:
        listener.stop()
        db.close()


def test_a_commit_that_queues_wakes_the_listeners(listening):
    woken, db = listening
    conn = db.open()
    try:
        with conn.transaction_manager:
            conn.root()[zasync.KEY][""].put(zasync.Job(wakeup.dsn_of, None))
        assert wakeup._sender.flush(10)
        wait_until(woken.is_set, timeout=10)
    finally:
        conn.close()


def test_a_process_that_queues_and_exits_at_once_still_notifies(listening, pg_uri):
    woken, _db = listening
    script = textwrap.dedent(
        f"""
        import transaction, zasync
        from zasync.storage import open_db
        db = open_db({pg_uri!r})
        conn = db.open()
        conn.root()[zasync.KEY][""].put(zasync.Job(zasync.install, None))
        transaction.commit()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    wait_until(woken.is_set, timeout=10)
