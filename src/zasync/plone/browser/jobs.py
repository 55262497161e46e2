"""The jobs of a Plone site as its control panel and REST API show them:
which jobs a user may see (the scope), the filters of the job lists, a
description of one job, and the overview figures.

Everything here reads through :mod:`zasync.admin` in the caller's
transaction and never commits.

A site's queues are shared by every site in its database: a user sees the
jobs queued in this site, and only a user who has ``zasync: View jobs`` on
the Zope application itself (a Zope Manager) sees every job in the database
(other sites' jobs and jobs queued without Plone).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zasync import admin
from zasync import overview as overview_module
from zasync.job import Job, callable_name
from zasync.jobfilters import option_matcher
from zasync.local import live_annotations
from zasync.plone import settings
from zasync.plone.browser import display
from zasync.plone.runner import JobOrigin, iter_origins, run_as_user
from zasync.running import LONG_RUNNING_SECONDS, describe_running
from zasync.stuck import stuck_since_iso
from zasync.workerstate import state_of

#: the filters of a job list (status, then these), as query parameters
FILTERS = ("queue", "callable", "user", "path")
#: the filters on the options jobs were queued with, as query parameters
OPTION_FILTERS = ("priority", "min_priority", "lock", "unique_key")
#: page sizes the lists offer (the first is the default)
PAGE_SIZES = (20, 50, 100)
MAX_PAGE_SIZE = 200
#: the windows of the throughput figures, in minutes
WINDOWS = (5, 60)
#: at most this many finished jobs go in one "clear finished jobs" request
PRUNE_LIMIT = 20_000
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Scope:
    """Which jobs a user sees: those queued in the site at ``site_path`` of
    the database ``database``, or every job when ``everything``."""

    site_path: tuple[str, ...]
    database: str = ""
    everything: bool = False

    def __contains__(self, job: Job) -> bool:
        if self.everything:
            return True
        origin = origin_of(job)
        return (
            origin is not None
            and tuple(origin.site_path) == self.site_path
            and (not self.database or origin.database in ("", self.database))
        )


def origin_of(job: Job) -> JobOrigin | None:
    """The origin of a Plone job (of the first member of a batch); None for
    a job queued without the Plone service."""
    for origin in iter_origins(job):
        return origin
    return None


def function_name(job: Job) -> str:
    """What a job calls: for a Plone job, the function it runs in its site
    (not the runner that wraps it)."""
    if job.callable is run_as_user and len(job.args) >= 2:
        return callable_name(job.args[1])
    return job.callable_name


def call_arguments(job: Job) -> tuple[tuple, dict]:
    """The arguments a job passes to its function (after the context, for a
    Plone job)."""
    if job.callable is run_as_user and len(job.args) >= 2:
        return tuple(job.args[2:]), dict(job.kwargs)
    return tuple(job.args), dict(job.kwargs)


def user_of(job: Job) -> str | None:
    """The id of the user who queued a Plone job, ``anonymous``, or None
    for a job queued without the Plone service."""
    origin = origin_of(job)
    if origin is None:
        return None
    return origin.user_id if origin.user_id is not None else ANONYMOUS


def context_path(job: Job) -> str | None:
    origin = origin_of(job)
    return "/".join(origin.context_path) if origin is not None else None


@dataclass(frozen=True)
class JobFilter:
    """The filters of a job list. Empty values filter nothing. ``path`` is
    a physical path (``/plone/folder``) or one relative to the site
    (``/folder``); it matches that object and everything in it.
    ``priority`` (exactly), ``min_priority`` (that or higher), ``lock``
    and ``unique_key`` match the options the jobs were queued with.
    ``problem`` says why a value of the form was not taken (that filter
    is then empty, and the list shows no jobs)."""

    status: tuple[str, ...] = ()
    queue: str | None = None
    callable: str = ""
    user: str = ""
    path: str = ""
    priority: int | None = None
    min_priority: int | None = None
    lock: str = ""
    unique_key: str = ""
    problem: str = ""

    @classmethod
    def from_form(cls, form: Any) -> JobFilter:
        """The filter a request's form asks for; ValueError naming a status
        that is not one of ``zasync.admin.FILTERS``. A bad priority, lock
        or unique key sets ``problem`` (see :meth:`check`)."""

        def text(name: str) -> str:
            value = form.get(name, "")
            if isinstance(value, (list, tuple)):
                value = value[0] if value else ""
            return str(value).strip()

        status = form.get("status") or ()
        if isinstance(status, str):
            status = tuple(s for s in status.split(",") if s)
        status = tuple(status)
        unknown = [s for s in status if s not in admin.FILTERS]
        if unknown:
            raise ValueError(
                f"unknown status {unknown[0]!r}: use one of {', '.join(admin.FILTERS)}"
            )
        queue = form.get("queue")
        if isinstance(queue, (list, tuple)):
            queue = queue[0] if queue else None
        options, problem = _options(text)
        return cls(
            status=status,
            queue=None if queue in (None, "*") else str(queue),
            callable=text("callable"),
            user=text("user"),
            path=text("path"),
            problem=problem,
            **options,
        )

    def check(self) -> None:
        """ValueError with the ``problem``, if the form had one."""
        if self.problem:
            raise ValueError(self.problem)

    def query(self) -> dict[str, str]:
        """The query parameters that ask for this filter again."""
        query = {}
        if self.status:
            query["status"] = ",".join(self.status)
        if self.queue is not None:
            query["queue"] = self.queue
        for name in (*FILTERS[1:], *OPTION_FILTERS):
            value = getattr(self, name)
            if value is not None and value != "":
                query[name] = str(value)
        return query

    def options(self) -> dict[str, Any]:
        """The option filters, as ``admin.list_jobs`` takes them."""
        return {
            name: getattr(self, name) if getattr(self, name) != "" else None
            for name in OPTION_FILTERS
        }

    def predicate(self, scope: Scope) -> Callable[[Job], bool]:
        """A test for ``admin.list_jobs(match=...)``: in scope and matching
        the callable, user and path filters."""
        wanted_path = _absolute_path(self.path, scope.site_path)

        def match(job: Job) -> bool:
            if job not in scope:
                return False
            if self.callable and self.callable not in function_name(job):
                return False
            if self.user and user_of(job) != self.user:
                return False
            if wanted_path:
                path = context_path(job)
                if path is None or not (
                    path == wanted_path or path.startswith(wanted_path + "/")
                ):
                    return False
            return True

        return match


def _options(text: Callable[[str], str]) -> tuple[dict[str, Any], str]:
    """The option filters of a form (read with ``text``), and the first
    problem found ('' for none); a bad value is left out."""
    options: dict[str, Any] = {}
    problem = ""
    for name in OPTION_FILTERS:
        value: Any = text(name)
        if not value:
            continue
        if name.endswith("priority"):
            try:
                value = int(value)
            except ValueError:
                pass  # refused below, with the message list_jobs gives
        try:
            option_matcher(**{name: value})
        except (TypeError, ValueError) as e:
            problem = problem or str(e)
            continue
        options[name] = value
    return options, problem


def _absolute_path(path: str, site_path: tuple[str, ...]) -> str:
    path = path.strip().rstrip("/")
    if not path:
        return ""
    if not path.startswith("/"):
        path = "/" + path
    site = "/".join(site_path)
    if site and not (path == site or path.startswith(site + "/")):
        path = site + path
    return path


#: finished jobs a list reads at most (newest first): a filter that matches
#: few of 100,000 finished jobs answers in well under a second
FILTER_SCAN_LIMIT = 20_000


def list_page(
    queues: Any, *, scope: Scope, job_filter: JobFilter, start: int = 0, size: int
) -> tuple[admin.JobList, bool]:
    """The jobs ``start`` to ``start + size`` of the list that
    ``job_filter`` selects (active first, then pending and scheduled in run
    order, then finished ones newest first), and whether more follow; no
    jobs for a filter with a ``problem``."""
    start = max(0, int(start))
    size = max(1, min(int(size), MAX_PAGE_SIZE))
    if job_filter.problem:
        return admin.JobList(), False
    found = admin.list_jobs(
        queues,
        status=job_filter.status,
        queue_names=(job_filter.queue,) if job_filter.queue is not None else (),
        limit=start + size + 1,
        match=job_filter.predicate(scope),
        scan_limit=FILTER_SCAN_LIMIT,
        **job_filter.options(),
    )
    page = admin.JobList(found[start : start + size])
    page.truncated = found.truncated
    return page, len(found) > start + size


# -- one job ------------------------------------------------------------------


def shorten(value: Any, *, width: int = 200) -> str:
    """The repr of ``value``, cut to ``width`` characters (never escaped:
    the page template and JSON escape it)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the page
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def progress_of(job: Job) -> dict[str, Any] | None:
    """The progress a running job reported (``done``, ``total``,
    ``message``, ``percent``), or None."""
    if job._status not in ("assigned-status", "active-status"):
        return None
    value = live_annotations(job).get("progress")
    if not isinstance(value, dict):
        return None
    done, total = value.get("done"), value.get("total")
    percent = None
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total:
        percent = max(0, min(100, round(100 * done / total)))
    return {
        "done": done,
        "total": total,
        "message": value.get("message"),
        "percent": percent,
    }


