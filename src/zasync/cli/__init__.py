"""The ``zasync`` command (also ``python -m zasync``).

A thin layer over the library: each subcommand parses its flags, opens the
database, calls zasync.admin or a Dispatcher, and prints a table (for
people) or JSON (``--json``, for scripts). One module per group of
commands: :mod:`~zasync.cli.worker`, :mod:`~zasync.cli.inspection`
(status, jobs, show), :mod:`~zasync.cli.actions` (retry, cancel, prune),
:mod:`~zasync.cli.demo`; the exit codes are in :mod:`~zasync.cli.exitcodes`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from zasync.cli import actions, demo, inspection, ops, schedules, worker
from zasync.cli.exitcodes import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_STORAGE
from zasync.cli.options import LOG_LEVELS, LONG_RUNNING
from zasync.interfaces import ZasyncError
from zasync.logformat import configure as configure_logging
from zasync.storage import StorageError

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  zasync worker --db zeo://127.0.0.1:8100 --threads 4 --import myapp.jobs
  zasync worker --db var/Data.fs --uuid-file var/worker-uuid.txt
  zasync worker --zope-conf worker/etc/zope.conf   # Plone jobs, in Zope
  zasync status --db zeo://127.0.0.1:8100
  zasync jobs --db zeo://127.0.0.1:8100 --status failed --json
  zasync show 3f2a --db zeo://127.0.0.1:8100
  zasync retry 3f2a --db zeo://127.0.0.1:8100
  zasync cancel 3f2b --db zeo://127.0.0.1:8100
  zasync prune --db zeo://127.0.0.1:8100 --older-than 7
  zasync health --db zeo://127.0.0.1:8100 --all   # a liveness probe
  zasync schedules list --db zeo://127.0.0.1:8100   # periodic jobs

The database (--db, or the ZASYNC_DB environment variable) is a path (a
Data.fs, or a ZConfig .conf file) or a zodburi URI with its query options:
file:///path/Data.fs, zeo://host:port, zeo:///path/to.sock, memory://,
zconfig:///path/zodb.conf, postgresql://user@host/dbname (RelStorage); see
https://docs.pylonsproject.org/projects/zodburi/en/latest/

exit codes: 0 ok, 1 the operation failed, 2 bad usage, 3 database unavailable,
141 the reader of the output went away (as `zasync jobs ... | head` does)
"""

#: a command: its parsed flags and the parser (for usage errors) -> exit code
Command = Callable[[argparse.Namespace, argparse.ArgumentParser], int]

COMMANDS: dict[str, Command] = {
    "worker": worker.run_worker,
    "status": inspection.run_status,
    "jobs": inspection.run_jobs,
    "show": inspection.run_show,
    "retry": actions.run_retry,
    "cancel": actions.run_cancel,
    "prune": actions.run_prune,
    "demo": demo.run_demo,
    "health": ops.run_health,
    "schedules": schedules.run_schedules,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``zasync`` command and flag."""
    parser = argparse.ArgumentParser(
        prog="zasync",
        description="Run and inspect zasync workers and jobs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=LOG_LEVELS,
        help="default: INFO for worker and demo, WARNING for the others",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    worker.add_parser(sub)
    inspection.add_parsers(sub)
    actions.add_parsers(sub)
    demo.add_parser(sub)
    ops.add_health_parser(sub)
    schedules.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``) names; return
    its exit code. Bad usage exits (code 2) through argparse. When the
    reader of stdout goes away (``zasync jobs ... | head``), the command
    ends quietly with EXIT_BROKEN_PIPE, as a command killed by SIGPIPE."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a broken pipe shows here for buffered output
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at devnull so that
        # the flush cannot fail a second time and print a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "zope_conf", None):
        worker.check_zope_flags(args, parser)
    elif args.db is None:
        parser.error(
            f"{args.command}: --db is required (or set ZASYNC_DB)"
            + (", or --zope-conf" if args.command == "worker" else "")
        )
    level = args.log_level or ("INFO" if args.command in LONG_RUNNING else "WARNING")
    try:
        configure_logging(getattr(logging, level), getattr(args, "log_format", "text"))
    except ImportError as e:
        print(
            f"zasync {args.command}: --log-format json needs python-json-logger "
            f"({e}): {ops.OPS_EXTRA}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        return COMMANDS[args.command](args, parser)
    except StorageError as e:
        print(f"zasync {args.command}: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except ZasyncError as e:
        print(f"zasync {args.command}: {e}", file=sys.stderr)
        return EXIT_ERROR
