"""What the control panel's forms change, each only by a POST that carries
plone.protect's authenticator in its body, from a user with ``zasync:
Manage jobs``: retry, cancel or remove a job (POST to ``@@async-jobs/<id>``
with ``action``), clear finished jobs (POST ``action=prune`` and
``older_than`` to ``@@async-jobs``) and queue the test job (POST
``action=queue-demo`` to ``@@async-jobs``). A GET never changes anything.

Each answers with a redirect (303) to the page to show next, which says
what happened.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import transaction
from AccessControl import Unauthorized
from plone.protect import CheckAuthenticator
from Products.statusmessages.interfaces import IStatusMessage
from zExceptions import BadRequest
from zope.component import getUtility

from zasync import admin
from zasync.interfaces import BadStatusError
from zasync.plone.browser import jobs
from zasync.plone.demo import STEP_SECONDS, STEPS, demo_job
from zasync.plone.interfaces import IAsyncService

#: what a job page can ask to confirm, and what it says
JOB_ACTIONS = {
    "retry": "Retry",
    "cancel": "Cancel job",
    "remove": "Remove",
}
#: what the overview's forms can ask
PANEL_ACTIONS = ("prune", "queue-demo")
#: the ages "clear finished jobs" offers, in hours
PRUNE_AGES: tuple[tuple[int, str], ...] = (
    (0, "all finished jobs"),
    (1, "1 hour"),
    (24, "1 day"),
)
PRUNE_AGES += ((24 * 7, "7 days"), (24 * 30, "30 days"))
#: the longest age the clear action takes (what a timedelta holds, about
#: 2.7 million years, rounded down)
MAX_HOURS = 2.4e10


def prune_label(hours: float) -> str:
    for value, label in PRUNE_AGES:
        if value == hours:
            return label if hours == 0 else f"older than {label}"
    return f"older than {hours:g} hours"


def hours_of(value: Any) -> float:
    """The age ``older_than`` asks for, in hours; BadRequest for anything
    that is not a finite, positive number of hours."""
    try:
        hours = float(value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"older_than={value!r}: give the age in hours (0 clears every finished job)"
        ) from None
    if not hours >= 0:
        raise BadRequest(f"older_than={value!r}: the age cannot be negative")
    if not math.isfinite(hours) or hours > MAX_HOURS:
        raise BadRequest(
            f"older_than={value!r}: give a number of hours up to {MAX_HOURS:g}"
        )
    return hours


def act(view: Any) -> str:
    """Do what the confirmed form POSTed to ``view`` (a JobsControlPanel)
    asks, then redirect to the page that says what happened. Forbidden
    without the authenticator; Unauthorized without ``zasync: Manage
    jobs``; BadRequest for an unknown action."""
    request = view.request
    CheckAuthenticator(request)
    if not view.can_manage:
        raise Unauthorized("acting on jobs needs the permission zasync: Manage jobs")
    action = request.form.get("action")
    if view.job_id is None:
        if action == "prune":
            return _prune(view)
        if action == "queue-demo":
            return _queue_demo(view)
        raise BadRequest(f"unknown action {action!r}: use {' or '.join(PANEL_ACTIONS)}")
    if action not in JOB_ACTIONS:
        raise BadRequest(f"unknown action {action!r}: use {', '.join(JOB_ACTIONS)}")
    return _on_job(view, action)


def _prune(view: Any) -> str:
    hours = hours_of(view.request.form.get("older_than"))
    removed = jobs.prune(
        view.queues, scope=view.scope, older_than=datetime.timedelta(hours=hours)
    )
    more = " (the most one request clears: clear again for more)"
    IStatusMessage(view.request).add(
        f"Removed {removed} finished job{'s' if removed != 1 else ''} "
        f"({prune_label(hours)})" + (more if removed >= jobs.PRUNE_LIMIT else "") + ".",
        type="info",
    )
    return redirect(view, view.url())


def _queue_demo(view: Any) -> str:
    job = getUtility(IAsyncService).queueJob(demo_job, view.context)
    transaction.savepoint(optimistic=True)  # gives the job its id
    IStatusMessage(view.request).add(
        f"Queued the test job {job.id} ({jobs.function_name(job)}): a worker runs "
        f"it in {STEPS} steps of {STEP_SECONDS:g} s, reporting its progress.",
        type="info",
    )
    return redirect(view, view.url(job.id))


def _on_job(view: Any, action: str) -> str:
    messages = IStatusMessage(view.request)
    job = view.job
    name = jobs.function_name(job)
    try:
        if action == "retry":
            admin.retry(job)
            text = f"Job {job.id} ({name}) is queued again."
        elif action == "cancel":
            if admin.cancel(job) == "requested":
                text = (
                    f"Cancel requested for job {job.id} ({name}); the job "
                    f"stops at its next check, or is interrupted after the "
                    f"worker's grace period."
                )
            else:
                text = f"Job {job.id} ({name}) is cancelled."
        else:
            admin.remove(job)
            messages.add(f"Job {job.id} ({name}) is removed.", type="info")
            return redirect(view, view.url())
    except (BadStatusError, admin.JobNotFoundError) as e:
        messages.add(f"Nothing done: {e}", type="error")
    else:
        messages.add(text, type="info")
    return redirect(view, view.url(job.id))


def redirect(view: Any, url: str) -> str:
    view.request.response.redirect(url, status=303)
    return ""
