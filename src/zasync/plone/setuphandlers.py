"""Install and uninstall of the add-on (profiles ``zasync.plone:default``
and ``zasync.plone:uninstall``), and applying registry changes.

Install creates the queues and quotas named in the registry (by default the
queue ``''`` with the quota ``default`` of size 1). Uninstall removes the
add-on's registry records and browser layer, and nothing else: the queues
live in the database, shared by every site in it, and the jobs in them
stay readable (and a worker still runs them).
"""

from __future__ import annotations

import logging
from typing import Any

from Acquisition import aq_inner, aq_parent
from plone.base.interfaces import INonInstallable
from zope.component.hooks import getSite
from zope.interface import implementer

from zasync.plone import settings

log = logging.getLogger(__name__)


@implementer(INonInstallable)
class HiddenProfiles:
    def getNonInstallableProfiles(self) -> list[str]:  # noqa: N802 - Plone API
        return ["zasync.plone:uninstall"]


def _site(setup_tool: Any) -> Any:
    return aq_parent(aq_inner(setup_tool))


def post_install(setup_tool: Any) -> None:
    """Create the configured queues and quotas."""
    site = _site(setup_tool)
    queues, quotas = settings.apply_registry(site)
    log.info(
        "zasync installed in %s: queues created %s, quotas set %s",
        "/".join(site.getPhysicalPath()),
        queues or "none",
        quotas or "none",
    )


def post_uninstall(setup_tool: Any) -> None:
    """Say what stays: the queues and their jobs."""
    log.info(
        "zasync uninstalled from %s: its registry records and browser layer "
        "are removed; the queues and their jobs stay in the database (shared "
        "by all sites in it) and stay readable",
        "/".join(_site(setup_tool).getPhysicalPath()),
    )


#: the records whose change re-applies the settings
_WATCHED = {settings.record_name("queues"), settings.record_name("quotas")}


def registry_changed(settings_proxy: Any, event: Any) -> None:
    """A ``zasync.plone.queues`` or ``.quotas`` record changed: create the
    queues and quotas it names, in the same transaction."""
    if getattr(event.record, "__name__", None) not in _WATCHED:
        return
    site = getSite()
    if site is None or getattr(site, "_p_jar", None) is None:
        return
    settings.apply_registry(site)
