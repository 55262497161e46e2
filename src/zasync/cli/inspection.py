"""``zasync status``, ``zasync jobs`` and ``zasync show``: what the queues,
the workers and the jobs look like, as a table (for people) or JSON
(``--json``, for scripts). They change nothing."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

from zasync import admin, overview
from zasync.cli.database import in_transaction, one_job, open_database
from zasync.cli.exitcodes import EXIT_OK
from zasync.cli.options import (
    add_db,
    add_json,
    key,
    positive_float,
    positive_int,
    priority,
)
from zasync.running import LONG_RUNNING_SECONDS, human_duration
from zasync.stuck import stuck_since_iso
from zasync.workerstate import state_of

#: seconds between a worker's heartbeats, as the workers' default
HEARTBEAT_INTERVAL = 60.0

JOBS_EPILOG = """\
examples:
  zasync jobs --db zeo://127.0.0.1:8100 --status failed
  zasync jobs --db zeo://127.0.0.1:8100 --min-priority 10 --status pending
  zasync jobs --db zeo://127.0.0.1:8100 --lock report:42 --json
  zasync jobs --db zeo://127.0.0.1:8100 --unique-key nightly-export
"""


def add_parsers(sub: Any) -> None:
    """The ``status``, ``jobs`` and ``show`` commands, on ``sub``."""
    status = sub.add_parser("status", help="queues, quotas, workers and throughput")
    add_db(status)
    status.add_argument(
        "--long-after",
        type=positive_float,
        default=LONG_RUNNING_SECONDS,
        metavar="SECONDS",
        help="flag jobs running longer than this (default %(default)g)",
    )
    add_json(status)

    jobs = sub.add_parser(
        "jobs",
        help="list jobs",
        description="List jobs: running first, then pending and scheduled in "
        "the order they run, then finished ones, newest first.",
        epilog=JOBS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db(jobs)
    jobs.add_argument("--status", action="append", default=[], choices=admin.FILTERS)
    jobs.add_argument("--queue", action="append", default=[], metavar="NAME")
    jobs.add_argument(
        "--callable", metavar="TEXT", help="only callables whose name contains TEXT"
    )
    jobs.add_argument(
        "--priority", type=priority, metavar="N", help="only jobs of priority N"
    )
    jobs.add_argument(
        "--min-priority",
        type=priority,
        metavar="N",
        help="only jobs of priority N or higher",
    )
    jobs.add_argument(
        "--lock", type=key, metavar="KEY", help="only jobs queued with lock KEY"
    )
    jobs.add_argument(
        "--unique-key",
        type=key,
        metavar="KEY",
        help="only jobs queued with unique key KEY",
    )
    jobs.add_argument("--limit", type=positive_int, default=50)
    add_json(jobs)

    add_job_parser(sub, "show", "show one job")


def add_job_parser(sub: Any, name: str, text: str) -> None:
    """A command on one job, named by its id: ``zasync <name> ID``."""
    cmd = sub.add_parser(name, help=text)
    cmd.add_argument(
        "job_id", metavar="ID", help="the job's id, as `zasync jobs` shows it"
    )
    add_db(cmd)
    add_json(cmd)


def run_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync status``: queues, quotas, workers and throughput."""
    db = open_database(args)

    def work(queues: Any, conn: Any) -> dict[str, Any]:
        data = overview.summary(
            queues, heartbeat_interval=HEARTBEAT_INTERVAL, long_after=args.long_after
        )
        clock = time.time()
        for row in data["workers"]:
            record = queues.workers[row["uuid"]]
            row["state"] = state_of(record, clock, HEARTBEAT_INTERVAL).value
            row["stuck"] = stuck_threads(record)
        return data

    try:
        data = in_transaction(db, work)
    finally:
        db.close()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    _print_queues(data["queues"])
    print()
    _print_workers(data["workers"])
    _print_stuck(data["workers"])
    _print_running(data["workers"], args.long_after)
    print()
    for window, t in data["throughput"].items():
        print(f"last {window:>3}: {t['completed']} completed, {t['failed']} failed")
    return EXIT_OK


def _print_queues(queues: dict[str, Any]) -> None:
    print(f"{'queue':<16} {'pending':>8} {'scheduled':>9} {'active':>7}  quotas")
    for name, info in queues.items():
        c = info["counts"]
        quotas = ", ".join(
            f"{q} {v['used']}/{v['size']}" for q, v in info["quotas"].items()
        )
        print(
            f"{name or '(default)':<16} {c['pending']:>8} {c['scheduled']:>9} {c['active']:>7}  {quotas}"
        )


