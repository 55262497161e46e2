"""Finding Plone jobs by what they call and on which object: the public
way to check for a job already queued (de-duplication, "your document is
number 3 in the queue") without reading a job's argument layout.

``find_jobs(queue, context=doc, func=convert)`` gives the pending jobs of a
queue, in run order, that call ``convert`` on ``doc``; ``find_jobs(quota,
...)`` the jobs holding a quota (running, or claimed to run). A job's
position in its queue is ``list(queue).index(job)``. :func:`plone_call`
tells what one job calls, on what, as whom.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from zasync.job import Job
from zasync.plone.runner import run_as_user
from zasync.plone.sitejob import call_function, call_method


class PloneCall(NamedTuple):
    """What a job queued by the service (or made by zasync.plone.Job)
    calls. ``func`` is the function, or the method's name (a str) for a
    job of a method; ``context_path`` the path of the object it works on
    (the site for a job of a function made by zasync.plone.Job)."""

    func: Any
    context_path: tuple[str, ...]
    site_path: tuple[str, ...]
    user_id: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def plone_call(job: Job) -> PloneCall | None:
    """What ``job`` calls, or None for a job that is not a Plone job (a
    plain zasync job, a batch)."""
    if job.callable is not run_as_user or len(job.args) < 2:
        return None
    origin, func, *args = job.args
    if func in (call_function, call_method) and args:
        func, *args = args
    return PloneCall(
        func,
        tuple(origin.context_path),
        tuple(origin.site_path),
        origin.user_id,
        tuple(args),
        dict(job.kwargs),
    )


def _path(context: Any) -> tuple[str, ...]:
    if isinstance(context, str):
        return tuple(context.split("/"))
    get_path = getattr(context, "getPhysicalPath", None)
    return tuple(get_path() if get_path is not None else context)


def find_jobs(
    jobs: Iterable[Job], *, context: Any = None, func: Any = None
) -> list[Job]:
    """The Plone jobs among ``jobs`` (a Queue: its pending jobs in run
    order; a Quota: the jobs holding it; any iterable of jobs) that work on
    ``context`` (an object, or its physical path as a tuple or
    '/plone/doc') and call ``func``; None matches any."""
    path = None if context is None else _path(context)
    found = []
    for job in jobs:
        call = plone_call(job)
        if call is None:
            continue
        if path is not None and call.context_path != path:
            continue
        if func is not None and call.func != func:
            continue
        found.append(job)
    return found
