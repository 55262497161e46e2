"""The conflict limiter: fewer of a worker's threads run jobs at once
while its jobs conflict with each other, and a job that conflicted again
and again runs alone."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: conflicts in a row after which a job's next attempt runs alone in its
#: worker (see ConflictLimiter)
SOLO_AFTER = 2
#: seconds a job about to run alone waits for the transactions of the
#: worker's other threads to end
SOLO_WAIT = 5.0
#: seconds a thread waits at the gate at most (for a job running alone,
#: or for its turn in a worker narrowed by conflicts)
SOLO_HOLD = 60.0
#: commits without a conflict, per thread let in, after which a worker
#: narrowed by conflicts lets one more thread run jobs
WIDEN_AFTER = 4


class ConflictLimiter:
    """An adaptive limit on how many of a worker's threads run jobs at once,
    so that jobs that conflict with each other do not do so over and over.

    Jobs that all write one object (a catalog, a counter, a folder)
    conflict with each other when a worker runs them side by side, and the
    retries conflict again: most of the work is thrown away, and a job
    could lose until its policy gave up. Every job transaction of a
    worker's threads passes ``shared()``, and says how it ended:

    - each conflict halves how many of the threads may run jobs at once
      (``cap``, down to one), and ``WIDEN_AFTER`` commits without one per
      thread let in widen it by one, back to all of them (``limit``);
    - a job that conflicted SOLO_AFTER times in a row passes ``alone()``
      for its next attempt: no new transaction starts in this worker, the
      running ones end (waited for at most ``wait`` seconds), and it runs
      by itself.

    A thread waits at the gate at most ``hold`` seconds (a job that hangs
    does not stop its worker). Other worker processes are not held: their
    jobs may still conflict with these.
    """

    def __init__(
        self, limit: int = 1, wait: float = SOLO_WAIT, hold: float = SOLO_HOLD
    ):
        self.limit = limit
        #: how many threads may run jobs at once now
        self.cap = limit
        self.wait = wait
        self.hold = hold
        self._cond = threading.Condition()
        self._running = 0  # transactions in shared()
        self._alone = 0  # jobs waiting to run alone, or running
        self._clean = 0  # commits without a conflict since the cap changed
        #: jobs that ran alone, and times the cap was halved (diagnostics)
        self.solo_runs = 0
        self.narrowed = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(
                lambda: not self._alone and self._running < self.cap, self.hold
            )
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone, self.hold)
            self._alone += 1
            self.solo_runs += 1
            self._cond.wait_for(lambda: not self._running, self.wait)
        try:
            yield
        finally:
            with self._cond:
                self._alone -= 1
                self._cond.notify_all()

    def resize(self, change: int) -> None:
        """Count ``change`` more threads (fewer, when negative): a thread
        abandoned in a stuck job keeps its place until it returns, and its
        replacement needs one (zasync.watchdog)."""
        with self._cond:
            self.limit += change
            self.cap = max(1, min(self.limit, self.cap + change))
            self._cond.notify_all()

    def conflicted(self) -> None:
        """A job transaction of this worker conflicted."""
        with self._cond:
            self._clean = 0
            cap = max(1, self.cap // 2)
            if cap == self.cap:
                return
            self.cap = cap
            self.narrowed += 1
        log.info(
            "jobs conflict with each other: at most %d of %d threads run "
            "jobs at once until they commit without conflicts",
            cap,
            self.limit,
        )

    def committed(self) -> None:
        """A job transaction of this worker committed."""
        if self.cap >= self.limit:  # the usual case: no lock taken
            return
        with self._cond:
            self._clean += 1
            if self._clean < WIDEN_AFTER * self.cap or self.cap >= self.limit:
                return
            self.cap += 1
            self._clean = 0
            self._cond.notify_all()
            cap = self.cap
        if cap == self.limit:
            log.info("jobs commit without conflicts: all %d threads run jobs", cap)
