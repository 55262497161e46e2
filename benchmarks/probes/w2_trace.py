"""Where W2's latency goes: each step of a job's way from the producer's
commit to its start, timed.

``python -m benchmarks.probes.w2_trace [--jobs 300] [--workers 1]`` starts a ZEO
server, ``--workers`` dispatchers (4 threads each, each with a database of
its own) in this process, and the W2 producer in another; it then prints,
for each step, the median and 90th percentile of its time after the
producer's commit returned, the durations of the storage calls the
dispatchers' loops made, and the CPU seconds per job of the server and of
this process. ``--storage file``: W2 (a), one dispatcher on a FileStorage
and the producer in a thread of this process.

A diagnostic, not a workload of BENCH.md: it wraps zasync's and ZEO's
functions to take its stamps (which costs some of the time it measures),
and its dispatchers share one process.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ZEO.ClientStorage import ClientStorage
from ZODB.FileStorage import FileStorage

import benchmarks.jobs  # noqa: F401 - the job it runs
import zasync.claimer as claimer_module
import zasync.dispatcher as dispatcher_module
import zasync.executor as executor_module
import zasync.wakeup as wakeup_module
from benchmarks.procs.producer import produce
from zasync.dispatcher import Dispatcher
from zasync.queue import install
from zasync.storage import open_db
from zasync.testservers import ZEOServer

STEPS = ["invalidation", "wake", "handed over", "claim begins", "claim ends"]
STEPS += ["claim committed", "thread starts", "job starts"]


class Trace:
    def __init__(self):
        self.by_job: dict[int, dict[str, float]] = collections.defaultdict(dict)
        self.invalidations: list[float] = []
        self.oid_job: dict[bytes, int] = {}
        self.calls: dict[str, list[float]] = collections.defaultdict(list)
        self.lost_claims = 0
        self.local = threading.local()

    def install(self, kind: str) -> None:
        """Wrap the functions whose calls are the steps."""
        self._wrap_invalidate()
        self._wrap_round()
        self._wrap_handed_over()
        self._wrap_claim()
        self._wrap_run()
        storage_class = ClientStorage if kind == "zeo" else FileStorage
        for name in ("tpc_begin", "tpc_vote", "tpc_finish", "loadBefore"):
            function = getattr(storage_class, name)
            setattr(storage_class, name, self._timed(name, function))

    def _wrap_invalidate(self) -> None:
        """The invalidation reaches the worker."""
        trace = self
        notifying = wakeup_module.NotifyingStorage
        invalidate = notifying.invalidate

        def on_invalidate(storage, tid, oids, *args):
            trace.invalidations.append(time.time())
            return invalidate(storage, tid, oids, *args)

        notifying.invalidate = on_invalidate

    def _wrap_round(self) -> None:
        """The loop wakes (a round begins: Dispatcher._step, before the
        refresh of the peers and the claim); when its claim for the idle
        threads (Claimer.claim_for) returns, its steps go to the jobs it
        took."""
        trace = self
        step = dispatcher_module.Dispatcher._step
        claim_for = claimer_module.Claimer.claim_for

        def on_step(dispatcher, now):
            trace.local.round = {"wake": time.time()}
            return step(dispatcher, now)

        def on_claim_for(claimer, idle):
            try:
                return claim_for(claimer, idle)
            finally:
                trace._end_round(trace.local.round)
                # The heartbeat's and maintenance's commits that follow in
                # this round are not the claim's.
                trace.local.round = {}

        dispatcher_module.Dispatcher._step = on_step
        claimer_module.Claimer.claim_for = on_claim_for

    def _end_round(self, step: dict) -> None:
        if not step.get("jobs"):
            return
        if "claim committed" not in step and "handed over" not in step:
            self.lost_claims += 1  # its commit conflicted
            return
        for job in step["jobs"]:
            self.by_job[job].update({k: v for k, v in step.items() if k != "jobs"})

    def _wrap_handed_over(self) -> None:
        """The loop finds jobs in its threads' inboxes."""
        trace = self
        handed_over = claimer_module.Claimer._handed_over

        def on_handed_over(claimer, record, idle):
            found = handed_over(claimer, record, idle)
            if found:
                step = trace.local.round
                step["handed over"] = time.time()
                jobs = step.setdefault("jobs", [])
                for oids in found.values():
                    for oid in oids:
                        key = oid.to_bytes(8, "big")
                        trace.oid_job[key] = record._p_jar.get(key).args[1]
                        jobs.append(trace.oid_job[key])
            return found

        claimer_module.Claimer._handed_over = on_handed_over

    def _wrap_claim(self) -> None:
        """The claim begins and ends."""
        trace = self
        claim = claimer_module.claim

        def on_claim(*args, **kw):
            began = time.time()
            taken = claim(*args, **kw)
            step = trace.local.round
            step["claim begins"], step["claim ends"] = began, time.time()
            step.setdefault("jobs", [])
            for jobs in taken.values():
                for job in jobs:
                    trace.oid_job[job._p_oid] = job.args[1]
                    step["jobs"].append(job.args[1])
            return taken

        claimer_module.claim = on_claim

    def _wrap_run(self) -> None:
        """A thread starts its jobs."""
        trace = self
        run = executor_module.SlotRunner.run

        def on_run(runner, oids, **kw):
            clock = time.time()
            for oid in oids:
                job = trace.oid_job.get(oid.to_bytes(8, "big"))
                if job is not None:
                    trace.by_job[job]["thread starts"] = clock
            return run(runner, oids, **kw)

        executor_module.SlotRunner.run = on_run

    def _timed(self, name, function):
        trace = self

        def timed(*args, **kw):
            began = time.perf_counter()
            try:
                return function(*args, **kw)
            finally:
                thread = threading.current_thread().name
                if thread.endswith("-loop"):
                    elapsed = (time.perf_counter() - began) * 1000
                    trace.calls[name].append(elapsed)
                    if name == "tpc_finish":
                        step = getattr(trace.local, "round", None)
                        if step is not None and "jobs" in step:
                            step.setdefault("claim committed", time.time())

        return timed


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _starts(directory: Path) -> dict[int, float]:
    found: dict[int, float] = {}
    for path in directory.glob("*.stamps"):
        for line in path.read_text().splitlines():
            when, _a, b = line.split()
            found.setdefault(int(b), float(when))
    return found


