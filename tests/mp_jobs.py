"""Job functions for tests that run workers in other processes
(``zasync worker --import tests.mp_jobs``), and a producer process.

Each job appends one line to a file per run, ``<start stamp> <pid> <job id>
<tag>``, before doing anything else, so a test can count the runs of each
job and see which process ran it and when. One ``write()`` of a short line
to a file opened for appending is atomic across processes.

Run as ``python -m tests.mp_jobs produce --db URI --count N --stamps FILE``
it is a producer process: it queues N jobs, one per transaction, counting
the ConflictErrors of its commits, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from zasync import local
from zasync.retry import RetryPolicy


def _stamp(path: str, tag: str = "") -> None:
    job = local.getJob()
    line = f"{time.time():.6f} {os.getpid()} {job.id} {tag}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)


def work(
    path: str, seconds: float = 0.0, value: object = None, tag: str = ""
) -> object:
    """Stamp the start, sleep ``seconds``, return ``value``."""
    _stamp(path, tag)
    if seconds:
        time.sleep(seconds)
    return value


def add(path: str, a: int, b: int) -> int:
    _stamp(path)
    return a + b


def fail(path: str, message: str = "planned failure") -> None:
    _stamp(path)
    raise ValueError(message)


def write_root(path: str, key: str, value: object, fail: bool = False) -> object:
    """Write ``root[key] = value`` in the job's own transaction, then raise
    if ``fail``: the write must commit with the result, or not at all."""
    _stamp(path)
    local.getJob()._p_jar.root()[key] = value
    if fail:
        raise RuntimeError(f"failing after writing {key}")
    return value


def collect(path: str, result: object) -> str:
    """A callback: stamps, and returns what it saw."""
    _stamp(path, "callback")
    return f"saw {result!r}"


def flaky(path: str, threshold: int) -> str:
    """Fails until it has been started ``threshold`` times."""
    _stamp(path)
    attempts = local.getJob().attempts
    if attempts < threshold:
        raise RuntimeError(f"attempt {attempts} failed, as planned")
    return f"succeeded on attempt {attempts}"


def error_type(failure) -> str:
    """A failure callback: the name of the exception's type."""
    return failure.type_name


def total(*jobs) -> int:
    """A composite's postprocess: the sum of its jobs' results."""
    return sum(job.result for job in jobs)


class NoConflictRetries(RetryPolicy):
    """Gives up on the first ConflictError (or disconnection) at commit."""

    max_conflicts = 0


# -- reading the stamp file -------------------------------------------------


@dataclass(frozen=True)
class Run:
    start: float
    pid: int
    job_id: str
    tag: str


def runs(path: str) -> list[Run]:
    """The runs recorded in ``path`` (none if it does not exist yet)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    result = []
    for line in lines:
        start, pid, job_id, *tag = line.split(" ", 3)
        result.append(Run(float(start), int(pid), job_id, tag[0] if tag else ""))
    return result


def runs_per_job(path: str) -> dict[str, list[Run]]:
    by_job: dict[str, list[Run]] = {}
    for run in runs(path):
        by_job.setdefault(run.job_id, []).append(run)
    return by_job


# -- a producer process ----------------------------------------------------


def produce(
    uri: str, *, count: int, stamps: str, seconds: float = 0.0, tag: str = ""
) -> dict:
    """Queue ``count`` jobs in ``uri``'s default queue, one per transaction,
    retrying each commit on ConflictError; return the job ids, the number
    of commits and of ConflictErrors."""
    import transaction
    from ZODB.POSException import ConflictError

    from zasync.interfaces import KEY
    from zasync.job import Job
    from zasync.storage import open_db

    db = open_db(uri)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    ids: list[str] = []
    conflicts = commits = 0
    try:
        for i in range(count):
            while True:
                tm.begin()
                job = conn.root()[KEY][""].put(
                    Job(work, stamps, seconds, i, tag=tag or f"p{os.getpid()}")
                )
                try:
                    tm.commit()
                except ConflictError:
                    tm.abort()
                    conflicts += 1
                    continue
                commits += 1
                ids.append(job.id)
                break
    finally:
        conn.close()
        db.close()
    return {"ids": ids, "commits": commits, "conflicts": conflicts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mp_jobs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--stamps", required=True)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    args = parser.parse_args(argv)
    # Producers started one after another begin together, to contend.
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    summary = produce(
        args.db, count=args.count, stamps=args.stamps, seconds=args.seconds
    )
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    # Jobs must name their functions by an importable module, not __main__
    # (a worker cannot find __main__.work).
    from tests.mp_jobs import main as imported_main

    sys.exit(imported_main())
