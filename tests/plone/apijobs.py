"""Plone job functions of the zasync.plone.api tests (stored in jobs by
reference: import this module as ``tests.plone.apijobs``)."""

from __future__ import annotations

from typing import Any

from AccessControl import getSecurityManager


def report(
    context: Any, text: str, *, priority: str = "normal", queue: str = "inbox"
) -> dict[str, Any]:
    """Who ran the job, where, and with what: its keyword arguments are
    named as options of zasync.plone.api.queue."""
    return {
        "user_id": getSecurityManager().getUser().getId(),
        "context": "/".join(context.getPhysicalPath()),
        "text": text,
        "priority": priority,
        "queue": queue,
    }
