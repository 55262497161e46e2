"""zasync.local.shielded(): cleanup inside a job that an interruption (a
cancel or timeout the job does not check for) must not cut short."""

from __future__ import annotations

import math

import pytest

from zasync import local
from zasync.interfaces import JobCancelled, JobTimeout
from zasync.interrupts import Body, Run


def a_run() -> Run:
    return Run(oid=1, job_id="1", name="job", timeout=None, deadline=math.inf)


def test_an_interruption_during_a_shielded_block_is_raised_after_it():
    body, run = Body(), a_run()
    body.enter(run)
    done = []
    with pytest.raises(JobCancelled, match="stop"):
        with body.shielded():
            assert body.interrupt(run, JobCancelled("stop"))  # recorded only
            done.append("cleanup")
    assert done == ["cleanup"]
    body.leave()


def test_a_delivered_interruption_is_not_raised_again_by_the_shield():
    """The exception already propagating through the job's ``finally``:
    the cleanup runs and nothing more is raised."""
    body, run = Body(), a_run()
    body.enter(run)
    run.failure = JobTimeout("late")  # as after the watchdog delivered it
    body._inside = False
    with body.shielded():
        pass
    body.leave()


def test_outside_a_job_the_block_just_runs():
    ran = []
    with local.shielded():
        ran.append(1)
    assert ran == [1]
