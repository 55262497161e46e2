"""Maintenance: rescue of dead workers' jobs, pruning of finished jobs and
of dead worker records.

One worker at a time does it: the maintenance lease in the registry is
written by every maintenance transaction, so two workers that try at once
conflict and one backs off. Checks are read-only; writes happen only when
there is something to do, so an idle cluster writes nothing here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transaction.interfaces import TransientError

from zasync.interfaces import KEY, WorkerError
from zasync.lanerepair import needs_repair, repair
from zasync.recovery import recover_slot

if TYPE_CHECKING:
    from zasync.dispatcher import Dispatcher
    from zasync.workers import WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)

PRUNE_CHUNK = 200  # jobs removed per transaction: short transactions
#: dead worker records with nothing left in them go after this long
DEAD_RECORD_SECONDS = 24 * 3600


def check_not_running_elsewhere(record: WorkerRecord, dispatcher: Dispatcher) -> None:
    """Raise WorkerError when ``record``'s UUID is in use by a live process
    other than a dead predecessor of this one."""
    if record.stopped is not None:
        return
    clock = time.time()
    if not record.is_alive(clock, dispatcher.heartbeat_interval):
        return
    if record.hostname == socket.gethostname():
        if record.pid == os.getpid() or not _pid_alive(record.pid):
            return  # this process, or a dead one: a restart
    last = clock - record.heartbeat.last_seen
    raise WorkerError(
        f"worker UUID {record.uuid} is in use by process {record.pid} on "
        f"{record.hostname} (last seen {last:.0f} s ago): stop that process, "
        f"or give this one another UUID file (ZASYNC_UUID)"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(dispatcher: Dispatcher) -> None:
    """One round of maintenance for ``dispatcher``'s database."""
    tm = dispatcher.tm
    conn = dispatcher.conn
    tm.begin()
    try:
        queues = conn.root()[KEY]
        registry = queues.workers
        lease = registry.maintenance
        clock = time.time()
        if lease.holder not in (None, dispatcher.uuid) and lease.until > clock:
            return
        dead = [
            record.uuid
            for record in registry.values()
            if record.uuid != dispatcher.uuid
            and not record.is_alive(clock, dispatcher.heartbeat_interval)
            and (record.stopped is None or record.active_count())
        ]
        cutoff_us = int((clock - dispatcher.retention.total_seconds()) * 1e6)
        prunable = [
            record.uuid
            for record in registry.values()
            if any(
                _first_key(slot.done) is not None and _first_key(slot.done) < cutoff_us
                for slot in record.slots
            )
        ]
        prunable_queues = [
            name
            for name, queue in queues.items()
            if queue.finished is not None
            and _first_key(queue.finished) is not None
            and _first_key(queue.finished) < cutoff_us
        ]
        stalled = [name for name, queue in queues.items() if needs_repair(queue)]
        expired = [
            record.uuid
            for record in registry.values()
            if record.uuid != dispatcher.uuid
            and record.stopped is not None
            and clock - record.stopped > DEAD_RECORD_SECONDS
            and not record.active_count()
            and not any(len(slot.done) for slot in record.slots)
        ]
    finally:
        tm.abort()
    for uuid in dead:
        _in_lease(
            dispatcher, lambda registry, uuid=uuid: _rescue(registry, uuid, dispatcher)
        )
    for uuid in prunable:
        while _in_lease(
            dispatcher, lambda registry, uuid=uuid: _prune(registry, uuid, cutoff_us)
        ):
            pass
    for name in prunable_queues:
        while _in_lease(
            dispatcher,
            lambda registry, name=name: _prune_tree(
                dispatcher.conn.root()[KEY][name].finished, cutoff_us
            ),
        ):
            pass
    for name in stalled:
        _in_lease(dispatcher, lambda registry, name=name: _repair(dispatcher, name))
    for uuid in expired:
        _in_lease(dispatcher, lambda registry, uuid=uuid: _expire(registry, uuid))


def _repair(dispatcher: Dispatcher, name: str) -> int:
    queue = dispatcher.conn.root()[KEY].get(name)
    if queue is None:
        return 0
    lost, freed = repair(queue)
    if lost:
        log.warning(
            "queue %r: %d entries of its lanes repaired (front entries of jobs"
            " that left the shards, jobs waiting behind room)",
            name,
            lost,
            extra={"action": "repair", "queue": name},
        )
    if freed:
        log.debug(
            "queue %r: %d entries of finished locks and promoted jobs removed",
            name,
            freed,
        )
    return lost + freed


def _prune_tree(tree: Any, cutoff_us: int) -> int:
    keys = list(tree.keys(max=cutoff_us, excludemax=True)[:PRUNE_CHUNK])
    for key in keys:
        del tree[key]
    return len(keys)


def _first_key(tree: Any) -> Any:
    try:
        return tree.minKey()
    except ValueError:
        return None


def _in_lease(dispatcher: Dispatcher, work: Callable[..., int]) -> int | None:
    """Run ``work(registry)`` in a transaction that also takes the
    maintenance lease; return its result (None if another worker holds
    the lease or won the race)."""
    tm = dispatcher.tm
    try:
        with tm as txn:
            txn.note("zasync maintenance")
            registry = dispatcher.conn.root()[KEY].workers
            lease = registry.maintenance
            clock = time.time()
            if lease.holder not in (None, dispatcher.uuid) and lease.until > clock:
                return None
            lease.holder = dispatcher.uuid
            lease.until = clock + 3 * dispatcher.maintenance_interval
            return work(registry)
    except TransientError:
        # A commit that failed leaves its transaction open: end it, or the
        # next begin() of this explicit manager would raise.
        tm.abort()
        log.debug(
            "maintenance conflicted with another transaction; later", exc_info=True
        )
        return None


def _rescue(registry: WorkerRegistry, uuid: str, dispatcher: Dispatcher) -> int:
    record = registry.get(uuid)
    if record is None or record.is_alive(time.time(), dispatcher.heartbeat_interval):
        return 0
    count = 0
    for slot in record.slots:
        for job, outcome in recover_slot(slot, why=f"worker {uuid} died"):
            count += 1
            log.warning(
                "rescued job %s from dead worker %s: %s",
                job.id,
                uuid,
                outcome,
                extra={"action": "rescue", "job_id": job.id, "worker": uuid},
            )
    if record.stopped is None:
        record.stopped = time.time()
    return count


def _prune(registry: WorkerRegistry, uuid: str, cutoff_us: int) -> int:
    record = registry.get(uuid)
    if record is None:
        return 0
    removed = 0
    for slot in record.slots:
        keys = list(
            slot.done.keys(max=cutoff_us, excludemax=True)[: PRUNE_CHUNK - removed]
        )
        for key in keys:
            del slot.done[key]
        removed += len(keys)
        if removed >= PRUNE_CHUNK:
            break
    if removed:
        log.info("pruned %d finished jobs of worker %s", removed, uuid)
    return removed


def _expire(registry: WorkerRegistry, uuid: str) -> int:
    registry.remove(uuid)
    log.info("removed the record of worker %s, stopped long ago", uuid)
    return 1
