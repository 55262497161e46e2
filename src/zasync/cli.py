"""The ``zasync`` command (also ``python -m zasync``).

A thin layer over the library: each subcommand parses its flags, opens the
database, calls zasync.admin or a Dispatcher, and prints a table (for
people) or JSON (``--json``, for scripts).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import transaction

from zasync import admin
from zasync.interfaces import ZasyncError

log = logging.getLogger("zasync")

# Named exit codes.
EXIT_OK = 0
EXIT_ERROR = 1  # the operation failed (a job not found, a bad status...)
EXIT_USAGE = 2  # bad flags (argparse's own code)
EXIT_STORAGE = 3  # the database could not be opened

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

The database (--db, or the ZASYNC_DB environment variable) is a URI:
file:///path/Data.fs (or a plain path), zeo://host:port, zeo:///path/to.sock,
postgresql://user@host/dbname (RelStorage), or a ZConfig .conf file.

exit codes: 0 ok, 1 the operation failed, 2 bad usage, 3 database unavailable
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


#: threads of ``zasync worker --db`` unless --threads says otherwise
DEFAULT_WORKER_THREADS = 4
#: dispatcher settings a --zope-conf worker takes from Zope, not from flags
ZOPE_IGNORED_FLAGS = (
    "queue",
    "poll_interval",
    "heartbeat",
    "lease",
    "maintenance_interval",
    "retention_days",
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: commands that run for a while and say what they do; the others log only
#: warnings, so that their output (and a one-line error) stands alone
LONG_RUNNING = ("worker", "demo")


def _add_db(parser: argparse.ArgumentParser, *, group: Any = None) -> None:
    """--db (in ``group``, a mutually exclusive group, when given)."""
    (group or parser).add_argument(
        "--db",
        default=os.environ.get("ZASYNC_DB"),
        metavar="URI",
        help="the database (default: $ZASYNC_DB)",
    )
    # Also accepted after the command; SUPPRESS keeps one given before it.
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=LOG_LEVELS,
        help=argparse.SUPPRESS,
    )


def build_parser() -> argparse.ArgumentParser:
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

    worker = sub.add_parser(
        "worker",
        help="run a worker in the foreground",
        epilog="examples:\n  zasync worker --db zeo://127.0.0.1:8100 --threads 8 --import myapp.jobs\n"
        "  ZASYNC_UUID=var/worker.uuid zasync worker --db var/Data.fs\n"
        "  zasync worker --zope-conf worker/etc/zope.conf\n\n"
        "--zope-conf runs Plone jobs: Zope starts from that zope.conf without\n"
        "serving HTTP, and its site.zcml must include zasync.plone's\n"
        "single_db_worker.zcml or multi_db_worker.zcml. The UUID file and the\n"
        "threads then come from --uuid-file / --threads, else ZASYNC_UUID /\n"
        "ZASYNC_THREADS (zope.conf's <environment> or the environment).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = worker.add_mutually_exclusive_group()
    _add_db(worker, group=source)
    source.add_argument(
        "--zope-conf",
        metavar="FILE",
        help="run Plone jobs in a Zope process started from this zope.conf "
        "(instead of --db; needs zasync[plone])",
    )
    worker.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help=f"worker threads (default {DEFAULT_WORKER_THREADS}; with "
        f"--zope-conf: $ZASYNC_THREADS or 2)",
    )
    worker.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="serve this queue (repeatable; default: all queues)",
    )
    worker.add_argument(
        "--uuid-file",
        metavar="FILE",
        help="where the worker's UUID is kept (default: $ZASYNC_UUID)",
    )
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (your job functions; repeatable)",
    )
    worker.add_argument(
        "--poll-interval", type=_positive_float, default=1.0, metavar="SECONDS"
    )
    worker.add_argument(
        "--heartbeat",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="idle heartbeat interval (default 60)",
    )
    worker.add_argument(
        "--lease",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="lease on running jobs: a dead worker's jobs are rescued after it",
    )
    worker.add_argument(
        "--maintenance-interval",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how often dead workers' jobs are looked for and finished "
        "jobs pruned (default 5)",
    )
    worker.add_argument(
        "--retention-days",
        type=_positive_float,
        default=7.0,
        metavar="DAYS",
        help="keep finished jobs this long (default 7)",
    )
    worker.add_argument(
        "--stop-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for running jobs (default 30)",
    )

    status = sub.add_parser("status", help="queues, quotas, workers and throughput")
    _add_db(status)
    status.add_argument("--json", action="store_true")

    jobs = sub.add_parser("jobs", help="list jobs")
    _add_db(jobs)
    jobs.add_argument("--status", action="append", default=[], choices=admin.FILTERS)
    jobs.add_argument("--queue", action="append", default=[], metavar="NAME")
    jobs.add_argument(
        "--callable", metavar="TEXT", help="only callables whose name contains TEXT"
    )
    jobs.add_argument("--limit", type=_positive_int, default=50)
    jobs.add_argument("--json", action="store_true")

    for name, text in (
        ("show", "show one job"),
        ("retry", "queue a failed job again"),
        ("cancel", "cancel a pending or scheduled job"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "job_id", metavar="ID", help="the job's id, as `zasync jobs` shows it"
        )
        _add_db(cmd)
        cmd.add_argument("--json", action="store_true")

    prune = sub.add_parser(
        "prune", help="remove finished jobs older than the retention period"
    )
    _add_db(prune)
    prune.add_argument("--older-than", type=float, default=7.0, metavar="DAYS")

    demo = sub.add_parser("demo", help="run a worker and a small demo batch")
    _add_db(demo)
    demo.add_argument("--jobs", type=_positive_int, default=20)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "zope_conf", None):
        _check_zope_flags(args, parser)
    elif args.db is None:
        parser.error(
            f"{args.command}: --db is required (or set ZASYNC_DB)"
            + (", or --zope-conf" if args.command == "worker" else "")
        )
    logging.basicConfig(
        level=getattr(
            logging,
            args.log_level or ("INFO" if args.command in LONG_RUNNING else "WARNING"),
        ),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from zasync.storage import StorageError

    try:
        return COMMANDS[args.command](args, parser)
    except StorageError as e:
        print(f"zasync {args.command}: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except ZasyncError as e:
        print(f"zasync {args.command}: {e}", file=sys.stderr)
        return EXIT_ERROR


def _open(args):
    from zasync.storage import StorageError, open_db, parse_uri

    spec = parse_uri(args.db)
    if (
        spec.kind == "file"
        and args.command not in LONG_RUNNING
        and not os.path.exists(spec.path)
    ):
        # Opening would create an empty database where a typo pointed.
        raise StorageError(
            f"cannot open {spec.display}: no such file; check the path (a "
            f"worker creates the database on its first start)",
            uri=spec.display,
        )
    return open_db(args.db)


def _in_transaction(db, work):
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                return work(admin.get_queues(conn), conn)
    finally:
        conn.close()


def _check_zope_flags(args, parser) -> None:
    """--zope-conf (which argparse keeps apart from --db) excludes the
    dispatcher flags a Zope worker does not take."""
    worker_parser = _subparser(parser, "worker")
    for dest in ZOPE_IGNORED_FLAGS:
        if getattr(args, dest) != worker_parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            parser.error(
                f"worker: {flag} cannot be used with --zope-conf (a Zope "
                f"worker's dispatcher has the default settings; only "
                f"--uuid-file, --threads and --stop-timeout apply)"
            )


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions:
        if name in action.choices:
            return action.choices[name]
    raise KeyError(name)


class _StopSignals:
    """SIGTERM and SIGINT, once installed: the first asks the worker to
    stop (after its start-up, if it comes during it); a second SIGINT exits
    at once (code 130)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._stopping = threading.Event()

    def install(self) -> _StopSignals:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        if signum == signal.SIGINT and len(self.received) > 1:
            log.warning(
                "second interrupt: stopping at once; running jobs go to recovery"
            )
            os._exit(130)
        self._stopping.set()

    def wait(self) -> int:
        """Block until the first signal; return it."""
        while not self._stopping.wait(1.0):
            pass
        return self.received[0]


