"""The GenericSetup import step ``zasync-schedules``: the periodic jobs an
add-on declares in the file ``zasync.xml`` of its profile::

    <schedules>
      <schedule name="cleanup" function="my.addon.jobs.cleanup"
                cron="0 3 * * *" timezone="Europe/Amsterdam" user="admin"
                context="/" description="Remove expired drafts" />
    </schedules>

Importing the profile creates each schedule, or updates it when it exists
(importing again changes nothing more: no duplicate, and a paused schedule
stays paused); ``remove="true"`` on a ``<schedule>`` removes it.

Each schedule remembers the profile that declared it. When the add-on is
uninstalled (its ``<package>:uninstall`` profile is imported, as Plone's
add-ons control panel does), the schedules that the package's profiles
declared in the site are removed. The profile being imported is known from
GenericSetup's events around each import (:func:`profile_import_started`,
:func:`profile_imported`).

A mistake in the file stops the import with a ScheduleError that names the
file, the schedule and what to write instead; nothing of the import is
committed.

The ZCML directive ``zasync:schedule`` (zasync.plone.zcml) declares a
schedule for a profile: the import step applies it with the profile's
``zasync.xml``.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
from typing import Any
from xml.etree import ElementTree

from Acquisition import aq_inner, aq_parent
from zope.testing.cleanup import addCleanUp

from zasync.interfaces import ConfigurationError
from zasync.plone import schedules
from zasync.plone.schedules import Declaration, ScheduleError
from zasync.plone.settings import DEFAULT_QUOTA
from zasync.schedules import ScheduleError as CoreScheduleError

log = logging.getLogger(__name__)

#: the file the import step reads in a profile
FILENAME = "zasync.xml"
#: the attributes of ``<schedule>``: required first
REQUIRED = ("name", "function", "user")
OPTIONAL = (
    "cron",
    "every",
    "timezone",
    "context",
    "missed",
    "queue",
    "description",
    "quotas",
    "paused",
    "remove",
)
#: a period: a number of seconds, or a number with the unit s, m, h or d
_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0", "")


class _Imports(threading.local):
    """The profiles being imported in this thread, innermost last."""

    def __init__(self) -> None:
        self.profiles: list[str | None] = []


_imports = _Imports()


def profile_import_started(event: Any) -> None:
    """IBeforeProfileImportEvent: remember the profile whose steps run."""
    _imports.profiles.append(event.profile_id)


def profile_imported(event: Any) -> None:
    """IProfileImportedEvent: forget the profile; after the full import of
    an uninstall profile (``my.addon:uninstall``), remove the schedules the
    package's profiles declared in the site."""
    if _imports.profiles:
        _imports.profiles.pop()
    profile = _profile_id(event.profile_id)
    if not (event.full_import and profile and profile.endswith(":uninstall")):
        return
    site = aq_parent(aq_inner(event.tool))
    if getattr(site, "_p_jar", None) is None:
        return
    try:
        removed = schedules.remove_declared_by(site, schedules.product(profile))
    except ConfigurationError:  # no queues in this database: no schedules
        return
    if removed:
        log.info(
            "%s: removed the schedules %s from %s",
            profile,
            ", ".join(removed),
            "/".join(site.getPhysicalPath()),
        )


def _profile_id(profile_id: str | None) -> str | None:
    if not profile_id:
        return None
    return profile_id.removeprefix("profile-")


def current_profile() -> str | None:
    """The profile whose import steps run now in this thread, if known."""
    return _profile_id(_imports.profiles[-1]) if _imports.profiles else None


# -- the file ------------------------------------------------------------------


class Entry:
    """One ``<schedule>`` of a file: a declaration, or a removal."""

    def __init__(self, declaration: Declaration | None, *, name: str, queue: str):
        self.declaration = declaration
        self.name = name
        self.queue = queue

    @property
    def remove(self) -> bool:
        return self.declaration is None


