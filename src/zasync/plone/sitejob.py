"""``zasync.plone.Job`` and ``zasync.plone.queue``: plone.app.async's
package-level ``Job``, a job made in a Plone site that runs there again,
as the user who made it, and ``queue(job)``, which puts a job in the
default queue.

``Job(callable, *args, **kwargs)`` remembers the current site and user;
the worker calls ``callable(*args, **kwargs)`` with that site as the
current site and that user logged in (no context argument, unlike the
service's jobs). A method of a Zope object (``folder.invokeFactory``) is
kept as the object's path and the method's name, and bound again when the
job runs. The job is an ordinary zasync job calling
:func:`zasync.plone.runner.run_as_user`, so it runs with a request, shows
in the site's control panel and commits as one transaction.

:func:`call_function` and :func:`call_method` are stored in jobs by
reference: this module never moves.
"""

from __future__ import annotations

import inspect
from typing import Any

from zope.component import getUtility
from zope.component.hooks import getSite

from zasync.job import Job as _Job
from zasync.job import check_callable
from zasync.plone.interfaces import IAsyncService
from zasync.plone.runner import find_site, make_origin, run_as_user


def Job(callable: Any, /, *args: Any, **kwargs: Any) -> _Job:  # noqa: N802 - compat name
    """A new job that calls ``callable(*args, **kwargs)`` in the current
    Plone site, as the current user. Raises ValueError outside a site and
    TypeError for what a job cannot store."""
    owner = getattr(callable, "__self__", None)
    if inspect.ismethod(callable) and hasattr(owner, "getPhysicalPath"):
        name = callable.__name__
        origin = make_origin(owner)
        return _Job(run_as_user, origin, call_method, name, *args, **kwargs)
    check_callable(callable)
    site = getSite()
    if site is None:
        raise ValueError(
            "zasync.plone.Job() needs a current Plone site (it runs the job "
            "there again); in a script, call zope.component.hooks.setSite(site)"
        )
    origin = make_origin(find_site(site))
    return _Job(run_as_user, origin, call_function, callable, *args, **kwargs)


def queue(job: Any) -> _Job:
    """Put ``job`` (a Job, or a callable to wrap in a plain one) in the
    default queue of the current site's database, without quota, in the
    caller's transaction; return it."""
    return getUtility(IAsyncService).getQueues()[""].put(job)


def call_function(context: Any, func: Any, /, *args: Any, **kwargs: Any) -> Any:
    """What a ``zasync.plone.Job`` of a function calls in its site: the
    function, without the context (the site) that run_as_user passes."""
    return func(*args, **kwargs)


def call_method(context: Any, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """What a ``zasync.plone.Job`` of a method calls: the method ``name`` of
    ``context``, the object found again by its path."""
    return getattr(context, name)(*args, **kwargs)
