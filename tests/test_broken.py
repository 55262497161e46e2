"""zasync.broken: a stand-in for a job's callable that cannot be imported."""

from __future__ import annotations

import functools
import pickle

import pytest
from tests import mp_jobs
from ZODB.broken import find_global

from zasync.broken import UnimportableCallable, replace_unimportable
from zasync.job import Job


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


def test_an_importable_callable_is_left_alone():
    job = Job(functools.partial(mp_jobs.add, "path"), 1, 2)
    before = job.callable
    assert replace_unimportable(job) is None
    assert job.callable is before
