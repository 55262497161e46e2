"""IJobSuccess / IJobFailure: notified after every job the service queues.

The service gives each job it returns a callback, :func:`notify_finished`,
as plone.app.async did. Why a callback rather than a subscriber to the
worker's own JobSucceeded/JobFailed events:

- the job's transaction (its writes, result and status) has committed
  before handlers run, so a handler that fails or conflicts can never undo
  or repeat the job's work;
- the handlers' writes commit in the callback's transaction, together with
  the job becoming COMPLETED: ``wait_for_result(job)`` returns only after
  the handlers ran, and a conflict retries the handlers alone;
- a job's callbacks run in the order they were added, before the worker
  thread takes another job, so events of jobs under a size-1 quota arrive
  in the order of the jobs.

Handlers run with the job's site as the current site and a request, as
anonymous (the job's user may be the reason it failed).

This module never moves: :func:`notify_finished` is stored in jobs by
reference.
"""

from __future__ import annotations

import logging
from typing import Any

from zope.event import notify

from zasync.failure import Failure
from zasync.plone.interfaces import JobFailure, JobSuccess, PloneJobError
from zasync.plone.runner import _connection, plone_environment

log = logging.getLogger(__name__)


def notify_finished(origin: Any, job: Any, result: Any) -> Any:
    """Notify JobSuccess(result, job) or JobFailure(failure, job); return
    ``result`` (the callback's own result)."""
    event = (
        JobFailure(result, job)
        if isinstance(result, Failure)
        else JobSuccess(result, job)
    )
    if origin is None:
        notify(event)
        return result
    notified = False
    try:
        with plone_environment(_connection(), origin=origin, as_user=False):
            notified = True
            notify(event)
    except PloneJobError as e:
        if notified:
            raise
        # The site is gone: handlers still hear of the job, without a site.
        log.warning("notifying %r without its site: %s", job, e)
        notify(event)
    return result
