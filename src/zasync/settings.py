"""A dispatcher's settings: one frozen object, validated once.

Each default is named here with what it means; ``Dispatcher(...)`` takes
the same names as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

from zasync.interfaces import ConfigurationError

#: threads that run jobs
THREADS = 4
#: seconds between looks at the queues when no commit woke the worker
#: (the storage cannot tell it of other processes' commits)
POLL_INTERVAL = 1.0
#: seconds between the writes that say the worker is alive while idle
HEARTBEAT_INTERVAL = 60.0
#: seconds a worker's running jobs are leased for; renewed while they run,
#: and another worker rescues them once it has run out
LEASE_SECONDS = 30.0
#: seconds between rounds of maintenance (rescue of dead workers' jobs,
#: pruning), done by one worker at a time
MAINTENANCE_INTERVAL = 5.0
#: how long finished jobs are kept before they are pruned
RETENTION = datetime.timedelta(days=7)
#: seconds of short jobs a thread runs in one transaction at most
BATCH_SECONDS = 0.05
#: jobs a thread runs in one transaction at most
MAX_BATCH = 200
#: seconds the other workers leave a job just due to the worker it is
#: meant for before they take it (0: no grace)
FRESH_GRACE = 0.1
#: seconds a running job is given to stop by itself (at its next
#: ``zasync.local.check()``) once cancelled or past its timeout, before
#: the error is raised in its thread (see zasync.watchdog)
INTERRUPT_GRACE = 5.0
#: seconds an interrupted job is given to return before its thread is
#: abandoned as stuck and replaced
STUCK_DELAY = 30.0
#: seconds between the times a worker that ran jobs hands the memory it
#: freed back to the system (glibc's malloc_trim; 0: never, see
#: zasync.memory)
MEMORY_TRIM_INTERVAL = 10.0


def _number(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if (
        not ok
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ConfigurationError(
            f"Dispatcher({name}={value!r}): use a positive, finite number"
        )


@dataclasses.dataclass(frozen=True)
class DispatcherSettings:
    """What a dispatcher is told at construction (see the module's
    constants for each default). Raises ConfigurationError, naming the
    setting, for a value it cannot use."""

    threads: int = THREADS
    queue_names: tuple[str, ...] | None = None
    poll_interval: float = POLL_INTERVAL
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    lease_seconds: float = LEASE_SECONDS
    maintenance_interval: float = MAINTENANCE_INTERVAL
    retention: datetime.timedelta = RETENTION
    batch_seconds: float = BATCH_SECONDS
    max_batch: int = MAX_BATCH
    fresh_grace: float = FRESH_GRACE
    interrupt_grace: float = INTERRUPT_GRACE
    stuck_delay: float = STUCK_DELAY
    memory_trim_interval: float = MEMORY_TRIM_INTERVAL
    #: the worker's name as people read it (None: shown as hostname:pid)
    name: str | None = None

    def __post_init__(self) -> None:
        threads = self.threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigurationError(
                f"Dispatcher(threads={threads!r}): use a whole number >= 1"
            )
        if self.queue_names is not None:
            if isinstance(self.queue_names, str):
                raise ConfigurationError(
                    f"Dispatcher(queue_names={self.queue_names!r}): use a "
                    f"sequence of names, e.g. ({self.queue_names!r},)"
                )
            object.__setattr__(self, "queue_names", tuple(self.queue_names) or None)
        for name in (
            "poll_interval",
            "heartbeat_interval",
            "lease_seconds",
            "maintenance_interval",
            "batch_seconds",
            "max_batch",
            "stuck_delay",
        ):
            _number(name, getattr(self, name))
        _number("fresh_grace", self.fresh_grace, allow_zero=True)
        _number("interrupt_grace", self.interrupt_grace, allow_zero=True)
        _number("memory_trim_interval", self.memory_trim_interval, allow_zero=True)
        object.__setattr__(self, "max_batch", int(self.max_batch))
        if not isinstance(self.retention, datetime.timedelta):
            raise ConfigurationError(
                f"Dispatcher(retention={self.retention!r}): use a datetime.timedelta"
            )

    @property
    def fresh_us(self) -> int:
        """``fresh_grace`` in microseconds."""
        return int(self.fresh_grace * 1_000_000)
