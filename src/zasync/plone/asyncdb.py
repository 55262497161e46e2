"""The ``IAsyncDatabase`` utility of plone.app.async: the ZODB database
that holds the queues (the main one, or the one named ``async``),
registered when Zope has opened its databases, in every process that
loads zasync.plone (instances and workers, whatever their role)."""

from __future__ import annotations

from typing import Any

from zope.component import provideUtility

from zasync.plone.interfaces import IAsyncDatabase
from zasync.plone.worker import open_queues_database


def provide_async_database(event: Any) -> None:
    """IDatabaseOpenedWithRoot: register the queues' database as the
    IAsyncDatabase utility."""
    provideUtility(open_queues_database(event.database), IAsyncDatabase)
