"""Dispatcher: the worker inside a process.

A dispatcher serves the queues of one database with N threads. Its own
loop thread claims due jobs for idle threads (several per transaction when
many are due), renews the lease on its running jobs, writes a small
heartbeat and runs maintenance (rescue of dead workers' jobs, pruning of
finished jobs). It wakes on the commit that queues a job: at once for
producers in this process (an after-commit hook), and for other processes
when the storage tells it of the queue's change; polling is a fallback.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue as queue_module
import threading
import time
import uuid as uuid_module
import zlib
from typing import Any

import transaction
from transaction.interfaces import TransientError

from zasync import maintenance
from zasync.broken import replace_unimportable
from zasync.claim import BACKLOG_CHUNK, claim
from zasync.executor import SlotRunner, SoloGate, close_connection
from zasync.interfaces import ACTIVE, ASSIGNED, KEY, ConfigurationError, WorkerError
from zasync.queue import Queues, _install, compact
from zasync.recovery import recover_slot

log = logging.getLogger(__name__)

#: seconds before a compaction of a shard that removed nothing is tried again
COMPACT_PAUSE = 5.0
#: most object ids the loop prefetches after a wake-up: a commit that
#: changed more (many jobs queued at once, or other workers' claims) is
#: left to the claim, which fetches the jobs it considers in windows
PREFETCH_LIMIT = 64

_dispatchers: dict[str, Dispatcher] = {}
_registry_lock = threading.Lock()
#: notified after every commit of finished jobs in this process
completed = threading.Condition()


def get(uuid: str | None = None) -> Dispatcher | None:
    """The running dispatcher with ``uuid`` (or the only one, without it)."""
    with _registry_lock:
        if uuid is not None:
            return _dispatchers.get(str(uuid))
        if len(_dispatchers) == 1:
            return next(iter(_dispatchers.values()))
        return None


def local_dispatchers(db) -> list[Dispatcher]:
    """The running dispatchers of this process that serve ``db``."""
    if not _dispatchers:
        return []
    with _registry_lock:
        dispatchers = list(_dispatchers.values())
    return [d for d in dispatchers if d._serves(db)]


def wake_local(db) -> None:
    """Wake the dispatchers of this process that serve ``db``."""
    for dispatcher in local_dispatchers(db):
        dispatcher.wake()


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"Dispatcher({name}={value!r}): use a positive number")
    return value


class Dispatcher:
    """``Dispatcher(db, uuid=None, threads=4)``; ``start()``, ``stop(timeout)``.

    ``db`` is the database whose root holds the queues (with several
    databases, the one named ``async``; jobs reach objects of the others
    through cross-database references).

    ``queue_names`` limits the queues served (default: all).
    ``fresh_grace`` (seconds, 0 to turn it off): when several workers serve
    a queue, each job just due is meant for one of them, and the others
    leave it to that one for this long before taking it themselves (so
    that they do not all claim it at once). A backlog (jobs due for longer)
    is shared out the same way, without waiting: each worker takes its own
    jobs first and the others' when its own run short. Raises
    ConfigurationError at construction for a bad setting.

    ``claims_committed``, ``claims_conflicted`` and ``jobs_claimed`` count
    the loop's claims since the start, and ``jobs_run`` the jobs its
    threads ran.
    """

    def __init__(
        self,
        db,
        uuid: str | uuid_module.UUID | None = None,
        threads: int = 4,
        *,
        queue_names: tuple[str, ...] | None = None,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 60.0,
        lease_seconds: float = 30.0,
        maintenance_interval: float = 5.0,
        retention: datetime.timedelta = datetime.timedelta(days=7),
        batch_seconds: float = 0.05,
        max_batch: int = 200,
        fresh_grace: float = 0.1,
    ):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigurationError(
                f"Dispatcher(threads={threads!r}): use a whole number >= 1"
            )
        self.db = db
        self.uuid = str(uuid or uuid_module.uuid4())
        self.threads = threads
        self.queue_names = tuple(queue_names) if queue_names else None
        self.poll_interval = _positive("poll_interval", poll_interval)
        self.heartbeat_interval = _positive("heartbeat_interval", heartbeat_interval)
        self.lease_seconds = _positive("lease_seconds", lease_seconds)
        self.maintenance_interval = _positive(
            "maintenance_interval", maintenance_interval
        )
        if not isinstance(retention, datetime.timedelta):
            raise ConfigurationError(
                f"Dispatcher(retention={retention!r}): use a datetime.timedelta"
            )
        self.retention = retention
        self.batch_seconds = _positive("batch_seconds", batch_seconds)
        self.max_batch = int(_positive("max_batch", max_batch))
        self.fresh_grace = _positive("fresh_grace", fresh_grace, allow_zero=True)
        #: (uuid, served queue names) of the live workers, this one
        #: included: a job just queued is meant for one of them (see
        #: _ranking), refreshed every maintenance_interval
        self._peers: tuple = ()
        self._peers_read = 0.0  # time.monotonic() of the last read
        #: oids whose invalidation means a worker came or went, and the
        #: flag it sets: the loop reads the workers again before it claims
        self._registry_oids: frozenset = frozenset()
        self._inbox_oids: frozenset = frozenset()  # set by start()
        self._peers_changed = False
        self._wake = threading.Event()
        #: set while the loop waits to be woken (for tests)
        self._waiting = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        #: every job transaction of the threads passes it (SoloGate)
        self.gate = SoloGate(threads)
        self._runners: list[SlotRunner] = []
        self._inboxes: list[queue_module.SimpleQueue] = []
        self._idle: set[int] = set()
        self._busy: dict[int, float] = {}
        #: idle threads given a job in a producer's transaction that has
        #: not ended yet (see zasync.handoff), and those the loop is
        #: claiming for (not given such jobs meanwhile)
        self._reserved: set[int] = set()
        self._claiming: set[int] = set()
        self._lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._record_oid = None
        self._watched: set = set()
        #: oids changed by the commits that woke the loop (see _on_invalidation)
        self._fresh_oids: set = set()
        self._watched_count = -1
        self._live_written = False
        self.activated: float | None = None
        self._contended_until = 0.0
        #: keys of stale shard entries this dispatcher's claims left (see
        #: zasync.queue): skipped without loading their jobs; forgotten at
        #: each compaction
        self._known_stale: set = set()
        #: {(queue name, shard index): time.monotonic() before which a
        #: compaction that removed nothing is not tried again}
        self._compact_after: dict = {}
        self.jobs_run = 0
        #: the loop's claims: committed, given up on a conflict, and the
        #: jobs the committed ones took (counters for diagnostics)
        self.claims_committed = 0
        self.claims_conflicted = 0
        self.jobs_claimed = 0
        #: jobs handed to a thread in the transaction that queued them
        self.jobs_handed = 0
        #: jobs handed to its threads by producers in other processes
        self.jobs_received = 0

    def __repr__(self) -> str:  # the default repr, as zc.async's
        return object.__repr__(self)

    # -- life cycle -------------------------------------------------------

    def start(self) -> Dispatcher:
        """Register, recover this UUID's unfinished jobs, start the threads.
        Raises WorkerError when another live process uses the same UUID."""
        with _registry_lock:
            if self.uuid in _dispatchers:
                raise WorkerError(
                    f"a dispatcher with UUID {self.uuid} already runs in this "
                    f"process; stop it first or use another UUID"
                )
            _dispatchers[self.uuid] = self
        try:
            self._start()
        except BaseException:
            with _registry_lock:
                _dispatchers.pop(self.uuid, None)
            raise
        return self

    def _start(self) -> None:
        # Each thread holds a connection (two while it writes progress),
        # plus the loop's own: make room for them beside the application's.
        needed = 2 * self.threads + 1
        if self.db.getPoolSize() < needed + 7:
            self.db.setPoolSize(needed + 7)
        self._tm = transaction.TransactionManager(explicit=True)
        self._conn = self.db.open(transaction_manager=self._tm)
        for attempt in self._tm.attempts(10):
            with attempt:
                queues = self._conn.root().get(KEY)
                if queues is None:
                    queues = _install(self._conn.root(), ("",))
                record = queues.workers.get(self.uuid)
                if record is not None:
                    maintenance.check_not_running_elsewhere(record, self)
                record = queues.workers.register(self.uuid)
                outcomes = []
                for slot in record.slots:
                    outcomes.extend(recover_slot(slot, why="its worker restarted"))
                record._begin(
                    self.threads,
                    self.queue_names or (),
                    time.time(),
                    lease_seconds=self.lease_seconds,
                    heartbeat_interval=self.heartbeat_interval,
                )
        self._record_oid = record._p_oid
        # Its threads' inboxes, where producers elsewhere hand jobs over.
        self._inbox_oids = frozenset(
            slot.inbox._p_oid for slot in record.slots[: self.threads]
        )
        self._refresh_peers()
        for job, outcome in outcomes:
            log.warning(
                "recovered job %s from this worker's last run: %s", job.id, outcome
            )
        self.activated = time.time()
        self._listen_for_commits(queues)
        for index in range(self.threads):
            runner = SlotRunner(self, index)
            inbox: queue_module.SimpleQueue = queue_module.SimpleQueue()
            thread = threading.Thread(
                target=self._thread_main,
                args=(runner, inbox),
                name=f"zasync-{self.uuid[:8]}-{index}",
                daemon=True,
            )
            self._runners.append(runner)
            self._inboxes.append(inbox)
            self._threads.append(thread)
            self._idle.add(index)
            thread.start()
        self._wake.set()  # jobs may be waiting already: look at once
        self._loop_thread = threading.Thread(
            target=self._loop, name=f"zasync-{self.uuid[:8]}-loop", daemon=True
        )
        self._loop_thread.start()
        log.info(
            "dispatcher %s started with %d threads (pid %d)",
            self.uuid,
            self.threads,
            os.getpid(),
            extra={"action": "start", "worker": self.uuid},
        )

    def _listen_for_commits(self, queues) -> None:
        """Wake on other processes' commits that queue jobs, where the
        storage can tell (ZEO through NotifyingStorage, RelStorage through
        LISTEN/NOTIFY); otherwise poll every ``poll_interval``."""
        from zasync import wakeup

        self._watch(queues)
        notifying = wakeup.find_notifying(self.db.storage)
        self._notifying = notifying
        self._listener = None
        if notifying is not None:
            notifying.add_listener(self._on_invalidation)
            return
        dsn = wakeup.dsn_of(self.db)
        if dsn is not None:
            self._listener = wakeup.PostgresListener(dsn, self.wake).start()
            return
        from zasync.storage import storage_kind

        if storage_kind(self.db) != "file":
            log.info(
                "dispatcher %s polls every %.1f s for jobs queued by other "
                "processes: open the database with zasync.storage.open_db, or "
                "wrap the storage in <zasyncnotify> in its ZConfig, to wake at once",
                self.uuid,
                self.poll_interval,
            )

    def _watch(self, queues) -> None:
        """Watch the job counters of the queues there are now, the
        container of queues (a queue added wakes the loop, which calls this
        again), and this worker's inboxes (jobs handed over, see
        zasync.handoff)."""
        watched = {queue._length._p_oid for queue in queues.values()}
        watched.add(queues._queues._p_oid)
        watched.update(self._inbox_oids)
        self._watched = watched
        self._watched_count = len(queues)

    def _on_invalidation(self, oids) -> None:
        if oids is None or not self._registry_oids.isdisjoint(oids):
            # A worker registered, started or stopped: each job's worker
            # must be reckoned from the same list by all of them.
            self._peers_changed = True
            self._wake.set()
        if oids is None or self._watched.isdisjoint(oids):
            return
        # A commit that queued jobs: the claim will load what it changed
        # (the queue's counter, the shard's bucket, the jobs), so fetch
        # it now, all at once, rather than in a round trip each.
        fresh = self._fresh_oids
        if len(fresh) + len(oids) <= PREFETCH_LIMIT:
            fresh.update(oids)
        self._wake.set()

    def _prefetch_fresh(self, conn) -> None:
        """Start loading into ``conn`` what the commits that woke the loop
        changed (ZEO loads them in parallel; the claim's reads wait for
        them)."""
        fresh, self._fresh_oids = self._fresh_oids, set()
        if fresh:
            conn.prefetch(list(fresh))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, let running jobs finish for up to ``timeout``
        seconds (None: wait for them), then stop. Jobs still running are
        left to recovery (this UUID's next start, or a live worker once the
        lease expires). Returns True when every thread finished."""
        self._stopping.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for oid, name, index in self._running():
            log.info(
                "stopping: waiting for job %s (%s) in thread %d",
                oid,
                name,
                index,
                extra={"action": "stop", "job_id": oid, "callable": name},
            )
        for inbox in self._inboxes:
            inbox.put(None)
        clean = True
        for thread in [*self._threads, self._loop_thread]:
            if thread is None:
                continue
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            thread.join(remaining)
            if thread.is_alive():
                clean = False
        if clean:
            self._mark_stopped()
        else:
            with self._lock:
                running = dict(self._busy)
            for oid, name, index in self._running():
                log.warning(
                    "job %s (%s) still runs in thread %d: left to recovery "
                    "(this worker's next start, or another worker when the "
                    "lease expires)",
                    oid,
                    name,
                    index,
                    extra={"action": "stop", "job_id": oid, "callable": name},
                )
            log.warning(
                "dispatcher %s stopped with %d threads still running jobs; "
                "they will be recovered",
                self.uuid,
                len(running),
                extra={"action": "stop", "worker": self.uuid},
            )
        if getattr(self, "_notifying", None) is not None:
            self._notifying.remove_listener(self._on_invalidation)
        if getattr(self, "_listener", None) is not None:
            self._listener.stop()
        close_connection(self._conn, self._tm)
        with _registry_lock:
            if _dispatchers.get(self.uuid) is self:
                del _dispatchers[self.uuid]
        self._stopped.set()
        log.info("dispatcher %s stopped", self.uuid, extra={"action": "stop"})
        return clean

    def _running(self) -> list[tuple[str, str, int]]:
        """(job id, callable name, thread) of the jobs being called now."""
        from zasync.job import callable_name

        found = []
        for runner in self._runners:
            current = runner.current
            if current is not None:
                oid, func = current
                job_id = format(int.from_bytes(oid, "big"), "x")
                found.append((job_id, callable_name(func), runner.index))
        return found

    def _mark_stopped(self) -> None:
        """Record the clean stop. Every thread has finished: jobs still in
        the inboxes were never started (handed over by a producer
        elsewhere while the worker stopped, see zasync.handoff), and go
        back to their queues."""
        try:
            for attempt in self._tm.attempts(5):
                with attempt:
                    record = self._record_in(self._conn)
                    outcomes = []
                    for slot in record.slots:
                        if slot.inbox:
                            for job in slot.inbox.jobs.values():
                                job._status = ASSIGNED  # no thread started it
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
        self._wake.set()

    def _serves(self, db) -> bool:
        return db is self.db

    def _record_in(self, conn):
        """This worker's record, loaded in ``conn``."""
        return conn.get(self._record_oid)

    # -- threads -------------------------------------------------------------

    def _thread_main(self, runner: SlotRunner, inbox) -> None:
        runner.open()
        try:
            while True:
                message = inbox.get()
                if message is None:
                    return
                batch, loaded = message
                try:
                    runner.run(batch, loaded=loaded)
                except Exception:
                    log.exception(
                        "worker thread %d failed running a batch", runner.index
                    )
                    try:
                        runner.tm.abort()
                    except Exception:
                        log.debug("abort failed", exc_info=True)
                    self._put_back(runner)
                with self._lock:
                    self._busy.pop(runner.index, None)
                    if not self._stopping.is_set():
                        self._idle.add(runner.index)
                self.jobs_run += len(batch)
                self._wake.set()
        finally:
            runner.close()

    def _put_back(self, runner: SlotRunner) -> None:
        """Requeue (or fail, per their policies) the jobs a failed batch left
        in the thread's slot, as recovery would after a crash: this live
        worker renews its lease, so nobody else would ever rescue them.
        Tries again until it works (the storage may be away) or the
        dispatcher stops; then they are left to recovery."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                for attempt in runner.tm.attempts(5):
                    with attempt:
                        outcomes = recover_slot(
                            runner._slot(runner.conn),
                            why="its worker thread failed running it",
                        )
            except Exception as e:
                log.warning(
                    "could not put back the jobs of worker thread %d yet (%s: %s); "
                    "trying again in %.1f s",
                    runner.index,
                    type(e).__name__,
                    e,
                    delay,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            for job, outcome in outcomes:
                log.warning(
                    "job %s put back after its worker thread failed: %s",
                    job.id,
                    outcome,
                    extra={"action": "recover", "job_id": job.id},
                )
            return

    def _job_finished(self) -> None:
        with completed:
            completed.notify_all()

    # -- the loop ---------------------------------------------------------------

    def _loop(self) -> None:
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        next_maintenance = time.monotonic()
        next_due: float | None = None
        while not self._stopping.is_set():
            clock = time.monotonic()
            timeout = min(self.poll_interval, next_heartbeat - clock)
            if next_due is not None and next_due > time.time():
                # A scheduled job: wake when it is due. (Jobs due already
                # wait for a thread to become idle, which wakes the loop.)
                timeout = min(timeout, next_due - time.time())
            self._waiting.set()
            self._wake.wait(max(0.0, timeout))
            self._waiting.clear()
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                next_due = self._claim_for_idle()
                clock = time.monotonic()
                if clock >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = clock + self.heartbeat_interval
                if clock >= next_maintenance:
                    maintenance.run(self)
                    self._refresh_peers()
                    next_maintenance = clock + self.maintenance_interval
            except TransientError as e:
                # A conflict, or the storage is away (ZEO's ClientDisconnected):
                # one line, not a traceback each round until it is back.
                log.warning(
                    "dispatcher %s: %s: %s; going on",
                    self.uuid,
                    type(e).__name__,
                    e,
                )
                try:
                    self._tm.abort()
                except Exception:
                    log.debug("abort failed", exc_info=True)
                self._stopping.wait(0.5)
            except Exception:
                log.exception("dispatcher %s loop error; going on", self.uuid)
                try:
                    self._tm.abort()
                except Exception:
                    log.debug("abort failed", exc_info=True)
                self._stopping.wait(0.5)

    def _served_queues(self, queues: Queues) -> list:
        if self.queue_names is None:
            return list(queues.values())
        return [queues[name] for name in self.queue_names if name in queues]

    def _claim_for_idle(self) -> float | None:
        """Claim due jobs for idle threads; return when the next scheduled
        job is due (epoch seconds), if known.

        The claim runs in the connection of the first idle thread, which
        is not using it (it waits for a batch): that thread then finds the
        jobs it runs, and its slot, current in its cache, instead of
        loading them again after the claim's commit changed them (a round
        trip for ZEO and RelStorage, an unpickling per job). With fewer
        due jobs than the idle threads can take, they are shared among
        them (the members of a parallel() run side by side); with more,
        each idle thread's are claimed in a transaction of their own, in
        its own connection."""
        if self._peers_changed:
            self._refresh_peers()
        with self._lock:
            idle = sorted(self._idle)
            self._claiming = set(idle)
        try:
            return self._claim_for(idle)
        finally:
            with self._lock:
                self._claiming = set()

    def _claim_for(self, idle: list[int]) -> float | None:
        """_claim_for_idle, for the threads ``idle``."""
        if not idle:
            # Every thread is busy; the first to be idle wakes the loop,
            # which looks then. Nothing is read now: with other workers on
            # the queue, each of their claims wakes this loop.
            self._fresh_oids = set()
            self._tm.begin()
            renew = self._lease_running_out(self._conn)
            self._tm.abort()
            if renew:
                self._renew_lease()
            return None
        next_due = None
        while idle:
            runner = self._runners[idle[0]]
            with runner.lock:
                if runner.conn is None:  # its thread has not opened it yet
                    conn, tm = self._conn, self._tm
                else:
                    conn, tm = runner.conn, runner.tm
                try:
                    next_due, batches, compact, more = self._claim_in(conn, tm, idle)
                except BaseException:
                    tm.abort()
                    raise
            for index, oids in batches.items():
                with self._lock:
                    self._idle.discard(index)
                    self._busy[index] = time.time()
                loaded = index == idle[0] and conn is not self._conn
                self._inboxes[index].put((oids, loaded))
            if compact:
                self._compact([c for c in compact if self._compacts(*c)])
            if not more:
                break
            idle = [index for index in idle if index not in batches]
        return next_due

    # -- jobs handed over in the transaction that queued them (handoff) -----

    def _reserve(self, queue, job) -> int | None:
        """An idle thread for ``job``, just queued in ``queue`` in this
        process, reserved for it until the producer's transaction ends;
        None when this dispatcher does not serve the queue, the job is
        meant for another worker, or no thread is free."""
        if self.queue_names is not None and queue.name not in self.queue_names:
            return None
        if self._stopping.is_set() or self._loop_thread is None:
            return None
        rank = self._ranking([queue])
        if rank is not None and rank(queue, job, False) != 0:
            return None
        with self._lock:
            free = sorted(self._idle - self._claiming)
            if not free:
                return None
            index = free[0]
            self._idle.discard(index)
            self._reserved.add(index)
        return index

    def _release(self, index: int) -> None:
        """Give back a reserved thread whose job was not handed over."""
        with self._lock:
            if index not in self._reserved:
                return
            self._reserved.discard(index)
            if not self._stopping.is_set():
                self._idle.add(index)
        self._wake.set()

    def _start_reserved(self, index: int, oid: int) -> None:
        """The transaction that handed job ``oid`` to thread ``index``
        committed: run it."""
        with self._lock:
            if index not in self._reserved:
                return
            self._reserved.discard(index)
            self._busy[index] = time.time()
        self.jobs_handed += 1
        self._inboxes[index].put(([oid], False))

    def _claim_in(self, conn, tm, idle: list[int]) -> tuple:
        """Claim for the ``idle`` threads in ``conn`` (its transaction
        manager ``tm``), the connection of the first of them or the loop's
        own. Returns (when the next scheduled job is due, {thread: oids of
        the jobs it is to run}, shards worth compacting, whether to go on
        for the threads given nothing: only the first thread's jobs were
        claimed, with more due; or jobs handed over by producers elsewhere
        were found, which start before the queues are read)."""
        tm.begin()
        self._prefetch_fresh(conn)
        record = self._record_in(conn)
        handed = self._handed_over(record, idle)
        if handed:
            # Started at once; the queues are read for the other threads
            # in the next round of _claim_for.
            tm.abort()
            return None, handed, [], True
        queues = conn.root()[KEY]
        if len(queues) != self._watched_count:
            self._watch(queues)
        served = self._served_queues(queues)
        if not any(len(q) for q in served):
            next_due = _next_due(served, self._known_stale)
            renew = self._lease_running_out(conn)
            tm.abort()
            if renew:
                self._renew_lease()
            return next_due, {}, [], False
        slots = [(record.slots[i], self._runners[i].batch_limit) for i in idle]
        now_dt = datetime.datetime.now(datetime.UTC)
        now_us = int(now_dt.timestamp() * 1_000_000)
        try:
            taken = claim(
                served,
                slots=slots,
                worker=self.uuid,
                now_us=now_us,
                start_time=now_dt,
                spread=time.monotonic() < self._contended_until,
                known_stale=self._known_stale,
                rank=self._ranking(served),
                fresh_us=int(self.fresh_grace * 1_000_000),
                fill_first=conn is not self._conn,
            )
            for jobs in taken.values():
                for job in jobs:
                    self._check_importable(job)
            with self._lock:
                busy = bool(self._busy)
            if taken or busy:
                record._extend_lease(time.time())
            batches = {
                index: [int.from_bytes(job._p_oid, "big") for job in jobs]
                for index, jobs in taken.items()
            }
            next_due = _next_due(served, self._known_stale)
            if taken.wait_until_us is not None:
                # Jobs left to the workers they are meant for: take them
                # then if those have not.
                wait = taken.wait_until_us / 1_000_000
                next_due = wait if next_due is None else min(next_due, wait)
            tm.commit()
            # Only now: an aborted claim leaves those entries live.
            self._known_stale.update(taken.stale_keys)
            for index, jobs in taken.items():
                if index != idle[0] or conn is self._conn:
                    # The thread loads them in its own connection: ghosts
                    # here leave this one's cache to the queue's buckets.
                    for job in jobs:
                        job._p_deactivate()
            if taken:
                self.claims_committed += 1
                self.jobs_claimed += sum(len(oids) for oids in batches.values())
        except TransientError as e:
            tm.abort()
            self.claims_conflicted += 1
            log.debug("dispatcher %s: a claim conflicted: %s", self.uuid, e)
            # Somebody else claimed too: look again, and for a while pick
            # among the first due jobs at random rather than from the front.
            self._contended_until = time.monotonic() + 10.0
            self._wake.set()
            if time.monotonic() - self._peers_read > 0.1:
                # Maybe a worker this one does not know of yet (workers
                # started together each read the registry before the
                # others had registered).
                self._refresh_peers()
            return None, {}, [], False
        return next_due, batches, taken.compact, taken.more

    def _handed_over(self, record, idle: list[int]) -> dict[int, list[int]]:
        """{thread: oids} of the jobs producers in other processes handed
        to the ``idle`` threads (zasync.handoff)."""
        found = {}
        uuid = self.uuid
        for index in idle:
            inbox = record.slots[index].inbox
            if not inbox:
                continue
            oids = [
                oid
                for oid, job in inbox.jobs.items()
                if job._status == ACTIVE and job._worker == uuid and job._slot == index
            ]
            if oids:
                found[index] = oids
                self.jobs_received += len(oids)
        return found

    def _refresh_peers(self) -> None:
        """Read which workers are alive, and the queues they serve."""
        clock = time.time()
        self._peers_read = time.monotonic()
        self._peers_changed = False
        self._tm.begin()
        try:
            registry = self._conn.root()[KEY].workers
            self._registry_oids = registry.watched_oids()
            self._peers = tuple(
                sorted(
                    (record.uuid, tuple(record.queue_names))
                    for record in registry.values()
                    if record.uuid == self.uuid
                    or record.is_alive(clock, self.heartbeat_interval)
                )
            )
        except BaseException:
            self._peers_changed = True  # read again next time
            raise
        finally:
            self._tm.abort()

    def _serving(self, name: str) -> list[bytes]:
        """The ids (bytes) of the live workers that serve queue ``name``,
        this one included."""
        return [
            uuid.encode()
            for uuid, queue_names in self._peers
            if not queue_names or name in queue_names
        ]

    def _ranking(self, served) -> Any:
        """``rank(queue, job, backlog)`` for claim(): this worker's rank
        for the job among the live workers serving its queue, the same for
        all of them (rendezvous hashing of the job's and the workers' ids),
        0 when the job is meant for this one; or None when no other live
        worker serves these queues. For ``fresh_grace`` seconds after a job
        is due, the others leave it to that worker, instead of all claiming
        it at once and all but one conflicting; then anyone takes it (that
        worker may be busy, or gone). In a backlog (jobs due for longer)
        each worker takes its own first, and the others' only when its own
        run short, those it ranks next first; there jobs are meant for
        workers by runs of consecutive oids (BACKLOG_CHUNK)."""
        peers_of = {queue.name: self._serving(queue.name) for queue in served}
        if all(len(p) <= 1 for p in peers_of.values()):
            return None
        mine = self.uuid.encode()

        def rank(queue, job, backlog: bool) -> int:
            peers = peers_of.get(queue.name, ())
            if len(peers) <= 1:
                return 0
            oid = job._p_oid
            if backlog:
                number = int.from_bytes(oid, "big") // BACKLOG_CHUNK
                oid = number.to_bytes(8, "big")
            return _rendezvous_rank(peers, mine, zlib.crc32(oid))

        return rank

    def _compacts(self, queue, index: int) -> bool:
        """Whether this worker is the one (of the live workers serving the
        queue) that compacts this shard: two compacting the same shard, or
        one compacting where another claims, conflict (compaction deletes
        the first keys of buckets, a change BTrees do not merge)."""
        peers = self._serving(queue.name)
        if len(peers) <= 1:
            return True
        seed = zlib.crc32(f"{queue.name}\0{index}".encode())
        return _rendezvous_rank(peers, self.uuid.encode(), seed) == 0

    def _compact(self, shards) -> None:
        """Remove the stale entries claims left in front of busy shards."""
        clock = time.monotonic()
        for queue, index in shards:
            name = queue.name
            if self._compact_after.get((name, index), 0.0) > clock:
                continue  # found nothing to remove a moment ago
            # Not ``with self._tm``: a commit that fails there leaves the
            # transaction open, and the loop's next claim would fail too.
            try:
                self._tm.begin()
                queue = self._conn.root()[KEY][name]
                removed = compact(queue, index, known_stale=self._known_stale)
                self._tm.commit()
                if not removed:
                    # The stale entries claims count lie behind live jobs
                    # they cannot take yet (full quotas): not every round.
                    self._compact_after[(name, index)] = clock + COMPACT_PAUSE
                log.debug(
                    "removed %d stale entries from queue %r shard %d",
                    removed,
                    name,
                    index,
                )
            except TransientError:
                self._tm.abort()
                log.debug("compacting queue %r shard %d conflicted; later", name, index)
        if len(self._known_stale) > 100_000:  # only an optimisation: bounded
            self._known_stale.clear()

    def _check_importable(self, job) -> None:
        # A callable this process cannot import would make the claim
        # unstorable, and stop this worker from claiming anything.
        name = replace_unimportable(job)
        if name is not None:
            log.error(
                "job %s calls %s, which this worker cannot import: it will fail",
                job.id,
                name,
                extra={"action": "claim", "job_id": job.id, "callable": name},
            )

    def _lease_running_out(self, conn) -> bool:
        """True when this worker runs jobs and the lease on them needs
        renewing (read in ``conn``'s current transaction)."""
        with self._lock:
            busy = bool(self._busy)
        if not busy:
            return False
        record = self._record_in(conn)
        return record.heartbeat.lease_until - time.time() < self.lease_seconds * 2 / 3

    def _renew_lease(self) -> None:
        """Extend the lease, in a transaction of its own."""
        for attempt in self._tm.attempts(5):
            with attempt:
                self._record_in(self._conn)._extend_lease(time.time())

    def _heartbeat(self) -> None:
        for attempt in self._tm.attempts(5):
            with attempt:
                record = self._record_in(self._conn)
                record.heartbeat.last_seen = time.time()
                if record.stopped is not None:
                    record.stopped = None


def _rendezvous_rank(peers: list[bytes], mine: bytes, seed: int) -> int:
    """This worker's rank (0: first) among ``peers`` for the thing ``seed``
    (a CRC-32) stands for: each peer's score is the CRC-32 of its id after
    the seed, the same for every worker that computes it."""
    score = zlib.crc32(mine, seed)
    return sum(1 for peer in peers if zlib.crc32(peer, seed) > score)


def _next_due(queues, known_stale: set) -> float | None:
    """When the first job scheduled for later is due (epoch seconds)."""
    best = None
    now_us = int(time.time() * 1_000_000)
    for queue in queues:
        due = queue.next_due(now_us, known_stale)
        if due is not None and (best is None or due < best):
            best = due
    return best
