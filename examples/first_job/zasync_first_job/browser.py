"""``@@count-words``, the page behind the "Count words" action of any
content item: it shows the last count and a button that queues
:func:`zasync_first_job.jobs.count_words` for the item.

GET shows the page. A POST (with plone.protect's authenticator, so that
another site cannot make a user's browser queue jobs) queues the job, as
the current user, in the same transaction as the request: if the request
fails, no job was queued. Who may edit the item may count its words.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import transaction
from AccessControl import getSecurityManager
from plone.protect import CheckAuthenticator
from plone.protect.authenticator import createToken
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zExceptions import BadRequest
from zope.component import getUtility
from zope.component.hooks import getSite

from zasync.plone.interfaces import IAsyncService
from zasync_first_job.jobs import count_words, last_count

#: who may follow a job into the control panel (zasync.plone's permission)
VIEW_JOBS = "zasync: View jobs"


class CountWordsView(BrowserView):
    index = ViewPageTemplateFile("templates/count_words.pt")

    #: the id of the job a POST queued
    job_id: str | None = None

    def __call__(self) -> str:
        if self.request.method == "POST":
            CheckAuthenticator(self.request)  # Forbidden without the token
            self.job_id = self.queue()
        elif self.request.method not in ("GET", "HEAD"):
            raise BadRequest("use GET to see the page and POST to count the words")
        return self.index()

    def queue(self) -> str:
        """Queue the count for this item; return the job's id."""
        job = getUtility(IAsyncService).queueJob(count_words, self.context)
        # The job gets its id when it is first stored; a savepoint stores it
        # now, still in the request's transaction.
        transaction.savepoint(optimistic=True)
        return job.id

    @cached_property
    def authenticator(self) -> str:
        return createToken()

    @property
    def count(self) -> dict[str, Any] | None:
        return last_count(self.context)

    @property
    def counted(self) -> str:
        """When the last count was made, in UTC."""
        count = self.count
        return count["counted"].strftime("%Y-%m-%d %H:%M:%S UTC") if count else ""

    @property
    def job_url(self) -> str | None:
        """The job's page in the control panel, for those who may see it."""
        site = getSite()
        if not getSecurityManager().checkPermission(VIEW_JOBS, site):
            return None
        return f"{site.absolute_url()}/@@async-jobs/{self.job_id}"