def parse(data: bytes | str, *, where: str = FILENAME) -> list[Entry]:
    """The schedules of a ``zasync.xml`` text; ScheduleError naming
    ``where`` (the file), the schedule and the fix."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise ScheduleError(f"{where} is not well-formed XML: {e}") from None
    if root.tag != "schedules":
        raise ScheduleError(
            f"{where}: the root element is <{root.tag}>; write <schedules> "
            f"with a <schedule .../> element per schedule"
        )
    entries: list[Entry] = []
    seen: set[tuple[str, str]] = set()
    for number, element in enumerate(root, 1):
        entry = _entry(element, where=f"{where}, schedule {number}")
        key = (entry.queue, entry.name)
        if key in seen:
            raise ScheduleError(
                f"{where}: schedule {entry.name!r} is declared twice; give "
                f"each schedule of a queue its own name"
            )
        seen.add(key)
        entries.append(entry)
    return entries


def _entry(element: Any, *, where: str) -> Entry:
    if element.tag != "schedule":
        raise ScheduleError(
            f"{where}: unknown element <{element.tag}>; <schedules> holds "
            f"<schedule .../> elements only"
        )
    return entry_from(dict(element.attrib), where=where)


def entry_from(attrs: dict[str, str], *, where: str) -> Entry:
    """The schedule the attributes of a ``<schedule>`` declare (or remove);
    ScheduleError naming ``where``, the schedule and the fix."""
    name = attrs.get("name", "").strip()
    if not name:
        raise ScheduleError(f'{where}: a schedule needs a name, e.g. name="cleanup"')
    where = f"{where} ({name!r})"
    unknown = sorted(set(attrs) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ScheduleError(
            f"{where}: unknown attribute {unknown[0]!r}; a schedule takes "
            f"{', '.join(REQUIRED + OPTIONAL)}"
        )
    queue = attrs.get("queue", "")
    if _flag(attrs, "remove", where=where):
        return Entry(None, name=name, queue=queue)
    for required in REQUIRED:
        if not attrs.get(required, "").strip():
            raise ScheduleError(
                f"{where}: the attribute {required!r} is missing; " + _HINTS[required]
            )
    cron, every = attrs.get("cron"), attrs.get("every")
    if (cron is None) == (every is None):
        raise ScheduleError(
            f'{where}: give either cron="0 3 * * *" (minute hour day month '
            f'weekday) or every="15m" (a period), not '
            + ("both" if cron is not None else "neither")
        )
    quotas = attrs.get("quotas")
    declaration = Declaration(
        name=name,
        function=attrs["function"].strip(),
        user=attrs["user"].strip(),
        context=attrs.get("context", "/"),
        cron=cron,
        every=_period(every, where=where) if every is not None else None,
        timezone=attrs.get("timezone", "UTC").strip(),
        missed=attrs.get("missed", "once").strip(),
        queue=queue,
        description=" ".join(attrs.get("description", "").split()),
        quota_names=(tuple(quotas.split()) if quotas is not None else (DEFAULT_QUOTA,)),
        paused=_flag(attrs, "paused", where=where),
    )
    return Entry(declaration, name=name, queue=queue)


_HINTS = {
    "function": 'name the function to run, e.g. function="my.addon.jobs.cleanup"',
    "user": 'name the user the runs run as, e.g. user="admin" (or user="anonymous")',
}


def _flag(attrs: dict[str, str], name: str, *, where: str) -> bool:
    value = attrs.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ScheduleError(
        f'{where}: {name}={attrs[name]!r}: write {name}="true" or "false"'
    )


def _period(value: str, *, where: str) -> datetime.timedelta:
    match = _PERIOD.match(value)
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ScheduleError(
            f"{where}: every={value!r}: give a period above zero in seconds "
            f'(every="900") or with a unit s, m, h or d (every="15m")'
        )
    return datetime.timedelta(seconds=seconds)


# -- the import step -------------------------------------------------------------


#: the schedules of ``zasync:schedule`` directives, by profile id, then by
#: (queue, name), in the order of the ZCML
_directives: dict[str, dict[tuple[str, str], Entry]] = {}
addCleanUp(_directives.clear)


def add_directive(profile: str, entry: Entry) -> None:
    """Declare ``entry`` for ``profile`` as a ``zasync:schedule`` directive
    does (the ZCML machinery refuses the same name twice)."""
    _directives.setdefault(profile, {})[(entry.queue, entry.name)] = entry


def import_schedules(context: Any) -> str | None:
    """The import step: apply the schedules of the profile's ``zasync.xml``,
    if it has one, and of the ``zasync:schedule`` directives naming the
    profile."""
    data = context.readDataFile(FILENAME)
    profile = current_profile()
    where = f"{profile}/{FILENAME}" if profile else FILENAME
    entries = [(where, e) for e in parse(data, where=where)] if data is not None else []
    in_file = {(e.queue, e.name) for _, e in entries}
    for key, entry in _directives.get(profile or "", {}).items():
        if key in in_file:
            raise ScheduleError(
                f"{where}: schedule {entry.name!r} is declared there and by a "
                f"zasync:schedule directive for {profile}: keep one of them"
            )
        entries.append((f"zasync:schedule for {profile}", entry))
    if not entries:
        return None
    site = context.getSite()
    done: dict[str, list[str]] = {}
    for source, entry in entries:
        try:
            if entry.declaration is None:
                found = schedules.remove(site, entry.name, queue=entry.queue)
                outcome = "removed" if found else "absent"
            else:
                outcome = schedules.declare(site, entry.declaration, profile=profile)
        except CoreScheduleError as e:  # this module's, or zasync.schedules'
            raise ScheduleError(f"{source}: {e}") from None
        done.setdefault(outcome, []).append(entry.name)
    summary = "; ".join(f"{what}: {', '.join(names)}" for what, names in done.items())
    context.getLogger("zasync-schedules").info("%s: %s", profile, summary)
    return f"zasync schedules of {profile or where}: {summary}"
