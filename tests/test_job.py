"""zasync.job: what a job may call, its attributes and statuses, fail() and
callbacks. Jobs run by a dispatcher are in test_dispatcher.py."""

from __future__ import annotations

import datetime
import functools
import threading

import pytest
import transaction
from persistent.mapping import PersistentMapping

import jobfuncs
import zasync
from dbviews import other_connection
from zasync.interfaces import (
    ACTIVE,
    CALLBACKS,
    COMPLETED,
    NEW,
    PENDING,
    AbortedError,
    BadStatusError,
)
from zasync.job import Job
from zasync.testing import wait_for_result

# -- what a job may call ------------------------------------------------------


@pytest.mark.parametrize(
    "func, args, expected",
    [
        (jobfuncs.add, (1, 2), 3),
        (jobfuncs.Point, (1, 2), jobfuncs.Point(1, 2)),
        (jobfuncs.Multiplier(3), (5,), 15),
        (jobfuncs.Holder("held").get, (), "held"),
        (functools.partial(jobfuncs.add, 10), (5,), 15),
        (len, ("abc",), 3),
    ],
    ids=["function", "class", "callable-instance", "method", "partial", "builtin"],
)
def test_storable_callables_run_from_the_database(conn, func, args, expected):
    conn.root()["job"] = Job(func, *args)
    transaction.commit()
    with other_connection(conn.db()) as (other, _tm):
        assert other.root()["job"]() == expected


def test_method_of_a_persistent_object_is_stored_by_reference(conn):
    counter = conn.root()["counter"] = jobfuncs.Counter()
    conn.root()["job"] = Job(counter.increment, 5)
    transaction.commit()
    with other_connection(conn.db()) as (other, tm):
        job = other.root()["job"]
        assert job.callable.__self__ is other.root()["counter"]
        assert job() == 5
        tm.commit()
    transaction.begin()
    assert counter.value == 5


def local_function():  # a module-level function of a test module: allowed
    return "ok"


def test_lambda_is_refused_naming_it_and_what_to_do():
    with pytest.raises(TypeError, match=r"lambda.*define a function at module level"):
        Job(lambda: 1)


def test_nested_function_is_refused_naming_it_and_what_to_do():
    def nested():
        return 1

    with pytest.raises(TypeError) as info:
        Job(nested)
    message = str(info.value)
    assert "nested" in message
    assert "move it to module level" in message


def test_closure_is_refused():
    value = 3

    def closure():
        return value

    with pytest.raises(TypeError, match=r"closure.*module level"):
        Job(closure)


def test_nested_class_is_refused():
    class Local:
        pass

    with pytest.raises(TypeError, match=r"class .*Local.* module level"):
        Job(Local)


def test_partial_of_a_lambda_is_refused():
    with pytest.raises(TypeError, match="lambda"):
        Job(functools.partial(lambda x: x, 1))


def test_method_of_an_unpicklable_object_is_refused():
    holder = jobfuncs.NotPicklableHolder()
    with pytest.raises(TypeError, match=r"NotPicklableHolder.get.*cannot be stored"):
        Job(holder.get)


def test_something_not_callable_is_refused():
    with pytest.raises(TypeError, match=r"needs something callable; got 42"):
        Job(42)


def test_unpicklable_argument_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"argument 1 of jobfuncs.add"):
        Job(jobfuncs.add, 1, threading.Lock())
    with pytest.raises(TypeError, match=r"argument b= of jobfuncs.add"):
        Job(jobfuncs.add, 1, b=threading.Lock())


def test_module_level_function_of_a_test_module_is_accepted():
    assert Job(local_function).callable is local_function


def test_arguments_anything_picklable_persistent_ones_by_reference(conn):
    counter = conn.root()["counter"] = jobfuncs.Counter()
    args = ({"a": [1, 2]}, (3, 4), datetime.date(2020, 1, 2), jobfuncs.Point(1, 1))
    conn.root()["job"] = Job(jobfuncs.identity, args)
    conn.root()["ref"] = Job(jobfuncs.identity, counter)
    transaction.commit()
    with other_connection(conn.db()) as (other, _tm):
        assert other.root()["job"].args == (args,)
        # The same persistent object, not a copy.
        assert other.root()["ref"].args[0] is other.root()["counter"]


