"""The functions the test add-on's schedules run in the site."""

from __future__ import annotations

from typing import Any

from AccessControl import getSecurityManager


def whoami(context: Any) -> dict[str, Any]:
    """Who the run runs as, where, and what that user may do there."""
    security = getSecurityManager()
    return {
        "user": security.getUser().getId(),
        "context": "/".join(context.getPhysicalPath()),
        "may_manage_site": bool(security.checkPermission("Manage portal", context)),
    }


def touch(context: Any) -> str:
    """Write to the context, as a periodic job that does some work would."""
    context.zasync_touched = getattr(context, "zasync_touched", 0) + 1
    return f"touched {context.getId()} {context.zasync_touched} times"
