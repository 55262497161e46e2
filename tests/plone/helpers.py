"""What the Plone tests share: the service, and running a job to its end."""

from __future__ import annotations

import transaction
from zope.component import getUtility

from zasync.plone.interfaces import IAsyncService
from zasync.testing import wait_for_result

#: seconds a test waits for a job
WAIT = 30


def service():
    return getUtility(IAsyncService)


def run(job):
    """Commit (so that the worker sees the job) and return its result."""
    transaction.commit()
    return wait_for_result(job, WAIT)
