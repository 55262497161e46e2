"""Where the queues live: in the main database, or in a database named
``async`` mounted beside it (the multi-database set-up of plone.app.async).
"""

from __future__ import annotations

from typing import Any

from zope.component import queryUtility

from zasync.interfaces import KEY, ConfigurationError
from zasync.plone.interfaces import IWorkerRole

#: the name of the database that keeps the queues in a multi-database set-up
ASYNC_DATABASE = "async"


def queues_database_name(db: Any) -> str:
    """The name of the database that holds the queues, for a process whose
    main database is ``db``.

    A ``multi_db_*`` role needs the ``async`` database (ConfigurationError
    otherwise); a ``single_db_*`` role uses the main database; without a role,
    ``async`` is used when it is mounted.
    """
    role = queryUtility(IWorkerRole)
    databases = getattr(db, "databases", {})
    if role is not None and role.multi_db:
        if ASYNC_DATABASE not in databases:
            raise ConfigurationError(
                f"{role.name}.zcml keeps the queues in a database named "
                f"{ASYNC_DATABASE!r}, which this process has not opened: add "
                f"a <zodb_db {ASYNC_DATABASE}> section (with mount-point "
                f"/zasync) to zope.conf, or use "
                f"{role.name.replace('multi_db', 'single_db')}.zcml"
            )
        return ASYNC_DATABASE
    if role is None and ASYNC_DATABASE in databases:
        return ASYNC_DATABASE
    return db.database_name


def queues_connection(conn: Any) -> Any:
    """The connection (sharing ``conn``'s transaction) whose root holds the
    queues, for ``conn``, a connection to the main database."""
    name = queues_database_name(conn.db())
    if name == conn.db().database_name:
        return conn
    return conn.get_connection(name)


def get_queues(conn: Any) -> Any:
    """The ``zasync.queue.Queues`` for ``conn``; ConfigurationError, saying
    what to do, when zasync is not installed in that database."""
    qconn = queues_connection(conn)
    queues = qconn.root().get(KEY)
    if queues is None:
        raise ConfigurationError(
            f"no zasync queues in the database {qconn.db().database_name!r}: "
            f"install the add-on 'zasync' (profile zasync.plone:default) in "
            f"the site, or start a worker on this database"
        )
    return queues
