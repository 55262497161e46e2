"""W1 (a) with its object loads counted: which thread loaded what, per job,
and the process's CPU per job.

``python -m benchmarks.probes.w1_loads [--jobs 20000]`` runs W1 (a) (a
FileStorage in a temporary directory, the jobs queued first, one
dispatcher of four threads in this process) with ZODB's
``Connection.setstate`` wrapped to count each load by the thread that made
it (the loop, a worker thread, or the harness) and the class of the object
loaded. Counts do not depend on the machine's speed, so they tell two
versions of the code apart where the throughput's noise does not.

A diagnostic, not a workload of BENCH.md. docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
from pathlib import Path

from ZODB.Connection import Connection

from benchmarks.procs import inproc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.w1_loads")
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)

    loads: collections.Counter = collections.Counter()
    setstate = Connection.setstate

    def counting(conn, obj):
        name = threading.current_thread().name
        if name.endswith("-loop"):
            who = "loop"
        elif name.startswith("zasync-"):
            who = "thread"
        else:
            who = "harness"
        loads[who, type(obj).__name__] += 1
        return setstate(conn, obj)

    Connection.setstate = counting
    work = Path(tempfile.mkdtemp(prefix="zasync-w1-loads-"))
    cpu = time.process_time()
    result = inproc.run_w1(f"file://{work / 'Data.fs'}", args.jobs)
    cpu = time.process_time() - cpu
    jobs = args.jobs
    print(
        f"{jobs} jobs: {jobs / result['seconds']:,.0f} jobs/s, "
        f"CPU {cpu / jobs * 1e6:.0f} us per job (the harness's included)"
    )
    print("  objects loaded per job, by thread and class:")
    for (who, name), count in sorted(loads.items()):
        if count / jobs >= 0.001:
            print(f"  {who:8s} {name:18s} {count / jobs:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
