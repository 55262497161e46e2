"""Prometheus metrics of a worker process (the ``ops`` extra).

:class:`Metrics` counts jobs by subscribing to zasync's events (JobStarted,
JobSucceeded, JobFailed, JobRetried, WorkerHeartbeat: notified only while
someone subscribes, so a process without metrics pays nothing), and reads
the rest when Prometheus scrapes: the dispatchers' own counters (claims,
conflicts, threads busy) and the depth of every queue.

Depth is read cheaply: a queue's length is a ``BTrees.Length``; how many of
its jobs are scheduled (due later) is counted from the shards' keys in the
due-later ranges alone, without loading a job, and kept for
``depth_ttl`` seconds (10 by default), so that scrapes of a large queue
cost one count every ``depth_ttl``; active jobs are counted from the live
workers' slots (at most their threads' batches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import transaction
import zope.event
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from zasync.failure import Failure
from zasync.interfaces import (
    KEY,
    JobFailed,
    JobRetried,
    JobStarted,
    JobSucceeded,
    WorkerHeartbeat,
)
from zasync.job import Job
from zasync.shards import AFTER_ANY_DUE, SENTINEL, ranks

#: seconds: from a job's shortest to its longest expected run or wait
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: the metric names, for dashboards and their tests
NAMES = (
    "zasync_jobs_started_total",
    "zasync_jobs_completed_total",
    "zasync_jobs_failed_total",
    "zasync_jobs_retried_total",
    "zasync_job_duration_seconds",
    "zasync_job_wait_seconds",
    "zasync_heartbeats_total",
    "zasync_jobs_running",
    "zasync_threads",
    "zasync_threads_busy",
    "zasync_threads_allowed",
    "zasync_claims_total",
    "zasync_claim_conflicts_total",
    "zasync_jobs_claimed_total",
    "zasync_jobs_handed_total",
    "zasync_queue_jobs",
)


def _queue_name(job: Job) -> str:
    queue = job.queue
    return getattr(queue, "name", "") if queue is not None else ""


class Metrics:
    """The metrics of the dispatchers it :meth:`watch` es, in ``registry``.

    :meth:`subscribe` starts counting events, :meth:`serve` serves
    ``/metrics``; :meth:`close` undoes both.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, depth_ttl: float = 10.0
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.dispatchers: list[Any] = []
        self._server: Any = None
        labels = ["queue", "callable"]
        r = self.registry
        self.started = Counter(
            "zasync_jobs_started", "Job calls started", labels, registry=r
        )
        self.completed = Counter(
            "zasync_jobs_completed", "Jobs that succeeded", labels, registry=r
        )
        self.failed = Counter(
            "zasync_jobs_failed", "Jobs that failed", labels, registry=r
        )
        self.retried = Counter(
            "zasync_jobs_retried", "Failed jobs put back to retry", labels, registry=r
        )
        self.duration = Histogram(
            "zasync_job_duration_seconds",
            "From a job's start to its end",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.wait = Histogram(
            "zasync_job_wait_seconds",
            "From when a job was due (queued or scheduled) to its start",
            ["queue"],
            buckets=BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "zasync_heartbeats", "Heartbeats committed", ["worker"], registry=r
        )
        self.depth = QueueDepth(ttl=depth_ttl)
        r.register(_Collector(self))

    def watch(self, dispatcher: Any) -> None:
        """Report ``dispatcher``'s counters and its database's queues."""
        self.dispatchers.append(dispatcher)

    def subscribe(self) -> Metrics:
        """Count job events from now on; returns self."""
        if self.handle not in zope.event.subscribers:
            zope.event.subscribers.append(self.handle)
        return self

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns
        the port (the one chosen when ``port`` is 0). Raises OSError when
        the port cannot be bound."""
        self._server, _thread = start_http_server(port, addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and counting."""
        if self.handle in zope.event.subscribers:
            zope.event.subscribers.remove(self.handle)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, event: object) -> None:
        """The zope.event subscriber."""
        if isinstance(event, WorkerHeartbeat):
            self.heartbeats.labels(event.uuid).inc()
            return
        job = getattr(event, "job", None)
        if not isinstance(job, Job):
            return
        labels = (_queue_name(job), job.callable_name)
        if isinstance(event, JobStarted):
            self.started.labels(*labels).inc()
            due = job.begin_after
            if due is not None and job.active_start is not None:
                waited = (job.active_start - due).total_seconds()
                self.wait.labels(labels[0]).observe(max(waited, 0.0))
        elif isinstance(event, JobRetried):
            self.retried.labels(*labels).inc()
        elif isinstance(event, JobSucceeded | JobFailed):
            failed = isinstance(event, JobFailed) or isinstance(job.result, Failure)
            (self.failed if failed else self.completed).labels(*labels).inc()
            if job.active_start is not None and job.active_end is not None:
                took = (job.active_end - job.active_start).total_seconds()
                self.duration.labels(*labels).observe(max(took, 0.0))


