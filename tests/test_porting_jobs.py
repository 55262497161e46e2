"""What code written for zc.async and plone.app.async relies on in jobs,
failures, composites and retry policies (issue #20), on FileStorage
databases with real dispatcher threads."""

from __future__ import annotations

import datetime
import io
import pickle
import threading

import persistent
import pytest
import transaction
import zope.interface.verify
from ZODB.POSException import ConflictError

import jobfuncs
import zasync
import zasync.local
import zasync.testing
from zasync.callables import ByName
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    CALLBACKS,
    COMPLETED,
    PENDING,
    BadStatusError,
    IFailure,
    IRetryPolicy,
)
from zasync.job import Job, SuccessFailureJob
from zasync.retry import NeverRetry, RetryPolicy, RetryWithDelay, ZcAsyncPolicy
from zasync.testing import wait_for_result

# -- callables the jobs below call (stored by reference) ---------------------


def collect(*args, **kwargs):
    return [list(args), dict(kwargs)]


def write_then_raise(counter):
    counter.value += 1
    raise RuntimeError("wrote, then raised")


def call_with(func, obj):
    """A wrapper that calls ``func(obj)`` (as plone.app.async's does)."""
    return func(obj)


def trap_value_error(failure):
    failure.trap(ValueError)
    return "trapped"


def raise_value_error():
    raise ValueError("bad value")


def gated_callback(name, result):
    """A callback that opens gate ``name-started``, waits for gate ``name``
    and counts its calls under ``name``."""
    jobfuncs.calls[name] += 1
    jobfuncs.gate(name + "-started").set()
    jobfuncs.gate(name).wait(20)
    return result


def counting_callback(name, result):
    jobfuncs.calls[name] += 1
    return result


def return_a_job(a, b):
    """Returns a new job: the job that called this takes its result."""
    return Job(jobfuncs.add, a, b)


def queue_and_return_a_job(key):
    """Queues a job that waits for gate ``key`` and returns it."""
    return zasync.local.getJob().queue.put(Job(jobfuncs.wait_for, key, 20, "inner"))


def return_a_failing_job():
    return Job(jobfuncs.boom, "inner failed")


class Document(persistent.Persistent):
    title = "doc"

    def reindex(self, suffix=""):
        self.title = self.title + suffix + "!"
        return self.title

    @staticmethod
    def static(value):
        return value * 2


class ZcPolicy:
    """A retry policy written for zc.async: counts in its data_cache."""

    def __init__(self, job):
        self.job = job

    def jobError(self, failure, data_cache):  # noqa: N802 - zc.async's name
        count = data_cache["errors"] = data_cache.get("errors", 0) + 1
        return count < 3

    def commitError(self, failure, data_cache):  # noqa: N802 - zc.async's name
        return False

    def interrupted(self):
        return datetime.timedelta(seconds=5)


def no_policy(job):
    return object()


def commit():
    transaction.commit()


# -- 1. args and kwargs, changed in place ------------------------------------


def test_args_and_kwargs_change_in_place_and_are_stored(queue, zasync_db):
    job = queue.put(Job(collect, 1, a=1))
    job.args.append(2)
    job.args.extend([3])
    job.args.insert(0, 0)
    job.kwargs["b"] = 2
    job.kwargs.update(c=3)
    commit()
    assert job.args == [0, 1, 2, 3] and job.args == (0, 1, 2, 3)
    assert job.kwargs == {"a": 1, "b": 2, "c": 3}
    other = zasync_db.open()
    try:
        stored = other.get(job._p_oid)
        assert stored.args == [0, 1, 2, 3]
        assert stored.kwargs == {"a": 1, "b": 2, "c": 3}
    finally:
        other.close()


def test_args_changed_after_queueing_are_the_ones_called(queue, start_dispatcher):
    job = queue.put(Job(collect, 1))
    commit()
    job.args.append(2)
    job.kwargs["k"] = "v"
    commit()
    start_dispatcher()
    assert wait_for_result(job) == [[1, 2], {"k": "v"}]


def test_args_refuse_what_cannot_be_stored():
    job = Job(collect)
    with pytest.raises(TypeError, match="cannot be stored"):
        job.args.append(lambda: None)
    with pytest.raises(TypeError, match="cannot be stored"):
        job.kwargs["f"] = threading.Lock()
    assert job.args == [] and job.kwargs == {}


def test_a_job_stored_with_a_tuple_and_a_dict_reads_and_changes_them():
    job = Job(collect)
    state = job.__getstate__()
    del state["_args"], state["_kwargs"]
    state["args"], state["kwargs"] = (1, 2), {"a": 1}
    old = Job.__new__(Job)
    old.__setstate__(state)
    assert old.args == (1, 2) and old.kwargs == {"a": 1}
    assert old._call() == [[1, 2], {"a": 1}]
    old.args.append(3)
    old.kwargs["b"] = 2
    assert old.args == [1, 2, 3] and old.kwargs == {"a": 1, "b": 2}
    assert "args" not in old.__dict__ and "kwargs" not in old.__dict__


