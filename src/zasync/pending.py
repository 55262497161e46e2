"""Reading a queue: its pending jobs in run order, the job at an index,
the Queues a queue or quota belongs to, and the error for a job that is
not pending where it was looked for. Nothing here writes."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from zasync.interfaces import KEY, BadStatusError
from zasync.shards import live


class NotPendingError(BadStatusError, LookupError):
    """The job is not pending in this queue (a LookupError, as zc.async
    raised, and a BadStatusError)."""


def in_run_order(
    shards: Iterable[Any], lanes: Iterable[Iterator[tuple[tuple, Any]]] = ()
) -> Iterator[Any]:
    """The pending jobs of a queue's shards, and of its ``lanes`` (for each,
    (run-order key, job) in run order: zasync.lanes.iter_waiting), in run
    order."""

    def items(shard: Any) -> Iterator[tuple[tuple, Any]]:
        for key, job in shard.items():
            if live(key, job):
                yield key, job

    sources = [items(s) for s in shards] + list(lanes)
    merged = heapq.merge(*sources, key=lambda t: t[0])
    return (job for _key, job in merged)


def at_index(jobs: Iterable[Any], index: int, length: int, name: str) -> Any:
    """The job at ``index`` (negative: from the end of ``length``) of
    ``jobs``, in queue ``name``; IndexError past the end."""
    if index < 0:
        index += length
    for i, job in enumerate(jobs):
        if i == index:
            return job
    raise IndexError(f"queue {name!r} has no job at index {index}")


def root_queues(obj: Any) -> Any:
    """The Queues at the root of ``obj``'s database, or an empty dict."""
    jar = obj._p_jar
    queues = jar.root().get(KEY) if jar is not None else None
    return queues if queues is not None else {}