class QueueDepth:
    """How many jobs each queue holds: pending (due), scheduled (due
    later) and active, by queue name; each count kept ``ttl`` seconds."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._counts: dict[str, dict[str, int]] = {}

    def counts(self, db: Any) -> dict[str, dict[str, int]]:
        """{queue name: {"pending": n, "scheduled": n, "active": n}}."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                self._counts = self._read(db)
                self._read_at = time.monotonic()
            return self._counts

    def _read(self, db: Any) -> dict[str, dict[str, int]]:
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            with tm:
                queues = conn.root().get(KEY)
                if queues is None:
                    return {}
                now_us = int(time.time() * 1_000_000)
                counts = {}
                for name, queue in queues.items():
                    scheduled = sum(
                        scheduled_in(shard, now_us) for shard in queue.shards
                    )
                    counts[name] = {
                        "pending": max(len(queue) - scheduled, 0),
                        "scheduled": scheduled,
                        "active": 0,
                    }
                now = time.time()
                for record in queues.workers.values():
                    if not record.is_alive(now, record.heartbeat_interval):
                        continue
                    for _slot, job in record.iter_active():
                        name = _queue_name(job)
                        counts.setdefault(name, {"pending": 0, "scheduled": 0})
                        counts[name]["active"] = counts[name].get("active", 0) + 1
                return counts
        finally:
            conn.close()


def scheduled_in(shard: Any, now_us: int) -> int:
    """The keys of ``shard`` due after ``now_us``, read from keys alone
    (entries gone stale count until compaction removes them)."""
    count = 0
    for rank in ranks(shard):
        keys = shard.keys(min=(rank, now_us + 1, 0), max=(rank, AFTER_ANY_DUE, 0))
        count += sum(1 for key in keys if key < SENTINEL)
    return count


class _Collector(Collector):
    """What is read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        dispatchers = list(self.metrics.dispatchers)
        gauges = {
            "zasync_jobs_running": "Jobs being called now",
            "zasync_threads": "Job threads",
            "zasync_threads_busy": "Job threads running a batch",
            "zasync_threads_allowed": "Threads the conflict limiter lets run",
        }
        counters = {
            "zasync_claims": "Claim transactions, by result",
            "zasync_claim_conflicts": "Claim transactions that conflicted",
            "zasync_jobs_claimed": "Jobs claimed by the loop",
            "zasync_jobs_handed": "Jobs producers handed to idle threads",
        }
        g = {n: GaugeMetricFamily(n, h, labels=["worker"]) for n, h in gauges.items()}
        c = {
            n: CounterMetricFamily(n, h, labels=["worker"]) for n, h in counters.items()
        }
        claims = CounterMetricFamily(
            "zasync_claims", counters["zasync_claims"], labels=["worker", "result"]
        )
        for d in dispatchers:
            running = sum(1 for r in d.pool.runners if r.current is not None)
            g["zasync_jobs_running"].add_metric([d.uuid], running)
            g["zasync_threads"].add_metric([d.uuid], d.threads)
            g["zasync_threads_busy"].add_metric([d.uuid], len(d.pool.busy))
            g["zasync_threads_allowed"].add_metric([d.uuid], d.limiter.cap)
            claims.add_metric([d.uuid, "committed"], d.claims_committed)
            claims.add_metric([d.uuid, "conflicted"], d.claims_conflicted)
            c["zasync_claim_conflicts"].add_metric([d.uuid], d.claims_conflicted)
            c["zasync_jobs_claimed"].add_metric([d.uuid], d.jobs_claimed)
            handed = d.jobs_handed + d.jobs_received
            c["zasync_jobs_handed"].add_metric([d.uuid], handed)
        yield from g.values()
        yield claims
        yield from (c[n] for n in counters if n != "zasync_claims")
        yield self._depth(dispatchers)

    def _depth(self, dispatchers: list[Any]) -> GaugeMetricFamily:
        depth = GaugeMetricFamily(
            "zasync_queue_jobs",
            "Jobs in a queue: pending (due), scheduled (due later), active",
            labels=["queue", "state"],
        )
        if dispatchers:
            counts = self.metrics.depth.counts(dispatchers[0].db)
            for name, states in sorted(counts.items()):
                for state, value in sorted(states.items()):
                    depth.add_metric([name, state], value)
        return depth
