"""W7 soak: four producer processes and two workers on ZEO for ten minutes
(one in quick mode), at a steady rate the workers keep up with.

Figures: each worker's resident memory (RSS, from /proc) after a warm-up
and at the end, and its growth between the two (the larger of the two
workers'; the larger worker's RSS every 5 s is printed, and kept in the
JSON meta as ``w7_rss``); the ZEO server's Data.fs once every job is
finished, then after ``zasync prune --older-than 0`` (the real command, in
a subprocess) and a pack of the storage; and the jobs lost (queued but not
COMPLETED with their result)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import results, spawn
from benchmarks.context import Context, Watcher, open_installed
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader
from zasync.storage import open_db

LABEL = "ZEO, 4 producers, 2 workers"
PRODUCERS = 4
WORKERS = 2
#: seconds, at most, for the workers to finish the last jobs queued
DRAIN_TIMEOUT = 300.0
MB = 1024 * 1024

# W7's targets, beside those of W1-W6 in the table's.
results.TARGETS.update(
    {
        ("W7", "*", "worker RSS growth after warm-up"): ("<=", 10),
        ("W7", "*", "jobs lost"): ("<=", 0),
        # "bounded": pruning and packing give back what the jobs took
        ("W7", "*", "Data.fs after prune and pack, against before"): ("<=", 0.1),
    }
)


@dataclass(frozen=True)
class Soak:
    """The length of the soak: one run, whatever ``--runs`` says (a soak
    is one long run)."""

    seconds: float  # how long the producers queue
    warmup: float  # seconds before the first RSS reading
    interval: float  # seconds between a producer's jobs

    @classmethod
    def for_mode(cls, quick: bool) -> Soak:
        """The warm-up of the full soak is the time a worker's bounded
        caches take to fill at this rate (the ZEO client cache's 4 MB, its
        connections' 400 objects each): measured from there, growth is
        what a longer run would add."""
        if quick:
            return cls(seconds=60.0, warmup=15.0, interval=0.05)
        return cls(seconds=600.0, warmup=120.0, interval=0.05)


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` now."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")


class RSSSampler:
    """Reads the workers' RSS every :attr:`EVERY` seconds in a thread of
    its own, while the ``with`` block runs: ``samples`` is a list of
    (seconds since ``started``, [RSS of each worker in bytes])."""

    EVERY = 5.0

    def __init__(self, workers: list[spawn.Proc], started: float):
        self.workers = workers
        self.started = started
        self.samples: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.EVERY):
            try:
                rss = [rss_bytes(w.pid) for w in self.workers]
            except (OSError, ValueError):
                return  # a worker exited: the workload reports it
            self.samples.append((round(time.time() - self.started, 1), rss))

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def run(ctx: Context) -> None:
    soak = Soak.for_mode(ctx.params.quick)
    with ctx.setup("W7", LABEL):
        ctx.progress(
            f"W7: {PRODUCERS} producers, a job every {soak.interval:g} s each, "
            f"for {soak.seconds:g} s"
        )
        figures = _once(ctx, soak)
        for metric, unit, value in figures:
            ctx.results.add("W7", LABEL, metric, unit, value)
        ctx.progress(
            "W7: " + ", ".join(f"{m} {v:.3g} {u}".rstrip() for m, u, v in figures)
        )


def _once(ctx: Context, p: Soak) -> list[tuple[str, str, float]]:
    work = ctx.scratch("w7")
    stamps = StampReader(work / "stamps")
    per_producer = int(p.seconds / p.interval)
    with store_for("zeo", work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        workers, producers = [], []
        try:
            for index in range(WORKERS):
                workers.append(
                    spawn.cli_worker(
                        store.uri,
                        stamps=work / "stamps",
                        log=work / "logs" / f"worker-{index + 1}.log",
                        name=f"worker {index + 1}",
                    )
                )
            producers = spawn.gated(
                "producer",
                [
                    [sys.executable, "-m", "benchmarks.procs.producer"]
                    + ["--db", store.uri, "--out", str(work / f"producer-{tag}.json")]
                    + ["--count", str(per_producer), "--tag", str(tag)]
                    + ["--interval", str(p.interval)]
                    for tag in range(1, PRODUCERS + 1)
                ],
                stamps=work / "stamps",
                logs=work / "logs",
            )
            started = spawn.go(producers)
            _sleep_until(started + p.warmup, workers)
            rss_start = [rss_bytes(w.pid) for w in workers]
            ctx.progress(
                f"W7: RSS after {p.warmup:g} s of warm-up: "
                + ", ".join(f"{r / MB:.1f} MB" for r in rss_start)
            )
            with RSSSampler(workers, started) as sampler:
                for producer in producers:
                    producer.read_line(timeout=p.seconds * 2 + 60)
            produced = time.time() - started
            ctx.results.extra["w7_rss"] = samples = sampler.samples
            ctx.progress(
                "W7: RSS of the larger worker every "
                f"{RSSSampler.EVERY:g} s: "
                + " ".join(f"{max(r) / MB:.1f}" for _, r in sampler.samples)
                + " MB"
            )
            total = PRODUCERS * per_producer
            watcher.wait_completed(
                stamps, total, timeout=DRAIN_TIMEOUT, workers=workers
            )
            rss_end = [rss_bytes(w.pid) for w in workers]
            completed = watcher.completed_ids()
        finally:
            spawn.stop_all(producers)
            spawn.stop_all(workers)
            watcher.close()
            db.close()
        before = store.size()
        _prune(store.uri, work)
        _pack(store.uri)
        after = store.size()
    expected = {
        (tag, i) for tag in range(1, PRODUCERS + 1) for i in range(per_producer)
    }
    growth = max(
        (end - start) * 100 / start
        for start, end in zip(rss_start, rss_end, strict=True)
    )
    late = _late_growth(samples)
    return [
        ("jobs queued", "", total),
        ("producing time", "s", produced),
        ("worker RSS after warm-up, larger worker", "MB", max(rss_start) / MB),
        ("worker RSS at end, larger worker", "MB", max(rss_end) / MB),
        ("worker RSS growth after warm-up", "%", growth),
        ("worker RSS growth in the second half, larger worker", "MB", late),
        ("Data.fs before prune", "MB", before / MB),
        ("Data.fs after prune and pack", "MB", after / MB),
        ("Data.fs after prune and pack, against before", "x", after / before),
        ("jobs lost", "", len(expected - completed)),
    ]


def _late_growth(samples: list[tuple[float, list[int]]]) -> float:
    """MB the larger worker grew over the second half of the samples: near
    0 once memory levels off, whatever the warm-up cost."""
    if len(samples) < 2:
        return 0.0
    middle = samples[len(samples) // 2][1]
    return max(end - mid for mid, end in zip(middle, samples[-1][1], strict=True)) / MB


def _sleep_until(when: float, workers: list[spawn.Proc]) -> None:
    """Sleep until ``when``, watching that the workers still run."""
    while time.time() < when:
        for worker in workers:
            if worker.popen.poll() is not None:
                raise spawn.ProcessFailedError(f"{worker.name} exited{worker.tail()}")
        time.sleep(min(1.0, max(0.0, when - time.time())))


def _prune(uri: str, work: Path) -> None:
    """``zasync prune --older-than 0``: every finished job removed."""
    done = subprocess.run(
        [sys.executable, "-m", "zasync", "prune", "--db", uri, "--older-than", "0"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=spawn.ROOT,
        env=spawn.bench_env(work / "stamps"),
    )
    if done.returncode:
        raise spawn.ProcessFailedError(
            f"zasync prune exited with {done.returncode}: {done.stderr[-500:]}"
        )


def _pack(uri: str) -> None:
    """Pack the storage to now (the ZEO server packs its FileStorage)."""
    db = open_db(uri)
    try:
        db.pack(time.time())
    finally:
        db.close()
