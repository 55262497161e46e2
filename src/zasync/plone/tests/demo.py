"""``@@zasync-demo-queue``: a form that queues a job for the user who
submits it, for the examples (``make run``, ``make cluster``) and the tests
with real processes. Registered only by ``demo.zcml``: leave it out of a
real site.

GET shows the form; a POST with the form's CSRF token queues
``funcs.createDocument`` on the context through ``IAsyncService``, as the
current user, and answers ``text/plain``: ``queued job <id>: document <id>
in <url>``. The job is built here, never from the request: the request
gives only the title.
"""

from __future__ import annotations

import html
from typing import Any

import transaction
from plone.i18n.normalizer import idnormalizer
from plone.protect import CheckAuthenticator
from plone.protect.authenticator import createToken
from Products.Five.browser import BrowserView
from zope.component import getUtility

from plone import api
from zasync.plone.interfaces import IAsyncService
from zasync.plone.tests.funcs import createDocument

FORM = """\
<!DOCTYPE html>
<html><head><title>zasync demo</title></head>
<body>
<h1>Queue a job</h1>
<p>A worker will create a page here, in {url}, as {user}.</p>
<form method="post">
  <input type="hidden" name="_authenticator" value="{token}">
  <label>Title <input name="title" value="Made by zasync"></label>
  <button type="submit">Queue</button>
</form>
</body></html>
"""


def free_id(container: Any, title: str) -> str:
    """An id made from ``title`` that ``container`` does not hold yet."""
    base = idnormalizer.normalize(title) or "document"
    candidate, n = base, 1
    while candidate in container.objectIds():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class DemoQueueView(BrowserView):
    def __call__(self) -> str:
        if self.request.method != "POST":
            return self.form()
        CheckAuthenticator(self.request)  # Forbidden without the form's token
        title = (self.request.form.get("title") or "").strip() or "Made by zasync"
        doc_id = free_id(self.context, title)
        job = getUtility(IAsyncService).queueJob(
            createDocument,
            self.context,
            doc_id,
            title,
            "Created by a zasync worker",
            f"Queued from {self.request.get('ACTUAL_URL', '')}",
        )
        transaction.savepoint(optimistic=True)  # gives the job its id
        self.request.response.setHeader("Content-Type", "text/plain; charset=utf-8")
        return (
            f"queued job {job.id}: document {doc_id} in {self.context.absolute_url()}\n"
        )

    def form(self) -> str:
        return FORM.format(
            url=html.escape(self.context.absolute_url()),
            user=html.escape(api.user.get_current().getUserName()),
            token=createToken(),
        )
