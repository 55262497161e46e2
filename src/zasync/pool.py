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

    def start(self) -> None:
        uuid = self.dispatcher.uuid
        for runner, inbox in zip(self.runners, self._inboxes, strict=True):
            thread = threading.Thread(
                target=self._main,
                args=(runner, inbox),
                name=f"zasync-{uuid[:8]}-{runner.index}",
                daemon=True,
            )
            self.threads.append(thread)
            self.idle.add(runner.index)
            thread.start()

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
        return join_all(self.threads, deadline)

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
                    log.exception(
                        "worker thread %d failed running a batch", runner.index
                    )
                    try:
                        runner.tm.abort()
                    except Exception:
                        log.debug("abort failed", exc_info=True)
                    self._put_back(runner)
                with self._lock:
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
