"""Transaction helpers shared by the runtime: telling a lost connection
from a conflict, and closing a connection at shutdown."""

from __future__ import annotations

import logging
from typing import Any

from transaction.interfaces import NoTransaction

log = logging.getLogger(__name__)


def is_disconnection(error: BaseException) -> bool:
    """True for a lost connection to the storage server (ZEO's
    ClientDisconnected), which is transient but is no conflict."""
    return any(cls.__name__ == "ClientDisconnected" for cls in type(error).__mro__)


def close_connection(conn: Any, tm: Any) -> None:
    """Abort whatever ``conn`` has pending and close it (for shutdown:
    never raises)."""
    try:
        tm.abort()
    except NoTransaction:
        pass  # an explicit manager between transactions
    except Exception:
        log.exception("aborting before closing a connection failed")
    try:
        conn.close()
    except Exception:
        log.exception("closing a connection failed")
