"""W1 with one ``zasync worker --processes N`` command, counted by process:
how many jobs each ran, when each started, and the rate once all had.

``python -m benchmarks.probes.w1_processes [--jobs 20000] [--processes 2]
[--threads 4]``
starts a ZEO server, queues ``--jobs`` ``add`` jobs (100 a transaction),
starts the command and waits until every job ran; it then prints, from
the jobs' start stamps, the overall rate (first start to last), each
process's share and first start, and the rate from the moment the last
process started its first job, and how many jobs started in each 50 ms
of the first half second. W1 (f) times the whole, start-up included;
this tells the start-up from the steady rate.
"""

from __future__ import annotations

import argparse
import collections

from benchmarks.context import Watcher, enqueue, open_installed
from benchmarks.probes import scratch
from benchmarks.setups import store_for
from benchmarks.workloads.w1_throughput import processes_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.w1_processes")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    work, stamps = scratch("w1-processes")
    with store_for("zeo", work / "server") as store:
        db = open_installed(store.uri)
        watcher = Watcher(db)
        try:
            enqueue(db, args.jobs, batch=100)
            with processes_command(
                store.uri, work, work / "command.log", args.processes, args.threads
            ) as command:
                watcher.wait_completed(
                    stamps, args.jobs, timeout=900, workers=[command]
                )
        finally:
            watcher.close()
            db.close()
    starts = sorted(stamp.time for stamp in stamps.all())
    by_pid: dict[int, list[float]] = collections.defaultdict(list)
    for stamp in stamps.all():
        by_pid[stamp.pid].append(stamp.time)
    first, last = starts[0], starts[-1]
    rate = len(starts) / (last - first)
    print(f"{len(starts)} jobs in {last - first:.2f} s: {rate:,.0f} jobs/s")
    for pid, times in sorted(by_pid.items(), key=lambda item: min(item[1])):
        print(
            f"  process {pid}: {len(times)} jobs, first started "
            f"{min(times) - first:.2f} s after the first job"
        )
    windows = collections.Counter(int((t - first) / 0.05) for t in starts)
    print(
        "  jobs started in each 50 ms of the first 0.5 s: "
        + ", ".join(str(windows[index]) for index in range(10))
    )
    all_started = max(min(times) for times in by_pid.values())
    after = [t for t in starts if t >= all_started]
    if len(after) > 1 and last > all_started:
        steady = len(after) / (last - all_started)
        print(f"  once every process had started: {steady:,.0f} jobs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
