"""The overview of a database's queues: counts per queue and status,
quotas, workers and what they run (for how long), and throughput over the
last minutes. Read in the caller's transaction; writes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zasync.admin import FILTERS, iter_done, kind
from zasync.failure import Failure
from zasync.job import Job
from zasync.queue import Queues
from zasync.running import LONG_RUNNING_SECONDS, describe_running


def summary(
    queues: Queues,
    *,
    heartbeat_interval: float = 60.0,
    windows: tuple[int, ...] = (1, 5, 15),
    match: Callable[[Job], bool] | None = None,
    long_after: float | None = LONG_RUNNING_SECONDS,
) -> dict[str, Any]:
    """Counts per queue and status, quotas, workers (with their running
    jobs: how long each has run, ``long`` past ``long_after`` seconds),
    and throughput over the last ``windows`` minutes (in total and per
    queue). With ``match``, the counts and throughput count only the jobs
    it returns true for."""
    clock = time.time()
    data: dict[str, Any] = {
        "queues": _queue_counts(queues, clock, match),
        "workers": [],
        "throughput": {},
    }
    for record in queues.workers.values():
        data["workers"].append(
            _worker_row(record, clock, heartbeat_interval, long_after)
        )
        for _slot, job in record.iter_active():
            if match is not None and not match(job):
                continue
            if job.queue is not None and job.queue.name in data["queues"]:
                data["queues"][job.queue.name]["counts"]["active"] += 1
    for minutes, tally in _throughput(queues, clock, windows, match).items():
        data["throughput"][f"{minutes}m"] = tally
    return data


def _queue_counts(
    queues: Queues, clock: float, match: Callable[[Job], bool] | None
) -> dict[str, Any]:
    """{queue name: its pending jobs counted by kind, and its quotas}."""
    found = {}
    for name, queue in queues.items():
        counts = dict.fromkeys(FILTERS, 0)
        for job in queue:
            if match is None or match(job):
                # A job waiting for its callbacks (a cancelled one) counts
                # as active, as list_jobs shows it.
                counts[kind(job, clock).replace("callbacks", "active")] += 1
        found[name] = {
            "counts": counts,
            "quotas": {
                q: {"size": quota.size, "used": len(quota)}
                for q, quota in ((n, queue.quotas[n]) for n in queue.quotas)
            },
        }
    return found


def _worker_row(
    record: Any, clock: float, heartbeat_interval: float, long_after: float | None
) -> dict:
    held = [job for _slot, job in record.iter_active()]
    return {
        "uuid": record.uuid,
        "name": record.name,
        "label": record.label,
        "host": record.hostname,
        "pid": record.pid,
        "threads": record.threads,
        "alive": record.is_alive(clock, heartbeat_interval),
        "last_seen": record.heartbeat.last_seen,
        "running": [job.id for job in held],
        "jobs": [
            {
                "id": job.id,
                "callable": job.callable_name,
                **describe_running(job, clock, long_after),
            }
            for job in held
        ],
    }


def _throughput(
    queues: Queues,
    clock: float,
    windows: tuple[int, ...],
    match: Callable[[Job], bool] | None,
) -> dict[int, dict[str, Any]]:
    """{minutes: jobs completed and failed in the last so many minutes, in
    total and per queue}, in one pass over the longest window."""
    windows = tuple(sorted(windows))
    tallies: dict[int, dict[str, Any]] = {
        minutes: {"completed": 0, "failed": 0, "queues": {}} for minutes in windows
    }
    if not windows:
        return tallies
    cutoffs = [(int((clock - m * 60) * 1_000_000), tallies[m]) for m in windows]
    for key, job in iter_done(queues, since_us=cutoffs[-1][0]):
        if match is not None and not match(job):
            continue
        outcome = "failed" if isinstance(job.result, Failure) else "completed"
        name = job.queue.name if job.queue is not None else None
        for cutoff, tally in cutoffs:
            if key >= cutoff:
                tally[outcome] += 1
                per_queue = tally["queues"].setdefault(
                    name, {"completed": 0, "failed": 0}
                )
                per_queue[outcome] += 1
    return tallies
