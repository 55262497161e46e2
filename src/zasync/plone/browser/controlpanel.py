"""The "Asynchronous jobs" control panel: ``@@async-jobs`` on the site.

URLs (all under ``zasync: View jobs``; the actions under ``zasync: Manage
jobs``, POST only, with plone.protect's authenticator):

- ``@@async-jobs``: the overview; ``?status=failed`` (or another status of
  ``zasync.admin.FILTERS``) a job list, with the filters ``queue``,
  ``callable``, ``user``, ``path``, ``priority``, ``min_priority``,
  ``lock``, ``unique_key`` and paging ``b_start``, ``b_size``;
- ``@@async-jobs/<id>``: one job; ``?confirm=retry`` (``cancel``,
  ``remove``) asks to confirm an action, which POSTs ``action`` back;
- ``@@async-jobs?confirm=prune&older_than=<hours>``: asks to confirm
  clearing finished jobs; POST ``action=prune`` to ``@@async-jobs``;
- POST ``action=queue-demo`` to ``@@async-jobs``: queues the test job
  (zasync.plone.demo) and shows it (zasync.plone.browser.actions);
- ``.../parts``: the parts of either page that change (figures, progress,
  state), which the page's script fetches to refresh itself.
"""

from __future__ import annotations

import datetime
import time
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from AccessControl import getSecurityManager
from plone.protect.authenticator import createToken
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zExceptions import BadRequest, NotFound
from zope.component import getUtility
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse

from zasync import admin
from zasync.activity import Activity
from zasync.plone.browser import actions, charts, display, jobs
from zasync.plone.browser.actions import JOB_ACTIONS, PRUNE_AGES
from zasync.plone.browser.activitycache import recent_activity
from zasync.plone.demo import STEP_SECONDS, STEPS
from zasync.plone.interfaces import IAsyncService
from zasync.running import human_duration

VIEW_JOBS = "zasync: View jobs"
MANAGE_JOBS = "zasync: Manage jobs"

#: how often the page refreshes itself, in milliseconds (``?refresh=``)
REFRESH_MS = 2000


def scope_for(site: Any) -> jobs.Scope:
    """The jobs the current user sees in ``site``: its own, or every job of
    the database for a user with ``zasync: View jobs`` on the application."""
    app = site.getPhysicalRoot()
    return jobs.Scope(
        site_path=tuple(site.getPhysicalPath()),
        database=site._p_jar.db().database_name,
        everything=bool(getSecurityManager().checkPermission(VIEW_JOBS, app)),
    )


def queues_for(site: Any) -> Any:
    return getUtility(IAsyncService).getQueues(site)


def format_time(iso: str | None) -> str:
    """``2025-01-31 12:00:05 UTC`` for an ISO time, '' for None."""
    if not iso:
        return ""
    when = datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


class SiteJobsView(BrowserView):
    """What each page of the jobs control panel knows of its site."""

    @cached_property
    def scope(self) -> jobs.Scope:
        return scope_for(self.context)

    @cached_property
    def queues(self) -> Any:
        return queues_for(self.context)

    @cached_property
    def can_manage(self) -> bool:
        return bool(getSecurityManager().checkPermission(MANAGE_JOBS, self.context))


