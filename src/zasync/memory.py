"""Giving the memory a worker has freed back to the system.

Every job allocates and frees memory: pickles, BTree buckets, the storage
client's buffers. The live memory of a worker stays flat, but glibc's
``malloc`` keeps freed pages in its arenas, one per thread, and a
long-running worker's resident memory (RSS) creeps up by a few hundred
bytes per job. :class:`MemoryTrimmer` calls glibc's ``malloc_trim(0)``,
which hands every wholly free page back, at most once per interval and
only after jobs ran since the last call: an idle worker pays nothing.
Where the C library has no ``malloc_trim`` (musl, macOS, Windows) it does
nothing.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library lacks it."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


#: glibc's ``malloc_trim``, or None (see :func:`_find_malloc_trim`)
malloc_trim = _find_malloc_trim()


class MemoryTrimmer:
    """Calls ``malloc_trim`` every ``interval`` seconds (0: never) while
    jobs run. :meth:`after` is called from the dispatcher's loop."""

    def __init__(self, interval: float):
        self.interval = interval
        self.enabled = bool(interval) and malloc_trim is not None
        self._next = 0.0
        self._jobs_seen = 0
        #: how many times it trimmed, and the seconds that took
        self.trims = 0
        self.seconds = 0.0

    def after(self, now: float, jobs_run: int) -> bool:
        """Trim if the interval has passed at monotonic time ``now`` and
        jobs ran since the last trim (``jobs_run`` is the running count);
        return whether it trimmed."""
        if not self.enabled or now < self._next or jobs_run == self._jobs_seen:
            return False
        self._next = now + self.interval
        self._jobs_seen = jobs_run
        started = time.perf_counter()
        assert malloc_trim is not None  # enabled says so
        malloc_trim(0)
        self.trims += 1
        self.seconds += time.perf_counter() - started
        return True
