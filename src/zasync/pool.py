"""The threads of a dispatcher that run jobs, and which of them are free.

Each thread waits on an in-memory inbox for the oids of the jobs it is to
run (claimed by the dispatcher's loop, or handed over in a producer's
transaction, see zasync.handoff). A thread is idle, reserved (for a job a
producer in this process is handing it, until that transaction ends),
being claimed for (the loop claims in its connection), or busy.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from typing import Any

from zasync.callables import callable_name
from zasync.executor import SlotRunner
from zasync.keys import hex_id
from zasync.recovery import recover_slot
from zasync.watchdog import Watchdog

log = logging.getLogger(__name__)

#: seconds between tries to put back a failed batch's jobs, at most
PUT_BACK_MAX_DELAY = 10.0


class ThreadPool:
    """``threads`` job threads of ``dispatcher``."""

    def __init__(self, dispatcher: Any, threads: int):
        self.dispatcher = dispatcher
        self.runners = [SlotRunner(dispatcher, index) for index in range(threads)]
        self._inboxes: list[queue_module.SimpleQueue] = [
            queue_module.SimpleQueue() for _ in range(threads)
        ]
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.idle: set[int] = set()
        #: thread index -> time.time() it was given its jobs
        self.busy: dict[int, float] = {}
        #: idle threads given a job in a producer's transaction that has
        #: not ended yet, and those the loop is claiming for (not given
        #: such jobs meanwhile)
        self.reserved: set[int] = set()
        self.claiming: set[int] = set()
        #: jobs the threads ran, and those handed to them in the
        #: transaction that queued them (zasync.handoff)
        self.jobs_run = 0
        self.jobs_handed = 0
        #: threads abandoned in a stuck job (see zasync.watchdog), never
        #: waited for
        self.abandoned: list[threading.Thread] = []
        self.watchdog = Watchdog(self)

    def start(self) -> None:
        for runner, inbox in zip(self.runners, self._inboxes, strict=True):
            self.threads.append(self._spawn(runner, inbox))
            self.idle.add(runner.index)
        self.watchdog.start()

    def _spawn(
        self, runner: SlotRunner, inbox: queue_module.SimpleQueue
    ) -> threading.Thread:
        runner.body.entered = self.watchdog.wake  # a job starts: watch it
        thread = threading.Thread(
            target=self._main,
            args=(runner, inbox),
            name=f"zasync-{self.dispatcher.uuid[:8]}-{runner.index}",
            daemon=True,
        )
        thread.start()
        return thread

    def replace(self, runner: SlotRunner, run: Any) -> bool:
        """Abandon ``runner``'s thread if it is still in the call ``run``
        and give its slot a new thread; False when it returned meanwhile
        (it is not stuck)."""
        index = runner.index
        with self._lock:
            if self.runners[index] is not runner or runner.body.run is not run:
                return False
            if self.dispatcher.stopping.is_set():
                runner.discard()  # commits nothing; left to recovery
                return True
            runner.discard()
            fresh = SlotRunner(self.dispatcher, index)
            inbox: queue_module.SimpleQueue = queue_module.SimpleQueue()
            self.runners[index] = fresh
            self._inboxes[index] = inbox
            old, self.threads[index] = self.threads[index], self._spawn(fresh, inbox)
            self.abandoned.append(old)
            # It keeps its place at the limiter's gate until it returns.
            self.dispatcher.limiter.resize(1)
            self.busy.pop(index, None)
            self.idle.add(index)
        # Jobs of its batch that did not start: given to the new thread.
        self.dispatcher.reconcile_due = True
        self.dispatcher.wake()
        return True

    # -- what the loop claims for ---------------------------------------------

    def begin_claim(self) -> list[int]:
        """The idle threads, in order, marked as being claimed for."""
        with self._lock:
            idle = sorted(self.idle)
            self.claiming = set(idle)
        return idle

    def end_claim(self) -> None:
        with self._lock:
            self.claiming = set()

    def give(self, index: int, oids: list[int], *, loaded: bool) -> None:
        """Run jobs ``oids`` in thread ``index`` (``loaded``: claimed in
        the thread's own connection, which has them in its cache)."""
        with self._lock:
            self.idle.discard(index)
            self.busy[index] = time.time()
        self._inboxes[index].put((oids, loaded))

    def is_busy(self) -> bool:
        with self._lock:
            return bool(self.busy)

    # -- jobs handed over by producers in this process (zasync.handoff) -------

    def reserve(self) -> int | None:
        """An idle thread, reserved until ``release`` or ``start_reserved``;
        None when no thread is free."""
        with self._lock:
            free = sorted(self.idle - self.claiming)
            if not free:
                return None
            index = free[0]
            self.idle.discard(index)
            self.reserved.add(index)
        return index

    def release(self, index: int) -> None:
        """Give back a reserved thread whose job was not handed over."""
        with self._lock:
            if index not in self.reserved:
                return
            self.reserved.discard(index)
            if not self.dispatcher.stopping.is_set():
                self.idle.add(index)
        self.dispatcher.wake()

    def start_reserved(self, index: int, oid: int) -> bool:
        """Run job ``oid`` in reserved thread ``index``; False when the
        thread was not reserved (any more)."""
        with self._lock:
            if index not in self.reserved:
                return False
            self.reserved.discard(index)
            self.busy[index] = time.time()
            self.jobs_handed += 1
        self._inboxes[index].put(([oid], False))
        return True

    # -- stopping ---------------------------------------------------------------

    def running(self) -> list[tuple[str, str, int]]:
        """(job id, callable name, thread) of the jobs being called now."""
        found = []
        for runner in self.runners:
            current = runner.current
            if current is not None:
                oid, func = current
                found.append((hex_id(oid), callable_name(func), runner.index))
        return found

    def stop(self, deadline: float | None) -> bool:
        """Tell every thread to stop once its jobs are done, and wait for
        them until ``deadline`` (time.monotonic(); None: for ever). True
        when every thread ended."""
        for inbox in self._inboxes:
            inbox.put(None)
        self.watchdog.wake.set()  # it ends with the dispatcher's stopping
        for thread in self.abandoned:
            if thread.is_alive():
                log.warning(
                    "worker thread %s was abandoned in a stuck job and still "
                    "runs: not waited for",
                    thread.name,
                )
        clean = join_all(self.threads, deadline)
        self.watchdog.join(deadline)
        return clean

    # -- the threads -----------------------------------------------------------

    def _main(self, runner: SlotRunner, inbox: queue_module.SimpleQueue) -> None:
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
                    if not runner.discarded:
                        log.exception(
                            "worker thread %d failed running a batch", runner.index
                        )
                    try:
                        runner.tm.abort()
                    except Exception:
                        log.debug("abort failed", exc_info=True)
                    if not runner.discarded:
                        self._put_back(runner)
                with self._lock:
                    if runner.discarded:
                        log.warning(
                            "abandoned worker thread %d returned; it ends",
                            runner.index,
                        )
                        self.dispatcher.limiter.resize(-1)
                        return
                    self.busy.pop(runner.index, None)
                    if not self.dispatcher.stopping.is_set():
                        self.idle.add(runner.index)
                self.jobs_run += len(batch)
                self.dispatcher.wake()
        finally:
            runner.close()

    def _put_back(self, runner: SlotRunner) -> None:
        """Requeue (or fail, per their policies) the jobs a failed batch left
        in the thread's slot, as recovery would after a crash: this live
        worker renews its lease, so nobody else would ever rescue them.
        Tries again until it works (the storage may be away) or the
        dispatcher stops; then they are left to recovery."""
        stopping = self.dispatcher.stopping
        delay = 0.5
        while not stopping.is_set():
            try:
                for attempt in runner.tm.attempts(5):
                    with attempt:
                        outcomes = recover_slot(
                            runner.slot(runner.conn),
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
                stopping.wait(delay)
                delay = min(delay * 2, PUT_BACK_MAX_DELAY)
                continue
            for job, outcome in outcomes:
                log.warning(
                    "job %s put back after its worker thread failed: %s",
                    job.id,
                    outcome,
                    extra={"action": "recover", "job_id": job.id},
                )
            return


def join_all(threads: list[Any], deadline: float | None) -> bool:
    """Wait for ``threads`` until ``deadline`` (time.monotonic(); None:
    for ever); True when they all ended."""
    clean = True
    for thread in threads:
        if thread is None:
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            clean = False
    return clean