def describe(job: Job, *, full: bool = False) -> dict[str, Any]:
    """A JSON-ready description of a job for the control panel and the REST
    API: what ``zasync.admin.describe`` says, with the function, arguments,
    context and user of a Plone job, and ``stuck_since`` for a job its worker
    thread got stuck in (zasync.watchdog). ``full`` adds the traceback, result,
    annotations, the members of a batch and, for a job with a lock, the
    ``lock_holder``: the id of the job running under that lock now."""
    data = admin.describe(job)
    args, kwargs = call_arguments(job)
    origin = origin_of(job)
    data.update(
        {
            "callable": function_name(job),
            "args": [shorten(a) for a in args],
            "kwargs": {k: shorten(v) for k, v in kwargs.items()},
            "user": user_of(job),
            "context": context_path(job),
            "site": "/".join(origin.site_path) if origin is not None else None,
            "progress": progress_of(job),
        }
    )
    if (since := stuck_since_iso(job)) is not None:
        data["stuck_since"] = since  # its worker thread got stuck in it
    if job.begin_after is not None and data["kind"] == "scheduled":
        data["due_in_seconds"] = round(job.begin_after.timestamp() - time.time())
    members = getattr(job, "jobs", None)
    if full:
        if members:
            data["jobs"] = [member.id for member in members]
        if job.lock is not None and job.queue is not None:
            holder = job.queue.lock_holder(job.lock)
            data["lock_holder"] = holder.id if holder is not None else None
    else:
        data.pop("traceback", None)
        data.pop("result", None)
    return data


