"""``@async-jobs`` and ``@async-workers``: the jobs control panel as a REST
API, on the site root.

- ``GET @async-jobs``: the jobs of the site (filters ``status`` (repeatable
  or comma-separated), ``queue``, ``callable``, ``user``, ``path``,
  ``priority``, ``min_priority``, ``lock``, ``unique_key``; batching
  ``b_start``, ``b_size``);
- ``GET @async-jobs/{id}``: one job, with its traceback or result;
- ``POST @async-jobs/{id}/retry``, ``POST @async-jobs/{id}/cancel``: act on
  a job, answer with the job as it is now (a running job's cancel is a
  request, ``"cancel": "requested"``: the job stops at its next check, or
  is interrupted after its worker's grace period);
- ``DELETE @async-jobs/{id}``: remove a finished job (204);
- ``GET @async-workers``: the workers and what they run.

Reading needs ``zasync: View jobs``, acting ``zasync: Manage jobs``.
Errors are plone.restapi's: 400 for a bad filter or an action the job's
status does not allow, 404 for a job the user cannot see.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from plone.protect.interfaces import IDisableCSRFProtection
from plone.restapi.batching import DEFAULT_BATCH_SIZE
from plone.restapi.services import Service
from zExceptions import BadRequest, NotFound
from zope.interface import alsoProvides, implementer
from zope.publisher.interfaces import IPublishTraverse

from zasync import admin
from zasync.interfaces import BadStatusError
from zasync.plone.browser import jobs
from zasync.plone.browser.controlpanel import queues_for, scope_for


@implementer(IPublishTraverse)
class _JobsService(Service):
    """A service that takes the rest of the path as parameters."""

    def __init__(self, context: Any, request: Any):
        super().__init__(context, request)
        self.params: list[str] = []

    def publishTraverse(self, request: Any, name: str) -> _JobsService:  # noqa: N802 - Zope API
        self.params.append(name)
        return self

    @property
    def base_url(self) -> str:
        return f"{self.context.absolute_url()}/@async-jobs"

    def job_url(self, job_id: str) -> str:
        return f"{self.base_url}/{job_id}"

    def scope(self) -> jobs.Scope:
        return scope_for(self.context)

    def queues(self) -> Any:
        return queues_for(self.context)

    def find(self, job_id: str) -> Any:
        try:
            return jobs.find_job(self.queues(), job_id, scope=self.scope())
        except admin.JobNotFoundError as e:
            raise NotFound(str(e)) from None

    def serialize(self, job: Any, *, full: bool) -> dict:
        data = jobs.describe(job, full=full)
        data["@id"] = self.job_url(job.id)
        if data.get("context"):
            data["context_url"] = self.request.physicalPathToURL(
                data["context"].split("/")
            )
        return data


class JobsGet(_JobsService):
    def reply(self) -> dict:
        if len(self.params) > 1:
            raise NotFound("/".join(["@async-jobs", *self.params]))
        if self.params:
            return self.serialize(self.find(self.params[0]), full=True)
        return self.listing()

    def listing(self) -> dict:
        form = self.request.form
        statuses = form.get("status") or ()
        if isinstance(statuses, str):
            statuses = [statuses]
        statuses = [s for value in statuses for s in value.split(",") if s]
        try:
            job_filter = jobs.JobFilter.from_form({**form, "status": statuses})
            job_filter.check()
            b_start = int(form.get("b_start", 0))
            b_size = int(form.get("b_size", DEFAULT_BATCH_SIZE))
        except ValueError as e:
            raise BadRequest(str(e)) from None
        if b_start < 0 or not 1 <= b_size <= jobs.MAX_PAGE_SIZE:
            raise BadRequest(
                f"b_start must be >= 0 and b_size between 1 and {jobs.MAX_PAGE_SIZE}"
            )
        found, more = jobs.list_page(
            self.queues(),
            scope=self.scope(),
            job_filter=job_filter,
            start=b_start,
            size=b_size,
        )
        query = job_filter.query()
        data: dict[str, Any] = {
            "@id": self.page_url(query, b_start, b_size),
            "items": [self.serialize(job, full=False) for job in found],
        }
        if found.truncated:
            # The search read its most finished jobs (newest first).
            data["scan_limit"] = jobs.FILTER_SCAN_LIMIT
        if b_start or more:
            # No "last" and no items_total: counting would read every
            # finished job; "next" is there while more jobs follow.
            links = {
                "@id": data["@id"],
                "first": self.page_url(query, 0, b_size),
            }
            if b_start:
                links["prev"] = self.page_url(query, max(0, b_start - b_size), b_size)
            if more:
                links["next"] = self.page_url(query, b_start + b_size, b_size)
            data["batching"] = links
        return data

    def page_url(self, query: dict, b_start: int, b_size: int) -> str:
        query = dict(query)
        if b_start:
            query["b_start"] = b_start
        if b_size != DEFAULT_BATCH_SIZE:
            query["b_size"] = b_size
        return f"{self.base_url}?{urlencode(query)}" if query else self.base_url


class JobsPost(_JobsService):
    def reply(self) -> dict:
        alsoProvides(self.request, IDisableCSRFProtection)
        if len(self.params) != 2 or self.params[1] not in ("retry", "cancel"):
            raise NotFound("POST @async-jobs/{id}/retry or @async-jobs/{id}/cancel")
        job = self.find(self.params[0])
        said = None
        try:
            if self.params[1] == "retry":
                admin.retry(job)
            else:
                said = admin.cancel(job)
        except BadStatusError as e:
            raise BadRequest(str(e)) from None
        data = self.serialize(job, full=True)
        if said == "requested":
            data["cancel"] = "requested"
            data["message"] = (
                "cancel requested; the job stops at its next check, or is "
                "interrupted after its worker's grace period"
            )
        return data


class JobsDelete(_JobsService):
    def reply(self) -> Any:
        alsoProvides(self.request, IDisableCSRFProtection)
        if len(self.params) != 1:
            raise NotFound("DELETE @async-jobs/{id}")
        job = self.find(self.params[0])
        try:
            admin.remove(job)
        except (BadStatusError, admin.JobNotFoundError) as e:
            raise BadRequest(str(e)) from None
        return self.reply_no_content()


class WorkersGet(Service):
    def reply(self) -> dict:
        base = f"{self.context.absolute_url()}/@async-jobs"
        found = jobs.workers(queues_for(self.context), scope=scope_for(self.context))
        for worker in found:
            for job in worker["jobs"]:
                job["@id"] = f"{base}/{job['id']}"
        return {
            "@id": f"{self.context.absolute_url()}/@async-workers",
            "items": found,
        }