def _log_unclean_stop(args) -> int:
    log.warning(
        "exiting with code %d: jobs still running after --stop-timeout %g s "
        "are left to recovery (this worker's next start, or another worker "
        "when the lease ends)",
        EXIT_ERROR,
        args.stop_timeout,
    )
    return EXIT_ERROR


def cmd_worker(args, parser) -> int:
    from zasync.dispatcher import Dispatcher
    from zasync.identity import worker_uuid

    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            parser.error(f"--import {module}: {e}")
    if args.zope_conf:
        return _zope_worker(args)
    db = _open(args)
    uuid = worker_uuid(args.uuid_file)
    threads = args.threads or DEFAULT_WORKER_THREADS
    dispatcher = Dispatcher(
        db,
        uuid=uuid,
        threads=threads,
        queue_names=tuple(args.queue) or None,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat,
        lease_seconds=args.lease,
        maintenance_interval=args.maintenance_interval,
        retention=datetime.timedelta(days=args.retention_days),
    )
    signals = _StopSignals().install()
    dispatcher.start()
    print(
        f"zasync worker {uuid} on {args.db}: {threads} threads; Ctrl-C to stop",
        flush=True,
    )

    def stop(timeout: float) -> bool:
        clean = dispatcher.stop(timeout)
        db.close()
        return clean

    return _serve_until_signalled(signals, stop, args)


def _serve_until_signalled(signals, stop, args) -> int:
    """Wait for SIGTERM or SIGINT, then ``stop(--stop-timeout)``; the exit
    code says whether every running job finished."""
    signum = signals.wait()
    log.info(
        "%s received: stopping; waiting up to %g s for running jobs",
        signal.Signals(signum).name,
        args.stop_timeout,
    )
    clean = stop(args.stop_timeout)
    return EXIT_OK if clean else _log_unclean_stop(args)


