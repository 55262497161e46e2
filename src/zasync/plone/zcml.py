"""The ZCML directive ``zasync:schedule``: a schedule that an add-on
declares in its ZCML for one of its GenericSetup profiles::

    <configure xmlns:zasync="http://namespaces.zope.org/zasync">
      <zasync:schedule profile="my.addon:default" name="cleanup"
                       function=".jobs.cleanup" cron="0 3 * * *"
                       user="admin" />
    </configure>

It takes the attributes of a ``<schedule>`` of ``zasync.xml``
(zasync.plone.exportimport) and ``profile``; importing that profile into a
site declares the schedule there, as if the profile's ``zasync.xml`` had
it, and uninstalling the add-on removes it. A mistake is reported when the
ZCML loads, with its file and line.
"""

from __future__ import annotations

from typing import Any

from zope.configuration.fields import Bool, GlobalObject
from zope.interface import Interface
from zope.schema import TextLine

from zasync.callables import callable_name
from zasync.plone import exportimport


class IScheduleDirective(Interface):
    profile = TextLine(
        title="The profile whose import declares it, e.g. my.addon:default"
    )
    name = TextLine(title="The schedule's name, unique in its queue")
    function = GlobalObject(title="The function f(context) each job calls")
    user = TextLine(title="The user the jobs run as (an id, or anonymous)")
    cron = TextLine(title="A cron expression, in timezone", required=False)
    every = TextLine(title="Or a period: 900, 15m, 1.5h, 1d", required=False)
    timezone = TextLine(title="The timezone of cron (default UTC)", required=False)
    context = TextLine(title="The context's path from the site", required=False)
    missed = TextLine(title="once, skip or each", required=False)
    queue = TextLine(title="The queue (default '')", required=False)
    description = TextLine(title="What it does", required=False)
    quotas = TextLine(title="Quota names, space-separated", required=False)
    paused = Bool(title="Declared paused", required=False, default=False)


def schedule(
    _context: Any,
    profile: str,
    name: str,
    function: Any,
    user: str,
    paused: bool = False,
    **options: str | None,
) -> None:
    """The handler of ``zasync:schedule``."""
    profile = profile.removeprefix("profile-")
    if ":" not in profile:
        raise exportimport.ScheduleError(
            f"zasync:schedule {name!r}: profile={profile!r} is not a profile "
            f"id: write the package and the profile's name, e.g. "
            f"profile='my.addon:default'"
        )
    attrs = {
        "name": name,
        "function": callable_name(function),
        "user": user,
        "paused": "true" if paused else "false",
        **{key: value for key, value in options.items() if value is not None},
    }
    entry = exportimport.entry_from(attrs, where=f"zasync:schedule for {profile}")
    _context.action(
        discriminator=("zasync:schedule", profile, entry.queue, entry.name),
        callable=exportimport.add_directive,
        args=(profile, entry),
    )
