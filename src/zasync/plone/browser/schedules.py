"""The "Schedules" tab of the jobs control panel: ``@@async-schedules`` on
the site, and what it shares with the REST API (``@async-schedules``).

The page lists the site's periodic jobs (zasync.plone.schedules) with their
next and last run, the last run's status and a link to its job; under
``zasync: Manage jobs`` it pauses, resumes or runs one now, by POST only,
with plone.protect's authenticator (``action`` = ``pause``, ``resume`` or
``run-now``, ``name`` and ``queue`` of the schedule).

A user sees the schedules declared in this site; a user with ``zasync:
View jobs`` on the Zope application sees every schedule of the database,
as the job lists do.
"""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from AccessControl import Unauthorized
from plone.protect import CheckAuthenticator
from plone.protect.authenticator import createToken
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from Products.statusmessages.interfaces import IStatusMessage
from zExceptions import BadRequest, NotFound

from zasync import admin
from zasync.plone import schedules
from zasync.plone.browser import jobs
from zasync.plone.browser.controlpanel import SiteJobsView
from zasync.running import human_duration
from zasync.schedtiming import describe_every

#: what the page and the REST API can do to a schedule
ACTIONS = {"pause": "Pause", "resume": "Resume", "run-now": "Run now"}


class ScheduleNotFoundError(LookupError):
    """No schedule of that name that the user may see; the message says
    which."""


def visible(schedule: Any, scope: jobs.Scope) -> bool:
    return scope.everything or schedules.in_site(
        schedule, site_path=scope.site_path, database=scope.database
    )


def list_schedules(queues: Any, *, scope: jobs.Scope) -> list[tuple[str, Any]]:
    """``(queue name, schedule)`` of the schedules ``scope`` sees, by queue
    then by name."""
    return [
        (queue_name, schedule)
        for queue_name, schedule in schedules.iter_schedules(queues)
        if visible(schedule, scope)
    ]


def find_schedule(
    queues: Any, name: str, *, scope: jobs.Scope, queue: str | None = None
) -> tuple[str, Any]:
    """``(queue name, schedule)`` of the schedule ``name`` (in ``queue``, or
    in any queue when None). ScheduleNotFoundError when there is none the user
    may see; ValueError when several queues have one of that name and no
    queue is given."""
    found = [
        (queue_name, schedule)
        for queue_name, schedule in list_schedules(queues, scope=scope)
        if schedule.name == name and queue in (None, queue_name)
    ]
    if not found:
        where = "" if queue is None else f" in queue {queue!r}"
        raise ScheduleNotFoundError(f"no schedule {name!r}{where} in this site")
    if len(found) > 1:
        names = ", ".join(repr(q) for q, _ in found)
        raise ValueError(
            f"the queues {names} each have a schedule {name!r}: say which "
            f"with queue=<name>"
        )
    return found[0]


def _iso(when: datetime.datetime | None) -> str | None:
    return when.astimezone(datetime.UTC).isoformat() if when is not None else None


def _seconds(period: Any) -> float | None:
    if period is None:
        return None
    if isinstance(period, datetime.timedelta):
        return period.total_seconds()
    return float(period)


def describe(queue_name: str, schedule: Any) -> dict[str, Any]:
    """A JSON-ready description of a schedule: what it runs, where, as
    whom, when, and how its last run went (``last_status`` is the kind of
    its last job, as the job lists say it, or None before a first run;
    ``last_error`` why the last slot started no job, or None)."""
    origin = schedules.origin_of(schedule)
    last_job = schedule.last_job
    user = None
    if origin is not None:
        user = origin.user_id if origin.user_id is not None else jobs.ANONYMOUS
    return {
        "name": schedule.name,
        "queue": queue_name,
        "description": schedule.description or "",
        "callable": schedules.function_name(schedule),
        "site": "/".join(origin.site_path) if origin is not None else None,
        "context": "/".join(origin.context_path) if origin is not None else None,
        "user": user,
        "profile": schedules.profile_of(schedule),
        "cron": schedule.cron,
        "every": _seconds(schedule.every),
        "timezone": schedule.timezone,
        "missed": schedule.missed,
        "paused": bool(schedule.paused),
        "next_run": _iso(schedule.next_run),
        "last_run": _iso(schedule.last_run),
        "last_job": last_job.id if last_job is not None else None,
        "last_status": admin.kind(last_job) if last_job is not None else None,
        "last_error": schedule.last_error,
    }


