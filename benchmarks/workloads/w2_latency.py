"""W2 latency: with the workers idle and running, a producer queues one job
every 20 ms, each in its own committed transaction; latency is the job's
start stamp minus the time the producer's commit returned, and (the
figures "from the call") minus the time just before its ``queue.put``."""

from __future__ import annotations

import json
import sys
import time

from benchmarks import spawn
from benchmarks.context import Context, Watcher, open_installed, percentile
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader, first_starts
from benchmarks.workloads.storage_alone import PACED
from benchmarks.workloads.storage_alone import SETUPS as STORAGES
from benchmarks.workloads.w1_throughput import SETUPS

LETTERS = "abcd"
#: the figures from just before the producer's queue.put, not its commit
FROM_CALL = "from the call"
#: counted in the producer (benchmarks.roundtrips), as the enqueue rows do
TRIPS = "round trips per enqueue besides its commit"
#: W2's p50 from the call over the p50 of one commit of the storage alone
#: at W2's pace, in the same run (when ``storage`` ran)
AGAINST_PACED = "p50 from the call against one commit alone at its pace"
#: storage kind -> label of the storage alone
ALONE = {kind: label for label, kind in STORAGES.values()}
#: loads zasync.prewarm asked of the server in the background, per enqueue
PREWARMED = "objects prewarmed per enqueue"


def run(ctx: Context) -> None:
    p = ctx.params
    for letter in LETTERS:
        label, kind, workers = SETUPS[letter]
        if not ctx.wants(letter):
            continue
        with ctx.setup("W2", label):
            pooled: list[float] = []
            for index in range(p.runs):
                once = _inproc if kind == "file" else _processes
                (calls, commits), starts, trips = once(ctx, kind, workers)
                latencies = _latencies(commits, starts)
                pooled.extend(latencies)
                for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
                    ctx.results.add("W2", label, name, "ms", percentile(latencies, q))
                if trips is not None:
                    ctx.results.add("W2", label, TRIPS, "", trips["round_trips"])
                    warmed = trips["calls"].get("prewarm", 0.0)
                    ctx.results.add("W2", label, PREWARMED, "", warmed)
                from_call = _latencies(calls, starts)
                for name, q in (("p50", 50), ("p99", 99)):
                    value = percentile(from_call, q)
                    ctx.results.add("W2", label, f"{name} {FROM_CALL}", "ms", value)
                ctx.progress(
                    f"W2 {label} run {index + 1}/{p.runs}: p50 "
                    f"{percentile(latencies, 50):.2f} ms, p99 "
                    f"{percentile(latencies, 99):.2f} ms; from the call p50 "
                    f"{percentile(from_call, 50):.2f} ms, p99 "
                    f"{percentile(from_call, 99):.2f} ms"
                )
            ctx.results.extra.setdefault("w2", {})[label] = pooled
            ctx.results.ratio(
                "W2",
                label,
                AGAINST_PACED,
                (label, f"p50 {FROM_CALL}"),
                [("storage", ALONE[kind], f"{PACED}, p50")],
            )


def _latencies(commits: list[float], starts: dict) -> list[float]:
    missing = [i for i in range(len(commits)) if (0, i) not in starts]
    if missing:
        raise RuntimeError(f"{len(missing)} jobs never started (first: {missing[0]})")
    return [(starts[(0, i)] - t) * 1000 for i, t in enumerate(commits)]


def _inproc(ctx: Context, kind: str, workers: int):
    p = ctx.params
    work = ctx.scratch("w2-file")
    with store_for("file", work) as store:
        result = spawn.run_inproc(
            ["w2", "--db", store.uri, "--jobs", str(p.w2_jobs)]
            + ["--interval", str(p.w2_interval)],
            work=work,
            timeout=300,
        )
    times = (result["calls"], result["commits"])
    return times, first_starts(StampReader(work / "stamps").all()), None


def _processes(ctx: Context, kind: str, workers: int):
    p = ctx.params
    work = ctx.scratch(f"w2-{kind}-{workers}")
    stamps = StampReader(work / "stamps")
    with store_for(kind, work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        group = []
        try:
            for index in range(workers):
                group.append(
                    spawn.cli_worker(
                        store.uri,
                        stamps=work / "stamps",
                        log=work / "logs" / f"worker-{index + 1}.log",
                        name=f"worker {index + 1}",
                    )
                )
            time.sleep(1.0)  # idle and running
            out = work / "producer.json"
            producer = spawn.Proc(
                "producer",
                [sys.executable, "-m", "benchmarks.procs.producer", "--db", store.uri]
                + ["--out", str(out), "--count", str(p.w2_jobs), "--count-trips"]
                + ["--interval", str(p.w2_interval)],
                stamps=work / "stamps",
                log=work / "logs" / "producer.log",
            )
            try:
                if producer.read_line() != "ready":
                    raise spawn.ProcessFailedError(
                        f"producer not ready{producer.tail()}"
                    )
                producer.send("go")
                producer.read_line(timeout=p.w2_jobs * p.w2_interval + 120)
            finally:
                producer.stop()
            watcher.wait_completed(stamps, p.w2_jobs, timeout=60, workers=group)
        finally:
            spawn.stop_all(group)
            watcher.close()
            db.close()
    result = json.loads(out.read_text())
    times = (result["calls"], result["commits"])
    return times, first_starts(stamps.all()), result["trips"]
