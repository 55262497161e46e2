"""Periodic jobs of a Plone site: schedules whose every run is a Plone job
in the site, on a context, as a named user.

A Plone schedule is a zasync schedule (``queue.schedules``, see
zasync.schedules) of :func:`zasync.plone.runner.run_as_user` whose first
argument is a :class:`ScheduleOrigin` (the site, context and user of its
runs, and the profile that declared it) and whose second is the function,
kept by its dotted name: each run is a job like those of the Plone
service, shown in the site's control panel, that calls
``function(context)`` as the user, with the roles that user has when it
runs, and notifies IJobSuccess or IJobFailure when it ends
(:func:`add_event_callback`).

Schedules are declared by add-ons in ``zasync.xml`` (zasync.plone.
exportimport) or in code with :func:`declare`; :class:`ScheduleOrigin` is
stored in schedules and jobs by reference: this module never moves.
"""

from __future__ import annotations

import datetime
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from AccessControl.SpecialUsers import nobody

from zasync import hooks
from zasync import schedules as schedules_core
from zasync.callables import ByName, callable_name, check_callable
from zasync.interfaces import ConfigurationError
from zasync.job import Job
from zasync.plone.events import notify_finished
from zasync.plone.location import get_queues
from zasync.plone.runner import JobOrigin, run_as_user
from zasync.plone.settings import DEFAULT_QUOTA

log = logging.getLogger(__name__)

#: the user name that runs a schedule as anonymous
ANONYMOUS = "anonymous"


class ScheduleError(schedules_core.ScheduleError):
    """A schedule that cannot be declared as asked; the message names the
    schedule, the value that is wrong and what to do instead."""


