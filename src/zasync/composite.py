"""Serial and parallel composite jobs.

``serial(*jobs)`` runs its jobs one after another (the next starts when the
previous one completed, failed or not); ``parallel(*jobs)`` queues them all
at once. The composite completes when its last job does; its result is the
list of its jobs (each with its own status and result), or what
``postprocess(*jobs)`` returns.

The jobs are the composite's ``args`` (as in zc.async): read them there,
or add jobs (or callables) with ``composite.args.append(job)`` before it
runs its last one.

A job whose callable returns another job runs that job the same way
(``wait_for``): it stays ACTIVE until the other job completes, and takes
its result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from zasync import local
from zasync.failure import Failure
from zasync.interfaces import ACTIVE, COMPLETED, NEW
from zasync.job import Job, check_callable, now


def _as_job(item: Any) -> Job:
    job = item if isinstance(item, Job) else Job(item)
    if job.status != NEW:
        raise ValueError(f"{job!r} is {job.status}: a composite takes new jobs only")
    return job


class CompositeJob(Job):
    """A job that runs other jobs. The worker calls ``_launch()`` instead of
    a callable; the composite stays ACTIVE until its members are done."""

    postprocess: Any = None
    parallel: bool = False
    _advanced: int = 0
    # Composites stored before kept their jobs in ``jobs``.
    _legacy_args = "jobs"

    def __init__(
        self, jobs: Iterable[Any], *, parallel: bool, postprocess: Any = None
    ) -> None:
        members = tuple(_as_job(job) for job in jobs)
        if postprocess is not None:
            check_callable(postprocess)
        super().__init__(_composite_marker, *members)
        self.parallel = parallel
        self.postprocess = postprocess

    @property
    def jobs(self) -> tuple:
        """The composite's jobs, in order (its ``args``)."""
        return tuple(self._stored_args())

    def _member_quotas(self) -> tuple[str, ...]:
        """The quota names of its members, in order, each once: a batch put
        without quotas of its own takes these, and holds them while it
        queues its members (then at their place in the line)."""
        names: dict[str, None] = {}
        for member in self._stored_args():
            if isinstance(member, Job):
                names.update(dict.fromkeys(member.quota_names))
        return tuple(names)

    @property
    def callable_name(self) -> str:
        kind = "parallel" if self.parallel else "serial"
        return f"zasync.{kind}({len(self.jobs)} jobs)"

    def _launch(self) -> None:
        """Queue the first member (serial) or all of them (parallel), in the
        composite's queue, in the worker's current transaction."""
        jobs = self._members()
        if not jobs:
            self._complete()
            return
        for member in jobs if self.parallel else jobs[:1]:
            self._queue_member(member)

    def _members(self) -> tuple:
        """The composite's jobs; callables added to ``args`` since it was
        made become jobs of their own (written back)."""
        members = self._stored_args()
        if not all(isinstance(member, Job) for member in members):
            self.args = [_as_job(member) for member in members]
        return self.jobs

    def _queue_member(self, member: Job) -> None:
        member._parent = self
        member.addCallback(Job(_advance, self, member))
        # At the composite's place in the line: a job queued after the
        # composite waits for its members (also in a quota of size 1).
        self._queue._put_in_place(member, self)

    def _advance(self, finished: Job) -> None:
        # Written by every member's advance, so that two advances running
        # at once conflict and the second sees the first's effect.
        self._advanced += 1
        if self.parallel:
            # Jobs added to ``args`` after the launch are queued now.
            for member in self._members():
                if member.status == NEW:
                    self._queue_member(member)
            # ``finished`` is completed in this same transaction (its advance
            # is its last callback); the others must be completed already,
            # so every member of a completed composite is completed too.
            if all(m.status == COMPLETED or m is finished for m in self.jobs):
                self._complete()
            return
        for member in self._members():
            if member.status == NEW:
                self._queue_member(member)
                return
        self._complete()

    def _complete(self) -> None:
        if self._status == COMPLETED or self._result is not None:
            return
        if self.postprocess is not None:
            try:
                result = self.postprocess(*self.jobs)
            except Exception:
                result = Failure()
        else:
            result = list(self.jobs)
        _finish_elsewhere(self, result)


def in_serial(job: Job) -> bool:
    """Whether ``job`` is a member of a serial batch (the batch queues the
    next member when this one's callbacks run)."""
    parent = job._parent
    return isinstance(parent, CompositeJob) and not parent.parallel


def _finish_elsewhere(job: Job, result: Any) -> None:
    """Finish ``job``, which waited for other jobs, with ``result``, in the
    transaction of another job's callback."""
    job._finish(result, now())
    if job._queue is None:
        job._run_callbacks_here()
    elif job._status != COMPLETED:  # callbacks to run: a worker runs them
        job._queue.requeue(job, front=True)
    else:
        runner = local.current_runner()
        if runner is not None:
            # The runner keeps it with its finished jobs, and announces it
            # (JobSucceeded/JobFailed) after that commit.
            runner.completed_here(job)


def wait_for(job: Job, inner: Job) -> bool:
    """``job``'s callable returned the job ``inner``: ``job`` stays ACTIVE
    and takes ``inner``'s result (a value or a Failure) when ``inner``
    completes; a new ``inner`` is queued in ``job``'s queue. True when
    ``inner`` had completed already and ``job`` is finished."""
    if inner is job:
        raise ValueError(f"{job!r} returned itself: it cannot wait for itself")
    if inner.status == COMPLETED:
        job._finish(inner.result, now())
        return True
    inner.addCallback(Job(_adopt_result, job))
    if inner.status == NEW:
        if job._queue is not None:
            job._queue.put(inner)
        else:
            inner()
    return job.status != ACTIVE


def _adopt_result(job: Job, result: Any) -> None:
    """The callback by which a job takes the result of the job it waits
    for."""
    if job.status == ACTIVE:
        _finish_elsewhere(job, result)


def _composite_marker(*args: Any) -> NoReturn:  # pragma: no cover - never called
    raise RuntimeError("a composite job is launched by the worker, not called")


def _advance(composite: CompositeJob, member: Job, member_result: Any) -> None:
    """The callback every member of a composite gets."""
    composite._advance(member)


# Completes its member in its own transaction (zasync.callbacks): it has
# no effect outside the database that a conflict's rerun would repeat.
_advance.zasync_completes_job = True  # type: ignore[attr-defined]


def serial(*jobs: Any, postprocess: Any = None) -> CompositeJob:
    """A job that runs ``jobs`` one after another, each in its own
    transaction, going on when one fails."""
    return CompositeJob(jobs, parallel=False, postprocess=postprocess)


def parallel(*jobs: Any, postprocess: Any = None) -> CompositeJob:
    """A job that queues ``jobs`` at once, to run concurrently."""
    return CompositeJob(jobs, parallel=True, postprocess=postprocess)
