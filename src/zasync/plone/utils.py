"""plone.app.async's ``utils``: ``queue(job)`` and the test helper
``wait_for_all_jobs()``, for code that imports them from there. (Named as
plone.app.async named it; new code imports ``zasync.plone.queue``. This
module loads pytest, through zasync.testing: import it in tests only.)"""

from __future__ import annotations

import transaction
from zope.component import getUtility

from zasync.admin import iter_active
from zasync.plone.interfaces import IAsyncService
from zasync.plone.sitejob import queue
from zasync.testing import wait_for_result

__all__ = ["queue", "wait_for_all_jobs"]


def wait_for_all_jobs(seconds: float = 6, assert_successful: bool = True) -> None:
    """For tests: begin a new transaction (what is not committed is lost),
    wait up to ``seconds`` for each job of the default queue, pending or
    running, to complete, and commit. With ``assert_successful``, an
    AssertionError names the first job that failed."""
    transaction.begin()
    queues = getUtility(IAsyncService).getQueues()
    default = queues[""]
    jobs = list(default)
    jobs += [job for job in iter_active(queues) if job.queue is default]
    for job in jobs:
        wait_for_result(job, seconds)
        if assert_successful and job.failed:
            raise AssertionError(f"{job!r} failed: {job.result!r}")
    transaction.commit()