class ScheduleOrigin(JobOrigin):
    """A JobOrigin that also names the GenericSetup profile that declared
    the schedule (``my.addon:default``; None for a schedule declared in
    code), so that uninstalling the add-on removes it."""

    profile: str | None = None
    #: the declaration it was made from (its fields but the name and the
    #: paused state), to tell a declaration imported again unchanged
    declared: tuple = ()

    def __init__(
        self, *, profile: str | None = None, declared: tuple = (), **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.profile = profile
        self.declared = tuple(declared)

    def __repr__(self) -> str:
        where = f"declared by {self.profile}" if self.profile else "declared in code"
        return f"<ScheduleOrigin {'/'.join(self.context_path)} as {self.user}, {where}>"


@dataclass(frozen=True)
class Declaration:
    """What a site asks of one schedule: run ``function`` (a dotted name)
    with the context at ``context`` (a path from the site, ``/`` for the
    site itself) as ``user`` (a user id, or ``anonymous``), at the times of
    ``cron`` or every ``every``."""

    name: str
    function: str
    user: str
    context: str = "/"
    cron: str | None = None
    every: datetime.timedelta | None = None
    timezone: str = "UTC"
    missed: str = "once"
    queue: str = ""
    description: str = ""
    quota_names: tuple[str, ...] = (DEFAULT_QUOTA,)
    #: the state of a schedule created now; an existing one keeps its own
    paused: bool = False

    def fingerprint(self) -> tuple:
        """The fields that define the schedule's runs (not its name or
        state), as plain values."""
        every = self.every.total_seconds() if self.every is not None else None
        return (
            self.function,
            self.user,
            self.context,
            self.cron,
            every,
            self.timezone,
            self.missed,
            self.queue,
            self.description,
            self.quota_names,
        )


def origin_of(schedule: Any) -> JobOrigin | None:
    """The origin of a Plone schedule's runs; None for a schedule made
    without zasync.plone."""
    args = getattr(schedule, "args", ())
    if getattr(schedule, "func", None) is run_as_user and args:
        if isinstance(args[0], JobOrigin):
            return args[0]
    return None


def profile_of(schedule: Any) -> str | None:
    return getattr(origin_of(schedule), "profile", None)


def function_name(schedule: Any) -> str:
    """What a schedule's runs call: the function run in the site, for a
    Plone schedule."""
    if origin_of(schedule) is not None and len(schedule.args) >= 2:
        return callable_name(schedule.args[1])
    return callable_name(schedule.func)


def in_site(schedule: Any, *, site_path: tuple[str, ...], database: str) -> bool:
    origin = origin_of(schedule)
    return (
        origin is not None
        and tuple(origin.site_path) == tuple(site_path)
        and origin.database in ("", database)
    )


def iter_schedules(queues: Any) -> Iterator[tuple[str, Any]]:
    """``(queue name, schedule)`` of every queue's schedules, by queue then
    by name."""
    for queue_name in sorted(queues):
        queue = queues[queue_name]
        for name in sorted(queue.schedules):
            yield queue_name, queue.schedules[name]


def _site_identity(site: Any) -> tuple[tuple[str, ...], str]:
    return tuple(site.getPhysicalPath()), site._p_jar.db().database_name


def site_schedules(site: Any) -> list[tuple[str, Any]]:
    """``(queue name, schedule)`` of the schedules declared in ``site``."""
    site_path, database = _site_identity(site)
    return [
        (queue_name, schedule)
        for queue_name, schedule in iter_schedules(get_queues(site._p_jar))
        if in_site(schedule, site_path=site_path, database=database)
    ]


# -- declaring -----------------------------------------------------------------


def resolve_function(dotted: str) -> Callable[..., Any]:
    """The function named ``dotted`` (``my.addon.jobs.cleanup``); ScheduleError
    when it cannot be imported or stored in a job."""
    module_name = dotted.strip()
    found: Any = None
    rest: list[str] = []
    while module_name and found is None:
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise ScheduleError(
                    f"function {dotted!r}: importing it fails: {e}"
                ) from e
            module_name, _, last = module_name.rpartition(".")
            rest.insert(0, last)
        except Exception as e:  # its module is broken: say how
            raise ScheduleError(
                f"function {dotted!r}: importing {module_name} fails: "
                f"{type(e).__name__}: {e}"
            ) from e
    if found is None or not rest:
        raise ScheduleError(
            f"function {dotted!r} cannot be imported: give the dotted name of a "
            f"module-level function, e.g. my.addon.jobs.cleanup"
        )
    try:
        for part in rest:
            found = getattr(found, part)
    except AttributeError:
        raise ScheduleError(
            f"function {dotted!r}: module {module_name} has no "
            f"{'.'.join(rest)}; check the spelling of the dotted name"
        ) from None
    try:
        check_callable(found)
    except TypeError as e:
        raise ScheduleError(f"function {dotted!r}: {e}") from None
    func: Callable[..., Any] = found
    return func


def find_user(site: Any, user: str) -> tuple[tuple[str, ...] | None, str | None]:
    """``(user folder path, user id)`` of ``user`` (an id or a login name),
    looked for in the site's user folder, then in the Zope root's;
    ``(None, None)`` for ``anonymous``. ScheduleError if not found."""
    if user == ANONYMOUS:
        return None, None
    if not user:
        raise ScheduleError(
            "no user: name the user whose roles the runs have (user='admin'), "
            "or user='anonymous'"
        )
    folders = [site.acl_users, site.getPhysicalRoot().acl_users]
    for folder in folders:
        found = folder.getUserById(user) or folder.getUser(user)
        if found is not None and found is not nobody:
            return tuple(folder.getPhysicalPath()), found.getId()
    raise ScheduleError(
        f"user {user!r} exists neither in the site's user folder nor in the "
        f"Zope root's: create the user first, or name an existing one "
        f"(user='admin'), or user='anonymous'"
    )


def _context_path(site: Any, context: str) -> tuple[str, ...]:
    site_path = tuple(site.getPhysicalPath())
    parts = tuple(p for p in context.strip().split("/") if p)
    if parts[: len(site_path) - 1] == site_path[1:] and len(site_path) > 1:
        parts = parts[len(site_path) - 1 :]  # an absolute path in the site
    path = site_path + parts
    obj = site.unrestrictedTraverse(parts, None) if parts else site
    if obj is None or tuple(obj.getPhysicalPath()) != path:
        raise ScheduleError(
            f"context {context!r} is not in the site {'/'.join(site_path)}: "
            f"give the path of an existing object from the site, e.g. "
            f"context='/' (the site) or context='/news'"
        )
    return path


def make_origin(
    site: Any, declaration: Declaration, *, profile: str | None
) -> ScheduleOrigin:
    user_folder_path, user_id = find_user(site, declaration.user)
    site_path, database = _site_identity(site)
    return ScheduleOrigin(
        database=database,
        site_path=site_path,
        context_path=_context_path(site, declaration.context),
        user_folder_path=user_folder_path,
        user_id=user_id,
        profile=profile,
        declared=declaration.fingerprint(),
    )


def _owner_clash(existing: Any, origin: ScheduleOrigin, queue: str) -> str | None:
    """Why ``existing`` (a schedule of the same name) is not ours to
    replace, or None."""
    theirs = origin_of(existing)
    where = f"queue {queue!r}" if queue else "the default queue"
    if theirs is None:
        return f"{where} has a schedule of that name made without zasync.plone"
    if (theirs.site_path, theirs.database) != (origin.site_path, origin.database):
        return (
            f"{where} has a schedule of that name for the site "
            f"{'/'.join(theirs.site_path)} (the queues are shared by the "
            f"sites of a database)"
        )
    profile = getattr(theirs, "profile", None)
    if profile and origin.profile and product(profile) != product(origin.profile):
        return f"the profile {profile} declared a schedule of that name"
    return None


def declare(site: Any, declaration: Declaration, *, profile: str | None = None) -> str:
    """Create or update the schedule ``declaration`` names in the site's
    queues, in the caller's transaction: ``created``, ``updated`` or
    ``unchanged``. An existing schedule keeps its paused state; a changed
    one keeps its name and starts from its new times. Raises ScheduleError
    naming what is wrong."""
    name = declaration.name
    queues = get_queues(site._p_jar)
    queue = queues.get(declaration.queue)
    if queue is None:
        raise ScheduleError(
            f"schedule {name!r}: there is no queue {declaration.queue!r} "
            f"(queues: {sorted(queues)}); add it to the registry record "
            f"zasync.plone.queues, or use queue=''"
        )
    func = resolve_function(declaration.function)
    origin = make_origin(site, declaration, profile=profile)
    existing = queue.schedules[name] if name in queue.schedules else None
    if existing is not None:
        clash = _owner_clash(existing, origin, declaration.queue)
        if clash:
            raise ScheduleError(
                f"schedule {name!r}: {clash}; give this one another name"
            )
    stored = ByName(func.__module__, func.__qualname__)
    if existing is not None and tuple(existing.args) == (origin, stored):
        return "unchanged"
    paused = declaration.paused if existing is None else existing.paused
    if existing is not None:
        queue.schedules.remove(name)
    try:
        queue.schedules.add(
            name,
            run_as_user,
            origin,
            stored,
            cron=declaration.cron,
            every=declaration.every,
            timezone=declaration.timezone,
            missed=declaration.missed,
            description=declaration.description or None,
            quota_names=declaration.quota_names,
            paused=paused,
        )
    except TypeError as e:
        raise ScheduleError(str(e)) from None
    return "created" if existing is None else "updated"


def product(profile: str) -> str:
    """The package of a profile id: ``my.addon`` for ``profile-my.addon:default``."""
    return profile.removeprefix("profile-").partition(":")[0]


def remove(site: Any, name: str, *, queue: str = "") -> bool:
    """Remove the schedule ``name`` of ``queue`` if it is this site's;
    whether one was removed."""
    site_path, database = _site_identity(site)
    found = get_queues(site._p_jar).get(queue)
    if found is None or name not in found.schedules:
        return False
    if not in_site(found.schedules[name], site_path=site_path, database=database):
        return False
    found.schedules.remove(name)
    return True


def remove_declared_by(site: Any, package: str) -> list[str]:
    """Remove the schedules of ``site`` that a profile of ``package``
    declared; their names (``queue/name`` outside the default queue)."""
    removed = []
    for queue_name, schedule in site_schedules(site):
        declared = profile_of(schedule)
        if declared and product(declared) == package:
            get_queues(site._p_jar)[queue_name].schedules.remove(schedule.name)
            removed.append(
                f"{queue_name}/{schedule.name}" if queue_name else schedule.name
            )
    return removed


def site_removed(site: Any, event: Any) -> None:
    """A Plone site (or a folder holding one) is being deleted: remove the
    site's schedules, whose runs would fail from now on (the jobs they
    started stay in the records)."""
    if getattr(site, "_p_jar", None) is None:
        return
    try:
        found = site_schedules(site)
    except ConfigurationError:  # no queues in this database: no schedules
        return
    queues = get_queues(site._p_jar)
    for queue_name, schedule in found:
        queues[queue_name].schedules.remove(schedule.name)
    if found:
        log.info(
            "removed the schedules of the deleted site %s: %s",
            "/".join(site.getPhysicalPath()),
            ", ".join(schedule.name for _, schedule in found),
        )


def add_event_callback(queue: Any, job: Any) -> None:
    """``hooks.on_queued``: a job that a Plone schedule starts notifies
    IJobSuccess or IJobFailure when it ends, in its site, as the service's
    jobs do (zasync.plone.events)."""
    if job.callable is not run_as_user or schedules_core.schedule_slot(job) is None:
        return
    origin = job.args[0] if job.args else None
    if not isinstance(origin, ScheduleOrigin):
        return
    site = JobOrigin(
        database=origin.database,
        site_path=origin.site_path,
        context_path=origin.site_path,
        site_url=origin.site_url,
    )
    job.addCallback(Job(notify_finished, site, job))


hooks.on_queued(add_event_callback)
