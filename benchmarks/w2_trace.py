"""Where W2's latency goes on ZEO: each step of a job's way from the
producer's commit to its start, timed.

``python -m benchmarks.w2_trace [--jobs 300] [--workers 1]`` starts a ZEO
server, ``--workers`` dispatchers (4 threads each, each with a database of
its own) in this process, and the W2 producer in another; it then prints,
for each step, the median and 90th percentile of its time after the
producer's commit returned, the durations of the ZEO calls the dispatchers'
loops made, and the CPU seconds per job of the server and of this process.

A diagnostic, not a workload of BENCH.md: it wraps zasync's and ZEO's
functions to take its stamps (which costs some of the time it measures),
and its dispatchers share one process. docs/performance.md quotes it.
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

STEPS = ["invalidation", "wake", "claim begins", "claim ends", "claim committed"]
STEPS += ["thread starts", "job starts"]


class Trace:
    def __init__(self):
        self.by_job: dict[int, dict[str, float]] = collections.defaultdict(dict)
        self.invalidations: list[float] = []
        self.oid_job: dict[bytes, int] = {}
        self.calls: dict[str, list[float]] = collections.defaultdict(list)
        self.lost_claims = 0
        self.local = threading.local()

    def install(self) -> None:
        """Wrap the functions whose calls are the steps."""
        import ZEO.ClientStorage

        import zasync.dispatcher as dispatcher_module
        import zasync.executor as executor_module
        import zasync.wakeup as wakeup_module

        trace = self
        notifying = wakeup_module.NotifyingStorage
        invalidate = notifying.invalidate

        def on_invalidate(storage, tid, oids, *args):
            trace.invalidations.append(time.time())
            return invalidate(storage, tid, oids, *args)

        notifying.invalidate = on_invalidate

        claim_for_idle = dispatcher_module.Dispatcher._claim_for_idle

        def on_claim_for_idle(dispatcher):
            trace.local.round = {"wake": time.time()}
            result = claim_for_idle(dispatcher)
            step = trace.local.round
            if step.get("jobs"):
                if "claim committed" not in step:
                    trace.lost_claims += 1  # its commit conflicted
                else:
                    for job in step["jobs"]:
                        trace.by_job[job].update(
                            {k: v for k, v in step.items() if k != "jobs"}
                        )
            return result

        dispatcher_module.Dispatcher._claim_for_idle = on_claim_for_idle

        claim = dispatcher_module.claim

        def on_claim(*args, **kw):
            began = time.time()
            taken = claim(*args, **kw)
            step = trace.local.round
            step["claim begins"], step["claim ends"] = began, time.time()
            step["jobs"] = []
            for jobs in taken.values():
                for job in jobs:
                    trace.oid_job[job._p_oid] = job.args[1]
                    step["jobs"].append(job.args[1])
            return taken

        dispatcher_module.claim = on_claim

        run = executor_module.SlotRunner.run

        def on_run(runner, oids):
            clock = time.time()
            for oid in oids:
                job = trace.oid_job.get(oid.to_bytes(8, "big"))
                if job is not None:
                    trace.by_job[job]["thread starts"] = clock
            return run(runner, oids)

        executor_module.SlotRunner.run = on_run

        storage = ZEO.ClientStorage.ClientStorage
        for name in ("tpc_begin", "tpc_vote", "tpc_finish", "loadBefore"):
            setattr(storage, name, self._timed(name, getattr(storage, name)))

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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.w2_trace")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="zasync-w2-trace-"))
    stamps = work / "stamps"
    stamps.mkdir()
    os.environ["ZASYNC_BENCH_STAMPS"] = str(stamps)
    import benchmarks.jobs  # noqa: F401 - the job it runs
    from zasync.dispatcher import Dispatcher
    from zasync.queue import install
    from zasync.storage import open_db
    from zasync.testservers import ZEOServer

    trace = Trace()
    trace.install()
    with ZEOServer(work / "zeo") as server:
        dbs = [open_db(server.uri) for _ in range(args.workers)]
        install(dbs[0])
        dispatchers = [Dispatcher(db, threads=4).start() for db in dbs]
        out = work / "producer.json"
        producer = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.producer", "--db", server.uri]
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
        deadline = time.monotonic() + 60
        while len(_starts(stamps)) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        server_cpu, own_cpu = _cpu(server.pid) - server_cpu, _cpu(os.getpid()) - own_cpu
        for dispatcher in dispatchers:
            dispatcher.stop(10)
        for db in dbs:
            db.close()
    commits = json.loads(out.read_text())["commits"]
    starts = _starts(stamps)
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
    print(
        f"{args.jobs} jobs, one every {args.interval * 1000:.0f} ms, "
        f"{args.workers} worker(s) of 4 threads on ZEO"
    )
    print("  ms after the producer's commit returned:   p50      p90")
    for name in STEPS:
        if columns.get(name):
            print(_row(name, columns[name]))
    print("  ZEO calls of the dispatchers' loops, ms:    p50      p90")
    for name, values in sorted(trace.calls.items()):
        print(_row(name, values))
    print(
        f"  CPU per job: ZEO server {server_cpu / args.jobs * 1000:.2f} ms, "
        f"this process {own_cpu / args.jobs * 1000:.2f} ms; claims that "
        f"conflicted: {trace.lost_claims}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
