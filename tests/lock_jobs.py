"""Job functions and a producer process for the tests of per-key locks and
unique keys with worker processes (tests/test_unique_locks_multiprocess.py;
workers run them with ``zasync worker --import tests.lock_jobs``).

Each run of a job appends two lines to a stamp file, outside the
database: ``start <time> <pid> <job id> <key> <seq>`` before its work and
``end ...`` after it (none when the process was killed in between). One
``write()`` of a short line to a file opened for appending is atomic
across processes. A job's end stamp is written before its transaction
commits, so the next job of its lock, which may start only after that
commit, stamps its start later.

Run as ``python -m tests.lock_jobs produce --db URI --keys N --stamps FILE``
it is a producer process: it puts one job for each of N unique keys, each
in a transaction of its own retried on ConflictError, and prints a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zasync import local

# -- jobs ---------------------------------------------------------------------


def _stamp(path: str, event: str, key: str, seq: int) -> None:
    job = local.getJob()
    line = f"{event} {time.time():.6f} {os.getpid()} {job.id} {key} {seq}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)


def locked(path: str, key: str, seq: int, seconds: float = 0.0) -> int:
    """Stamp the start, sleep ``seconds``, stamp the end; return ``seq``."""
    _stamp(path, "start", key, seq)
    if seconds:
        time.sleep(seconds)
    _stamp(path, "end", key, seq)
    return seq


def held(path: str, key: str, seq: int, gate: str, timeout: float = 60.0) -> int:
    """Stamp the start, wait until the file ``gate`` exists, stamp the end.
    Raises RuntimeError when it does not appear within ``timeout``."""
    _stamp(path, "start", key, seq)
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {gate} did not appear within {timeout} s")
        time.sleep(0.01)
    _stamp(path, "end", key, seq)
    return seq


# -- reading the stamp file ---------------------------------------------------


@dataclass
class Interval:
    """One run of a job: from its start stamp to its end stamp (None when
    the run was cut short, its process killed)."""

    job_id: str
    key: str
    seq: int
    pid: int
    start: float
    end: float | None = None


def intervals(path: str | Path) -> list[Interval]:
    """The runs recorded in ``path``, in the order they started."""
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        return []
    found: list[Interval] = []
    open_runs: dict[tuple[str, int], Interval] = {}
    for line in lines:
        event, stamp, pid, job_id, key, seq = line.split(" ")
        if event == "start":
            run = Interval(job_id, key, int(seq), int(pid), float(stamp))
            open_runs[(job_id, run.pid)] = run
            found.append(run)
        else:
            open_runs.pop((job_id, int(pid))).end = float(stamp)
    found.sort(key=lambda run: run.start)
    return found


def overlapping(runs: Iterable[Interval], *, until: float) -> list[tuple]:
    """The pairs of runs of one key that overlapped in time (a run without
    an end counts as running ``until`` then)."""
    by_key: dict[str, list[Interval]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    pairs = []
    for key_runs in by_key.values():
        key_runs.sort(key=lambda run: run.start)
        for before, after in zip(key_runs, key_runs[1:], strict=False):
            end = before.end if before.end is not None else until
            if after.start < end:
                pairs.append((before, after))
    return pairs


def concurrent_keys(runs: list[Interval]) -> tuple[Interval, Interval] | None:
    """Two runs of different keys that ran at the same time, or None."""
    ordered = sorted(runs, key=lambda run: run.start)
    for i, run in enumerate(ordered):
        end = run.end if run.end is not None else float("inf")
        for other in ordered[i + 1 :]:
            if other.start >= end:
                break
            if other.key != run.key:
                return run, other
    return None


# -- a producer process -------------------------------------------------------


def produce(
    uri: str,
    *,
    keys: list[str],
    stamps: str,
    until: str = "started",
    replace: bool = False,
) -> dict:
    """Put a job for each of ``keys`` (``unique_key=key``, and ``replace``)
    in ``uri``'s default queue, one transaction each, as an application
    does (``transaction_manager.attempts()``, which retries on
    ConflictError). Returns {"jobs": {key: id of the job put returned},
    "created": [the keys whose job this producer queued], "conflicts":
    commits retried}."""
    import transaction

    from zasync.interfaces import KEY
    from zasync.job import Job
    from zasync.storage import open_db

    db = open_db(uri)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    jobs: dict[str, str] = {}
    created: list[str] = []
    tries = 0
    try:
        for seq, key in enumerate(keys):
            for retry, attempt in enumerate(tm.attempts(50)):
                tries += 1
                if retry:
                    # After a conflict, as a web server's retry does, a
                    # moment later: four producers on the same keys in
                    # the same order would otherwise keep meeting.
                    time.sleep(random.uniform(0, 0.005))
                with attempt:
                    mine = Job(locked, stamps, key, seq)
                    got = conn.root()[KEY][""].put(
                        mine, unique_key=key, unique_until=until, replace=replace
                    )
            jobs[key] = got.id
            if got is mine:
                created.append(key)
    finally:
        conn.close()
        db.close()
    return {"jobs": jobs, "created": created, "conflicts": tries - len(keys)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lock_jobs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--db", required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--stamps", required=True)
    p.add_argument("--until", default="started")
    p.add_argument("--reverse", action="store_true", help="the keys last first")
    p.add_argument("--replace", action="store_true", help="put(..., replace=True)")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    args = parser.parse_args(argv)
    keys = [f"key-{n}" for n in range(args.keys)]
    if args.reverse:
        keys.reverse()
    # Producers started one after another begin together, to contend.
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    summary = produce(
        args.db,
        keys=keys,
        stamps=args.stamps,
        until=args.until,
        replace=args.replace,
    )
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    # Jobs must name their functions by an importable module, not __main__.
    from tests.lock_jobs import main as imported_main

    sys.exit(imported_main())
