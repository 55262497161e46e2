"""W1 throughput: queue the jobs first (batches of 100 per transaction),
then start the workers and time from their start until the last job is
COMPLETED. Also the storage's growth per job, for queueing and for running,
and (file-based storages) the transactions the workers committed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import spawn
from benchmarks.context import Context, Watcher, enqueue, open_installed
from benchmarks.procs.worker import read_stats
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader

#: letter -> (label, storage kind, worker processes)
SETUPS = {
    "a": ("a FileStorage, 1 process", "file", 1),
    "b": ("b ZEO, 1 worker", "zeo", 1),
    "c": ("c ZEO, 2 workers", "zeo", 2),
    "d": ("d RelStorage, 1 worker", "relstorage", 1),
    "e": ("e ZEO, 4 workers", "zeo", 4),
    # one command, as Dramatiq, Celery and Huey users start their workers
    "f": ("f ZEO, zasync worker --processes 2", "zeo-command", 2),
}


def run(ctx: Context) -> None:
    p = ctx.params
    for letter, (label, kind, workers) in SETUPS.items():
        if not ctx.wants(letter):
            continue
        with ctx.setup("W1", label):
            for index in range(p.runs):
                once = {"file": _inproc, "zeo-command": _command}.get(kind, _processes)
                figures = once(ctx, kind, workers)
                for metric, unit, value in figures:
                    ctx.results.add("W1", label, metric, unit, value)
                ctx.progress(
                    f"W1 {label} run {index + 1}/{p.runs}: {figures[0][2]:,.0f} jobs/s"
                )
            ctx.results.extra.setdefault("w1", {})[letter] = ctx.results.figure(
                "W1", label, "throughput", "jobs/s"
            ).samples
    # More workers never slower: four against the faster of one and two.
    ctx.results.ratio(
        "W1",
        SETUPS["e"][0],
        "throughput against 1 or 2 workers",
        (SETUPS["e"][0], "throughput"),
        [(SETUPS[letter][0], "throughput") for letter in "bc"],
    )


def _figures(jobs, seconds, enq, ran, txns, first):
    figures = [
        ("throughput", "jobs/s", jobs / seconds),
        ("start to first job started", "s", first),
        ("growth per queued job", "bytes", enq / jobs),
        ("growth per executed job", "bytes", ran / jobs),
    ]
    if txns is not None:
        figures.append(("worker transactions per 1,000 jobs", "", txns * 1000 / jobs))
    return figures


def _inproc(ctx: Context, kind: str, workers: int):
    """Setup (a): the worker runs in the process that holds the FileStorage."""
    jobs = ctx.params.w1_jobs
    work = ctx.scratch("w1-file")
    with store_for("file", work) as store:
        result = spawn.run_inproc(
            ["w1", "--db", store.uri, "--jobs", str(jobs)], work=work, timeout=900
        )
        if result["done"] < jobs:
            raise RuntimeError(f"only {result['done']} of {jobs} jobs finished")
        txns = store.transactions_since(result["enqueue_end"])
    first = min(s.time for s in StampReader(work / "stamps").all())
    return _figures(
        jobs,
        result["seconds"],
        result["enqueue_bytes"],
        result["run_bytes"],
        txns,
        first - result["started"],
    )


@contextlib.contextmanager
def processes_command(
    uri: str, work: Path, log: Path, processes: int, threads: int = 4
) -> Iterator[spawn.Proc]:
    """One ``zasync worker --processes N`` command on ``uri``, its jobs'
    stamps in ``work / "stamps"``; stopped on leaving."""
    command = spawn.cli_worker(
        uri,
        stamps=work / "stamps",
        log=log,
        name="zasync worker --processes",
        uuid_file=work / "worker.uuid",
        processes=processes,
        threads=threads,
    )
    try:
        yield command
    finally:
        spawn.stop_all([command])


def _command(ctx: Context, kind: str, processes: int):
    """Setup (f): one ``zasync worker --processes N`` command on ZEO. Its
    first process starts claiming before the others are ready, so the time
    runs from the first job's start to the last job's end."""
    p = ctx.params
    work = ctx.scratch(f"w1-command-{processes}")
    stamps = StampReader(work / "stamps")
    with store_for("zeo", work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        try:
            size0 = store.size()
            enqueue(db, p.w1_jobs, batch=p.w1_batch)
            size1 = store.size()
            started = time.time()
            with processes_command(
                store.uri, work, work / "logs" / "command.log", processes
            ) as command:
                ended = watcher.wait_completed(
                    stamps, p.w1_jobs, timeout=900, workers=[command]
                )
                size2 = store.size()
        finally:
            watcher.close()
            db.close()
    first = min(s.time for s in stamps.all())
    return _figures(
        p.w1_jobs, ended - first, size1 - size0, size2 - size1, None, first - started
    )


def _processes(ctx: Context, kind: str, workers: int):
    p = ctx.params
    work = ctx.scratch(f"w1-{kind}-{workers}")
    stamps = StampReader(work / "stamps")
    with store_for(kind, work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        try:
            size0 = store.size()
            enqueue(db, p.w1_jobs, batch=p.w1_batch)
            size1 = store.size()
            position = store.end() if store.data_path else None
            group = spawn.gated_workers(
                store.uri, workers, stamps=work / "stamps", logs=work / "logs"
            )
            server_cpu = spawn.server_cpu_seconds(store)
            try:
                started = spawn.go(group)
                ended = watcher.wait_completed(
                    stamps, p.w1_jobs, timeout=900, workers=group
                )
                if server_cpu is not None:
                    server_cpu = spawn.server_cpu_seconds(store) - server_cpu
                size2 = store.size()
            finally:
                spawn.stop_all(group)
            stats = [read_stats(proc.log_path) for proc in group]
            txns = store.transactions_since(position) if position else None
        finally:
            watcher.close()
            db.close()
    first = min(s.time for s in stamps.all())
    figures = _figures(
        p.w1_jobs, ended - started, size1 - size0, size2 - size1, txns, first - started
    )
    if all(stats):
        per_1000 = 1000 / p.w1_jobs

        def summed(name):
            return sum(s[name] for s in stats) * per_1000

        figures.append(("workers' CPU per 1,000 jobs", "s", summed("cpu")))
        if server_cpu is not None:
            figures.append(
                ("ZEO server's CPU per 1,000 jobs", "s", server_cpu * per_1000)
            )
        figures.append(
            ("claims committed per 1,000 jobs", "", summed("claims_committed"))
        )
        figures.append(
            ("claims conflicted per 1,000 jobs", "", summed("claims_conflicted"))
        )
    return figures