@implementer(IPublishTraverse)
class JobsControlPanel(SiteJobsView):
    """The overview, the job lists, a job's page and the actions."""

    index = ViewPageTemplateFile("templates/jobs.pt")
    job_template = ViewPageTemplateFile("templates/job.pt")
    parts_template = ViewPageTemplateFile("templates/parts.pt")

    job_id: str | None = None
    parts_only = False

    # -- traversal and dispatch ------------------------------------------------

    def publishTraverse(self, request: Any, name: str) -> JobsControlPanel:  # noqa: N802 - Zope API
        if name == "parts" and not self.parts_only:
            self.parts_only = True
        elif self.job_id is None and not self.parts_only:
            self.job_id = name
        else:
            raise NotFound(name)
        return self

    def __call__(self) -> Any:
        self.request.set("disable_border", True)
        if self.request.method == "POST":
            return self.act()
        if self.request.method not in ("GET", "HEAD"):
            raise BadRequest("use GET to read and POST to act")
        if self.job_id is not None:
            self.job  # noqa: B018 - 404 for an unknown job, before rendering
        if self.parts_only:
            self.request.response.setHeader("Cache-Control", "no-store")
            return self.parts_template()
        if self.job_id is not None:
            return self.job_template()
        return self.index()

    # -- who, what, where --------------------------------------------------------

    @cached_property
    def base_url(self) -> str:
        return f"{self.context.absolute_url()}/@@async-jobs"

    def url(self, job_id: str | None = None, **query: Any) -> str:
        """A URL of the control panel (keeping a ``refresh`` asked for)."""
        url = self.base_url if job_id is None else f"{self.base_url}/{job_id}"
        if "refresh" in self.request.form:
            query.setdefault("refresh", self.refresh_ms)
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{url}?{urlencode(query)}" if query else url

    @cached_property
    def parts_url(self) -> str:
        url = self.base_url if self.job_id is None else f"{self.base_url}/{self.job_id}"
        query = {
            k: v
            for k, v in self.request.form.items()
            if k in ("status", "b_start", "b_size", *jobs.FILTERS)
        }
        return f"{url}/parts" + (f"?{urlencode(query)}" if query else "")

    @cached_property
    def refresh_ms(self) -> int:
        try:
            value = int(self.request.form.get("refresh", REFRESH_MS))
        except (TypeError, ValueError):
            value = REFRESH_MS
        return max(250, min(value, 60_000))

    @cached_property
    def authenticator(self) -> str:
        return createToken()

    def context_url(self, path: str | None) -> str | None:
        if not path:
            return None
        return self.request.physicalPathToURL(path.split("/"))

    format_time = staticmethod(format_time)
    duration = staticmethod(human_duration)

    # -- words for what the pages show (zasync.plone.browser.display) ------------

    @cached_property
    def clock(self) -> float:
        """The time the page shows: relative times count from it."""
        return time.time()

    status_label = staticmethod(display.status_label)
    status_badge = staticmethod(display.status_badge)
    kind_label = staticmethod(display.kind_label)
    list_label = staticmethod(display.list_label)
    state_label = staticmethod(display.state_label)
    state_badge = staticmethod(display.state_badge)

    def worker_name(self, uuid: str | None) -> str:
        """The name of the worker ``uuid`` (its UUID once it is gone)."""
        return jobs.worker_name(self.queues, uuid) or uuid or ""

    def relative(self, iso: str | None) -> str:
        """``12 s ago`` (or ``in 5 min 0 s``) from the page's clock."""
        return display.relative(iso, self.clock)

    def timing(self, info: dict) -> str:
        """``ran 2.4 s``, ``waiting 5 min 0 s``, ...: see display.timing."""
        return display.timing(info, self.clock)

    @cached_property
    def crumbs(self) -> list[tuple[str, str | None]]:
        """The path to this page: (label, URL), the last one without URL."""
        trail: list[tuple[str, str | None]] = [
            ("Site Setup", f"{self.context.absolute_url()}/@@overview-controlpanel"),
            ("Asynchronous jobs", self.url()),
        ]
        if self.job_id is not None:
            kind = self.info["kind"].replace("callbacks", "active")
            if kind in admin.FILTERS:
                trail.append((display.list_label(kind), self.url(status=kind)))
            trail.append((f"Job {self.info['id']}", None))
        elif self.status is not None:
            trail.append((display.list_label(self.status), None))
        else:
            trail[-1] = (trail[-1][0], None)
        return trail

    # -- the overview ------------------------------------------------------------

    @cached_property
    def overview(self) -> dict:
        return jobs.overview(self.queues, scope=self.scope)

    @property
    def statuses(self) -> tuple[str, ...]:
        return admin.FILTERS

    @cached_property
    def activity(self) -> Activity:
        """The last hour, minute by minute (zasync.activity), of the jobs
        the user sees (read at most every few seconds: activitycache)."""
        match = None if self.scope.everything else self.scope.__contains__
        return recent_activity(
            self.queues, scope=self.scope, clock=self.clock, match=match
        )

    @cached_property
    def charts(self) -> dict[str, str]:
        """The charts of :attr:`activity`, as SVG markup."""
        return {
            "finished": charts.finished_chart(self.activity),
            "wait": charts.wait_chart(self.activity),
        }

    @property
    def demo_steps(self) -> str:
        return f"{STEPS} steps of {STEP_SECONDS:g} s"

    @cached_property
    def prune_ages(self) -> tuple:
        return PRUNE_AGES

    @cached_property
    def confirm(self) -> str | None:
        """The action the page asks to confirm, if any (and allowed)."""
        wanted = self.request.form.get("confirm")
        if not self.can_manage:
            return None
        if self.job_id is None:
            return "prune" if wanted == "prune" else None
        return wanted if wanted in self.job_actions else None

    @cached_property
    def prune_hours(self) -> float:
        return actions.hours_of(self.request.form.get("older_than"))

    prune_label = staticmethod(actions.prune_label)

    # -- the lists -------------------------------------------------------------

    @cached_property
    def status(self) -> str | None:
        status = self.request.form.get("status")
        return status if status in admin.FILTERS else None

    @cached_property
    def job_filter(self) -> jobs.JobFilter:
        form = dict(self.request.form)
        form["status"] = (self.status,) if self.status else ()
        return jobs.JobFilter.from_form(form)

    @cached_property
    def b_size(self) -> int:
        return _int(
            self.request.form.get("b_size"), jobs.PAGE_SIZES[0], 1, jobs.MAX_PAGE_SIZE
        )

    @cached_property
    def b_start(self) -> int:
        return _int(self.request.form.get("b_start"), 0, 0, 10**9)

    @cached_property
    def page(self) -> tuple[list, bool]:
        found, more = jobs.list_page(
            self.queues,
            scope=self.scope,
            job_filter=self.job_filter,
            start=self.b_start,
            size=self.b_size,
        )
        self.scan_truncated = found.truncated
        return [jobs.describe(job) for job in found], more

    scan_truncated = False
    scan_limit = jobs.FILTER_SCAN_LIMIT

    @property
    def rows(self) -> list[dict]:
        return self.page[0]

    def page_url(self, b_start: int) -> str:
        return self.url(
            **self.job_filter.query(), b_start=b_start or None, b_size=self.b_size
        )

    @property
    def newer_url(self) -> str | None:
        if self.b_start <= 0:
            return None
        return self.page_url(max(0, self.b_start - self.b_size))

    @property
    def older_url(self) -> str | None:
        return self.page_url(self.b_start + self.b_size) if self.page[1] else None

    page_sizes = jobs.PAGE_SIZES

    @property
    def queue_names(self) -> list[str]:
        return sorted(self.queues.keys())

    def queue_label(self, name: str | None) -> str:
        if name is None:
            return "–"
        return name or "(default)"

    # -- one job ---------------------------------------------------------------

    @cached_property
    def job(self) -> Any:
        if self.job_id is None:
            raise NotFound("no job id in the URL")
        try:
            return jobs.find_job(self.queues, self.job_id, scope=self.scope)
        except admin.JobNotFoundError:
            raise NotFound(f"no job {self.job_id} in this site") from None

    @cached_property
    def info(self) -> dict:
        return jobs.describe(self.job, full=True)

    @property
    def job_actions(self) -> dict[str, str]:
        """The actions that apply to this job now (for a user who may act)."""
        kind = self.info["kind"]
        found = {}
        if kind == "failed":
            found["retry"] = JOB_ACTIONS["retry"]
        if kind in ("pending", "scheduled", "active"):
            found["cancel"] = JOB_ACTIONS["cancel"]
        if kind in ("completed", "failed"):
            found["remove"] = JOB_ACTIONS["remove"]
        return found

    def act(self) -> str:
        return actions.act(self)


def _int(value: Any, default: int, lowest: int, highest: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(lowest, min(number, highest))
