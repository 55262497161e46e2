"""W8 fairness: do jobs blocked in a full quota delay the free jobs queued
after them, and what do ``unique_key`` and ``lock`` add to a put?

Setup (a), FileStorage with the worker (4 threads) in the process
(benchmarks.procs.fairness). A quota of size 1 is held by a job that runs
until the end; N jobs wait behind it in that quota (N = 0, 10,000 and
100,000; quick: 0 and 10,000), queued with ``put_many``, 1,000 a
transaction, the worker running. Then free jobs (no quota; 200, quick 50)
are queued one per transaction every 20 ms: their start latency is the
start stamp minus the time the producer's commit returned, as in W2.
Figures: p50 and p99 for each N, the p50 with N blocked against the p50
with none (measured in the same run), the free jobs that did not start,
and the seconds the N blocked jobs took to queue.

Throughput: as W1 (5,000 free jobs; quick 1,000), queued with no worker
running behind the job holding the quota and N jobs waiting in it (N = 0
and 100,000; quick: 0 and 10,000), then the worker starts: free jobs per
second from its start until the last has started, and the figure with N
blocked against the one with none.

Then, with no worker, on a fresh FileStorage each, 2,000 puts one per
transaction: plain, with a distinct ``unique_key`` each, with ``lock``
one of 50 keys, the three taking turns 200 at a time: jobs per second,
the putting thread's CPU and the bytes written per put, and each kind's
jobs/s and CPU against plain put's in the same run. A FileStorage
fsyncs every commit, which takes most of a put's time and varies with
what else the disk does: the CPU per put is the steadier comparison.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from benchmarks import spawn
from benchmarks.context import Context, percentile
from benchmarks.jobs import stamp
from benchmarks.setups import store_for
from benchmarks.stamps import StampReader, first_starts

LABEL = "a FileStorage, 4 threads"
#: the quota the blocked jobs wait in
QUOTA = "w8"
#: blocked jobs ahead of the free ones, full and quick
BLOCKED = (0, 10_000, 100_000)
BLOCKED_QUICK = (0, 10_000)
FREE_JOBS, FREE_JOBS_QUICK = 200, 50
INTERVAL = 0.02
PUTS = 2000
THROUGHPUT_JOBS, THROUGHPUT_JOBS_QUICK = 5000, 1000
THROUGHPUT_BLOCKED, THROUGHPUT_BLOCKED_QUICK = (0, 100_000), (0, 10_000)

_release = threading.Event()


def hold() -> None:
    """The job holding the quota: runs until :func:`release` (or 10 min)."""
    stamp(time.time(), 2, 0)
    _release.wait(600)


def release() -> None:
    _release.set()


def blocked_label(count: int) -> str:
    return f"{count:,} blocked"


def run(ctx: Context) -> None:
    p = ctx.params
    if not ctx.wants("a"):
        return
    sizes = BLOCKED_QUICK if p.quick else BLOCKED
    jobs = FREE_JOBS_QUICK if p.quick else FREE_JOBS
    add = ctx.results.add
    with ctx.setup("W8", LABEL):
        for index in range(p.runs):
            p50s = {}
            for count in sizes:
                figures = _latency(ctx, count, jobs)
                name = blocked_label(count)
                add("W8", LABEL, f"free jobs not started, {name}", "", figures["lost"])
                if count:
                    add("W8", LABEL, f"seconds to queue {name}", "s", figures["load"])
                if figures["latencies"] is None:
                    ctx.progress(
                        f"W8 run {index + 1}/{p.runs}, {name}: {figures['lost']} "
                        f"of {jobs} free jobs did not start"
                    )
                    continue
                latencies = figures["latencies"]
                p50s[count] = percentile(latencies, 50)
                p99 = percentile(latencies, 99)
                add("W8", LABEL, f"start p50, {name}", "ms", p50s[count])
                add("W8", LABEL, f"start p99, {name}", "ms", p99)
                if count and p50s.get(0):
                    add(
                        "W8",
                        LABEL,
                        f"start p50, {name}, against none",
                        "x",
                        p50s[count] / p50s[0],
                    )
                ctx.progress(
                    f"W8 run {index + 1}/{p.runs}, {name}: start p50 "
                    f"{p50s[count]:.2f} ms, p99 {p99:.2f} ms"
                    + (f"; queued in {figures['load']:.1f} s" if count else "")
                )
            _throughput(ctx, index)
            _enqueue(ctx, index)


def _throughput(ctx: Context, index: int) -> None:
    p = ctx.params
    jobs = THROUGHPUT_JOBS_QUICK if p.quick else THROUGHPUT_JOBS
    rates = {}
    for count in THROUGHPUT_BLOCKED_QUICK if p.quick else THROUGHPUT_BLOCKED:
        work = ctx.scratch(f"w8-throughput-{count}")
        with store_for("file", work) as store:
            result = _child(
                ["throughput", "--db", store.uri, "--blocked", str(count)]
                + ["--jobs", str(jobs)],
                work=work,
                timeout=900,
            )
        name = blocked_label(count)
        if result["started"] < jobs:
            ctx.progress(
                f"W8 throughput, {name}: {result['started']} of {jobs} started"
            )
            continue
        rates[count] = jobs / result["seconds"]
        ctx.results.add("W8", LABEL, f"free jobs/s, {name}", "jobs/s", rates[count])
        if count and rates.get(0):
            ratio = rates[count] / rates[0]
            ctx.results.add(
                "W8", LABEL, f"free jobs/s, {name}, against none", "x", ratio
            )
        ctx.progress(
            f"W8 run {index + 1}, throughput, {name}: {rates[count]:,.0f} jobs/s"
        )


def _child(args: list[str], *, work: Path, timeout: float) -> dict:
    """``python -m benchmarks.procs.fairness ARGS`` (spawn.run_child)."""
    return spawn.run_child("fairness", args, work=work, timeout=timeout)


def _latency(ctx: Context, count: int, jobs: int) -> dict:
    work = ctx.scratch(f"w8-{count}")
    with store_for("file", work) as store:
        result = _child(
            ["latency", "--db", store.uri, "--blocked", str(count)]
            + ["--jobs", str(jobs), "--interval", str(INTERVAL)],
            work=work,
            timeout=600,
        )
    # what starts once the holder is let go, as the worker stops, is late
    stamps = StampReader(work / "stamps").all()
    starts = first_starts([s for s in stamps if s.time < result["released"]])
    commits = result["commits"]
    lost = sum(1 for i in range(len(commits)) if (0, i) not in starts)
    latencies = None
    if not lost:
        latencies = [(starts[(0, i)] - t) * 1000 for i, t in enumerate(commits)]
    return {"load": result["load_seconds"], "lost": lost, "latencies": latencies}


def _enqueue(ctx: Context, index: int) -> None:
    work = ctx.scratch("w8-enqueue")
    result = _child(
        ["enqueue", "--dir", str(work / "stores"), "--jobs", str(PUTS)],
        work=work,
        timeout=600,
    )
    puts = result["puts"]
    rates, cpu = {}, {}
    for variant, taken in result["seconds"].items():
        if taken is None:
            ctx.progress(f"W8 put({variant}=...): {result['unsupported'][variant]}")
            continue
        what = "plain put" if variant == "plain" else f"put({variant})"
        rates[variant] = puts / taken
        cpu[variant] = result["cpu"][variant] / puts * 1e6
        ctx.results.add("W8", LABEL, f"jobs/s, {what}", "jobs/s", rates[variant])
        ctx.results.add("W8", LABEL, f"CPU per {what}", "us", cpu[variant])
        ctx.results.add(
            "W8", LABEL, f"bytes per {what}", "B", result["bytes"][variant] / puts
        )
    for variant in ("unique_key", "lock"):
        if variant in rates:
            what = f"put({variant})"
            ratio = rates[variant] / rates["plain"]
            ctx.results.add("W8", LABEL, f"{what} jobs/s against plain", "x", ratio)
            ratio = cpu[variant] / cpu["plain"]
            ctx.results.add("W8", LABEL, f"{what} CPU against plain", "x", ratio)
    ctx.progress(
        f"W8 run {index + 1}, {puts:,} puts each: "
        + ", ".join(
            f"{v} {r:,.0f} jobs/s, {cpu[v]:.0f} us CPU" for v, r in rates.items()
        )
    )
