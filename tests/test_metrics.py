"""Prometheus metrics: a real worker process (``zasync worker
--metrics-port``) on a ZEO server scraped over HTTP while it runs 100 jobs,
and the metrics of an in-process dispatcher whose jobs fail and retry."""

from __future__ import annotations

import datetime
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import zope.event
from prometheus_client.parser import text_string_to_metric_families
from tests import mp_jobs
from tests.processes import run_zasync

import zasync
from zasync.dispatcher import Dispatcher
from zasync.metrics import NAMES, Metrics, QueueDepth, scheduled_in
from zasync.retry import RetryWithDelay
from zasync.storage import open_db
from zasync.testing import wait_until


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The samples /metrics serves: {(name, sorted labels): value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families(port: int) -> list[str]:
    """The metric families /metrics declares (``# TYPE`` lines)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.zeo
@pytest.mark.multiprocess
def test_worker_metrics_during_100_jobs(zeo_server, workers, tmp_path: Path) -> None:
    port = free_port()
    worker = workers(
        zeo_server.uri, "metrics", args=["--metrics-port", str(port)]
    ).start()
    stamps = str(tmp_path / "stamps")
    db = open_db(zeo_server.uri)
    try:
        with db.transaction() as conn:
            queue = conn.root()[zasync.KEY][""]
            for i in range(95):
                queue.put(zasync.Job(mp_jobs.add, stamps, i, 1))
            for _ in range(5):
                queue.put(zasync.Job(mp_jobs.fail, stamps))
        samples = wait_until(
            lambda: (
                (s := scrape(port))
                and total(s, "zasync_jobs_completed_total")
                + total(s, "zasync_jobs_failed_total")
                == 100
                and s
            ),
            timeout=60,
            message="100 jobs counted on /metrics",
        )
    finally:
        db.close()
    add = "tests.mp_jobs.add"
    assert total(samples, "zasync_jobs_completed_total", callable=add) == 95
    assert (
        total(samples, "zasync_jobs_failed_total", callable="tests.mp_jobs.fail") == 5
    )
    assert total(samples, "zasync_jobs_started_total") >= 100
    assert total(samples, "zasync_job_duration_seconds_count") == 100
    assert total(samples, "zasync_job_wait_seconds_count", queue="") >= 100
    uuid = worker.uuid
    assert total(samples, "zasync_threads", worker=uuid) == 2
    assert total(samples, "zasync_claims_total", worker=uuid, result="committed") >= 0
    assert ("zasync_queue_jobs", (("queue", ""), ("state", "pending"))) in samples
    assert set(families(port)) >= set(NAMES)


@pytest.fixture
def metrics_db(tmp_path: Path) -> Iterator[object]:
    db = open_db(f"file://{tmp_path / 'Data.fs'}")
    zasync.install(db)
    yield db
    db.close()


def test_failed_retried_and_heartbeats_in_process(metrics_db, tmp_path: Path) -> None:
    metrics = Metrics(depth_ttl=0).subscribe()
    dispatcher = Dispatcher(metrics_db, threads=2, heartbeat_interval=0.05)
    metrics.watch(dispatcher)
    port = metrics.serve(0, "127.0.0.1")
    stamps = str(tmp_path / "stamps")
    retry = RetryWithDelay.configure(max_errors=3, error_delay=0.01)
    dispatcher.start()
    try:
        with metrics_db.transaction() as conn:
            queue = conn.root()[zasync.KEY][""]
            flaky = zasync.Job(mp_jobs.flaky, stamps, 2)
            flaky.retry_policy_factory = retry
            queue.put(flaky)
            queue.put(zasync.Job(mp_jobs.fail, stamps))
            queue.put(
                zasync.Job(mp_jobs.add, stamps, 1, 2),
                begin_after=zasync.job.now() + datetime.timedelta(days=1),
            )
        samples = wait_until(
            lambda: (
                (s := scrape(port))
                and total(s, "zasync_jobs_completed_total") == 1
                and total(s, "zasync_jobs_failed_total") == 1
                and total(s, "zasync_heartbeats_total") >= 1
                and s
            ),
            timeout=30,
            message="a retried success, a failure and heartbeats",
        )
    finally:
        dispatcher.stop(10)
        metrics.close()
    flaky = "tests.mp_jobs.flaky"
    assert total(samples, "zasync_jobs_retried_total", callable=flaky) == 1
    assert total(samples, "zasync_jobs_started_total", callable=flaky) >= 2
    assert total(samples, "zasync_queue_jobs", queue="", state="scheduled") == 1
    assert total(samples, "zasync_queue_jobs", queue="", state="pending") == 0
    assert metrics.handle not in zope.event.subscribers


def test_depth_is_cached_for_its_ttl(metrics_db) -> None:
    depth = QueueDepth(ttl=3600)
    assert depth.counts(metrics_db)[""]["pending"] == 0
    with metrics_db.transaction() as conn:
        conn.root()[zasync.KEY][""].put(zasync.Job(mp_jobs.add, "x", 1, 2))
    assert depth.counts(metrics_db)[""]["pending"] == 0  # cached
    assert QueueDepth(ttl=0).counts(metrics_db)[""]["pending"] == 1
    transaction.abort()


def test_scheduled_counts_keys_only() -> None:
    from zasync.shards import new_shard

    shard = new_shard()
    shard[(0, 100, 1)] = None
    shard[(0, 300, 2)] = None
    shard[(-5, 400, 3)] = None
    assert scheduled_in(shard, 200) == 2
    assert scheduled_in(shard, 1000) == 0


def test_bad_metrics_port_is_one_line(zeo_server) -> None:
    result = run_zasync("worker", "--db", zeo_server.uri, "--metrics-port", "70000")
    assert result.returncode == 2
    assert "port 70000 is out of range" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_zasync(
            "worker",
            "--db",
            zeo_server.uri,
            "--metrics-port",
            str(port),
            "--metrics-addr",
            "127.0.0.1",
        )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"zasync worker: --metrics-port {port}: cannot listen")
    assert "choose a free port" in lines[-1]


def test_metrics_addr_is_refused_with_zope_conf(tmp_path: Path) -> None:
    result = run_zasync(
        "worker", "--zope-conf", str(tmp_path / "zope.conf"), "--metrics-addr", "::1"
    )
    assert result.returncode == 2
    assert "--metrics-addr cannot be used with --zope-conf" in result.stderr


def test_a_zope_worker_takes_interrupt_grace_and_stuck_delay(tmp_path: Path) -> None:
    """They reach zasync.plone.worker as ZASYNC_INTERRUPT_GRACE and
    ZASYNC_STUCK_DELAY; the other dispatcher flags are --db only."""
    conf = str(tmp_path / "zope.conf")
    taken = run_zasync("worker", "--zope-conf", conf, "--stuck-delay", "10")
    assert "cannot be used with --zope-conf" not in taken.stderr
    assert "zope.conf" in taken.stderr and taken.returncode == 3  # no such file
    refused = run_zasync("worker", "--zope-conf", conf, "--lease", "5")
    assert refused.returncode == 2
    assert "--lease cannot be used with --zope-conf" in refused.stderr