# -- 2. a job that returns a job takes its result ---------------------------


def test_a_job_returning_a_new_job_takes_its_result(queue, start_dispatcher):
    job = queue.put(Job(return_a_job, 2, 3))
    callback = job.addCallback(Job(counting_callback, "outer-callback"))
    failing = queue.put(Job(return_a_failing_job))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == 5
    assert wait_for_result(callback) == 5
    assert jobfuncs.calls["outer-callback"] == 1
    assert wait_for_result(failing).getErrorMessage() == "inner failed"


def test_a_job_waits_for_the_queued_job_it_returned(queue, start_dispatcher):
    job = queue.put(Job(queue_and_return_a_job, "inner-gate"))
    commit()
    start_dispatcher()
    zasync.testing.wait_until(lambda: jobfuncs.calls["inner-gate"] == 1)
    transaction.begin()
    assert job.status == ACTIVE and job.result is None
    jobfuncs.gate("inner-gate").set()
    assert wait_for_result(job) == "inner"


def test_calling_a_job_that_returns_a_job_takes_its_result():
    job = Job(return_a_job, 1, 1)
    assert job() == 2 and job.result == 2


# -- 3. composites: their jobs are their args ---------------------------------


def test_a_composite_s_jobs_are_its_args_and_can_be_added(queue, start_dispatcher):
    first = Job(jobfuncs.add, 1, 2)
    composite = zasync.serial(first)
    assert composite.args == [first]
    second = Job(jobfuncs.add, 3, 4)
    composite.args.append(second)
    composite.args.append(jobfuncs.noop)  # a callable becomes a job
    queue.put(composite)
    commit()
    start_dispatcher()
    result = wait_for_result(composite, 20)
    assert result[:2] == [first, second] and len(result) == 3
    assert [job.result for job in result] == [3, 7, None]
    assert all(job.status == COMPLETED for job in result)


def test_a_parallel_composite_runs_jobs_added_to_its_args(queue, start_dispatcher):
    composite = zasync.parallel(Job(jobfuncs.add, 1, 1))
    composite.args.append(Job(jobfuncs.add, 2, 2))
    queue.put(composite)
    commit()
    start_dispatcher()
    assert [job.result for job in wait_for_result(composite, 20)] == [2, 4]


def test_a_composite_stored_with_jobs_reads_them():
    member = Job(jobfuncs.noop)
    composite = zasync.serial(member)
    state = composite.__getstate__()
    del state["_args"]
    state["args"], state["jobs"] = (), (member,)
    old = type(composite).__new__(type(composite))
    old.__setstate__(state)
    assert old.jobs == (member,) and old.args == [member]


# -- 4. job() rolls back what the callable wrote ------------------------------


def test_calling_a_job_rolls_back_the_callable_s_writes(conn):
    root = conn.root()
    counter = root["counter"] = jobfuncs.Counter()
    commit()
    counter.value = 10  # the caller's own write, before the call
    job = Job(write_then_raise, counter)
    root["job"] = job
    result = job()
    assert result.check(RuntimeError)
    assert counter.value == 10
    commit()
    assert counter.value == 10 and job.failed


# -- 5. functions defined in a class -----------------------------------------


def test_a_function_defined_in_a_class_is_stored_by_name(queue, start_dispatcher):
    doc = queue._p_jar.root()["doc"] = Document()
    job = queue.put(Job(Document.reindex, doc, "?"))
    static = queue.put(Job(Document.static, 21))
    wrapped = queue.put(Job(call_with, Document.reindex, doc))
    commit()  # failed with "cannot pickle 'function' object"
    assert isinstance(job.callable, ByName) and job.callable == Document.reindex
    assert job.callable_name.endswith("test_porting_jobs.Document.reindex")
    start_dispatcher()
    assert wait_for_result(job) == "doc?!"
    assert wait_for_result(static) == 42
    assert wait_for_result(wrapped).endswith("!!")


def test_bound_methods_of_persistent_objects_still_work(queue, start_dispatcher):
    doc = queue._p_jar.root()["doc"] = Document()
    job = queue.put(Job(doc.reindex))
    commit()
    assert job.callable == doc.reindex
    start_dispatcher()
    assert wait_for_result(job) == "doc!"


def test_a_function_stored_by_name_that_is_gone_fails_naming_it():
    func = ByName("test_porting_jobs", "Document.gone")
    assert pickle.loads(pickle.dumps(func)) == func
    with pytest.raises(ImportError, match="Document.gone cannot be found"):
        func()


# -- 6. addCallbacks -----------------------------------------------------------


def test_add_callbacks_returns_a_job_with_success_and_failure():
    job = Job(raise_value_error)
    callback = job.addCallbacks(failure=trap_value_error)
    assert isinstance(callback, SuccessFailureJob)
    assert callback.success is None and callback.failure is trap_value_error
    job()
    assert callback.result == "trapped"


# -- 7. callbacks added while callbacks run --------------------------------


