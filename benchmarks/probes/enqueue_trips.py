"""The round trips and object loads of one enqueue, counted.

``python -m benchmarks.probes.enqueue_trips [--storage zeo|relstorage]
[--jobs 200] [--interval 0.02] [--workers 1]`` starts a storage server
and ``--workers`` idle ``zasync worker`` processes, then queues ``--jobs``
``add`` jobs from this process, one per transaction (W2's producer, paced
by ``--interval``; 0: as fast as it can, the enqueue rows), with
benchmarks.roundtrips counting what each enqueue asked of the server and
loaded. Counts do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks import roundtrips, spawn
from benchmarks.context import Watcher, open_installed
from benchmarks.probes import scratch
from benchmarks.procs.producer import produce
from benchmarks.setups import store_for
from zasync.storage import open_db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.enqueue_trips")
    parser.add_argument("--storage", choices=("zeo", "relstorage"), default="zeo")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    work, stamps = scratch("enqueue-trips")
    with store_for(args.storage, work / "server") as store:
        watch_db = open_installed(store.uri)
        watcher = Watcher(watch_db)
        group = [
            spawn.cli_worker(
                store.uri,
                stamps=work / "stamps",
                log=work / f"worker-{i + 1}.log",
                name=f"worker {i + 1}",
            )
            for i in range(args.workers)
        ]
        try:
            time.sleep(1.0)
            db = open_db(store.uri)
            counts = roundtrips.install(db)
            produce(db, count=5, tag=1, interval=args.interval)  # warm-up
            counts.reset()
            began = time.perf_counter()
            produce(db, count=args.jobs, tag=0, interval=args.interval)
            seconds = time.perf_counter() - began
            counts.enabled = False
            watcher.wait_completed(stamps, args.jobs + 5, timeout=60, workers=group)
            db.close()
        finally:
            spawn.stop_all(group)
            watcher.close()
            watch_db.close()
    summary = counts.summary(args.jobs)
    summary["enqueues_per_second"] = args.jobs / seconds
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
