"""zasync.serial and zasync.parallel run by a dispatcher on a FileStorage
database: the composite's result is the list of its jobs."""

from __future__ import annotations

import pytest
import transaction

import jobfuncs
import zasync
from zasync.interfaces import COMPLETED
from zasync.job import Job
from zasync.testing import wait_for_result


def commit():
    transaction.commit()


def test_serial_runs_in_order_and_goes_on_when_one_fails(queue, start_dispatcher):
    first = Job(jobfuncs.add, 1, 2)
    middle = Job(jobfuncs.boom, "middle failed")
    last = Job(jobfuncs.thread_name)
    composite = queue.put(zasync.serial(first, middle, last))
    commit()
    start_dispatcher(threads=3)
    result = wait_for_result(composite, 20)
    assert result == [first, middle, last]
    assert [job.status for job in result] == [COMPLETED] * 3
    assert first.result == 3
    assert middle.failed and middle.result.getErrorMessage() == "middle failed"
    assert last.result.startswith("zasync-")
    assert first.active_end <= middle.active_start
    assert middle.active_end <= last.active_start
    assert not composite.failed


def test_parallel_runs_its_jobs_at_the_same_time(queue, start_dispatcher):
    left = Job(jobfuncs.meet, "left", "right")
    right = Job(jobfuncs.meet, "right", "left")
    failing = Job(jobfuncs.boom)
    composite = queue.put(zasync.parallel(left, right, failing))
    commit()
    start_dispatcher(threads=3)
    result = wait_for_result(composite, 20)
    assert result == [left, right, failing]
    # Each saw the other running: they ran concurrently.
    assert left.result is True and right.result is True
    assert failing.failed
    assert all(job.status == COMPLETED for job in result)


def test_members_may_be_callables(queue, start_dispatcher):
    composite = queue.put(zasync.serial(jobfuncs.noop, jobfuncs.thread_name))
    commit()
    start_dispatcher()
    first, second = wait_for_result(composite, 20)
    assert first.result is None and second.result.startswith("zasync-")


@pytest.mark.parametrize("make", [zasync.serial, zasync.parallel])
def test_postprocess_makes_the_result(queue, start_dispatcher, make):
    composite = queue.put(
        make(Job(jobfuncs.add, 1, 2), Job(jobfuncs.add, 3, 4), postprocess=_total)
    )
    commit()
    start_dispatcher()
    assert wait_for_result(composite, 20) == 10


def _total(*jobs):
    return sum(job.result for job in jobs)


@pytest.mark.parametrize("make", [zasync.serial, zasync.parallel])
def test_an_empty_composite_completes(queue, start_dispatcher, make):
    composite = queue.put(make())
    commit()
    start_dispatcher()
    assert wait_for_result(composite, 10) == []


def test_callbacks_of_a_composite_get_the_list(queue, start_dispatcher):
    composite = zasync.serial(Job(jobfuncs.add, 1, 1))
    callback = composite.addCallback(jobfuncs.count_jobs)
    composite = queue.put(composite)
    commit()
    start_dispatcher()
    wait_for_result(composite, 20)
    assert callback.result == 1


def test_a_composite_inside_a_composite(queue, start_dispatcher):
    inner = zasync.parallel(Job(jobfuncs.add, 1, 1), Job(jobfuncs.add, 2, 2))
    outer = queue.put(zasync.serial(inner, Job(jobfuncs.add, 3, 3)))
    commit()
    start_dispatcher(threads=2)
    first, second = wait_for_result(outer, 20)
    assert [job.result for job in first.result] == [2, 4]
    assert second.result == 6


def test_a_composite_takes_new_jobs_only(queue):
    job = queue.put(Job(jobfuncs.noop))
    with pytest.raises(ValueError, match="a composite takes new jobs only"):
        zasync.serial(job)


def test_a_composite_refuses_a_lambda():
    with pytest.raises(TypeError, match="lambda"):
        zasync.parallel(lambda: 1)
    with pytest.raises(TypeError, match="lambda"):
        zasync.serial(jobfuncs.noop, postprocess=lambda *jobs: 1)
