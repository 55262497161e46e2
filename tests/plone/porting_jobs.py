"""Functions for tests/plone/test_porting.py, queued with plone.app.async's
package-level ``Job`` (no context argument): importable by module."""

from __future__ import annotations

import time

from zope.component.hooks import getSite

from plone import api

#: per key: how many times fail_once ran, and when it first failed
calls: dict[str, list[float]] = {}


def add(a: int, b: int) -> int:
    return a + b


def where_and_who() -> tuple[str, str, bool]:
    """The current site's id, the current user's id, and whether the job
    runs with a request (REQUEST acquired from the site)."""
    site = getSite()
    return site.getId(), api.user.get_current().getId(), site.REQUEST is not None


def fail_once(key: str) -> float:
    """Fail on the first call; then return the seconds since that failure."""
    seen = calls.setdefault(key, [])
    seen.append(time.monotonic())
    if len(seen) == 1:
        raise RuntimeError("the first call fails")
    return seen[-1] - seen[0]


def boom() -> None:
    raise RuntimeError("FooBared")
