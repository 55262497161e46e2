"""Running a Plone job in a worker: the environment a web request would
give it.

A job queued by the service calls :func:`run_as_user`, which finds the site
and the context again by path, sets the site, builds a request, logs in the
user who queued the job (found again by id, with that user's roles as they
are now), calls the function and restores the thread as it found it. It
never commits: the worker commits the function's writes, the job's result
and its status in one transaction.

:class:`JobOrigin` and :func:`run_as_user` are stored in jobs by reference:
this module never moves, and JobOrigin's attributes all have class-level
defaults so that jobs queued by older versions load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from AccessControl.SecurityManagement import (
    getSecurityManager,
    newSecurityManager,
    setSecurityManager,
)
from AccessControl.SpecialUsers import nobody
from Acquisition import aq_chain, aq_inner
from Products.CMFCore.indexing import processQueue
from Products.CMFCore.interfaces import ISiteRoot
from zope.component.hooks import getSite, setSite
from zope.event import notify
from zope.globalrequest import getRequest, setRequest
from zope.traversing.interfaces import BeforeTraverseEvent

from zasync import local
from zasync.interfaces import NotInJobError
from zasync.job import callable_name
from zasync.plone import request as requests
from zasync.plone import settings
from zasync.plone.interfaces import ContextNotFoundError, SiteNotFoundError
from zasync.plone.security import capture_user, login_again


class JobOrigin:
    """Where and as whom a Plone job runs; stored by value in the job's
    arguments (paths and ids, never objects)."""

    #: the name of the site's database (``main`` in a Zope server)
    database: str = ""
    site_path: tuple = ()
    context_path: tuple = ()
    #: None for a job queued by anonymous
    user_folder_path: tuple | None = None
    user_id: str | None = None
    #: the site's URL in the request that queued the job (http... or None)
    site_url: str | None = None

    def __init__(
        self,
        *,
        database: str,
        site_path: tuple,
        context_path: tuple,
        user_folder_path: tuple | None = None,
        user_id: str | None = None,
        site_url: str | None = None,
    ):
        self.database = database
        self.site_path = tuple(site_path)
        self.context_path = tuple(context_path)
        self.user_folder_path = (
            tuple(user_folder_path) if user_folder_path is not None else None
        )
        self.user_id = user_id
        self.site_url = site_url

    @property
    def user(self) -> str:
        return "anonymous" if self.user_id is None else repr(self.user_id)

    def __repr__(self) -> str:
        return f"<JobOrigin {'/'.join(self.context_path)} as {self.user}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobOrigin) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # a mutable value object


def find_site(context: Any) -> Any:
    """The Plone site ``context`` is in (the nearest site root in its
    acquisition chain, else the current site); ValueError if none."""
    for obj in aq_chain(aq_inner(context)):
        if ISiteRoot.providedBy(obj):
            return obj
    site = getSite()
    if site is not None and ISiteRoot.providedBy(site):
        return site
    raise ValueError(
        f"{context!r} is not inside a Plone site: the context of a Plone job "
        f"must be the site or an object in it"
    )


def make_origin(context: Any, *, as_user: bool = True) -> JobOrigin:
    """The origin of a job on ``context`` queued now by the current user
    (by anonymous when ``as_user`` is false). Raises TypeError for a context
    without a physical path, ValueError outside a site or for a user who
    could not be found again."""
    get_path = getattr(context, "getPhysicalPath", None)
    if get_path is None:
        raise TypeError(
            f"the context of a Plone job must be a Zope object with a "
            f"physical path (a content item, a folder, the site); got "
            f"{context!r}"
        )
    site = find_site(context)
    jar = site._p_jar
    if jar is None:
        raise ValueError(f"the site {site!r} is not in a database")
    user_folder_path, user_id = capture_user() if as_user else (None, None)
    return JobOrigin(
        database=jar.db().database_name,
        site_path=site.getPhysicalPath(),
        context_path=get_path(),
        user_folder_path=user_folder_path,
        user_id=user_id,
        site_url=_site_url(site),
    )


def _site_url(site: Any) -> str | None:
    try:
        url = site.absolute_url()
    except Exception:  # no request to compute it with: no URL to keep
        return None
    return url if url.startswith(("http://", "https://")) else None


def _find(app: Any, path: tuple, *, error: type[Exception], what: str) -> Any:
    obj = app.unrestrictedTraverse(path, None)
    # Acquisition could find a namesake further up: insist on the path.
    if obj is None or tuple(obj.getPhysicalPath()) != tuple(path):
        raise error(
            f"{what} {'/'.join(path) or '/'} of this job is gone (deleted, "
            f"moved or renamed since the job was queued)"
        )
    return obj


def _main_connection(conn: Any, database: str) -> Any:
    if not database or conn.db().database_name == database:
        return conn
    return conn.get_connection(database)


@contextlib.contextmanager
def plone_environment(
    conn: Any, *, origin: JobOrigin, as_user: bool = True
) -> Iterator[Any]:
    """Within the block: the origin's site is the current site, a request
    to it is the current request, the origin's user (anonymous unless
    ``as_user``) the current user; yields the context. ``conn`` is a
    connection of the worker (to any database of the site's
    multi-database). Everything is restored on leaving.

    Raises SiteNotFoundError, ContextNotFoundError or UserNotFoundError
    naming what is gone."""
    old_site, old_request = getSite(), getRequest()
    old_security = getSecurityManager()
    request = requests.make_request()
    try:
        main = _main_connection(conn, origin.database)
        app = main.root().get("Application")
        if app is None:
            raise SiteNotFoundError(
                f"the database {origin.database!r} holds no Zope application, "
                f"so the site {'/'.join(origin.site_path)} of this job is gone"
            )
        app = requests.wrap_in_request(app, request=request)
        site = _find(
            app, origin.site_path, error=SiteNotFoundError, what="the Plone site"
        )
        setSite(site)
        setRequest(request)
        url = settings.public_url() or origin.site_url
        if url:
            requests.publish_site_at(request, app=app, site=site, url=url)
        else:
            requests.publish_site(request, app=app, site=site)
        notify(BeforeTraverseEvent(site, request))
        if as_user:
            login_again(
                app,
                user_folder_path=origin.user_folder_path,
                user_id=origin.user_id,
                request=request,
            )
        else:
            newSecurityManager(request, nobody)
        yield _find(
            app, origin.context_path, error=ContextNotFoundError, what="the context"
        )
    finally:
        # an interruption (a cancel or timeout the job did not check for)
        # must not leave this thread's user and site to the next job
        with local.shielded():
            request.close()
            setSecurityManager(old_security)
            setSite(old_site)
            setRequest(old_request)


def _connection() -> Any:
    """The connection the running job was loaded in; outside a worker (a
    job called directly, in tests), the current site's."""
    try:
        return local.getJob()._p_jar
    except NotInJobError:
        site = getSite()
        if site is None or site._p_jar is None:
            raise
        return site._p_jar


def run_as_user(origin: JobOrigin, func: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Call ``func(context, *args, **kwargs)`` in the environment of
    ``origin`` (see :func:`plone_environment`) and return its result."""
    with plone_environment(_connection(), origin=origin) as context:
        result = func(context, *args, **kwargs)
        # Index now, while the site and the user are set, as a web request
        # would at its commit (the worker commits after we leave).
        processQueue()
        return result


def iter_origins(job: Any) -> Iterator[JobOrigin]:
    """The origins of a service job, or of the members of a batch."""
    if job.callable is run_as_user:
        yield job.args[0]
    for member in getattr(job, "jobs", ()):
        yield from iter_origins(member)


def _describe(job: Any) -> str:
    """What a Plone job calls: the wrapped function, not this wrapper."""
    return callable_name(job.args[1])


run_as_user.zasync_describe = _describe  # type: ignore[attr-defined]  # a hook
