"""zasync.testing: wait_until, wait_for_result, wait_for_start and the
pytest fixtures (zasync_db, dispatcher), used the way an application's tests
use them."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
import transaction

import jobfuncs
from dbviews import other_connection
from zasync.dispatcher import Dispatcher
from zasync.interfaces import ACTIVE, KEY, ZasyncError
from zasync.interfaces import TimeoutError as ZasyncTimeoutError
from zasync.job import Job
from zasync.testing import wait_for_result, wait_for_start, wait_until


def test_the_fixtures_give_a_database_and_a_running_dispatcher(zasync_db, dispatcher):
    assert isinstance(dispatcher, Dispatcher) and not dispatcher.dead
    assert dispatcher.db is zasync_db
    conn = zasync_db.open()
    try:
        job = conn.root()[KEY][""].put(Job(jobfuncs.add, 20, 22))
        transaction.commit()
        assert wait_for_result(job) == 42
    finally:
        transaction.abort()
        conn.close()


def test_wait_for_start_returns_once_the_job_runs(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.wait_for, "hold"))
    transaction.commit()
    start_dispatcher()
    wait_for_start(job, 10)
    assert job.status == ACTIVE
    jobfuncs.gate("hold").set()
    wait_for_result(job)


def test_wait_for_result_times_out_without_a_dispatcher(queue):
    job = queue.put(Job(jobfuncs.noop))
    transaction.commit()
    with pytest.raises(ZasyncTimeoutError, match="is a dispatcher running"):
        wait_for_result(job, 0.2)
    with pytest.raises(ZasyncTimeoutError, match=r"after 0.1 s waiting for .* start"):
        wait_for_start(job, 0.1)


def test_wait_for_result_refuses_uncommitted_work(queue):
    job = queue.put(Job(jobfuncs.noop))
    with pytest.raises(ZasyncError, match=r"call transaction.commit\(\) before"):
        wait_for_result(job, 1)


def test_wait_for_result_refuses_a_job_not_in_a_database():
    with pytest.raises(ZasyncError, match="put it in a queue and commit first"):
        wait_for_result(Job(jobfuncs.noop), 1)


def test_wait_for_result_with_an_explicit_transaction_manager(
    zasync_db, start_dispatcher
):
    start_dispatcher()
    with other_connection(zasync_db) as (conn, tm):
        job = conn.root()[KEY][""].put(Job(jobfuncs.add, 1, 1))
        tm.commit()
        assert wait_for_result(job) == 2
    tm = transaction.TransactionManager(explicit=True)
    conn = zasync_db.open(transaction_manager=tm)
    try:
        tm.begin()
        job = conn.root()[KEY][""].put(Job(jobfuncs.add, 2, 2))
        tm.commit()
        assert wait_for_result(job) == 4
    finally:
        conn.close()


# -- wait_until ---------------------------------------------------------------


def test_wait_until_returns_the_first_true_value():
    answers = iter([None, 0, "", ["found"]])
    assert wait_until(lambda: next(answers), interval=0.001) == ["found"]


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(
        ZasyncTimeoutError, match=r"^timed out after 0.05 s waiting for the answer$"
    ):
        wait_until(lambda: False, timeout=0.05, message="the answer")
    seen = []
    with pytest.raises(ZasyncTimeoutError) as raised:
        wait_until(
            lambda: seen.append(1),
            timeout=0.05,
            interval=0.02,
            message=lambda: f"{len(seen)} calls seen",
        )
    assert str(raised.value).endswith(f"waiting for {len(seen)} calls seen")

    def never():
        return False

    with pytest.raises(ZasyncTimeoutError, match=r"never \(test_testing.py:\d+\)"):
        wait_until(never, timeout=0.01)


def test_wait_until_calls_the_predicate_every_interval():
    calls = []

    def not_yet():
        calls.append(time.monotonic())
        return len(calls) == 5

    wait_until(not_yet, interval=0.05)
    gaps = [later - earlier for earlier, later in pairwise(calls)]
    assert len(gaps) == 4 and min(gaps) >= 0.05, gaps
    calls.clear()
    with pytest.raises(ZasyncTimeoutError):
        wait_until(lambda: calls.append(time.monotonic()), timeout=0.3, interval=0.1)
    assert 2 <= len(calls) <= 5, calls  # at 0, 0.1, 0.2 and the deadline


def test_wait_until_lets_the_predicates_errors_through_and_checks_its_interval():
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        wait_until(lambda: True, interval=0)