# -- attributes and statuses --------------------------------------------------


def test_a_new_job_has_the_zc_async_attributes():
    job = Job(jobfuncs.add, 1, b=2)
    assert job.status == NEW == "new-status"
    assert job.result is None
    assert job.callable is jobfuncs.add
    assert job.args == (1,)
    assert job.kwargs == {"b": 2}
    assert job.begin_after is None
    assert job.begin_by is None
    assert job.active_start is None
    assert job.active_end is None
    assert job.quota_names == ()
    assert job.callbacks == ()
    assert job.retry_policy_factory is None
    assert job.failed is False
    assert isinstance(job.annotations, PersistentMapping)
    assert job.id is None
    assert "unsaved" in repr(job) and "jobfuncs.add" in repr(job)


def test_calling_a_job_completes_it_with_its_result(conn):
    job = conn.root()["job"] = Job(jobfuncs.add, 1, 2)
    transaction.commit()
    assert job() == 3
    assert job.status == COMPLETED
    assert job.result == 3
    assert job.failed is False
    assert job.active_start <= job.active_end
    assert job.active_start.tzinfo is not None
    assert job.id is not None and job.id in repr(job)


def test_a_job_that_raises_completes_with_a_failure():
    job = Job(jobfuncs.boom)
    result = job()
    assert job.status == COMPLETED
    assert job.failed is True
    assert isinstance(result, zasync.Failure)
    assert result.check(RuntimeError) is RuntimeError


def test_a_completed_job_cannot_be_called_again():
    job = Job(jobfuncs.noop)
    job()
    with pytest.raises(BadStatusError, match="only a new or pending job"):
        job()


def test_statuses_are_the_zc_async_strings():
    assert (
        zasync.NEW,
        zasync.PENDING,
        zasync.ASSIGNED,
        zasync.ACTIVE,
        zasync.CALLBACKS,
        zasync.COMPLETED,
    ) == (
        "new-status",
        "pending-status",
        "assigned-status",
        "active-status",
        "callback-status",
        "completed-status",
    )


# -- fail() -------------------------------------------------------------------


def test_fail_a_new_job_with_the_default_aborted_error():
    job = Job(jobfuncs.noop)
    job.fail()
    assert job.status == COMPLETED
    assert job.failed
    assert job.result.check(AbortedError)
    assert "failed before it started" in job.result.getErrorMessage()


def test_fail_with_a_given_exception():
    job = Job(jobfuncs.noop)
    job.fail(KeyError("gone"))
    assert job.result.check(KeyError)


def test_fail_a_pending_job_takes_it_out_of_its_queue(queue):
    job = queue.put(jobfuncs.noop)
    other = queue.put(jobfuncs.noop)
    assert len(queue) == 2
    job.fail()
    assert len(queue) == 1
    assert list(queue) == [other]
    assert job.status == COMPLETED and job.failed


@pytest.mark.parametrize("status", [ACTIVE, CALLBACKS, COMPLETED])
def test_fail_refuses_a_started_job(status):
    job = Job(jobfuncs.noop)
    job._status = status
    with pytest.raises(BadStatusError, match="fail\\(\\) is for jobs that have not"):
        job.fail()


def test_fail_runs_the_callbacks_of_a_job_outside_a_queue():
    job = Job(jobfuncs.noop)
    callback = job.addCallback(jobfuncs.describe)
    job.fail(ValueError("no"))
    assert callback.status == COMPLETED
    assert callback.result == ("failure", "builtins.ValueError", "no")


def test_fail_a_pending_job_leaves_its_callbacks_to_a_worker(
    conn, queue, start_dispatcher
):
    """The callbacks of a queued job run in a worker, each in its own
    transaction, as they would if the job had run."""
    job = queue.put(jobfuncs.noop)
    callback = job.addCallback(jobfuncs.thread_name)
    transaction.commit()
    job.fail()
    transaction.commit()
    start_dispatcher()
    assert wait_for_result(callback, 10).startswith("zasync-")
    assert wait_for_result(job, 10).check(AbortedError)


# -- callbacks without a worker -----------------------------------------------


