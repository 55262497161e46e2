"""zasync.local: what a running job can ask about itself, with a real
dispatcher on a FileStorage database; outside a job, NotInJobError."""

from __future__ import annotations

import pytest
import transaction

import jobfuncs
import porting_funcs
from dbviews import other_connection
from zasync import local
from zasync.interfaces import NotInJobError
from zasync.job import Job
from zasync.testing import wait_for_result, wait_for_start, wait_until


def commit():
    transaction.commit()


@pytest.mark.parametrize(
    "call",
    [
        lambda: local.getJob(),
        lambda: local.getDispatcher(),
        lambda: local.getQueue(),
        lambda: local.setLiveAnnotation("a", 1),
        lambda: local.getLiveAnnotation("a"),
        lambda: local.progress(1, 2),
    ],
    ids=[
        "getJob",
        "getDispatcher",
        "getQueue",
        "setLiveAnnotation",
        "getLiveAnnotation",
        "progress",
    ],
)
def test_outside_a_job_they_raise_not_in_job_error(call):
    with pytest.raises(NotInJobError, match="only in code a worker calls for a job"):
        call()


def test_get_job_and_dispatcher_in_a_job(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.current_job_info))
    commit()
    dispatcher = start_dispatcher()
    assert wait_for_result(job) == (
        job.id,
        "jobfuncs.current_job_info",
        dispatcher.uuid,
    )


def test_another_thread_of_a_job_is_not_in_the_job(queue, start_dispatcher):
    job = queue.put(Job(jobfuncs.local_outside_error))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == "NotInJobError"


def test_live_annotations_and_progress_are_seen_while_the_job_runs(
    zasync_db, queue, start_dispatcher
):
    job = queue.put(Job(jobfuncs.annotate, "live", "finish"))
    commit()
    start_dispatcher()
    assert jobfuncs.gate("live-annotated").wait(10)
    wait_for_start(job)
    # Another connection (as another process would) sees them now, before
    # the job commits.
    transaction.begin()
    live = local.live_annotations(job)
    assert live["stage"] == "half-way"
    assert live["progress"]["done"] == 5 and live["progress"]["total"] == 10
    assert live["progress"]["message"] == "five of ten"
    jobfuncs.gate("finish").set()
    assert wait_for_result(job) == ("half-way", "dflt")
    # Kept in the job's annotations when it commits; live ones are cleared.
    assert job.annotations["stage"] == "half-way"
    assert job.annotations["progress"]["done"] == 10

    def cleared():
        transaction.begin()  # see the worker's commit
        return not local.live_annotations(job)

    wait_until(cleared, message="the live annotations to be cleared")


def test_get_live_annotation_of_another_job_waits_for_it(queue, start_dispatcher):
    writer = queue.put(Job(jobfuncs.annotate, "w", "w-finish"))
    reader = queue.put(Job(jobfuncs.read_live_of, writer, "stage"))
    commit()
    start_dispatcher(threads=2)
    assert wait_for_result(reader) == "half-way"
    jobfuncs.gate("w-finish").set()
    wait_for_result(writer)


def test_set_live_annotation_of_another_job_is_refused(queue, start_dispatcher):
    other = queue.put(Job(jobfuncs.noop))
    job = queue.put(Job(jobfuncs.annotate_other, other))
    commit()
    start_dispatcher()
    assert wait_for_result(job).check(NotInJobError)


# -- what code ported from zc.async.local meets -----------------------------


def test_get_queue_is_the_queue_of_the_running_job(queue, start_dispatcher):
    job = queue.put(Job(porting_funcs.queue_and_job))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == ("", True)


def test_get_live_annotation_sees_job_annotations_other_code_commits(
    zasync_db, queue, start_dispatcher
):
    """As with zc.async, another process can answer a waiting job through
    ``job.annotations``; made before the job runs, the mapping is written
    apart from the job, so the job's own commit does not conflict."""
    job = queue.put(Job(porting_funcs.wait_for_annotation, "answer", 20))
    job.annotations["asked"] = "the question"
    commit()
    start_dispatcher()
    assert jobfuncs.gate("waiting-for-answer").wait(10)
    with other_connection(zasync_db) as (conn, tm):
        conn.get(job._p_oid).annotations["answer"] = 42
        tm.commit()
    assert wait_for_result(job) == 42
    assert job.attempts == 1


def test_get_live_annotation_takes_zc_async_positional_arguments(
    queue, start_dispatcher
):
    """``getLiveAnnotation(name, default, timeout, poll, job)``."""
    job = queue.put(Job(porting_funcs.wait_for_annotation, "never", 0.2))
    commit()
    start_dispatcher()
    assert wait_for_result(job) == "none"
