"""``zasync schedules``: list the schedules of the queues (periodic jobs,
zasync.schedules), pause or resume one, or queue one's job now."""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

from zasync.cli.database import in_transaction, open_database
from zasync.cli.exitcodes import EXIT_OK
from zasync.cli.options import add_db, add_json
from zasync.interfaces import ZasyncError
from zasync.schedules import Schedule

EPILOG = """\
examples:
  zasync schedules list --db zeo://127.0.0.1:8100
  zasync schedules pause nightly-report --db zeo://127.0.0.1:8100
  zasync schedules resume nightly-report --db zeo://127.0.0.1:8100
  zasync schedules run-now nightly-report --db zeo://127.0.0.1:8100 --queue reports

A paused schedule starts no job until resumed; the slots passed meanwhile
start none. run-now queues one job at once, apart from the slots.
"""

#: the actions on one schedule, and what they say they did
ACTIONS = {
    "pause": "paused",
    "resume": "resumed",
    "run-now": "queued",
}


class ScheduleLookupError(ZasyncError):
    """No schedule of the name given, or several in different queues."""


def add_parser(sub: Any) -> None:
    """The ``schedules`` command and its actions, on ``sub``."""
    cmd = sub.add_parser(
        "schedules",
        help="list, pause, resume or run a schedule (periodic jobs)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = cmd.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the schedules of every queue")
    add_db(listing)
    listing.add_argument("--queue", metavar="NAME", help="only this queue's")
    add_json(listing)
    for action, text in (
        ("pause", "start no job until resumed"),
        ("resume", "start jobs again, from the next slot"),
        ("run-now", "queue one job of the schedule now, apart from its slots"),
    ):
        one = actions.add_parser(action, help=text)
        one.add_argument("name", metavar="NAME", help="the schedule's name")
        add_db(one)
        one.add_argument(
            "--queue", metavar="NAME", help="its queue (when names repeat)"
        )
        add_json(one)


def describe(schedule: Schedule) -> dict[str, Any]:
    """A schedule as plain data (what ``--json`` prints)."""
    last_job = schedule.last_job
    every = schedule.every
    return {
        "name": schedule.name,
        "queue": schedule.queue.name,
        "description": schedule.description,
        "cron": schedule.cron,
        "every_seconds": None if every is None else every.total_seconds(),
        "timezone": schedule.timezone,
        "missed": schedule.missed,
        "paused": schedule.paused,
        "next_run": schedule.next_run.isoformat(),
        "last_run": None
        if schedule.last_run is None
        else schedule.last_run.isoformat(),
        "last_job": None if last_job is None else last_job.id,
        "last_error": schedule.last_error,
    }


def run_schedules(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``zasync schedules ACTION``."""
    db = open_database(args)
    try:
        if args.action == "list":
            rows = in_transaction(db, lambda queues, conn: _list(queues, args.queue))
        else:
            rows = [in_transaction(db, lambda queues, conn: _act(queues, args))]
    finally:
        db.close()
    if args.json:
        print(json.dumps(rows if args.action == "list" else rows[0], indent=2))
    elif args.action == "list":
        _print(rows)
    else:
        row = rows[0]
        said = f"schedule {row['name']!r} {ACTIONS[args.action]}"
        if args.action == "run-now":
            said += f": job {row['job']}"
        elif not row["paused"]:
            said += f"; next run {row['next_run'][:19]} UTC"
        print(said)
    return EXIT_OK


def _list(queues: Any, queue_name: str | None) -> list[dict[str, Any]]:
    if queue_name is not None and queue_name not in queues:
        raise ScheduleLookupError(
            f"no queue {queue_name!r}: the queues are "
            f"{', '.join(map(repr, queues.keys()))}"
        )
    return [
        describe(schedule)
        for name, queue in queues.items()
        if queue_name is None or name == queue_name
        for schedule in queue.schedules.values()
    ]


def _act(queues: Any, args: argparse.Namespace) -> dict[str, Any]:
    schedule = _find(queues, args.name, args.queue)
    data = {}
    if args.action == "pause":
        schedule.pause()
    elif args.action == "resume":
        schedule.resume()
    else:
        data["job"] = schedule.run_now().id
    return describe(schedule) | data


def _find(queues: Any, name: str, queue_name: str | None) -> Schedule:
    found = [
        queue.schedules[name]
        for qname, queue in queues.items()
        if (queue_name is None or qname == queue_name) and name in queue.schedules
    ]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(repr(s.queue.name) for s in found)
        raise ScheduleLookupError(
            f"schedule {name!r} is in the queues {names}: say which with --queue"
        )
    elsewhere = [qname for qname, queue in queues.items() if name in queue.schedules]
    if elsewhere:
        names = ", ".join(map(repr, elsewhere))
        raise ScheduleLookupError(
            f"no schedule {name!r} in queue {queue_name!r}; it is in {names}"
        )
    known = sorted({n for queue in queues.values() for n in queue.schedules})
    total = sum(len(queue.schedules) for queue in queues.values())
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    where = f" in queue {queue_name!r}" if queue_name is not None else ""
    raise ScheduleLookupError(
        f"no schedule {name!r}{where}; {hint}`zasync schedules list` lists "
        f"them ({total} in all)"
    )


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'schedule':<20} {'queue':<10} {'state':<7} {'next run (UTC)':<19}  "
        f"{'last run (UTC)':<19}  when"
    )
    for r in rows:
        state = "paused" if r["paused"] else "active"
        last = (r["last_run"] or "-")[:19]
        when = r["description"]
        if r["cron"]:
            when += f" ({r['cron']}, {r['timezone']})"
        print(
            f"{r['name']:<20} {r['queue'] or '(default)':<10} {state:<7} "
            f"{r['next_run'][:19]:<19}  {last:<19}  {when}"
        )
        if r["last_error"]:
            print(f"{'':<20} last error: {r['last_error']}")
    if not rows:
        print("(no schedules)")
