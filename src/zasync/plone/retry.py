"""``zasync.plone.RetryWithDelay``: plone.app.async's retry policy factory.

``job.retry_policy_factory = RetryWithDelay(timedelta(minutes=15))`` retries
a job whose callable raised, after ``delay`` each time (the same delay
every time), up to ``max_retries`` (8) times; conflicts and interrupted
runs are handled as by zasync's default policy. Its instances are stored
in jobs: the class never moves and its attributes have class-level
defaults.

zasync's own :class:`zasync.retry.RetryWithDelay` (a policy class whose
delay doubles after each error) is another thing with the same name.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from transaction.interfaces import TransientError

from zasync.retry import GIVE_UP, Decision, RetryPolicy

if TYPE_CHECKING:
    from zasync.failure import Failure
    from zasync.job import Job


class RetryWithDelay:
    """A picklable factory of retry policies (a job's
    ``retry_policy_factory``): errors are retried after ``delay``."""

    delay: datetime.timedelta = datetime.timedelta(minutes=15)
    max_retries: int = 8

    def __init__(self, delay: datetime.timedelta = datetime.timedelta(minutes=15)):
        if not isinstance(delay, datetime.timedelta) or delay.total_seconds() < 0:
            raise ValueError(
                f"RetryWithDelay(delay={delay!r}): use a datetime.timedelta >= 0"
            )
        self.delay = delay

    def __call__(self, job: Job) -> RetryPolicy:
        return DelayedRetryPolicy(job, self)

    def __repr__(self) -> str:
        return f"<zasync.plone.RetryWithDelay {self.delay} x{self.max_retries}>"


class DelayedRetryPolicy(RetryPolicy):
    """The policy a :class:`RetryWithDelay` makes for one job (not stored)."""

    def __init__(self, job: Job, factory: RetryWithDelay) -> None:
        super().__init__(job)
        self.max_errors = factory.max_retries
        self.delay = factory.delay.total_seconds()

    def job_error(self, failure: Failure) -> Decision:
        if failure.check(TransientError):
            return self._conflict()
        if self.job._errors < self.max_errors:
            return Decision(True, self.delay)
        return GIVE_UP