def test_a_callback_added_while_the_last_one_runs_does_not_run_it_again(
    queue, start_dispatcher
):
    job = Job(jobfuncs.identity, "value")
    job.addCallback(Job(gated_callback, "running"))
    queue.put(job)
    commit()
    start_dispatcher()
    assert jobfuncs.gate("running-started").wait(10)
    transaction.begin()
    assert job.status == CALLBACKS
    late = job.addCallback(Job(counting_callback, "late"))
    commit()
    jobfuncs.gate("running").set()
    assert wait_for_result(late) == "value"
    wait_for_result(job)
    assert jobfuncs.calls["running"] == 1
    assert jobfuncs.calls["late"] == 1


# -- 9. Failure: trap, printTraceback, the header ----------------------------


def test_failure_trap_returns_the_type_or_raises_again():
    try:
        raise ValueError("bad")
    except ValueError:
        failure = Failure()
    assert failure.trap(KeyError, ValueError) is ValueError
    with pytest.raises(ValueError, match="bad"):
        failure.trap(KeyError)
    zope.interface.verify.verifyObject(IFailure, failure)


def test_failure_tracebacks_start_with_traceback_and_print():
    failure = Failure(RuntimeError("never raised"))
    assert failure.getTraceback().startswith("Traceback")
    assert "RuntimeError: never raised" in failure.getTraceback()
    assert failure.getTraceback(elideFrameworkCode=True, detail="verbose")
    out = io.StringIO()
    failure.printTraceback(out)
    assert out.getvalue() == failure.getTraceback()


# -- 10. retry policies: one contract, zc.async's accepted -------------------


def test_the_policies_provide_the_interface():
    for factory in (RetryPolicy, NeverRetry, RetryWithDelay):
        policy = factory(Job(jobfuncs.noop))
        zope.interface.verify.verifyObject(IRetryPolicy, policy)
    job = Job(jobfuncs.noop)
    assert isinstance(job.getRetryPolicy(), RetryPolicy)
    job.retry_policy_factory = ZcPolicy
    policy = job.getRetryPolicy()
    assert isinstance(policy, ZcAsyncPolicy)
    zope.interface.verify.verifyObject(IRetryPolicy, policy)
    assert policy.interrupted().retry and policy.interrupted().delay == 5


def test_a_zc_async_policy_decides_for_the_job(queue, start_dispatcher):
    job = Job(jobfuncs.fail_times, "zc", 5)
    job.retry_policy_factory = ZcPolicy
    queue.put(job)
    conflicting = Job(jobfuncs.raise_conflict_always, "zc-conflict")
    conflicting.retry_policy_factory = ZcPolicy
    queue.put(conflicting)
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job).check(ValueError)
    assert jobfuncs.calls["zc"] == 3  # two retries, then it gives up
    assert wait_for_result(conflicting).check(ConflictError)


def test_a_policy_with_neither_contract_is_refused_naming_it():
    job = Job(jobfuncs.noop)
    job.retry_policy_factory = no_policy
    with pytest.raises(TypeError, match="neither job_error"):
        job.getRetryPolicy()


# -- 14. quota_names -------------------------------------------------------------


def test_quota_names_are_checked_where_they_are_set(queue):
    job = Job(jobfuncs.noop)
    job.quota_names = ["a", "b"]
    assert job.quota_names == ("a", "b")
    with pytest.raises(TypeError, match=r"quota_names=\(\)"):
        job.quota_names = ""
    with pytest.raises(TypeError, match=r"quota_names=\('db',\)"):
        job.quota_names = "db"
    with pytest.raises(TypeError, match="strings"):
        job.quota_names = (1,)
    queue.quotas.create("db")
    job.quota_names = ()
    queue.put(job)
    assert job.status == PENDING
    job.quota_names = ("db",)
    with pytest.raises(ValueError, match="quotas.create"):
        job.quota_names = ("unknown",)
    assert job.quota_names == ("db",)
    done = Job(jobfuncs.noop)
    done()
    with pytest.raises(BadStatusError):
        done.quota_names = ("db",)


def test_a_job_stored_with_plain_quota_names_reads_them():
    job = Job(jobfuncs.noop)
    state = job.__getstate__()
    state["quota_names"] = ("db",)
    old = Job.__new__(Job)
    old.__setstate__(state)
    assert old.quota_names == ("db",)
    old.quota_names = ("other",)
    assert old.quota_names == ("other",) and "quota_names" not in old.__dict__


# -- 8. conflicts: one run, then max_conflicts retries --------------------------


@pytest.mark.parametrize("max_conflicts", [0, 2])
def test_a_conflicting_job_runs_once_plus_max_conflicts_times(
    queue, start_dispatcher, max_conflicts
):
    key = f"conflicts-{max_conflicts}"
    job = Job(jobfuncs.raise_conflict_always, key)
    job.retry_policy_factory = RetryWithDelay.configure(max_conflicts=max_conflicts)
    queue.put(job)
    commit()
    start_dispatcher(threads=1)
    assert wait_for_result(job).check(ConflictError)
    assert jobfuncs.calls[key] == 1 + max_conflicts
