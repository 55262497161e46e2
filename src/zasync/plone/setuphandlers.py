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
        "zasync installed in %s: %s",
        "/".join(site.getPhysicalPath()),
        describe_setup(created_queues=queues, changed_quotas=quotas),
    )


def describe_setup(*, created_queues: list[str], changed_quotas: list[str]) -> str:
    """What the registry asks for, and which of it was created now (the
    rest existed): ``queues (default) (created now), quota default of 1 on
    each (existed)``."""
    names = settings.configured_queues()
    quotas = settings.configured_quotas()
    queues_text = ", ".join(repr(n) if n else "(default)" for n in names)
    queues_state = "created now" if created_queues else "existed"
    if len(created_queues) not in (0, len(names)):
        queues_state = "created now: " + ", ".join(
            repr(n) if n else "(default)" for n in created_queues
        )
    if not quotas:
        return f"queues {queues_text} ({queues_state}), no quotas"
    quotas_text = ", ".join(f"{q} of {size}" for q, size in quotas.items())
    quotas_state = (
        "created or resized now: " + ", ".join(changed_quotas)
        if changed_quotas
        else "existed"
    )
    plural = "s" if len(quotas) > 1 else ""
    return (
        f"queues {queues_text} ({queues_state}), quota{plural} {quotas_text} "
        f"on each ({quotas_state})"
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