def _zope_worker(args) -> int:
    """``zasync worker --zope-conf``: Plone jobs in a Zope process."""
    try:
        from zasync.plone import zopeworker
    except ImportError as e:
        print(
            f"zasync worker: --zope-conf needs Zope and Plone ({e}): "
            f"pip install -c constraints.txt 'zasync[plone]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    signals = _StopSignals().install()
    worker = zopeworker.start(
        args.zope_conf, uuid_file=args.uuid_file, threads=args.threads
    )
    print(
        f"zasync worker {worker.uuid} in Zope ({args.zope_conf}, role "
        f"{worker.role.name}, database {worker.database_name!r}): "
        f"{worker.threads} threads; Ctrl-C to stop",
        flush=True,
    )
    return _serve_until_signalled(signals, worker.stop, args)


def cmd_status(args, parser) -> int:
    db = _open(args)
    try:
        data = _in_transaction(db, lambda queues, conn: admin.summary(queues))
    finally:
        db.close()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"{'queue':<16} {'pending':>8} {'scheduled':>9} {'active':>7}  quotas")
    for name, info in data["queues"].items():
        c = info["counts"]
        quotas = ", ".join(
            f"{q} {v['used']}/{v['size']}" for q, v in info["quotas"].items()
        )
        print(
            f"{name or '(default)':<16} {c['pending']:>8} {c['scheduled']:>9} {c['active']:>7}  {quotas}"
        )
    print()
    print(
        f"{'worker':<38} {'host:pid':<24} {'state':<6} {'threads':>7} {'running':>7}  last seen"
    )
    for w in data["workers"]:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w["last_seen"]))
        print(
            f"{w['uuid']:<38} {w['host'] + ':' + str(w['pid']):<24} "
            f"{'alive' if w['alive'] else 'dead':<6} {w['threads']:>7} {len(w['running']):>7}  {seen}"
        )
    print()
    for window, t in data["throughput"].items():
        print(f"last {window:>3}: {t['completed']} completed, {t['failed']} failed")
    return EXIT_OK


def cmd_jobs(args, parser) -> int:
    db = _open(args)

    def work(queues, conn):
        jobs = admin.list_jobs(
            queues,
            status=tuple(args.status),
            queue_names=tuple(args.queue),
            limit=args.limit,
            callable_contains=args.callable,
        )
        return [admin.describe(job) for job in jobs]

    try:
        rows = _in_transaction(db, work)
    finally:
        db.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'id':<10} {'kind':<10} {'queue':<10} {'callable':<40} when")
    for r in rows:
        when = r["active_end"] or r["active_start"] or r["begin_after"] or ""
        print(
            f"{r['id']:<10} {r['kind']:<10} {_queue_label(r['queue']):<10} {r['callable'][:40]:<40} {when[:19]}"
        )
    if not rows:
        print("(no jobs)")
    return EXIT_OK


def _queue_label(name: str | None) -> str:
    return "" if name is None else name or "(default)"


def _one_job(args, action):
    db = _open(args)
    try:
        return _in_transaction(
            db, lambda queues, conn: action(admin.find_job(conn, args.job_id))
        )
    finally:
        db.close()


def _print_job(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key == "traceback":
            continue
        print(f"{key:>13}: {value}")
    if "traceback" in data:
        print()
        print(data["traceback"].rstrip())


def cmd_show(args, parser) -> int:
    _print_job(_one_job(args, admin.describe), args.json)
    return EXIT_OK


def cmd_retry(args, parser) -> int:
    data = _one_job(args, lambda job: admin.describe(admin.retry(job)))
    _print_job(data, args.json) if args.json else print(
        f"job {data['id']} queued again"
    )
    return EXIT_OK


def cmd_cancel(args, parser) -> int:
    def action(job):
        admin.cancel(job)
        return admin.describe(job)

    data = _one_job(args, action)
    _print_job(data, args.json) if args.json else print(f"job {data['id']} cancelled")
    return EXIT_OK


def cmd_prune(args, parser) -> int:
    if args.older_than < 0:
        parser.error("--older-than: use a number of days >= 0")
    db = _open(args)
    total = 0
    try:
        while True:
            removed = _in_transaction(
                db,
                lambda queues, conn: admin.prune(
                    queues,
                    older_than=datetime.timedelta(days=args.older_than),
                    limit=500,
                ),
            )
            total += removed
            if removed < 500:
                break
    finally:
        db.close()
    print(f"removed {total} finished jobs older than {args.older_than:g} days")
    return EXIT_OK


def cmd_demo(args, parser) -> int:
    from zasync.demo import run_demo

    return run_demo(args.db, jobs=args.jobs)


COMMANDS = {
    "worker": cmd_worker,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "show": cmd_show,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "prune": cmd_prune,
    "demo": cmd_demo,
}
