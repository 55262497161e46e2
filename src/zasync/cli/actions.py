"""``zasync retry``, ``zasync cancel`` and ``zasync prune``: the commands
that change jobs, each in a transaction of its own."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from zasync import admin
from zasync.cli.database import in_transaction, one_job, open_database
from zasync.cli.exitcodes import EXIT_OK
from zasync.cli.inspection import add_job_parser, print_job
from zasync.cli.options import add_db, days
from zasync.job import Job

#: finished jobs removed per transaction by ``zasync prune``
PRUNE_BATCH = 500


def add_parsers(sub: Any) -> None:
    """The ``retry``, ``cancel`` and ``prune`` commands, on ``sub``."""
    add_job_parser(sub, "retry", "queue a failed job again")
    add_job_parser(
        sub,
        "cancel",
        "cancel a pending or scheduled job; for a running one, request a "
        "cancel that the job sees at its next zasync.local.check()",
    )
    prune = sub.add_parser(
        "prune", help="remove finished jobs older than the retention period"
    )
    add_db(prune)
    prune.add_argument("--older-than", type=days, default=7.0, metavar="DAYS")


def run_retry(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync retry ID``: a failed job queued again."""
    data = one_job(args, lambda job: admin.describe(admin.retry(job)))
    if args.json:
        print_job(data, args.json)
    else:
        print(f"job {data['id']} queued again")
    return EXIT_OK


def run_cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync cancel ID``: a pending or scheduled job cancelled; for a
    running one, a cancel requested."""
    said = ""

    def action(job: Job) -> dict[str, Any]:
        nonlocal said
        said = admin.cancel(job)
        return admin.describe(job)

    data = one_job(args, action)
    if args.json:
        print_job(data, args.json)
    elif said == "requested":
        print(
            f"job {data['id']}: cancel requested; the job stops at its next "
            f"check (zasync.local.check() or progress()), or is interrupted "
            f"after its worker's grace period"
        )
    else:
        print(f"job {data['id']} cancelled")
    return EXIT_OK


def run_prune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync prune``: finished jobs older than --older-than days removed,
    :data:`PRUNE_BATCH` a transaction."""
    db = open_database(args)
    total = 0
    try:
        while True:
            removed = in_transaction(
                db,
                lambda queues, conn: admin.prune(
                    queues,
                    older_than=datetime.timedelta(days=args.older_than),
                    limit=PRUNE_BATCH,
                ),
            )
            total += removed
            if removed < PRUNE_BATCH:
                break
    finally:
        db.close()
    print(f"removed {total} finished jobs older than {args.older_than:g} days")
    return EXIT_OK
