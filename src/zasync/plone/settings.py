"""The registry settings (``zasync.plone.*``) and applying them to the
queues: which queues exist and which quotas, of which size, each has."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from plone.registry.interfaces import IRegistry
from zope.component import queryUtility

from zasync.interfaces import KEY, ConfigurationError
from zasync.plone.location import queues_connection
from zasync.queue import Queue, Queues

log = logging.getLogger(__name__)

PREFIX = "zasync.plone"
DEFAULT_QUEUES = ("",)
DEFAULT_QUOTAS = {"default": 1}
#: the quota the service puts its jobs under unless told otherwise
DEFAULT_QUOTA = "default"


def record_name(field: str) -> str:
    return f"{PREFIX}.{field}"


def _registry() -> Any:
    return queryUtility(IRegistry)


def read(field: str, default: Any = None) -> Any:
    """The value of record ``zasync.plone.<field>`` in the current site's
    registry, or ``default`` when there is no site, registry or record."""
    registry = _registry()
    if registry is None:
        return default
    value = registry.get(record_name(field), None)
    return default if value is None else value


def configured_queues() -> tuple[str, ...]:
    return tuple(read("queues", DEFAULT_QUEUES)) or DEFAULT_QUEUES


def configured_quotas() -> dict[str, int]:
    return dict(read("quotas", DEFAULT_QUOTAS))


def public_url() -> str | None:
    return (read("public_url", "") or "").strip() or None


def apply(
    root: Any, *, queues: Iterable[str], quotas: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """Make the Queues in ``root`` (a database root) hold the named queues,
    each with the quotas of the given sizes, in the caller's transaction.
    Existing queues and quotas stay; a quota's size is set. Returns the names
    of the queues and quotas (``queue/quota``) created or changed."""
    queues = list(queues)
    for name, size in quotas.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(
                f"registry record {record_name('quotas')}: the size of quota "
                f"{name!r} is {size!r}; use a whole number >= 1"
            )
    container = root.get(KEY)
    if container is None:
        container = root[KEY] = Queues()
    changed_queues, changed_quotas = [], []
    for name in queues:
        queue = container.get(name)
        if queue is None:
            queue = container[name] = Queue(name)
            changed_queues.append(name)
        for quota_name, size in quotas.items():
            quota = queue.quotas.get(quota_name)
            if quota is None:
                queue.quotas.create(quota_name, size=size)
            elif quota.size != size:
                quota.size = size
            else:
                continue
            changed_quotas.append(f"{name}/{quota_name}")
    if changed_queues or changed_quotas:
        log.info(
            "zasync queues created: %s; quotas set: %s",
            changed_queues or "none",
            changed_quotas or "none",
        )
    return changed_queues, changed_quotas


def apply_registry(site: Any) -> tuple[list[str], list[str]]:
    """Apply the site's registry settings to the queues of the site's
    database (see :func:`apply`)."""
    conn = queues_connection(site._p_jar)
    return apply(conn.root(), queues=configured_queues(), quotas=configured_quotas())
