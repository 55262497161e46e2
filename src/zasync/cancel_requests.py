"""Cancel requests for running jobs: what ``zasync.admin.cancel`` records
for a job a worker thread holds, and the thread reads at the job's next
``zasync.local.check()`` or ``progress()``.

A request is kept apart from the job, in a small object of the thread's
slot (``Slot.cancel_requests``): writing the job itself would conflict
with the job's own transaction, which writes the job. A request names the
run it is meant for by the job's ``attempts`` as committed when it was
made: a request left over from an earlier run (the job finished without
checking, then was retried) does not cancel a later one.
"""

from __future__ import annotations

from collections.abc import Iterable

import persistent


class CancelRequests(persistent.Persistent):
    """Requested cancels of one worker thread's jobs: {oid (int): the job's
    committed ``attempts`` when the cancel was requested}. Requests made
    and forgotten in concurrent transactions are merged, so that neither
    side's commit fails on the other's."""

    #: the class default is never changed in place: each change assigns
    jobs: dict[int, int] = {}

    def __init__(self) -> None:
        self.jobs = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, oid: int, attempts: int) -> None:
        self.jobs = {**self.jobs, oid: attempts}

    def forget(self, oids: Iterable[int]) -> None:
        """Drop the requests of ``oids`` (finished or no longer held)."""
        gone = set(oids)
        if any(oid in self.jobs for oid in gone):
            self.jobs = {k: v for k, v in self.jobs.items() if k not in gone}

    def wanted(self, oid: int, attempts: int) -> bool:
        """Whether a cancel was requested for the run of job ``oid`` whose
        committed ``attempts`` is ``attempts``."""
        return self.jobs.get(oid, -1) == attempts

    def _p_resolveConflict(self, old: dict, committed: dict, new: dict) -> dict:  # noqa: N802 - ZODB API
        before = old.get("jobs", {})
        mine = new.get("jobs", {})
        merged = dict(committed.get("jobs", {}))
        for oid, attempts in mine.items():
            if before.get(oid) != attempts:
                merged[oid] = attempts  # added here
        for oid in before:
            if oid not in mine:
                merged.pop(oid, None)  # forgotten here
        return {**committed, "jobs": merged}
