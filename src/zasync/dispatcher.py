"""Dispatcher: the worker inside a process.

A dispatcher serves the queues of one database with N threads (its
ThreadPool). Its loop claims due jobs for idle threads (its Claimer),
renews the lease on its running jobs, writes a small heartbeat, runs
maintenance (rescue of dead workers' jobs, pruning of finished jobs) and,
while jobs run, hands the memory they freed back to the system. It
wakes on the commit that queues a job: at once for producers in this
process (zasync.hooks), and for other processes when the storage tells it
of the queue's change; polling is a fallback. One round of the loop is
``step()``, which tests call with a clock of their own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid as uuid_module
from collections.abc import Iterable
from typing import Any

import transaction
import zope.event
from transaction.interfaces import TransientError

from zasync import inprocess, maintenance, scheduler
from zasync.claimer import Claimer
from zasync.compaction import Compactor
from zasync.interfaces import KEY, WorkerHeartbeat
from zasync.limiter import ConflictLimiter
from zasync.memory import MemoryTrimmer
from zasync.placement import Placement
from zasync.pool import ThreadPool, join_all
from zasync.queue import Queues, install
from zasync.recovery import recover_slot
from zasync.settings import DispatcherSettings
from zasync.txn import close_connection
from zasync.waking import Waker

log = logging.getLogger(__name__)

#: seconds the loop pauses after an error before it goes on
ERROR_PAUSE = 0.5


def get(uuid: str | None = None) -> Dispatcher | None:
    """The running dispatcher with ``uuid`` (or the only one, without it)."""
    found: Dispatcher | None = inprocess.get(uuid)
    return found


class Dispatcher:
    """``Dispatcher(db, uuid=None, threads=4, **settings)``; ``start()``,
    ``stop(timeout)``.

    ``db`` is the database whose root holds the queues (with several
    databases, the one named ``async``; jobs reach objects of the others
    through cross-database references). The settings are those of
    zasync.settings.DispatcherSettings (``queue_names`` limits the queues
    served; ``fresh_grace`` is how long the other workers leave a job just
    due to the one it is meant for); a bad one raises ConfigurationError
    here.

    ``claims_committed``, ``claims_conflicted`` and ``jobs_claimed`` count
    the loop's claims since the start, ``jobs_run`` the jobs its threads
    ran, ``jobs_handed`` and ``jobs_received`` the jobs producers handed
    to its threads in this process and in others.
    """

    def __init__(
        self,
        db: Any,
        uuid: str | uuid_module.UUID | None = None,
        threads: int = 4,
        **settings: Any,
    ):
        self.settings = DispatcherSettings(threads=threads, **settings)
        self.db = db
        self.uuid = str(uuid or uuid_module.uuid4())
        self.placement = Placement(self.uuid, self.settings.heartbeat_interval)
        self.compactor = Compactor()
        self.claimer = Claimer(self)
        #: every job transaction of the threads passes it
        self.limiter = ConflictLimiter(self.settings.threads)
        self.pool = ThreadPool(self, self.settings.threads)
        self.trimmer = MemoryTrimmer(self.settings.memory_trim_interval)
        self.stopping = threading.Event()
        self._stopped = threading.Event()
        self.waker = Waker(self._registry_changed)
        #: set while the loop waits to be woken (for tests)
        self.waiting = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._record_oid: bytes | None = None
        #: look for jobs this worker's slots hold that no thread runs (after
        #: a failed commit, and at each maintenance round)
        self.reconcile_due = False
        self._inbox_oids: frozenset[bytes] = frozenset()
        self.activated: float | None = None
        # Set by start(): a dispatcher not started only claims in step().
        self._next_heartbeat = float("inf")
        self._next_maintenance = float("inf")
        self._next_due: float | None = None

    def __repr__(self) -> str:  # the default repr, as zc.async's
        return object.__repr__(self)

    # Settings and counters, by the names users read.
    threads = property(lambda self: self.settings.threads)
    queue_names = property(lambda self: self.settings.queue_names)
    heartbeat_interval = property(lambda self: self.settings.heartbeat_interval)
    lease_seconds = property(lambda self: self.settings.lease_seconds)
    maintenance_interval = property(lambda self: self.settings.maintenance_interval)
    retention = property(lambda self: self.settings.retention)
    poll_interval = property(lambda self: self.settings.poll_interval)
    claims_committed = property(lambda self: self.claimer.committed)
    claims_conflicted = property(lambda self: self.claimer.conflicted)
    jobs_claimed = property(lambda self: self.claimer.jobs_claimed)
    jobs_received = property(lambda self: self.claimer.jobs_received)
    jobs_run = property(lambda self: self.pool.jobs_run)
    jobs_handed = property(lambda self: self.pool.jobs_handed)

    # -- life cycle -------------------------------------------------------

    def start(self, *, loop: bool = True) -> Dispatcher:
        """Register, recover this UUID's unfinished jobs, start the threads
        and (unless ``loop`` is False: the caller then calls ``step()``)
        the loop. Raises WorkerError when another live process uses the
        same UUID."""
        inprocess.register(self)
        try:
            self._start(loop)
        except BaseException:
            inprocess.unregister(self)
            raise
        return self

    def _start(self, loop: bool) -> None:
        # Each thread holds a connection (two while it writes progress),
        # plus the loop's own: make room for them beside the application's.
        needed = 2 * self.settings.threads + 1
        if self.db.getPoolSize() < needed + 7:
            self.db.setPoolSize(needed + 7)
        self.tm = transaction.TransactionManager(explicit=True)
        self.conn = self.db.open(transaction_manager=self.tm)
        queues, outcomes = self._register()
        for job, outcome in outcomes:
            log.warning(
                "recovered job %s from this worker's last run: %s", job.id, outcome
            )
        self.activated = time.time()
        self.waker.listen(
            self.db,
            queues,
            self._inbox_oids,
            self.uuid,
            self.settings.poll_interval,
        )
        self.pool.start()
        self.wake()  # jobs may be waiting already: look at once
        self._next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
        self._next_maintenance = time.monotonic()
        if loop:
            self._loop_thread = threading.Thread(
                target=self._loop, name=f"zasync-{self.uuid[:8]}-loop", daemon=True
            )
            self._loop_thread.start()
        log.info(
            "dispatcher %s started with %d threads (pid %d)",
            self.uuid,
            self.settings.threads,
            os.getpid(),
            extra={"action": "start", "worker": self.uuid},
        )

    def _register(self) -> tuple[Queues, list[tuple[Any, str]]]:
        """Register this worker (recovering what its UUID held), read the
        live workers; return the queues and the recovered jobs."""
        settings = self.settings
        for attempt in self.tm.attempts(10):
            with attempt:
                queues = install(self.conn)
                record = queues.workers.get(self.uuid)
                if record is not None:
                    maintenance.check_not_running_elsewhere(record, self)
                record = queues.workers.register(self.uuid)
                outcomes = []
                for slot in record.slots:
                    outcomes.extend(recover_slot(slot, why="its worker restarted"))
                record._begin(
                    settings.threads,
                    settings.queue_names or (),
                    time.time(),
                    lease_seconds=settings.lease_seconds,
                    heartbeat_interval=settings.heartbeat_interval,
                    name=settings.name,
                )
        self._record_oid = record._p_oid
        # Its threads' inboxes, where producers elsewhere hand jobs over.
        self._inbox_oids = frozenset(
            slot.inbox._p_oid for slot in record.slots[: settings.threads]
        )
        self.refresh_peers()
        return queues, outcomes

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, let running jobs finish for up to ``timeout``
        seconds (None: wait for them), then stop. Jobs still running are
        left to recovery (this UUID's next start, or a live worker once the
        lease expires). Returns True when every thread finished."""
        self.stopping.set()
        self.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._log_running("stopping: waiting for job %s (%s) in thread %d")
        clean = self.pool.stop(deadline)
        clean = join_all([self._loop_thread], deadline) and clean
        if clean:
            self._mark_stopped()
        else:
            self._log_running(
                "job %s (%s) still runs in thread %d: left to recovery (this "
                "worker's next start, or another worker when the lease expires)",
                logging.WARNING,
            )
            log.warning(
                "dispatcher %s stopped with %d threads still running jobs; "
                "they will be recovered",
                self.uuid,
                len(self.pool.busy),
                extra={"action": "stop", "worker": self.uuid},
            )
        self.waker.close()
        close_connection(self.conn, self.tm)
        inprocess.unregister(self)
        self._stopped.set()
        log.info("dispatcher %s stopped", self.uuid, extra={"action": "stop"})
        return clean

    def _log_running(self, message: str, level: int = logging.INFO) -> None:
        for job_id, name, index in self.pool.running():
            log.log(
                level,
                message,
                job_id,
                name,
                index,
                extra={"action": "stop", "job_id": job_id, "callable": name},
            )

    def _mark_stopped(self) -> None:
        """Record the clean stop. Every thread has finished: jobs still in
        the inboxes were never started (handed over by a producer
        elsewhere while the worker stopped, see zasync.handoff), and go
        back to their queues."""
        try:
            for attempt in self.tm.attempts(5):
                with attempt:
                    record = self.record_in(self.conn)
                    outcomes = []
                    for slot in record.slots:
                        if slot.inbox:
                            for job in slot.inbox.jobs.values():
                                job._unstarted()
                        if slot.active or slot.inbox:
                            outcomes.extend(
                                recover_slot(slot, why="its worker stopped")
                            )
                    record.stopped = time.time()
                    record.heartbeat.lease_until = 0.0
            for job, outcome in outcomes:
                log.info("job %s, not started when stopping: %s", job.id, outcome)
        except Exception:
            log.exception("could not mark worker %s stopped", self.uuid)

    @property
    def dead(self) -> bool:
        return self._stopped.is_set()

    def wake(self) -> None:
        """Ask the dispatcher to look for due jobs now."""
        self.waker.wake()

    def _registry_changed(self, oids: Iterable[bytes] | None) -> bool:
        """Note a commit that registered, started or stopped a worker (each
        job's worker must be reckoned from the same list by all of them)."""
        if oids is None or not self.placement.registry_oids.isdisjoint(oids):
            self.placement.stale = True
            return True
        return False

    def record_in(self, conn: Any) -> Any:
        """This worker's record (zasync.workers.WorkerRecord), loaded in
        ``conn``."""
        return conn.get(self._record_oid)

    def served_queues(self, queues: Queues) -> list[Any]:
        """The queues of ``queues`` this worker serves."""
        names = self.settings.queue_names
        if names is None:
            return list(queues.values())
        return [queues[name] for name in names if name in queues]

    def refresh_peers(self) -> None:
        """Read which workers are alive, and the queues they serve."""
        self.tm.begin()
        try:
            self.placement.refresh(self.conn.root()[KEY].workers)
        finally:
            self.tm.abort()

    # -- the loop ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.waiting.set()
            self.waker.event.wait(self.wait_seconds(time.monotonic()))
            self.waiting.clear()
            self.waker.event.clear()
            if self.stopping.is_set():
                break
            self.step()

    def wait_seconds(self, now: float) -> float:
        """How long the loop may wait, at monotonic time ``now``, before
        its next round if nothing wakes it."""
        timeout = min(self.settings.poll_interval, self._next_heartbeat - now)
        due = self._next_due
        if due is not None and due > time.time():
            # A scheduled job: wake when it is due. (Jobs due already wait
            # for a thread to become idle, which wakes the loop.)
            timeout = min(timeout, due - time.time())
        return max(0.0, timeout)

    def step(self, now: float | None = None) -> None:
        """One round of the loop, at monotonic time ``now`` (default: the
        clock's): claim for the idle threads, then the heartbeat and the
        maintenance when they are due. An error is logged and the round
        ends (a storage away is one line, not a traceback each round)."""
        try:
            self._step(time.monotonic() if now is None else now)
        except TransientError as e:
            log.warning(
                "dispatcher %s: %s: %s; going on", self.uuid, type(e).__name__, e
            )
            self.reconcile_due = True
            self._pause()
        except Exception:
            log.exception("dispatcher %s loop error; going on", self.uuid)
            self.reconcile_due = True
            self._pause()

    def _step(self, now: float) -> None:
        if self.placement.stale:
            self.refresh_peers()
        idle = self.pool.begin_claim()
        try:
            self._next_due = self.claimer.claim_for(idle)
        finally:
            self.pool.end_claim()
        self._next_due = scheduler.fire_for(self, self._next_due)
        settings = self.settings
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + settings.heartbeat_interval
        if now >= self._next_maintenance:
            self.reconcile_due = True  # at the next claim
            maintenance.run(self)
            self.refresh_peers()
            self._next_maintenance = now + settings.maintenance_interval
        self.trimmer.after(now, self.jobs_run)

    def _pause(self) -> None:
        try:
            self.tm.abort()
        except Exception:
            log.debug("abort failed", exc_info=True)
        self.stopping.wait(ERROR_PAUSE)

    # -- lease and heartbeat -----------------------------------------------------

    def lease_running_out(self, conn: Any) -> bool:
        """True when this worker runs jobs and the lease on them needs
        renewing (read in ``conn``'s current transaction)."""
        if not self.pool.is_busy():
            return False
        record = self.record_in(conn)
        left = record.heartbeat.lease_until - time.time()
        return bool(left < self.settings.lease_seconds * 2 / 3)

    def renew_lease(self) -> None:
        """Extend the lease, in a transaction of its own."""
        for attempt in self.tm.attempts(5):
            with attempt:
                self.record_in(self.conn)._extend_lease(time.time())

    def renew_lease_if_due(self) -> None:
        """Renew the lease when it runs out (read in a transaction of the
        loop's own)."""
        self.tm.begin()
        renew = self.lease_running_out(self.conn)
        self.tm.abort()
        if renew:
            self.renew_lease()

    def _heartbeat(self) -> None:
        for attempt in self.tm.attempts(5):
            with attempt:
                record = self.record_in(self.conn)
                record.heartbeat.last_seen = time.time()
                if record.stopped is not None:
                    record.stopped = None
        if zope.event.subscribers:
            zope.event.notify(WorkerHeartbeat(self.uuid))
