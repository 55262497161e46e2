"""Job functions for the tests of zasync.plone (stored in jobs by
reference, so they live in an importable module).

Coordination between a test and its jobs, or between jobs, goes through
module-level state keyed by a token the test passes: worker threads run in
the test's process.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import transaction
from AccessControl import getSecurityManager
from zope.component import getMultiAdapter
from zope.component.hooks import getSite
from zope.globalrequest import getRequest

from plone import api
from zasync.plone.interfaces import IZasyncPloneLayer


def whoami(context: Any) -> dict[str, Any]:
    """Who and where the job runs."""
    user = getSecurityManager().getUser()
    return {
        "user_id": user.getId(),
        "user_name": user.getUserName(),
        "anonymous": api.user.is_anonymous(),
        "roles_here": sorted(user.getRolesInContext(context)),
        "site": getSite().getId(),
        "context": "/".join(context.getPhysicalPath()),
    }


def request_info(context: Any) -> dict[str, Any]:
    """What the job's request offers: URLs, views, layers, plone.api."""
    request = getRequest()
    portal_state = getMultiAdapter((context, request), name="plone_portal_state")
    return {
        "same_request": request is context.REQUEST,
        "absolute_url": context.absolute_url(),
        "portal_url": portal_state.portal_url(),
        "api_portal_url": api.portal.get().absolute_url(),
        "layer": IZasyncPloneLayer.providedBy(request),
        "navigation_root": portal_state.navigation_root_path(),
    }


def create_document(context: Any, title: str) -> str:
    """Create a Document (its id made from the title) and return its id."""
    return api.content.create(container=context, type="Document", title=title).getId()


def write_then_fail(context: Any, title: str) -> None:
    """Create a Document, then raise: nothing may be committed."""
    create_document(context, title)
    raise ValueError(f"failed after creating {title!r}")


# -- a conflict on the first attempt ---------------------------------------------

#: calls of create_with_conflict, by token
calls: dict[str, int] = {}


def create_with_conflict(context: Any, title: str, token: str) -> str:
    """Create a Document titled ``title``; on the first call for ``token``,
    another transaction changes the folder meanwhile, so that this job's
    commit conflicts and the worker runs it again."""
    calls[token] = calls.get(token, 0) + 1
    doc_id = create_document(context, title)
    if calls[token] == 1:
        db = context._p_jar.db()
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                other = conn.root()["Application"].unrestrictedTraverse(
                    context.getPhysicalPath()
                )
                other.zasync_test_marker = f"{token}: changed meanwhile"
        finally:
            conn.close()
        context.zasync_test_marker = f"{token}: changed by the job"
    return doc_id


# -- meeting points: jobs that must (or must not) run at the same time ------------

_lock = threading.Lock()
running: dict[str, int] = {}
most_running: dict[str, int] = {}
order: dict[str, list] = {}
_someone_else: dict[str, threading.Event] = {}


def _event(token: str) -> threading.Event:
    with _lock:
        return _someone_else.setdefault(token, threading.Event())


def probe(context: Any, token: str, index: int, seconds: float = 0.2) -> int:
    """Record that job ``index`` ran, and how many jobs of ``token`` ran at
    once: wait up to ``seconds`` for another one to start (a job whose quota
    lets others run beside it sees them start)."""
    with _lock:
        order.setdefault(token, []).append(index)
        count = running[token] = running.get(token, 0) + 1
        most_running[token] = max(most_running.get(token, 0), count)
        event = _someone_else.setdefault(token, threading.Event())
        if count > 1:
            event.set()
    try:
        event.wait(seconds)
    finally:
        with _lock:
            running[token] -= 1
    return index


def meet(context: Any, token: str, seconds: float = 10.0) -> dict[str, Any]:
    """Wait until another job of ``token`` has started; True if one did
    within ``seconds`` (jobs that run one at a time never meet)."""
    started = time.monotonic()
    with _lock:
        count = running[token] = running.get(token, 0) + 1
        event = _someone_else.setdefault(token, threading.Event())
        if count > 1:
            event.set()
    try:
        met = event.wait(seconds)
    finally:
        with _lock:
            running[token] -= 1
    return {"met": met, "waited": round(time.monotonic() - started, 3)}
