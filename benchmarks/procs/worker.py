"""A worker process that starts on a signal from the harness.

``python -m benchmarks.procs.worker --db URI [--threads N]`` imports the jobs,
opens the database, prints ``ready``, waits for a line on its standard input,
then starts a :class:`zasync.dispatcher.Dispatcher` with the defaults of
``zasync worker`` and prints ``started <time>``. It stops on SIGTERM (or when
its standard input closes), as ``zasync worker`` does, and writes its
counters (CPU seconds since the start, claims) to its log: ``read_stats``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import benchmarks.jobs  # noqa: F401 - the jobs it runs
from zasync.dispatcher import Dispatcher
from zasync.storage import open_db

#: the line, in the worker's log (its standard error), of its counters at exit
STATS = "zasync-bench-stats"


def _stats(dispatcher, cpu: float) -> dict:
    return {
        "cpu": cpu,
        "jobs_run": dispatcher.jobs_run,
        "jobs_claimed": dispatcher.jobs_claimed,
        "claims_committed": dispatcher.claims_committed,
        "claims_conflicted": dispatcher.claims_conflicted,
    }


def read_stats(log_path) -> dict | None:
    """The counters a worker wrote to its log at exit (None if it did not)."""
    found = None
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith(STATS + " "):
                found = json.loads(line[len(STATS) + 1 :])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    db = open_db(args.db)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print("ready", flush=True)
    if not sys.stdin.readline():
        db.close()
        return 1
    started = time.time()
    cpu = time.process_time()
    dispatcher = Dispatcher(db, threads=args.threads).start()
    print(f"started {started!r}", flush=True)

    def watch_stdin():
        sys.stdin.read()  # returns when the harness closes the pipe
        stopping.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stopping.wait(1.0):
        pass
    cpu = time.process_time() - cpu
    clean = dispatcher.stop(30)
    print(STATS, json.dumps(_stats(dispatcher, cpu)), file=sys.stderr, flush=True)
    db.close()
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
