"""Contracts of the Plone integration: the service, its events, the
settings in the registry, the worker roles and the errors a Plone job can
fail with.

The names ``IAsyncService``, ``IAsyncDatabase``, ``IJobSuccess`` and
``IJobFailure`` and the service's method signatures are those of
plone.app.async: code written for it ports by changing imports only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope import schema
from zope.interface import Attribute, Interface, implementer
from zope.interface.interfaces import IObjectEvent

from zasync.interfaces import ZasyncError

if TYPE_CHECKING:
    from zasync.job import Job

# -- the service ---------------------------------------------------------------


class IAsyncService(Interface):
    """Queues Plone jobs: ``func(context, *args, **kwargs)`` run later by a
    worker, in the context's site, as the user who queued it.

    Every ``queue*`` method joins the caller's transaction (an aborted
    request queues nothing) and returns the queued job. ``queue`` may be a
    queue name or a ``zasync.queue.Queue``; ``quota_names=None`` means
    ``('default',)`` and ``()`` means no quota.
    """

    def getQueues():  # noqa: N802 - compat name
        """The ``zasync.queue.Queues`` of the site's database (of the
        ``async`` database when one is mounted beside the main one)."""

    def queueJob(func, context, *args, **kwargs):  # noqa: N802 - compat name
        """Queue ``func(context, *args, **kwargs)`` in the default queue
        under the ``default`` quota."""

    def queueJobWithDelay(begin_by, begin_after, func, context, *args, **kwargs):  # noqa: N802 - compat name
        """As queueJob, to start after ``begin_after`` (a timezone-aware
        datetime, or None) and fail unless started within ``begin_by`` (a
        timedelta, or None) of it."""

    def queueJobInQueue(queue, quota_names, func, context, *args, **kwargs):  # noqa: N802 - compat name
        """Queue a job in ``queue`` under ``quota_names``."""

    def queueJobInQueueWithDelay(  # noqa: N802 - compat name
        begin_by, begin_after, queue, quota_names, func, context, *args, **kwargs
    ):
        """Queue a job in ``queue`` under ``quota_names``, with a delay."""

    def queueSerialJobs(*job_infos):  # noqa: N802 - compat name
        """Queue jobs made by ``makeJob`` to run one after another; return
        the batch job, whose result is the list of its jobs."""

    def queueParallelJobs(*job_infos):  # noqa: N802 - compat name
        """Queue jobs made by ``makeJob`` to run at the same time (as far as
        their quota allows); return the batch job."""

    def queueSerialJobsInQueue(queue, quota_names, *job_infos):  # noqa: N802 - compat name
        """As queueSerialJobs, in ``queue``; each job of the batch holds
        ``quota_names`` while it runs (the batch itself holds none)."""

    def queueParallelJobsInQueue(queue, quota_names, *job_infos):  # noqa: N802 - compat name
        """As queueParallelJobs, in ``queue``; each job of the batch holds
        ``quota_names`` while it runs (the batch itself holds none)."""


class IAsyncDatabase(Interface):
    """The ZODB database (``ZODB.DB``) that holds the queues: the main
    database, or the one named ``async`` in a multi-database set-up.
    Registered as a utility when Zope opens its databases, as plone.app.async
    did: ``getUtility(IAsyncDatabase).open()``."""


# -- events ------------------------------------------------------------------


class IJobSuccess(IObjectEvent):
    """A job queued by the service completed; ``object`` is its result,
    ``job`` the job. Notified in a transaction of its own after the job's
    transaction committed, before the job becomes COMPLETED."""

    job = Attribute("The job")


class IJobFailure(IObjectEvent):
    """A job queued by the service failed; ``object`` is the Failure,
    ``job`` the job. Notified as IJobSuccess."""

    job = Attribute("The job")


@implementer(IJobSuccess)
class JobSuccess:
    def __init__(self, object: Any, job: Job | None = None):  # "object": compat
        self.object = object
        self.job = job

    def __repr__(self) -> str:
        return f"<JobSuccess {self.job!r}: {self.object!r}>"


@implementer(IJobFailure)
class JobFailure:
    def __init__(self, object: Any, job: Job | None = None):  # "object": compat
        self.object = object
        self.job = job

    def __repr__(self) -> str:
        return f"<JobFailure {self.job!r}: {self.object!r}>"


# -- settings ----------------------------------------------------------------


class IZasyncSettings(Interface):
    """Registry records (prefix ``zasync.plone``). Queues and quotas are
    created when the add-on is installed and whenever these records change;
    a name removed from them leaves its queue or quota in place (jobs may
    still wait in it)."""

    queues = schema.List(
        title="Queues",
        description="Names of the queues to create ('' is the default queue).",
        value_type=schema.TextLine(),
        default=[""],
        required=False,
    )

    quotas = schema.Dict(
        title="Quotas",
        description=(
            "Quota name -> size, created in every queue above. The service "
            "puts its jobs under the 'default' quota: with size 1 they run "
            "one at a time, in the order they were queued."
        ),
        key_type=schema.TextLine(),
        value_type=schema.Int(min=1),
        default={"default": 1},
        required=False,
    )

    long_running_seconds = schema.Float(
        title="Running long after",
        description=(
            "Seconds after which the control panel and @async-workers flag "
            "a running job as running long."
        ),
        default=3600.0,
        min=1.0,
        required=False,
    )

    public_url = schema.TextLine(
        title="Public URL of the site",
        description=(
            "The URL at which visitors reach this site (for example "
            "https://www.example.com), used by absolute_url() in jobs. Empty: "
            "the URL of the site in the request that queued the job."
        ),
        default="",
        required=False,
    )


class IZasyncPloneLayer(Interface):
    """Browser layer of zasync.plone, present on requests of sites where the
    add-on is installed (also on the request a job runs with)."""


# -- worker roles --------------------------------------------------------------


class IWorkerRole(Interface):
    """What this Zope process does, as set by one of the ZCML files
    ``single_db_instance.zcml``, ``single_db_worker.zcml``,
    ``multi_db_instance.zcml`` or ``multi_db_worker.zcml``. Without one, the
    process only queues, and the queues live in the ``async`` database when
    one is mounted, else in the main one."""

    name = Attribute("The name of the ZCML file, without .zcml")
    multi_db = Attribute("True: the queues live in the database named 'async'")
    worker = Attribute("True: start a dispatcher when the process starts")


# -- errors ------------------------------------------------------------------


class PloneJobError(ZasyncError):
    """A Plone job could not set up the environment it runs in."""


class SiteNotFoundError(PloneJobError):
    """The Plone site of a job is gone (deleted or renamed since the job was
    queued)."""


class ContextNotFoundError(PloneJobError):
    """The context object of a job is gone (deleted or moved since the job
    was queued)."""


class UserNotFoundError(PloneJobError):
    """The user who queued a job (or the user folder it came from) is gone."""
