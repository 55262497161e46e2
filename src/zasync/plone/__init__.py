"""zasync.plone: the Plone integration of zasync (the successor of
plone.app.async).

``getUtility(zasync.plone.interfaces.IAsyncService)`` queues jobs that run
in the site, as the user who queued them; a Zope process becomes a worker
by including ``single_db_worker.zcml`` or ``multi_db_worker.zcml``. Needs
the ``plone`` extra: ``pip install -c constraints.txt 'zasync[plone]'``.

As in plone.app.async, the package also offers ``Job`` (a job that runs in
the current site as the current user), ``queue(job)`` (into the default
queue) and ``RetryWithDelay`` (retry errors after a delay).
"""

from zasync.plone.retry import RetryWithDelay
from zasync.plone.sitejob import Job, queue

__all__ = ["Job", "RetryWithDelay", "queue"]