def _row(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(len(values) * 0.9)]
    return (
        f"  {name:22s} {statistics.median(values):8.2f} {p90:8.2f}  (n={len(values)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.w2_trace")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", choices=("zeo", "file"), default="zeo")
    args = parser.parse_args(argv)
    if args.storage == "file" and args.workers != 1:
        parser.error("--storage file: one process holds the FileStorage, one worker")

    work = Path(tempfile.mkdtemp(prefix="zasync-w2-trace-"))
    stamps = work / "stamps"
    stamps.mkdir()
    os.environ["ZASYNC_BENCH_STAMPS"] = str(stamps)

    trace = Trace()
    trace.install(args.storage)
    if args.storage == "file":
        commits, server_cpu, own_cpu = _run_file(args, work, trace)
    else:
        commits, server_cpu, own_cpu = _run_zeo(args, work, trace)
    _report(args, trace, commits, _starts(stamps), server_cpu, own_cpu)
    return 0


def _run_file(args, work: Path, trace: Trace):
    """One dispatcher and the producer (a thread) on a FileStorage."""
    db = open_db(f"file://{work / 'Data.fs'}")
    try:
        install(db)
        dispatcher = Dispatcher(db, threads=4).start()
        time.sleep(1.0)  # the worker idle and running, as in W2
        trace.by_job.clear()
        trace.calls.clear()
        own_cpu = _cpu(os.getpid())
        result = produce(db, count=args.jobs, tag=0, interval=args.interval)
        _wait_for_starts(work / "stamps", args.jobs)
        own_cpu = _cpu(os.getpid()) - own_cpu
        dispatcher.stop(10)
    finally:
        db.close()
    return result["commits"], None, own_cpu


def _wait_for_starts(stamps: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(_starts(stamps)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_zeo(args, work: Path, trace: Trace):
    """The dispatchers in this process, the producer in another, on ZEO."""
    stamps = work / "stamps"
    with ZEOServer(work / "zeo") as server:
        dbs = [open_db(server.uri) for _ in range(args.workers)]
        install(dbs[0])
        dispatchers = [Dispatcher(db, threads=4).start() for db in dbs]
        out = work / "producer.json"
        producer = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.procs.producer", "--db", server.uri]
            + ["--out", str(out), "--count", str(args.jobs)]
            + ["--interval", str(args.interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if producer.stdout.readline().strip() != "ready":
            raise SystemExit("the producer did not start")
        time.sleep(1.0)  # the workers idle and running, as in W2
        trace.by_job.clear()
        trace.calls.clear()
        trace.invalidations.clear()
        server_cpu, own_cpu = _cpu(server.pid), _cpu(os.getpid())
        producer.stdin.write("go\n")
        producer.stdin.flush()
        producer.stdout.readline()
        producer.wait()
        _wait_for_starts(stamps, args.jobs)
        server_cpu, own_cpu = _cpu(server.pid) - server_cpu, _cpu(os.getpid()) - own_cpu
        for dispatcher in dispatchers:
            dispatcher.stop(10)
        for db in dbs:
            db.close()
    return json.loads(out.read_text())["commits"], server_cpu, own_cpu


def _report(args, trace: Trace, commits, starts, server_cpu, own_cpu) -> None:
    trace.invalidations.sort()
    columns: dict[str, list[float]] = collections.defaultdict(list)
    for job, committed in enumerate(commits):
        steps = dict(trace.by_job.get(job, {}))
        if job in starts:
            steps["job starts"] = starts[job]
        for when in trace.invalidations:
            if when >= committed - 0.01:
                steps["invalidation"] = when
                break
        for name, when in steps.items():
            columns[name].append((when - committed) * 1000)
    kind = "ZEO" if args.storage == "zeo" else "FileStorage"
    print(
        f"{args.jobs} jobs, one every {args.interval * 1000:.0f} ms, "
        f"{args.workers} worker(s) of 4 threads on {kind}"
    )
    print("  ms after the producer's commit returned:   p50      p90")
    for name in STEPS:
        if columns.get(name):
            print(_row(name, columns[name]))
    print(f"  {kind} calls of the dispatchers' loops, ms:    p50      p90")
    for name, values in sorted(trace.calls.items()):
        print(_row(name, values))
    server = (
        ""
        if server_cpu is None
        else f"ZEO server {server_cpu / args.jobs * 1000:.2f} ms, "
    )
    print(
        f"  CPU per job: {server}this process {own_cpu / args.jobs * 1000:.2f} ms; "
        f"claims that conflicted: {trace.lost_claims}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
