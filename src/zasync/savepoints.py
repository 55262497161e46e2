"""Savepoint batching: several short jobs in one transaction, each behind
a savepoint, so that a job that raises is rolled back alone.

A savepoint costs a pickle of every object changed since the last one,
written to and read back from a temporary file. A job that changed nothing
but itself and returned a plain value needs none: a rollback to the last
savepoint is undone by writing those jobs' states again.

This is the only module that reads internals of ``transaction`` and
``ZODB.Connection`` (neither has public API for what it needs):
``Transaction._resources`` (the joined data managers), and
``Connection._registered_objects`` and ``Connection._added`` (the objects
changed and added since the last savepoint). tests/test_savepoints.py
fails if those change.
"""

from __future__ import annotations

from typing import Any

#: most jobs run in a row without a savepoint (each later job compares
#: their states with those they had when they finished)
UNSAVED_LIMIT = 64

#: result types known to pickle (with containers of them, see plain)
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)


class CommitFirstError(Exception):
    """A savepoint is impossible: commit the jobs before this one first."""


def supported(txn: Any) -> bool:
    """Whether every resource joined to ``txn`` can take savepoints. A
    savepoint() that fails dooms the whole transaction, so a resource that
    cannot (a mail or SQL data manager joined by a job) must be found
    before trying."""
    return all(hasattr(rm, "savepoint") for rm in getattr(txn, "_resources", ()))


def plain(value: Any, depth: int = 0) -> bool:
    """True when ``value`` certainly pickles, with no persistent object in
    it: None, numbers, strings, bytes, and small tuples, lists and dicts of
    them. A job whose result is plain needs no savepoint to find out."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if depth >= 3 or kind not in (tuple, list, dict) or len(value) > 64:
        return False
    if kind is dict:
        return all(
            type(k) in _PLAIN_TYPES and plain(v, depth + 1) for k, v in value.items()
        )
    return all(plain(item, depth + 1) for item in value)


class Savepoints:
    """The savepoints of one thread's job transactions, in connection
    ``conn`` of transaction manager ``tm`` (set by ``attach``)."""

    def __init__(self) -> None:
        self.tm: Any = None
        self.conn: Any = None
        #: a savepoint the next job may start from
        self.reusable: Any = None
        #: (job, state) of the jobs that ran since that savepoint without
        #: taking one: a rollback to it writes them again
        self._unsaved: list[tuple[Any, dict]] = []
        self._allowed: set[int] = set()  # their ids
        #: how many of the objects changed since the savepoint were found
        #: to be those jobs, and the last of them
        self._checked: tuple[int, Any] = (0, None)

    def attach(self, tm: Any, conn: Any) -> None:
        self.tm = tm
        self.conn = conn

    def reset(self) -> None:
        """A new transaction: no savepoint or unsaved job in hand."""
        self.reusable = None
        self._forget_unsaved()

    def _forget_unsaved(self) -> None:
        self._unsaved = []
        self._allowed = set()
        self._checked = (0, None)

    def before_job(self, *, first: bool) -> Any:
        """The savepoint a job starts from, or None when the transaction
        cannot take one and the job is the ``first`` of it; raises
        CommitFirstError when it cannot and the job is not."""
        reuse, self.reusable = self.reusable, None
        if reuse is not None:
            # Nothing changed since the previous job's closing savepoint,
            # but for the jobs in _unsaved.
            return reuse
        if not supported(self.tm.get()):
            if first:
                self._forget_unsaved()
                return None
            raise CommitFirstError()
        savepoint = self.tm.savepoint(optimistic=False)
        self._forget_unsaved()  # the savepoint has them
        return savepoint

    def rollback(self, savepoint: Any) -> Any:
        """Roll back to ``savepoint`` and write again the jobs that ran
        since without a savepoint of their own; return a savepoint that
        includes them."""
        savepoint.rollback()
        self._checked = (0, None)
        if not self._unsaved:
            return savepoint
        for job, state in self._unsaved:
            job._p_activate()
            job.__setstate__(dict(state))
            job._p_changed = True
        if not supported(self.tm.get()):
            return savepoint  # _unsaved kept: written again at each rollback
        fresh = self.tm.savepoint(optimistic=False)
        self._forget_unsaved()
        return fresh

    def after_job(self, job: Any, result: Any, savepoint: Any) -> None:
        """Close a job that ran from ``savepoint`` and returned ``result``:
        the next job starts from that savepoint when this one saved nothing
        else, or from a new one, which pickles what the job changed now,
        while it can still be undone (an error raised by that pickling
        doomed the transaction: the caller aborts it)."""
        if self._saves_nothing_else(job, result):
            self._unsaved.append((job, job.__getstate__()))
            self.reusable = savepoint
            return
        if supported(self.tm.get()):
            self.reusable = self.tm.savepoint(optimistic=False)
            self._forget_unsaved()  # the savepoint has them

    def _saves_nothing_else(self, job: Any, result: Any) -> bool:
        """True when the job just run changed no persistent object but
        itself (and the jobs in _unsaved), joined no other resource to the
        transaction and returned a plain result."""
        if not plain(result) or len(self._unsaved) >= UNSAVED_LIMIT:
            return False
        for other, state in self._unsaved:
            if other.__dict__ != state:
                # A job that ran earlier in the batch was changed since (by
                # this one, or one judged before it): a rollback to the
                # savepoint must not write back its older state.
                return False
        conn = self.conn
        if (
            getattr(conn, "_added", None)
            or len(getattr(self.tm.get(), "_resources", ())) != 1
        ):
            return False
        # The objects changed since the last savepoint, in the order they
        # changed, whose first ones were checked for the jobs before this.
        changed = getattr(conn, "_registered_objects", (job, None))
        checked, last = self._checked
        if checked > len(changed) or (checked and changed[checked - 1] is not last):
            checked = 0  # a new list
        allowed = self._allowed
        allowed.add(id(job))
        if all(id(obj) in allowed for obj in changed[checked:]):
            self._checked = (len(changed), changed[-1] if changed else None)
            return True
        allowed.discard(id(job))
        return False
