"""One client of the storage-alone figures with several clients.

``python -m benchmarks.procs.storage_client URI KEY SECONDS`` opens the database,
makes its own object (``root[KEY]``), prints ``ready``, waits for a line on
its standard input, then commits a one-object change to it in a loop for
SECONDS and prints one JSON line: the commits, the seconds they took and the
process's CPU seconds meanwhile (all threads: ZEO's I/O thread included,
which receives the other clients' invalidations).
"""

from __future__ import annotations

import json
import sys
import time

import transaction
from BTrees.Length import Length
from persistent.mapping import PersistentMapping

from zasync.storage import open_db


def commit_loop(conn, tm, key: str, seconds: float) -> tuple[int, float, float]:
    """Commit a change to ``root[key]`` (a mapping) in a loop for
    ``seconds``; return the commits, the seconds they took and the
    process's CPU seconds meanwhile."""

    def change(count: int) -> None:
        conn.root()[key]["n"] = count

    return _loop(tm, change, seconds)


def _loop(tm, change, seconds: float) -> tuple[int, float, float]:
    """Commit ``change(count)`` in a transaction each, for ``seconds``;
    return the commits, the seconds they took and the process's CPU
    seconds meanwhile."""
    count = 0
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        with tm:
            change(count)
        count += 1
        if count % 16 == 0 and time.perf_counter() > deadline:
            break
    return count, time.perf_counter() - started, time.process_time() - cpu


#: entries in the mapping an enqueue-shaped commit rewrites (about a
#: queue shard's bucket)
BUCKET_ENTRIES = 20


def enqueue_shaped_loop(conn, tm, key: str, seconds: float) -> tuple[int, float]:
    """Commit, in a loop for ``seconds``, what one enqueue writes, with
    none of zasync's code: a new small persistent object (the job), the
    mapping holding it under a tuple key among ``BUCKET_ENTRIES`` (a shard's
    bucket) and a ``BTrees.Length`` (the shard's counter); return the
    commits and the seconds they took."""
    root = conn.root()
    with tm:
        root[key] = PersistentMapping()
        root[key + "-count"] = Length()

    def change(count: int) -> None:
        bucket = root[key]
        if len(bucket) >= BUCKET_ENTRIES:
            del bucket[min(bucket)]
        job = PersistentMapping(
            status="pending", args=(1, count), begin_after=time.time()
        )
        bucket[(0, time.time_ns() // 1000, count)] = job
        root[key + "-count"].change(1)

    count, elapsed, _cpu = _loop(tm, change, seconds)
    return count, elapsed


def paced_commits(conn, tm, key: str, count: int, interval: float) -> list[float]:
    """Commit a change to ``root[key]`` ``count`` times, one every
    ``interval`` seconds (W2's pace: the storage idle in between); return
    each one's time in ms, from just before its transaction began to its
    commit's return."""
    times = []
    began = time.perf_counter()
    for index in range(count):
        delay = began + (index + 1) * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        start = time.perf_counter()
        with tm:
            conn.root()[key]["n"] = index
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    uri, key, seconds = (argv or sys.argv[1:])[:3]
    db = open_db(uri)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(10):
            with attempt:
                conn.root()[key] = PersistentMapping()
        print("ready", flush=True)
        sys.stdin.readline()
        count, elapsed, cpu = commit_loop(conn, tm, key, float(seconds))
    finally:
        conn.close()
        db.close()
    print(json.dumps({"commits": count, "seconds": elapsed, "cpu": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
