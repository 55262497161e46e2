"""Firing the due slots of schedules (zasync.schedules) from the workers.

Every dispatcher calls :func:`fire_for` at each round of its loop. One
read per queue it serves (the Schedules' earliest next run, a cached
object) tells whether a slot is due; only then does it fire, in a
transaction of its own per queue that queues the slots' jobs and moves
the schedules on. Workers firing the same slot conflict on the Schedule,
and the loser, trying again, finds nothing due: each slot starts one job.

So that they seldom conflict, the live workers serving a queue take turns
by rank (rendezvous hashing of the queue's name, zasync.placement): the
first fires its slots when they are due, the next :data:`STAGGER` seconds
later if they are still due then (the first is dead or busy), and so on.
"""

from __future__ import annotations

import datetime
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transaction.interfaces import TransientError

from zasync.interfaces import KEY
from zasync.keys import UTC, to_us
from zasync.placement import rendezvous_rank

if TYPE_CHECKING:
    from zasync.dispatcher import Dispatcher

log = logging.getLogger(__name__)

#: seconds each worker after the first in a queue's ranking waits before it
#: fires a slot the ones before it have not
STAGGER = 0.25
#: tries of a queue's firing transaction (after a conflict, another worker
#: has usually fired the slot, and the next try finds nothing due)
ATTEMPTS = 3


@dataclass
class Fired:
    """What one call of :func:`fire_due` did."""

    #: jobs started
    jobs: int = 0
    #: firing transactions that conflicted (another worker fired first)
    conflicts: int = 0
    #: the earliest next run of the schedules (epoch seconds), or None
    next_run: float | None = None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _scan(
    queues: Any,
    queue_names: tuple[str, ...] | None,
    at_us: int,
    wait: Callable[[str], float],
) -> tuple[list[str], float | None]:
    """The names of the queues with a slot due (``wait(name)`` seconds
    ago), and when the others' next slot is (epoch seconds, plus the
    wait)."""
    names = list(queues.keys()) if queue_names is None else queue_names
    due: list[str] = []
    later: float | None = None
    for name in names:
        queue = queues.get(name)
        schedules = None if queue is None else queue._schedules
        earliest = None if schedules is None else schedules._earliest_us
        if earliest is None:
            continue
        waited = earliest + int(wait(name) * 1_000_000)
        if waited <= at_us:
            due.append(name)
        else:
            later = _earliest(later, waited / 1e6)
    return due, later


def _no_wait(queue_name: str) -> float:
    return 0.0


def fire_due(
    conn: Any,
    tm: Any,
    *,
    now: datetime.datetime | None = None,
    queue_names: tuple[str, ...] | None = None,
    wait: Callable[[str], float] = _no_wait,
) -> Fired:
    """Fire the slots due at ``now`` (default: the current time) of the
    schedules of the queues named (default: all), through ``conn`` and its
    transaction manager ``tm``, one transaction per queue with a due slot;
    a queue's slots only once due for ``wait(queue name)`` seconds. A
    firing that conflicts ``ATTEMPTS`` times raises its error."""
    at = datetime.datetime.now(UTC) if now is None else now
    tm.begin()
    try:
        due, later = _scan(conn.root()[KEY], queue_names, to_us(at), wait)
    finally:
        tm.abort()
    fired = Fired(next_run=later)
    for name in due:
        for attempt in range(ATTEMPTS):
            try:
                tm.begin()
                schedules = conn.root()[KEY][name]._schedules
                jobs = schedules._fire(at)
                tm.commit()
            except TransientError:
                tm.abort()
                fired.conflicts += 1
                if attempt == ATTEMPTS - 1:
                    raise
                continue
            except BaseException:
                tm.abort()
                raise
            fired.jobs += len(jobs)
            if schedules._earliest_us is not None:
                next_run = schedules._earliest_us / 1e6 + wait(name)
                fired.next_run = _earliest(fired.next_run, next_run)
            break
    if fired.jobs or fired.conflicts:
        log.debug(
            "schedules: %d job(s) started, %d conflict(s)",
            fired.jobs,
            fired.conflicts,
            extra={"action": "schedule"},
        )
    return fired


def turn(dispatcher: Dispatcher, queue_name: str) -> float:
    """Seconds ``dispatcher`` leaves the due slots of queue ``queue_name``
    to the live workers ranked before it."""
    peers = dispatcher.placement.serving(queue_name)
    if len(peers) <= 1:
        return 0.0
    seed = zlib.crc32(f"schedules\0{queue_name}".encode())
    return STAGGER * rendezvous_rank(peers, dispatcher.uuid.encode(), seed)


def fire_for(
    dispatcher: Dispatcher,
    next_due: float | None,
    *,
    now: datetime.datetime | None = None,
) -> float | None:
    """Fire the due slots of the queues ``dispatcher`` serves, in its loop's
    connection, when its turn has come; return the earlier of ``next_due``
    and when it should look again (epoch seconds). A dispatcher not started
    fires nothing (as it runs no heartbeat nor maintenance: its step only
    claims)."""
    if dispatcher.activated is None:
        return next_due
    fired = fire_due(
        dispatcher.conn,
        dispatcher.tm,
        now=now,
        queue_names=dispatcher.settings.queue_names,
        wait=lambda name: turn(dispatcher, name),
    )
    return _earliest(next_due, fired.next_run)