def _print_workers(workers: list[dict[str, Any]]) -> None:
    print(
        f"{'worker':<38} {'name (or host:pid)':<24} {'state':<7} {'threads':>7} {'running':>7}  last seen"
    )
    for w in workers:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w["last_seen"]))
        print(
            f"{w['uuid']:<38} {w['label']:<24} "
            f"{w['state']:<7} {w['threads']:>7} {len(w['running']):>7}  {seen}"
        )


def stuck_threads(record: Any) -> list[dict[str, Any]]:
    """The worker's threads abandoned in a stuck job that still run it
    (see zasync.watchdog): ``job`` (its id) and ``stuck_since`` (ISO)."""
    return [
        {
            "job": job_id,
            "stuck_since": datetime.datetime.fromtimestamp(
                since, datetime.UTC
            ).isoformat(),
        }
        for job_id, since in sorted((record.stuck or {}).items(), key=lambda i: i[1])
    ]


def _print_stuck(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        for stuck in w["stuck"]:
            print(
                f"{w['label']}: a thread stuck since {stuck['stuck_since']} in job "
                f"{stuck['job']} (abandoned and replaced)"
            )


def _print_running(workers: list[dict[str, Any]], long_after: float) -> None:
    running = [(job, w) for w in workers for job in w["jobs"] if job["running_seconds"]]
    if not running:
        return
    print()
    print(f"{'running job':<12} {'for':>14}  callable")
    for job, _w in sorted(running, key=lambda r: -r[0]["running_seconds"]):
        flag = f"  longer than {human_duration(long_after)}" if job["long"] else ""
        took = human_duration(job["running_seconds"])
        print(f"{job['id']:<12} {took:>14}  {job['callable']}{flag}")


def run_jobs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync jobs``: the jobs the filters select, newest first."""
    db = open_database(args)

    def work(queues: Any, conn: Any) -> list[dict[str, Any]]:
        jobs = admin.list_jobs(
            queues,
            status=tuple(args.status),
            queue_names=tuple(args.queue),
            limit=args.limit,
            callable_contains=args.callable,
            priority=args.priority,
            min_priority=args.min_priority,
            lock=args.lock,
            unique_key=args.unique_key,
        )
        return [admin.describe(job) for job in jobs]

    try:
        rows = in_transaction(db, work)
    finally:
        db.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    _print_jobs(rows)
    return EXIT_OK


#: the widest lock or unique key a table row shows (longer ones are cut)
KEY_WIDTH = 20


def _print_jobs(rows: list[dict[str, Any]]) -> None:
    """The jobs as a table; the lock and unique key columns only when a
    job listed has one."""
    extra = [name for name in ("lock", "unique_key") if any(r[name] for r in rows)]
    header = f"{'id':<10} {'kind':<10} {'queue':<10} {'callable':<40} {'prio':>5} {'when':<19}"
    for name in extra:
        header += f" {name.replace('_', ' '):<{KEY_WIDTH}}"
    print(header.rstrip())
    for r in rows:
        when = r["active_end"] or r["active_start"] or r["begin_after"] or ""
        line = (
            f"{r['id']:<10} {r['kind']:<10} {_queue_label(r['queue']):<10} "
            f"{r['callable'][:40]:<40} {r['priority']:>5} {when[:19]:<19}"
        )
        for name in extra:
            line += f" {_cut(r[name] or '-', KEY_WIDTH):<{KEY_WIDTH}}"
        print(line.rstrip())
    if not rows:
        print("(no jobs)")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _queue_label(name: str | None) -> str:
    return "" if name is None else name or "(default)"


def print_job(data: dict[str, Any], as_json: bool) -> None:
    """One job as ``admin.describe`` gives it: JSON, or one field a line
    with the traceback last."""
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for name, value in data.items():
        if name == "traceback" or (name == "unique_until" and value is None):
            continue
        print(f"{name:>13}: {value}")
    if "traceback" in data:
        print()
        print(data["traceback"].rstrip())


def describe_job(job: Any) -> dict[str, Any]:
    """``admin.describe(job)``, with ``stuck_since`` for a job its worker
    thread got stuck in (see zasync.watchdog)."""
    data = admin.describe(job)
    since = stuck_since_iso(job)
    if since is not None:
        data["stuck_since"] = since
    return data


def run_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync show ID``: one job, whole."""
    print_job(one_job(args, describe_job), args.json)
    return EXIT_OK
