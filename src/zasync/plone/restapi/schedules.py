"""``@async-schedules``: the "Schedules" tab of the jobs control panel as a
REST API, on the site root.

- ``GET @async-schedules``: the site's schedules;
- ``GET @async-schedules/{name}``: one schedule;
- ``POST @async-schedules/{name}/pause`` (``resume``, ``run-now``): act on
  it, answer with the schedule as it is now (and, for ``run-now``, the
  ``job`` queued).

A name used by schedules of several queues takes ``?queue=<name>``.
Reading needs ``zasync: View jobs``, acting ``zasync: Manage jobs``.
Errors are plone.restapi's: 400 for an unknown action or an ambiguous
name, 404 for a schedule the user cannot see.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from plone.protect.interfaces import IDisableCSRFProtection
from plone.restapi.services import Service
from zExceptions import BadRequest, NotFound
from zope.interface import alsoProvides, implementer
from zope.publisher.interfaces import IPublishTraverse

from zasync.plone.browser import schedules as view
from zasync.plone.browser.controlpanel import queues_for, scope_for


@implementer(IPublishTraverse)
class _SchedulesService(Service):
    """A service that takes the rest of the path as parameters."""

    def __init__(self, context: Any, request: Any):
        super().__init__(context, request)
        self.params: list[str] = []

    def publishTraverse(self, request: Any, name: str) -> _SchedulesService:  # noqa: N802 - Zope API
        self.params.append(name)
        return self

    @property
    def site_url(self) -> str:
        return str(self.context.absolute_url())

    def url(self, queue: str, name: str) -> str:
        url = f"{self.site_url}/@async-schedules/{name}"
        return f"{url}?{urlencode({'queue': queue})}" if queue else url

    def find(self, name: str) -> tuple[str, Any]:
        queue = self.request.form.get("queue")
        if queue is not None and not isinstance(queue, str):
            raise BadRequest("queue: give one queue name")
        try:
            return view.find_schedule(
                queues_for(self.context),
                name,
                scope=scope_for(self.context),
                queue=queue,
            )
        except view.ScheduleNotFoundError as e:
            raise NotFound(str(e)) from None
        except ValueError as e:
            raise BadRequest(str(e)) from None

    def serialize(self, queue: str, schedule: Any) -> dict[str, Any]:
        data = {"@id": self.url(queue, schedule.name), **view.describe(queue, schedule)}
        if data["last_job"] is not None:
            data["last_job"] = self.job(data["last_job"])
        return data

    def job(self, job_id: str) -> dict[str, str]:
        return {"@id": f"{self.site_url}/@async-jobs/{job_id}", "id": job_id}


class SchedulesGet(_SchedulesService):
    def reply(self) -> dict:
        if len(self.params) > 1:
            raise NotFound("/".join(["@async-schedules", *self.params]))
        if self.params:
            return self.serialize(*self.find(self.params[0]))
        found = view.list_schedules(
            queues_for(self.context), scope=scope_for(self.context)
        )
        return {
            "@id": f"{self.site_url}/@async-schedules",
            "items": [self.serialize(queue, schedule) for queue, schedule in found],
        }


class SchedulesPost(_SchedulesService):
    def reply(self) -> dict:
        alsoProvides(self.request, IDisableCSRFProtection)
        actions = ", ".join(view.ACTIONS)
        if len(self.params) != 2:
            raise NotFound(f"POST @async-schedules/{{name}}/{{action}} ({actions})")
        name, action = self.params
        if action not in view.ACTIONS:
            raise BadRequest(f"unknown action {action!r}: use {actions}")
        queue, schedule = self.find(name)
        job = view.act(schedule, action)
        data = self.serialize(queue, schedule)
        if job is not None:
            data["job"] = self.job(job.id)
        return data
