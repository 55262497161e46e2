"""How a quota's state checks its size and merges concurrent changes.

A quota (zasync.queue.Quota) keeps the oids of the jobs holding it in a
tuple. Two transactions that changed it merge when that cannot exceed its
size: a job releasing the quota (in its own transaction) merges with a
claim taking it, so the job does not run again for a conflict on this
bookkeeping; two claims that would together pass the size conflict, and
one of them claims again.
"""

from __future__ import annotations

from typing import Any

from ZODB.POSException import ConflictError

from zasync.interfaces import ConfigurationError


def check_size(name: str, size: Any) -> int:
    """``size`` when it is a whole number >= 1; ConfigurationError naming
    the quota otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigurationError(
            f"quota {name!r}: size={size!r} must be a whole number >= 1"
        )
    return size


def merge(old: dict, committed: dict, new: dict, *, default_size: int) -> dict:
    """The merged state of a quota changed by two transactions from
    ``old`` (``_p_resolveConflict``'s arguments); ConflictError when they
    cannot merge."""
    merged = dict(committed)
    for name in ("name", "size"):
        mine, theirs = new.get(name), committed.get(name)
        if mine != theirs:
            if theirs != old.get(name) and mine != old.get(name):
                raise ConflictError(f"quota {name} changed twice")
            merged[name] = mine if theirs == old.get(name) else theirs
    before = old.get("_active", ())
    ours, theirs = new.get("_active", ()), committed.get("_active", ())
    added = [oid for oid in ours if oid not in before]
    removed = {oid for oid in before if oid not in ours}
    active = [oid for oid in theirs if oid not in removed]
    active += [oid for oid in added if oid not in active]
    size = merged.get("size", default_size)
    if added and len(active) > size and any(o not in before for o in theirs):
        raise ConflictError("two claims would exceed the quota together")
    merged["_active"] = tuple(active)
    return merged
