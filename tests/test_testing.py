"""zasync.testing: waiting for jobs from any kind of transaction manager."""

from __future__ import annotations

import transaction
from tests import mp_jobs

import zasync
from zasync.dispatcher import Dispatcher
from zasync.interfaces import KEY
from zasync.testing import wait_for_result, wait_for_start


def test_waiting_works_with_an_explicit_transaction_manager(zasync_db, tmp_path):
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    dispatcher = Dispatcher(zasync_db, threads=1).start()
    try:
        with tm:
            job = conn.root()[KEY][""].put(
                zasync.Job(mp_jobs.add, str(tmp_path / "s"), 1, 2)
            )
        wait_for_start(job, 10)
        assert wait_for_result(job, 10) == 3
        assert wait_for_result(job, 10) == 3  # again, inside a transaction
    finally:
        dispatcher.stop(10)
        tm.abort()
        conn.close()
