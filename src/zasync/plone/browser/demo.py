"""``@@zasync-demo-queue``: a page of the site that queues the demo job
(:func:`zasync.plone.demo.demo_job`) and links to it in the control panel.

GET shows the page with its button; a POST (with plone.protect's
authenticator, as the control panel's actions) queues the job in the
site, as the current user, and shows the page again with a link to the
job (``@@async-jobs/<id>``). Who may act on jobs may queue it.
"""

from __future__ import annotations

from functools import cached_property

import transaction
from plone.protect import CheckAuthenticator
from plone.protect.authenticator import createToken
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zExceptions import BadRequest
from zope.component import getUtility

from zasync.plone.demo import STEP_SECONDS, STEPS, demo_job
from zasync.plone.interfaces import IAsyncService


class DemoQueueView(BrowserView):
    index = ViewPageTemplateFile("templates/demo.pt")

    #: the id of the job a POST queued
    job_id: str | None = None
    steps = STEPS
    seconds = STEPS * STEP_SECONDS

    def __call__(self) -> str:
        if self.request.method == "POST":
            CheckAuthenticator(self.request)  # Forbidden without the token
            job = getUtility(IAsyncService).queueJob(demo_job, self.context)
            transaction.savepoint(optimistic=True)  # gives the job its id
            self.job_id = job.id
        elif self.request.method not in ("GET", "HEAD"):
            raise BadRequest("use GET to see the page and POST to queue the job")
        self.request.response.setHeader("Content-Type", "text/html; charset=utf-8")
        return self.index()

    @cached_property
    def authenticator(self) -> str:
        return createToken()

    @property
    def job_url(self) -> str:
        return f"{self.context.absolute_url()}/@@async-jobs/{self.job_id}"
