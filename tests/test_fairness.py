"""Fairness between quotas and free jobs, with a dispatcher's real threads
on a FileStorage database: jobs without quotas are not starved behind a
long line of jobs waiting for a full quota, and a size-1 quota keeps the
order of a serial() batch's members and the jobs queued after it.
"""

from __future__ import annotations

import time

import pytest
import transaction

import jobfuncs
import zasync
from zasync.interfaces import ACTIVE, COMPLETED
from zasync.job import Job
from zasync.testing import wait_until

#: jobs queued in the full quota, in put_many batches of BATCH
QUOTA_JOBS = 20_000
BATCH = 2_000
FREE_JOBS = 200


@pytest.mark.parametrize(
    "gate", [{"quota_names": ("one",)}, {"lock": "one"}], ids=["quota", "lock"]
)
def test_free_jobs_run_while_a_long_line_waits_for_a_full_quota(
    queue, start_dispatcher, gate
):
    """A size-1 quota (or a lock) whose first job blocks, with 20,000 jobs
    behind it; 200 jobs without quotas queued after them all complete
    while it still blocks: a claim finds them however long the line
    before them."""
    if "quota_names" in gate:
        queue.quotas.create("one", size=1)
    blocker = queue.put(Job(jobfuncs.wait_for, "blocker", 60), **gate)
    transaction.commit()
    start_dispatcher(threads=4)
    wait_until(lambda: jobfuncs.calls["blocker"] == 1, message="the blocker to start")
    began = time.monotonic()
    attempts = []
    for first in range(1, QUOTA_JOBS, BATCH):
        # As an application does: each batch in a transaction of its own,
        # tried again after a ConflictError.
        attempts.append(0)
        for attempt in transaction.manager.attempts(10):
            attempts[-1] += 1
            with attempt:
                queue.put_many(
                    [
                        Job(jobfuncs.count, "quota")
                        for _ in range(first, min(first + BATCH, QUOTA_JOBS))
                    ],
                    **gate,
                )
    queued = time.monotonic() - began
    for attempt in transaction.manager.attempts(10):
        with attempt:
            queue.put_many([Job(jobfuncs.count, "free") for _ in range(FREE_JOBS)])
    began = time.monotonic()
    wait_until(
        lambda: jobfuncs.calls["free"] == FREE_JOBS,
        timeout=30,
        message=lambda: (
            f"{FREE_JOBS} free jobs to run behind {QUOTA_JOBS} quota jobs: "
            f"{jobfuncs.calls['free']} ran"
        ),
    )
    ran_in = time.monotonic() - began
    assert jobfuncs.calls["quota"] == 0
    assert not jobfuncs.gate("blocker").is_set()
    transaction.begin()
    assert blocker.status == ACTIVE
    assert len(queue) == QUOTA_JOBS - 1
    if "lock" in gate:
        assert queue.lock_holder("one") is blocker
    print(
        f"\n{QUOTA_JOBS} jobs behind a {gate} queued in {queued:.1f} s "
        f"(attempts per batch: {attempts}); "
        f"{FREE_JOBS} free jobs behind them ran in {ran_in:.2f} s"
    )


def test_a_job_queued_after_a_serial_batch_runs_after_all_its_members(
    queue, start_dispatcher
):
    """A serial() batch whose members are in a size-1 quota, then a job of
    that quota queued after it: the job runs after the last member, though
    the members are queued one at a time, each when the one before it
    completed."""
    queue.quotas.create("serial", size=1)
    members = []
    for n in range(3):
        member = Job(jobfuncs.count, f"member-{n}")
        member.quota_names = ("serial",)
        members.append(member)
    batch = queue.put(zasync.serial(*members))
    after = queue.put(Job(jobfuncs.count, "after"), quota_names=("serial",))
    transaction.commit()
    start_dispatcher(threads=4)
    wait_until(
        lambda: (
            jobfuncs.calls["after"] == 1
            and all(jobfuncs.calls[f"member-{n}"] == 1 for n in range(3))
        ),
        timeout=20,
        message=lambda: f"the batch and the job to run: {dict(jobfuncs.calls)}",
    )
    order = [key for key, _thread in jobfuncs.trace]
    assert order == ["member-0", "member-1", "member-2", "after"]

    def done() -> bool:
        transaction.begin()
        return batch.status == COMPLETED and after.status == COMPLETED

    wait_until(done, timeout=20, message="the batch to complete")