# -- the overview ----------------------------------------------------------------


def overview(queues: Any, *, scope: Scope, heartbeat_interval: float = 60.0) -> dict:
    """Per queue: counts by status (completed and failed over the last hour),
    quotas and their use; the workers (with the ``name`` the panel shows
    and their ``heartbeat_interval``);
    jobs done and failed over the last 5
    and 60 minutes; the running jobs with their progress."""
    match = None if scope.everything else scope.__contains__
    data = overview_module.summary(
        queues, heartbeat_interval=heartbeat_interval, windows=WINDOWS, match=match
    )
    last_hour = data["throughput"][f"{WINDOWS[-1]}m"]["queues"]
    for name, info in data["queues"].items():
        finished = last_hour.get(name, {})
        info["counts"]["completed"] = finished.get("completed", 0)
        info["counts"]["failed"] = finished.get("failed", 0)
    for window in data["throughput"].values():
        window.pop("queues", None)
    data["workers"] = workers(
        queues, scope=scope, heartbeat_interval=heartbeat_interval
    )
    for row in data["workers"]:
        row["name"] = worker_name(queues, row["uuid"])
        record = queues.workers.get(row["uuid"])
        row["heartbeat_interval"] = record.heartbeat_interval if record else None
    data["running"] = [job for worker in data["workers"] for job in worker["jobs"]]
    return data


def workers(queues: Any, *, scope: Scope, heartbeat_interval: float = 60.0) -> list:
    """The workers that serve the database: alive or not, when last seen,
    their threads, and the running jobs of the scope (``running``: ids;
    ``jobs``: id, callable, status, progress, ``running_seconds`` and
    ``long``: running longer than the registry's
    ``zasync.plone.long_running_seconds``)."""
    clock = time.time()
    long_after = float(settings.read("long_running_seconds", LONG_RUNNING_SECONDS))
    found = []
    for record in queues.workers.values():
        running = [
            {
                "id": job.id,
                "callable": function_name(job),
                "kind": admin.kind(job, clock),
                "progress": progress_of(job),
                **describe_running(job, clock, long_after),
            }
            for _slot, job in record.iter_active()
            if job in scope
        ]
        last_seen = record.heartbeat.last_seen
        found.append(
            {
                "uuid": record.uuid,
                "host": record.hostname,
                "pid": record.pid,
                "threads": record.threads,
                "queues": list(record.queue_names),
                "alive": record.is_alive(clock, heartbeat_interval),
                "state": state_of(record, clock, heartbeat_interval).value,
                "last_seen": (
                    datetime.datetime.fromtimestamp(last_seen, datetime.UTC)
                    .replace(microsecond=0)
                    .isoformat()
                    if last_seen
                    else None
                ),
                "running": [job["id"] for job in running],
                "jobs": running,
            }
        )
    return found


def worker_name(queues: Any, uuid: str | None) -> str | None:
    """The name the control panel gives the worker ``uuid``
    (:func:`zasync.plone.browser.display.worker_name`); None for a worker
    no longer registered."""
    record = queues.workers.get(uuid) if uuid else None
    return display.worker_name(record) if record is not None else None


def find_job(queues: Any, job_id: str, *, scope: Scope) -> Job:
    """The job ``job_id`` if the scope holds it; JobNotFoundError otherwise
    (a job of another site is not found, rather than forbidden)."""
    job = admin.find_job(queues._p_jar, job_id)
    if job not in scope:
        raise admin.JobNotFoundError(f"no job has id {job_id} in this site")
    return job


def prune(queues: Any, *, scope: Scope, older_than: datetime.timedelta) -> int:
    """Remove the finished jobs of the scope that ended more than
    ``older_than`` ago, at most PRUNE_LIMIT; return how many."""
    return admin.prune(
        queues,
        older_than=older_than,
        limit=PRUNE_LIMIT,
        match=None if scope.everything else scope.__contains__,
    )