def act(schedule: Any, action: str) -> Any:
    """Do ``action`` (a key of ACTIONS) to ``schedule`` in the caller's
    transaction; the job of a run-now, else None."""
    if action == "pause":
        schedule.pause()
    elif action == "resume":
        schedule.resume()
    elif action == "run-now":
        return schedule.run_now()
    else:
        raise ValueError(f"unknown action {action!r}: use {', '.join(ACTIONS)}")
    return None


def relative(when: str | None, *, now: float | None = None) -> str:
    """``in 3 h 12 min`` or ``5 min 2 s ago`` for an ISO time; '' for None."""
    if not when:
        return ""
    moment = datetime.datetime.fromisoformat(when).timestamp()
    now = datetime.datetime.now(datetime.UTC).timestamp() if now is None else now
    if moment >= now:
        return f"in {human_duration(moment - now)}"
    return f"{human_duration(now - moment)} ago"


def absolute(when: str | None, timezone: str = "UTC") -> str:
    """``2026-12-07 03:00 CET`` in the schedule's timezone; '' for None."""
    if not when:
        return ""
    moment = datetime.datetime.fromisoformat(when)
    try:
        moment = moment.astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def period(seconds: float | None) -> str:
    """``Every hour``, ``Every 90 seconds``: a schedule's period in words."""
    return describe_every(round(seconds * 1_000_000)) if seconds else ""


class SchedulesControlPanel(SiteJobsView):
    """``@@async-schedules``: the list, and the actions by POST."""

    index = ViewPageTemplateFile("templates/schedules.pt")

    def __call__(self) -> Any:
        self.request.set("disable_border", True)
        if self.request.method == "POST":
            return self.act()
        if self.request.method not in ("GET", "HEAD"):
            raise BadRequest("use GET to read and POST to act")
        if "action" in self.request.form:
            raise BadRequest(
                "a schedule is paused, resumed or run by POST (the page's "
                "buttons), never by GET"
            )
        return self.index()

    @cached_property
    def base_url(self) -> str:
        return f"{self.context.absolute_url()}/@@async-schedules"

    @cached_property
    def jobs_url(self) -> str:
        return f"{self.context.absolute_url()}/@@async-jobs"

    def status_url(self, status: str) -> str:
        return f"{self.jobs_url}?{urlencode({'status': status})}"

    @property
    def statuses(self) -> tuple[str, ...]:
        return admin.FILTERS

    @cached_property
    def authenticator(self) -> str:
        return createToken()

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        rows = [
            describe(queue_name, schedule)
            for queue_name, schedule in list_schedules(self.queues, scope=self.scope)
        ]
        for row in rows:
            row["actions"] = [
                (action, label)
                for action, label in ACTIONS.items()
                if action != ("resume" if not row["paused"] else "pause")
            ]
        return rows

    relative = staticmethod(relative)
    absolute = staticmethod(absolute)
    period = staticmethod(period)

    def queue_label(self, name: str) -> str:
        return name or "(default)"

    def act(self) -> str:
        CheckAuthenticator(self.request)
        if not self.can_manage:
            raise Unauthorized(
                "acting on schedules needs the permission zasync: Manage jobs"
            )
        form = self.request.form
        action, name = form.get("action"), form.get("name") or ""
        if action not in ACTIONS:
            raise BadRequest(f"unknown action {action!r}: use {', '.join(ACTIONS)}")
        try:
            queue_name, schedule = find_schedule(
                self.queues, name, scope=self.scope, queue=form.get("queue")
            )
        except ScheduleNotFoundError as e:
            raise NotFound(str(e)) from None
        except ValueError as e:
            raise BadRequest(str(e)) from None
        messages = IStatusMessage(self.request)
        job = None
        try:
            job = act(schedule, action)
        except ValueError as e:
            messages.add(f"Nothing done: {e}", type="error")
        else:
            messages.add(self._said(schedule.name, action, job), type="info")
        # A run-now goes on to its job's page, which follows it to its end.
        url = self.base_url if job is None else f"{self.jobs_url}/{job.id}"
        self.request.response.redirect(url, status=303)
        return ""

    def _said(self, name: str, action: str, job: Any) -> str:
        if action == "pause":
            return f"Schedule {name} is paused: it starts no job until resumed."
        if action == "resume":
            return f"Schedule {name} is resumed."
        return f"Schedule {name} runs now: job {job.id} is queued."
