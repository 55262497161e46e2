"""zasync.broken: a stand-in for a job's callable that cannot be imported."""

from __future__ import annotations

import functools
import importlib
import pickle
import sys

import pytest
import transaction
from tests import jobfuncs, mp_jobs
from ZODB.broken import find_global

from zasync import COMPLETED, Failure, install
from zasync.admin import find_job
from zasync.broken import UnimportableCallable, replace_unimportable
from zasync.dispatcher import Dispatcher
from zasync.job import Job
from zasync.storage import open_db
from zasync.testing import wait_until


def test_a_broken_callable_is_replaced_and_keeps_its_name():
    job = Job(mp_jobs.add, "path", 1, 2)
    job.callable = find_global("myapp.gone", "task")  # as ZODB loads it
    assert replace_unimportable(job) == "myapp.gone.task"
    assert isinstance(job.callable, UnimportableCallable)
    assert job.callable_name == "myapp.gone.task"
    copy = pickle.loads(pickle.dumps(job.callable))
    with pytest.raises(ImportError, match="myapp.gone.task cannot be imported"):
        copy("path", 1, 2)


def test_a_partial_of_a_broken_function_keeps_its_arguments():
    job = Job(mp_jobs.add, "path", 1, 2)
    job.callable = functools.partial(find_global("__main__", "nowhere"), 1, b=2)
    assert replace_unimportable(job) == "__main__.nowhere"
    assert job.callable.args == (1,) and job.callable.keywords == {"b": 2}
    assert isinstance(job.callable.func, UnimportableCallable)


def test_a_stand_in_calls_the_function_once_it_can_be_imported():
    """A job that failed for want of its module runs when retried after
    the module is installed."""
    assert UnimportableCallable("tests.jobfuncs", "add")(2, 3) == 5
    with pytest.raises(ImportError, match="tests.jobfuncs.nowhere cannot be"):
        UnimportableCallable("tests.jobfuncs", "nowhere")()


def test_an_importable_callable_is_left_alone():
    job = Job(functools.partial(mp_jobs.add, "path"), 1, 2)
    before = job.callable
    assert replace_unimportable(job) is None
    assert job.callable is before


def test_broken_arguments_are_replaced_and_fail_when_called():
    job = Job(mp_jobs.add, "path", 1, 2)
    # as ZODB loads them (job.args refuses to store them)
    job._args = ["path", find_global("myapp.gone", "task"), 2]
    job._kwargs = {"then": functools.partial(find_global("myapp.gone", "later"), 3)}
    assert replace_unimportable(job) == "myapp.gone.task, myapp.gone.later"
    assert job.callable is mp_jobs.add
    assert isinstance(job.args[1], UnimportableCallable)
    assert isinstance(job.kwargs["then"].func, UnimportableCallable)
    pickle.dumps((list(job.args), dict(job.kwargs)))  # storable again
    with pytest.raises(ImportError, match="myapp.gone.task cannot be imported"):
        job.args[1]()


def test_a_job_passed_an_unimportable_function_fails_and_others_run(tmp_path):
    """A Plone job's function is an argument (of run_as_user): a worker that
    cannot import it fails that job, and still claims and runs the rest."""
    module = tmp_path / "gone_soon.py"
    module.write_text("def task():\n    return 'ran'\n")
    path = tmp_path / "Data.fs"
    sys.path.insert(0, str(tmp_path))
    try:
        gone_soon = importlib.import_module("gone_soon")
        db = open_db(str(path))
        conn = db.open()
        queue = install(conn)[""]
        passed = queue.put(Job(jobfuncs.call, gone_soon.task))
        fine = queue.put(Job(jobfuncs.add, 2, 3))
        transaction.commit()
        ids = passed.id, fine.id
        conn.close()
        db.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gone_soon", None)
    db = open_db(str(path))
    dispatcher = Dispatcher(db, threads=2, poll_interval=0.05).start()
    try:
        conn = db.open()
        try:
            passed, fine = (find_job(conn, i) for i in ids)
            wait_until(lambda: conn.sync() or passed.status == COMPLETED, timeout=20)
            wait_until(lambda: conn.sync() or fine.status == COMPLETED, timeout=20)
            assert fine.result == 5
            assert isinstance(passed.result, Failure)
            assert "gone_soon.task cannot be imported" in str(passed.result)
        finally:
            conn.close()
    finally:
        dispatcher.stop(5)
        db.close()
