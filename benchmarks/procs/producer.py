"""A producer process: queues ``add`` jobs, one per transaction.

``python -m benchmarks.procs.producer --db URI --out FILE --count N --tag A``
opens the database, prints ``ready``, waits for a line on its standard
input, then queues ``add(A, i)`` for i in 0..N-1, each in its own committed
transaction: every ``--interval`` seconds (W2), or as fast as it can (W5,
enqueue, no interval). A ConflictError at commit is counted, and the job
queued again in a new transaction. Writes to FILE a JSON object:
``calls``, the time just before each job's ``queue.put`` (its first try),
and ``commits``, the time each commit returned (``time.time()``, by i),
``seconds`` from the first call to the last commit, ``conflicts`` and
``kinds`` (how many conflicts each error type and object class had),
``shard``, the index of the queue shard its jobs went to, and with
``--count-trips`` ``trips``, what each enqueue asked of the storage
server and loaded and wrote (benchmarks.roundtrips, per job).

``--bulk`` queues the N jobs with one ``queue.put_many`` in one
transaction instead (retried whole on a ConflictError; with an engine
that has no put_many, put() in a loop in one transaction).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import transaction
from ZODB.POSException import ConflictError

import zasync
from benchmarks import roundtrips
from benchmarks.jobs import add
from zasync.storage import open_db


def _class_of(conn, tm, error: ConflictError) -> str:
    """The class of the object a conflict names (a ReadConflictError from
    the ZEO server names only its oid)."""
    if not error.oid:
        return "?"
    tm.begin()
    try:
        obj = conn.get(error.oid)
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        for queue in conn.root()[zasync.KEY].values():
            if any(shard._p_oid == error.oid for shard in queue._shards):
                name += " (a shard of the queue)"
        return name
    except Exception:
        return "?"
    finally:
        tm.abort()


def produce(db, *, count: int, tag: int, interval: float | None) -> dict:
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    calls: list[float] = []
    commits: list[float] = []
    conflicts = 0
    kinds: dict[str, int] = {}
    shard = None
    began = time.time()
    try:
        for i in range(count):
            if interval:
                delay = began + i * interval - time.time()
                if delay > 0:
                    time.sleep(delay)
            while True:
                tm.begin()
                queue = conn.root()[zasync.KEY][""]
                if len(calls) == i:
                    calls.append(time.time())
                job = queue.put(zasync.Job(add, tag, i))
                if shard is None:
                    shard = queue._shards.index(queue._shard_of(job))
                try:
                    tm.commit()
                except ConflictError as e:
                    tm.abort()
                    conflicts += 1
                    what = f"{type(e).__name__} on {_class_of(conn, tm, e)}"
                    kinds[what] = kinds.get(what, 0) + 1
                    continue
                commits.append(time.time())
                break
        result = {
            "began": began,
            "calls": calls,
            "seconds": commits[-1] - calls[0] if commits else 0.0,
            "commits": commits,
            "conflicts": conflicts,
            "kinds": kinds,
            "shard": shard,
        }
    finally:
        conn.close()
    return result


def produce_bulk(db, *, count: int, tag: int) -> dict:
    """Queue ``count`` jobs with one put_many in one transaction."""
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    conflicts = 0
    try:
        began = time.time()
        while True:
            tm.begin()
            queue = conn.root()[zasync.KEY][""]
            jobs = [zasync.Job(add, tag, i) for i in range(count)]
            if hasattr(queue, "put_many"):
                queue.put_many(jobs)
            else:  # an engine before put_many (an A/B run's base)
                for job in jobs:
                    queue.put(job)
            try:
                tm.commit()
                break
            except ConflictError:
                tm.abort()
                conflicts += 1
        ended = time.time()
    finally:
        conn.close()
    return {"began": began, "seconds": ended - began, "conflicts": conflicts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.procs.producer")
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--tag", type=int, default=0)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--bulk", action="store_true")
    parser.add_argument("--count-trips", action="store_true")
    args = parser.parse_args(argv)

    db = open_db(args.db)
    counts = roundtrips.install(db) if args.count_trips else None
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1
    if counts is not None:
        counts.reset()
    if args.bulk:
        result = produce_bulk(db, count=args.count, tag=args.tag)
    else:
        result = produce(db, count=args.count, tag=args.tag, interval=args.interval)
    if counts is not None:
        result["trips"] = counts.summary(args.count)
    db.close()
    with open(args.out, "w") as f:
        json.dump(result, f)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