def test_add_callback_returns_the_callback_job():
    job = Job(jobfuncs.add, 1, 2)
    callback = job.addCallback(jobfuncs.identity)
    assert isinstance(callback, Job)
    assert job.callbacks == (callback,)
    given = Job(jobfuncs.identity)
    assert job.addCallback(given) is given


def test_callback_gets_the_result_or_the_failure():
    ok, bad = Job(jobfuncs.add, 1, 2), Job(jobfuncs.boom, "argh")
    ok_cb = ok.addCallback(jobfuncs.describe)
    bad_cb = bad.addCallback(jobfuncs.describe)
    ok()
    bad()
    assert ok_cb.result == ("value", 3)
    assert bad_cb.result == ("failure", "builtins.RuntimeError", "argh")


def test_add_callbacks_calls_success_or_failure():
    ok, bad = Job(jobfuncs.add, 1, 2), Job(jobfuncs.boom, "argh")
    ok_cb = ok.addCallbacks(success=jobfuncs.on_success, failure=jobfuncs.on_failure)
    bad_cb = bad.addCallbacks(success=jobfuncs.on_success, failure=jobfuncs.on_failure)
    ok()
    bad()
    assert ok_cb.result == ("success", 3)
    assert bad_cb.result == ("failure", "argh")


def test_add_callbacks_with_one_side_passes_the_other_through():
    ok, bad = Job(jobfuncs.add, 1, 2), Job(jobfuncs.boom)
    ok_cb = ok.addCallbacks(failure=jobfuncs.on_failure)
    bad_cb = bad.addCallbacks(success=jobfuncs.on_success)
    ok()
    bad()
    assert ok_cb.result == 3
    assert bad_cb.failed and bad_cb.result.check(RuntimeError)


def test_add_callbacks_needs_one_of_them():
    with pytest.raises(TypeError, match="success=, failure= or both"):
        Job(jobfuncs.noop).addCallbacks()


def test_add_callbacks_refuses_a_lambda():
    with pytest.raises(TypeError, match="lambda"):
        Job(jobfuncs.noop).addCallbacks(success=lambda r: r)


def test_a_callback_must_be_new():
    done = Job(jobfuncs.noop)
    done()
    with pytest.raises(BadStatusError, match="only a new job can be a callback"):
        Job(jobfuncs.noop).addCallback(done)


def test_callback_added_to_a_completed_job_outside_a_queue_runs_at_once():
    job = Job(jobfuncs.add, 2, 2)
    job()
    callback = job.addCallback(jobfuncs.describe)
    assert callback.status == COMPLETED
    assert callback.result == ("value", 4)
    assert job.status == COMPLETED


def test_pending_status_after_put(queue):
    job = queue.put(Job(jobfuncs.noop))
    assert job.status == PENDING
    assert job.queue is queue


def test_times_are_stored_as_microseconds_and_read_back_in_utc(zasync_db, conn):
    """begin_after, active_start and active_end are kept as integers in the
    job's state (a datetime with a timezone costs ~8 us to pickle), exact
    to the microsecond, and read back as timezone-aware UTC datetimes."""
    paris = datetime.timezone(datetime.timedelta(hours=1))
    when = datetime.datetime(2031, 5, 6, 7, 8, 9, 123457, tzinfo=paris)
    job = Job(jobfuncs.noop)
    job.begin_after = when
    job.active_start = when + datetime.timedelta(microseconds=1)
    conn.root()["timed"] = job
    transaction.commit()
    state = job.__getstate__()
    assert not {"begin_after", "active_start", "active_end"} & set(state)
    assert state["_begin_after_us"] == 1935814089123457
    with other_connection(zasync_db) as (other, _tm):
        stored = other.root()["timed"]
        assert stored.begin_after == when
        assert stored.begin_after.tzinfo is datetime.UTC
        assert stored.active_start - stored.begin_after == datetime.timedelta(
            microseconds=1
        )
        assert stored.active_end is None
    job.active_start = None
    assert job.active_start is None and job._active_start_us is None


def test_parent_is_the_job_called_back_else_the_queue(queue):
    job = Job(jobfuncs.noop)
    assert job.parent is None
    callback = job.addCallback(jobfuncs.noop)
    assert callback.parent is job
    queue.put(job)
    assert job.parent is queue
