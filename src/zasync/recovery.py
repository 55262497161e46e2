"""Recovery of jobs whose worker died or stopped before finishing them.

Crash recovery is at-least-once: a job that was running when its worker
died may run again (its retry policy decides; ``NeverRetry`` fails it with
AbortedError instead). Runs inside a transaction of the caller's.
"""

from __future__ import annotations

import logging
from typing import Any

from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE,
    ASSIGNED,
    CALLBACKS,
    COMPLETED,
    AbortedError,
)
from zasync.job import now
from zasync.keys import to_us
from zasync.retry import policy_for
from zasync.workers import Slot

log = logging.getLogger(__name__)


def make_policy(job: Any) -> Any:
    """The retry policy of ``job`` (its factory's, RetryPolicy by default;
    one written for zc.async wrapped, see zasync.retry.policy_for)."""
    return policy_for(job)


def at_most_once(job: Any) -> bool:
    """Whether ``job``'s policy allows it one start at most (NeverRetry):
    such a job runs alone in its transaction, its start is committed
    before it is called, and it is never run again once it may have
    started."""
    factory = job.retry_policy_factory
    return factory is not None and bool(getattr(factory, "at_most_once", False))


def release_quotas(job: Any) -> None:
    """Free the quotas ``job`` holds in its queue. (Its lock is free once
    it no longer runs, and its unique key is freed after the commit that
    finished it: zasync.keyed. Neither is written in the job's own
    transaction, where a conflict would run the job again.)"""
    queue = job.queue
    if queue is None:
        return
    for name in job.quota_names:
        quota = queue.quotas.get(name)
        if quota is not None:
            quota.release(job._p_oid)


def recover_slot(slot: Slot, *, why: str) -> list[tuple[Any, str]]:
    """Put right every job held by ``slot`` (its inbox's too): requeue it
    at the front of its queue, or fail it, as its retry policy says.
    Returns (job, outcome)."""
    outcomes = []
    for oid, job in list(slot.active.items()):
        del slot.active[oid]
        outcomes.append((job, recover_job(job, slot=slot, why=why)))
    inbox = slot.inbox
    if inbox:
        # Handed over (zasync.handoff) and maybe started: as active ones.
        for oid, job in list(inbox.jobs.items()):
            inbox.remove(oid)
            outcomes.append((job, recover_job(job, slot=slot, why=why)))
    slot.live = {}
    return outcomes


def recover_job(job: Any, *, slot: Slot, why: str) -> str:
    """Put right one job held by ``slot``; return what became of it."""
    status = job.status
    queue = job.queue
    release_quotas(job)
    if status == COMPLETED:
        slot._add_done(job, to_us(now()))
        return "completed"
    if queue is None:
        # A callback or composite member without a queue of its own cannot
        # be requeued: record the interruption.
        job._finish(Failure(AbortedError(f"{job!r} was interrupted: {why}")), now())
        return "failed"
    if status == CALLBACKS:
        queue.requeue(job, front=True)
        return "callbacks requeued"
    if status == ASSIGNED:
        queue.requeue(job, front=True)
        return "requeued (had not started)"
    if status == ACTIVE:
        decision = make_policy(job).interrupted()
        job._interruptions += 1
        # Its interrupted run counts as a start (its own count was in the
        # transaction that never committed).
        job._attempts += 1
        if decision.retry:
            queue.requeue(job, front=True)
            return "requeued"
        job._fail_interrupted(
            AbortedError(
                f"{job.callable_name} was interrupted ({why}) and its "
                f"retry policy gives up after {job._interruptions} "
                f"interruption(s)"
            ),
            now(),
        )
        if job.status == CALLBACKS:
            queue.requeue(job, front=True)
            return "failed (callbacks requeued)"
        slot._add_done(job, to_us(now()))
        return "failed"
    log.warning("job %r in a slot with unexpected status %s", job, status)
    return "left"
